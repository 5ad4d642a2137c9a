// Lightning's "MNIST hello world", on Fashion-MNIST, in C++: a LightningModule (an MLP or a CNN), Trainer.fit with
// validation and a progress bar, then Trainer.test. The data is Debian's dataset-fashion-mnist (real IDX .gz files).
//
//   fashion_mnist_trainer [--model cnn|mlp] [--epochs N] [--precision P] [--smoke] [--data DIR] [--log-dir DIR]
//                         [--min-accuracy A] [--strategy ddp --devices N]
//
// --smoke runs a few batches (fast_dev_run, for CI); --log-dir writes the logged metrics (every 50 steps and every
// epoch), the learning rate and the hyperparameters as CSV (DIR/csv/version_N/metrics.csv) and TensorBoard event files
// (DIR/tensorboard/version_N/); --profile prints where the time went; --min-accuracy makes the program fail when the
// test accuracy is lower; --precision is the Trainer's ("32", "bf16-mixed" on CPU or CUDA, "16-mixed" on CUDA).
// --strategy ddp --devices N trains data-parallel in N processes (this one is rank 0 and starts the others; under
// torchrun/srun/mpirun, --strategy ddp alone): each rank trains on its shard of every epoch, batch 64 per rank.
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
  void test_step(ImageBatch& batch, std::int64_t) { evaluate(batch, "test"); }
  std::shared_ptr<torch::optim::Adam> configure_optimizers() {
    return std::make_shared<torch::optim::Adam>(this->parameters(), torch::optim::AdamOptions(1e-3));
  }

 private:
  Net& self() { return static_cast<Net&>(*this); }
  void evaluate(ImageBatch& batch, const std::string& prefix) {
    torch::Tensor logits = self().forward(batch.first);
    const auto size = batch.second.size(0);
    this->log(prefix + "_loss", torch::nn::functional::cross_entropy(logits, batch.second),
              LogOptions().batch_size(size));
    this->log(prefix + "_acc", logits.argmax(1).eq(batch.second).to(torch::kFloat32).mean(),
              LogOptions().prog_bar(true).batch_size(size));
  }
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

template <class T, class Net, class Data>
int fit_and_test(T& trainer, Net& model, Data& train_batches, Data& val_batches, Data& test_batches,
                 double min_accuracy) {
  trainer.fit(model, train_batches, val_batches);
  const auto results = trainer.test(model, test_batches);
  const double accuracy = results.at("test_acc");
  if (!trainer.is_global_zero()) return 0;  // rank 0 reports (the test values are over every rank's shard)
  std::printf("test accuracy: %.2f%% (test loss %.4f) after %lld optimizer steps\n", 100 * accuracy,
              results.at("test_loss"), static_cast<long long>(trainer.global_step()));
  if constexpr (!std::is_same_v<T, Trainer<>>) {  // the Trainer with loggers
    const std::filesystem::path tensorboard = trainer.template callback<TensorBoardLogger>().log_dir();
    const std::filesystem::path mlruns = trainer.template callback<MLFlowLogger>().run_dir().parent_path().parent_path();
    std::printf("logs: %s (metrics.csv), %s (TensorBoard: tensorboard --logdir %s), %s (MLflow: mlflow ui "
                "--backend-store-uri %s)\n",
                trainer.template callback<CSVLogger>().log_dir().c_str(), tensorboard.c_str(),
                tensorboard.parent_path().parent_path().c_str(), trainer.template callback<MLFlowLogger>().run_dir().c_str(),
                mlruns.c_str());
  }
  if (accuracy < min_accuracy) {
    std::fprintf(stderr, "test accuracy %.4f is below the required %.4f\n", accuracy, min_accuracy);
    return 1;
  }
  return 0;
}

template <class Net>
int run(const std::string& data_dir, std::int64_t epochs, const std::string& precision, bool smoke, const std::string& log_dir,
        bool profile, double min_accuracy, const std::string& strategy, int devices) {
  torch::manual_seed(0);
  MnistSplit train = read_mnist_split(data_dir, /*train=*/true);
  MnistSplit test = read_mnist_split(data_dir, /*train=*/false);
  // Lightning's hello world: the last 5000 training images validate.
  const std::int64_t n = train.labels.size(0);
  MnistSplit fit_part{train.images.slice(0, 0, n - 5000), train.labels.slice(0, 0, n - 5000)};
  MnistSplit val_part{train.images.slice(0, n - 5000), train.labels.slice(0, n - 5000)};
  DataLoader train_batches(TensorDataset(fit_part.images, fit_part.labels),
                           DataLoaderOptions().batch_size(64).shuffle(true).seed(0));
  DataLoader val_batches(TensorDataset(val_part.images, val_part.labels), DataLoaderOptions().batch_size(1000));
  DataLoader test_batches(TensorDataset(test.images, test.labels), DataLoaderOptions().batch_size(1000));

  auto model = std::make_shared<Net>();
  model->save_hyperparameters({{"model", std::string(std::is_same_v<Net, Cnn> ? "cnn" : "mlp")}, {"batch_size", std::int64_t{64}},
                               {"max_epochs", epochs}, {"seed", std::int64_t{0}}});
  TrainerOptions options =
      TrainerOptions().max_epochs(epochs).accelerator("auto").profiler(profile).precision(precision).strategy(strategy).devices(devices);
  if (smoke) options.fast_dev_run(5);
  CSVLogger::Options csv;
  csv.save_dir = log_dir;
  csv.name = "csv";
  TensorBoardLogger::Options tensorboard;
  tensorboard.save_dir = csv.save_dir;
  tensorboard.name = "tensorboard";
  MLFlowLogger::Options mlflow;
  mlflow.tracking_dir = log_dir + "/mlruns";
  mlflow.experiment_name = "fashion_mnist";
  mlflow.run_name = std::is_same_v<Net, Cnn> ? "cnn" : "mlp";
  if (!log_dir.empty()) {
    Trainer trainer(options, CSVLogger(csv), TensorBoardLogger(tensorboard), MLFlowLogger(mlflow), LearningRateMonitor());
    return fit_and_test(trainer, *model, train_batches, val_batches, test_batches, min_accuracy);
  }
  Trainer trainer(options);
  return fit_and_test(trainer, *model, train_batches, val_batches, test_batches, min_accuracy);
}

int main(int argc, char** argv) {
  std::string model = "cnn", data_dir = fashion_mnist_debian_dir, log_dir, precision = "32", strategy = "auto";
  int devices = 0;
  std::int64_t epochs = 6;
  bool smoke = false, profile = false;
  double min_accuracy = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--smoke") smoke = true;
    else if (arg == "--model" && i + 1 < argc) model = argv[++i];
    else if (arg == "--epochs" && i + 1 < argc) epochs = std::stoll(argv[++i]);
    else if (arg == "--data" && i + 1 < argc) data_dir = argv[++i];
    else if (arg == "--log-dir" && i + 1 < argc) log_dir = argv[++i];
    else if (arg == "--profile") profile = true;
    else if (arg == "--precision" && i + 1 < argc) precision = argv[++i];
    else if (arg == "--min-accuracy" && i + 1 < argc) min_accuracy = std::stod(argv[++i]);
    else if (arg == "--strategy" && i + 1 < argc) strategy = argv[++i];
    else if (arg == "--devices" && i + 1 < argc) devices = std::stoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--model cnn|mlp] [--epochs N] [--precision P] [--smoke] [--data DIR] "
                           "[--log-dir DIR] [--profile] [--min-accuracy A] [--strategy ddp --devices N]\n", argv[0]);
      return 2;
    }
  }
  try {
    return model == "mlp" ? run<Mlp>(data_dir, epochs, precision, smoke, log_dir, profile, min_accuracy, strategy, devices)
                          : run<Cnn>(data_dir, epochs, precision, smoke, log_dir, profile, min_accuracy, strategy, devices);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s\n", error.what());
    return 1;
  }
}
