// Lightning's "MNIST hello world", on Fashion-MNIST, in C++: a LightningModule (an MLP or a CNN), Trainer.fit with
// validation and a progress bar, then Trainer.test. The data is Debian's dataset-fashion-mnist (real IDX .gz files).
//
//   fashion_mnist_trainer [--model cnn|mlp] [--epochs N] [--smoke] [--data DIR] [--log-dir DIR] [--min-accuracy A]
//
// --smoke runs a few batches (fast_dev_run, for CI); --log-dir writes one CSV row per epoch to DIR/metrics.csv;
// --min-accuracy makes the program fail when the test accuracy is lower.
#include <trainloop.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "../common/metrics_csv.hpp"

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

// Writes the epoch-level metrics to a CSV file (the loggers issue brings CSV/TensorBoard/MLflow loggers). It is a
// monitoring callback, so its on_train_epoch_end runs after the epoch's train values are published.
struct CsvEpochLog {
  static constexpr bool trainloop_monitoring_callback = true;
  std::ofstream* out;
  template <class T, class M>
  void on_train_epoch_end(T& trainer, M&) {
    const auto& m = trainer.callback_metrics();
    auto value = [&](const char* name) { return m.count(name) ? m.at(name).template item<double>() : NAN; };
    *out << trainer.current_epoch() << ',' << trainer.global_step() << ',' << trainer.total_batches() << ','
         << value("loss") << ',' << value("val_loss") << ',' << value("val_acc") << std::endl;
  }
};

template <class Net>
int run(const std::string& data_dir, std::int64_t epochs, bool smoke, std::ofstream& csv, double min_accuracy) {
  torch::manual_seed(0);
  MnistSplit train = read_mnist_split(data_dir, /*train=*/true);
  MnistSplit test = read_mnist_split(data_dir, /*train=*/false);
  // Lightning's hello world: the last 5000 training images validate.
  const std::int64_t n = train.labels.size(0);
  MnistSplit fit_part{train.images.slice(0, 0, n - 5000), train.labels.slice(0, 0, n - 5000)};
  MnistSplit val_part{train.images.slice(0, n - 5000), train.labels.slice(0, n - 5000)};
  DataLoader<2> train_batches(TensorDataset(fit_part.images, fit_part.labels),
                              DataLoaderOptions().batch_size(64).shuffle(true).seed(0));
  DataLoader<2> val_batches(TensorDataset(val_part.images, val_part.labels), DataLoaderOptions().batch_size(1000));
  DataLoader<2> test_batches(TensorDataset(test.images, test.labels), DataLoaderOptions().batch_size(1000));

  auto model = std::make_shared<Net>();
  TrainerOptions options = TrainerOptions().max_epochs(epochs).accelerator("auto");
  if (smoke) options.fast_dev_run(5);
  Trainer trainer(options, CsvEpochLog{&csv});
  trainer.fit(*model, train_batches, val_batches);
  const auto results = trainer.test(*model, test_batches);
  const double accuracy = results.at("test_acc");
  std::printf("test accuracy: %.2f%% (test loss %.4f) after %lld optimizer steps\n", 100 * accuracy,
              results.at("test_loss"), static_cast<long long>(trainer.global_step()));
  if (accuracy < min_accuracy) {
    std::fprintf(stderr, "test accuracy %.4f is below the required %.4f\n", accuracy, min_accuracy);
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  std::string model = "cnn", data_dir = fashion_mnist_debian_dir, log_dir;
  std::int64_t epochs = 6;
  bool smoke = false;
  double min_accuracy = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--smoke") smoke = true;
    else if (arg == "--model" && i + 1 < argc) model = argv[++i];
    else if (arg == "--epochs" && i + 1 < argc) epochs = std::stoll(argv[++i]);
    else if (arg == "--data" && i + 1 < argc) data_dir = argv[++i];
    else if (arg == "--log-dir" && i + 1 < argc) log_dir = argv[++i];
    else if (arg == "--min-accuracy" && i + 1 < argc) min_accuracy = std::stod(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--model cnn|mlp] [--epochs N] [--smoke] [--data DIR] [--log-dir DIR] "
                           "[--min-accuracy A]\n", argv[0]);
      return 2;
    }
  }
  std::ofstream csv;
  if (!open_metrics_csv(log_dir, "epoch,global_step,batches,train_loss,val_loss,val_acc", csv)) return 1;
  try {
    const int rc = model == "mlp" ? run<Mlp>(data_dir, epochs, smoke, csv, min_accuracy)
                                  : run<Cnn>(data_dir, epochs, smoke, csv, min_accuracy);
    if (!log_dir.empty()) std::printf("metrics written to %s/metrics.csv\n", log_dir.c_str());
    return rc;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s\n", error.what());
    return 1;
  }
}
