// Lightning's "MNIST hello world", on Fashion-MNIST, in C++: a LightningModule (an MLP or a CNN), Trainer.fit with
// validation and a progress bar, then Trainer.test. The data is Debian's dataset-fashion-mnist (real IDX .gz files).
// Options come LightningCLI's way (trainloop::cli): `fashion_mnist_trainer [fit|validate|test] [--config run.yaml]
// [--trainer.max_epochs 6] [--model.arch mlp] [--model.lr 1e-3] [--data.batch_size 64] [--run.lr_find] ...`;
// --help lists them all, --print_config prints the run's configuration. The short flags of before are aliases:
//
//   fashion_mnist_trainer [--model cnn|mlp] [--epochs N] [--precision P] [--smoke] [--data DIR] [--log-dir DIR]
//                         [--min-accuracy A] [--strategy ddp --devices N] [--profile] [--lr_find]
//
// --smoke runs a few batches (fast_dev_run, for CI); --log-dir writes the logged metrics (every 50 steps and every
// epoch), the learning rate, the hyperparameters (every option) and config.yaml as CSV (DIR/csv/version_N/), TensorBoard
// event files (DIR/tensorboard/version_N/) and an MLflow run (DIR/mlruns), and the best checkpoint (DIR/checkpoints); --profile prints where the time went;
// --min-accuracy makes the program fail when the test accuracy is lower; --precision is the Trainer's ("32",
// "bf16-mixed" on CPU or CUDA, "16-mixed" on CUDA). --strategy ddp --devices N trains data-parallel in N processes (this
// one is rank 0 and starts the others; under torchrun/srun/mpirun, --strategy ddp alone): each rank trains on its shard
// of every epoch, batch 64 per rank. --lr_find runs Lightning's learning-rate finder first (Tuner.lr_find), trains with
// its suggestion and draws its curve (lr_find.svg in the log folder, or the working folder). `test` and `validate`
// evaluate the weights of --ckpt_path (a checkpoint of fit). With a log folder, TensorBoard also gets the weights' and
// gradients' histograms every 100 steps, a grid of 32 test images with their predicted and true classes after each
// validation (and the same as text), and the test's confusion matrix; MLflow gets the images and the best checkpoint.
#include <trainloop.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>


using namespace trainloop;
using ImageBatch = TensorBatch<2>;  // images [B, 1, 28, 28], labels [B]

// What both models share: the steps, the metrics, the optimizer. Net is the concrete model (CRTP).
template <class Net>
struct Classifier : LightningModule<Net> {
  torch::Tensor training_step(ImageBatch& batch, std::int64_t) {
    torch::Tensor loss = torch::nn::functional::cross_entropy(self().forward(batch.first), batch.second);
    this->log("loss", loss, LogOptions().prog_bar(true).on_epoch(true));
    return loss;
  }
  void validation_step(ImageBatch& batch, std::int64_t) { evaluate(batch, "val"); }
  void test_step(ImageBatch& batch, std::int64_t) {
    const torch::Tensor logits = evaluate(batch, "test");
    confusion.update(logits.argmax(1), batch.second);
  }
  void on_test_epoch_start() { confusion.reset(); }
  std::shared_ptr<torch::optim::Adam> configure_optimizers() {
    return std::make_shared<torch::optim::Adam>(this->parameters(), torch::optim::AdamOptions(lr));
  }
  double lr = 1e-3;  // Tuner::lr_find(update_attr) sets it, as Lightning sets `model.lr`
  ConfusionMatrix confusion{10};  // over the test set (compute() sums the ranks')

 private:
  Net& self() { return static_cast<Net&>(*this); }
  torch::Tensor evaluate(ImageBatch& batch, const std::string& prefix) {
    torch::Tensor logits = self().forward(batch.first);
    const auto size = batch.second.size(0);
    this->log(prefix + "_loss", torch::nn::functional::cross_entropy(logits, batch.second),
              LogOptions().batch_size(size));
    this->log(prefix + "_acc", logits.argmax(1).eq(batch.second).to(torch::kFloat32).mean(),
              LogOptions().prog_bar(true).batch_size(size));
    return logits;
  }
};

// What the dashboards show beside the curves: after each validation, 32 test images framed green (right) or red
// (wrong) with a table of their predicted and true classes; after the test, its confusion matrix. Rank 0 draws.
class PredictionImages {
 public:
  PredictionImages(torch::Tensor images, torch::Tensor labels) : images_(std::move(images)), labels_(std::move(labels)) {}
  template <class T, class M>
  void on_validation_epoch_end(T& trainer, M& module) {
    if (trainer.sanity_checking() || !trainer.is_global_zero()) return;
    torch::NoGradGuard no_grad;
    const torch::Tensor images = images_.to(module.parameters().front().device());
    const torch::Tensor predicted = module.forward(images).argmax(1).cpu();
    const torch::Tensor right = predicted.eq(labels_).view({-1, 1, 1, 1});
    // Grey images as RGB inside a 2-pixel frame: green when right, red when wrong.
    torch::Tensor framed = torch::constant_pad_nd(images_.expand({-1, 3, -1, -1}), {2, 2, 2, 2}, 0);
    const torch::Tensor colour = torch::where(right, torch::tensor({0.f, 0.8f, 0.f}).view({1, 3, 1, 1}),
                                              torch::tensor({0.9f, 0.f, 0.f}).view({1, 3, 1, 1}));
    torch::Tensor inside = torch::zeros_like(framed, torch::kBool);
    inside.narrow(2, 2, 28).narrow(3, 2, 28).fill_(true);
    framed = torch::where(inside, framed, colour.expand_as(framed));
    const std::int64_t step = trainer.global_step();
    log_image(trainer, "predictions", make_grid(framed), step);
    std::string table = "| # | predicted | true |\n|---|---|---|\n";
    for (std::int64_t i = 0; i < predicted.size(0); ++i)
      table += "| " + std::to_string(i) + " | " + classes[predicted[i].item<std::int64_t>()] + " | " +
               classes[labels_[i].item<std::int64_t>()] + " |\n";
    log_text(trainer, "predictions", table, step);
  }
  template <class T, class M>
  void on_test_epoch_end(T& trainer, M& module) {
    const torch::Tensor counts = module.confusion.compute();  // on every rank: it sums the ranks' counts
    log_image(trainer, "test/confusion_matrix", confusion_matrix_image(counts), trainer.global_step());
  }

 private:
  static constexpr const char* classes[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  torch::Tensor images_, labels_;
};

struct Mlp : Classifier<Mlp> {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  Mlp() {
    fc1 = register_module("fc1", torch::nn::Linear(784, 128));
    fc2 = register_module("fc2", torch::nn::Linear(128, 10));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x.flatten(1)))); }
};

struct Cnn : Classifier<Cnn> {
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  Cnn() {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 3)));
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 3)));
    fc1 = register_module("fc1", torch::nn::Linear(32 * 5 * 5, 128));
    fc2 = register_module("fc2", torch::nn::Linear(128, 10));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = torch::max_pool2d(torch::relu(conv1(x)), 2);  // 28 -> 26 -> 13
    h = torch::max_pool2d(torch::relu(conv2(h)), 2);                 // 13 -> 11 -> 5
    return fc2(torch::relu(fc1(h.flatten(1))));
  }
};

// The example's own options (the Trainer's are the CLI's "trainer" section).
struct ModelArgs {
  std::string arch = "cnn";
  double lr = 1e-3;
  template <class F>
  void fields(F& f) {
    f("arch", arch, "\"cnn\" or \"mlp\"");
    f("lr", lr, "Adam's learning rate");
  }
};
struct DataArgs {
  std::string dir = fashion_mnist_debian_dir;
  std::int64_t batch_size = 64;
  template <class F>
  void fields(F& f) {
    f("dir", dir, "The folder of the Fashion-MNIST IDX .gz files");
    f("batch_size", batch_size, "Training batch size (per rank)");
  }
};
struct RunArgs {
  std::string log_dir;
  double min_accuracy = 0;
  bool lr_find = false;
  std::int64_t lr_find_steps = 100;
  template <class F>
  void fields(F& f) {
    f("log_dir", log_dir, "Write CSV, TensorBoard and MLflow logs, checkpoints and config.yaml here; \"\": none");
    f("min_accuracy", min_accuracy, "Fail (exit 1) when the test accuracy is lower");
    f("lr_find", lr_find, "Run the learning-rate finder first and train with its suggestion");
    f("lr_find_steps", lr_find_steps, "The finder's steps (Lightning's num_training)");
  }
};
struct Args {
  ModelArgs model;
  DataArgs data;
  RunArgs run;
  cli::Run cli;
};

template <class T, class Net, class Loader>
void find_lr(T& trainer, Net& model, Loader& train_batches, const Args& args) {
  if (!trainer.is_global_zero() || trainer.world_size() > 1) return;
  const LRFinderResult found = Tuner(trainer).lr_find(
      model, train_batches,
      LRFinderOptions().num_training(args.run.lr_find_steps).update_attr(true).attr_name("model.lr"));  // and model.lr
  if (!found.suggestion()) {
    std::printf("learning-rate finder: no suggestion (%zu points)\n", found.lrs().size());
    return;
  }
  const std::string plot = (args.run.log_dir.empty() ? std::string(".") : args.run.log_dir) + "/lr_find.svg";
  std::filesystem::create_directories(std::filesystem::path(plot).parent_path());
  found.save_plot(plot);
  found.save_csv(std::filesystem::path(plot).replace_extension(".csv").string());
  std::printf("learning-rate finder: %zu steps, suggested lr %.3g (the loss falls fastest there); plot: %s\n",
              found.lrs().size(), *found.suggestion(), plot.c_str());
}

template <class T, class Net, class Loader, class Data>
int fit_and_test(T& trainer, Net& model, Loader& train_batches, Data& val_batches, Data& test_batches, const Args& args) {
  const std::string& subcommand = args.cli.subcommand;
  if (subcommand == "fit") {
    if (args.run.lr_find) find_lr(trainer, model, train_batches, args);
    trainer.fit(model, train_batches, val_batches, args.cli.ckpt_path);
  } else {
    if (subcommand == "predict") throw cli::Error("fashion_mnist_trainer: predict is not offered; use test");
    if (!args.cli.ckpt_path.empty()) {
      // The checkpoint's weights (its optimizer state is fit's business).
      std::vector<std::shared_ptr<torch::optim::Optimizer>> optimizers{model.configure_optimizers()};
      load_checkpoint(args.cli.ckpt_path, model, optimizers);
    }
    if (subcommand == "validate") {
      for (const auto& [name, value] : trainer.validate(model, val_batches)) std::printf("%s: %.4f\n", name.c_str(), value);
      return 0;
    }
  }
  const auto results = trainer.test(model, test_batches);
  const double accuracy = results.at("test_acc");
  if (!trainer.is_global_zero()) return 0;  // rank 0 reports (the test values are over every rank's shard)
  std::printf("test accuracy: %.2f%% (test loss %.4f) after %lld optimizer steps\n", 100 * accuracy,
              results.at("test_loss"), static_cast<long long>(trainer.global_step()));
  if constexpr (!std::is_same_v<T, Trainer<>>) {  // the Trainer with loggers
    const std::filesystem::path tensorboard = trainer.template callback<TensorBoardLogger>().log_dir();
    const std::filesystem::path mlruns = trainer.template callback<MLFlowLogger>().run_dir().parent_path().parent_path();
    std::printf("logs: %s (metrics.csv, config.yaml), %s (TensorBoard: tensorboard --logdir %s), %s (MLflow: mlflow ui "
                "--backend-store-uri %s)\n",
                trainer.template callback<CSVLogger>().log_dir().c_str(), tensorboard.c_str(),
                tensorboard.parent_path().parent_path().c_str(), trainer.template callback<MLFlowLogger>().run_dir().c_str(),
                mlruns.c_str());
  }
  if (accuracy < args.run.min_accuracy) {
    std::fprintf(stderr, "test accuracy %.4f is below the required %.4f\n", accuracy, args.run.min_accuracy);
    return 1;
  }
  return 0;
}

template <class Net>
int run(const Args& args) {
  torch::manual_seed(0);
  MnistSplit train = read_mnist_split(args.data.dir, /*train=*/true);
  MnistSplit test = read_mnist_split(args.data.dir, /*train=*/false);
  // Lightning's hello world: the last 5000 training images validate.
  const std::int64_t n = train.labels.size(0);
  MnistSplit fit_part{train.images.slice(0, 0, n - 5000), train.labels.slice(0, 0, n - 5000)};
  MnistSplit val_part{train.images.slice(0, n - 5000), train.labels.slice(0, n - 5000)};
  DataLoader train_batches(TensorDataset(fit_part.images, fit_part.labels),
                           DataLoaderOptions().batch_size(args.data.batch_size).shuffle(true).seed(0));
  DataLoader val_batches(TensorDataset(val_part.images, val_part.labels), DataLoaderOptions().batch_size(1000));
  DataLoader test_batches(TensorDataset(test.images, test.labels), DataLoaderOptions().batch_size(1000));

  auto model = std::make_shared<Net>();
  model->lr = args.model.lr;
  model->save_hyperparameters(args.cli.hyperparameters);  // every option, as LightningCLI logs the configuration
  const TrainerOptions& options = args.cli.trainer;
  const std::string& log_dir = args.run.log_dir;
  CSVLogger::Options csv;
  csv.save_dir = log_dir;
  csv.name = "csv";
  TensorBoardLogger::Options tensorboard;
  tensorboard.save_dir = csv.save_dir;
  tensorboard.name = "tensorboard";
  MLFlowLogger::Options mlflow;
  mlflow.tracking_dir = log_dir + "/mlruns";
  mlflow.experiment_name = "fashion_mnist";
  mlflow.run_name = args.model.arch;
  mlflow.log_model = MLFlowLogger::LogModel::at_end;  // the checkpoints ModelCheckpoint keeps, as artifacts
  if (!log_dir.empty()) {
    ModelCheckpoint::Options checkpoints;
    checkpoints.dirpath = log_dir + "/checkpoints";
    checkpoints.monitor = "val_acc";
    checkpoints.mode = ModelCheckpoint::Mode::max;
    Trainer trainer(options, CSVLogger(csv), TensorBoardLogger(tensorboard), MLFlowLogger(mlflow), LearningRateMonitor(),
                    cli::SaveConfigCallback(args.cli), ParameterHistograms(),
                    PredictionImages(test.images.slice(0, 0, 32), test.labels.slice(0, 0, 32)), ModelCheckpoint(checkpoints));
    return fit_and_test(trainer, *model, train_batches, val_batches, test_batches, args);
  }
  Trainer trainer(options);
  return fit_and_test(trainer, *model, train_batches, val_batches, test_batches, args);
}

int main(int argc, char** argv) {
  Args args;
  cli::Parser parser("fashion_mnist_trainer", "Trains a CNN (or an MLP) on Fashion-MNIST with the Trainer, then tests it.");
  parser.trainer_defaults().max_epochs(6);
  parser.section("model", args.model).section("data", args.data).section("run", args.run);
  // The flags of before, as aliases.
  parser.alias("--model", "model.arch")
      .alias("--epochs", "trainer.max_epochs")
      .alias("--precision", "trainer.precision")
      .alias("--smoke", "trainer.fast_dev_run", "5")
      .alias("--data", "data.dir")
      .alias("--log-dir", "run.log_dir")
      .alias("--profile", "trainer.profiler", "true")
      .alias("--min-accuracy", "run.min_accuracy")
      .alias("--strategy", "trainer.strategy")
      .alias("--devices", "trainer.devices")
      .alias("--lr_find", "run.lr_find", "true");
  try {
    args.cli = parser.parse(argc, argv);
    if (args.cli.exit_code) return *args.cli.exit_code;
    if (args.model.arch != "cnn" && args.model.arch != "mlp")
      throw cli::Error("fashion_mnist_trainer: option '--model.arch': '" + args.model.arch + "' is not \"cnn\" or \"mlp\"");
    return args.model.arch == "mlp" ? run<Mlp>(args) : run<Cnn>(args);
  } catch (const cli::Error& error) {
    std::fprintf(stderr, "%s\n", error.what());
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s\n", error.what());
    return 1;
  }
}
