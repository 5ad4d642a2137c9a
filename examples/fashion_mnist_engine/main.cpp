// Fashion-MNIST with the Ignite face: a trainer Engine runs the optimisation step, an evaluator Engine measures test
// accuracy after each epoch. The data is Debian's dataset-fashion-mnist (real IDX .gz files).
//
//   fashion_mnist_engine [--smoke] [--epochs N] [--data DIR] [--log-dir DIR] [--min-accuracy A]
//
// --smoke runs a few batches (for CI); --log-dir writes one CSV row per epoch to DIR/metrics.csv; --min-accuracy
// makes the program fail when the final test accuracy is lower.
#include <trainloop.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "../common/metrics_csv.hpp"

using Batch = trainloop::TensorBatch<2>;  // images [B, 1, 28, 28], labels [B]

struct Mlp : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  Mlp() {
    fc1 = register_module("fc1", torch::nn::Linear(784, 128));
    fc2 = register_module("fc2", torch::nn::Linear(128, 10));
  }
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::relu(fc1(x.flatten(1)))); }
};

int main(int argc, char** argv) {
  bool smoke = false;
  std::uint64_t epochs = 3;
  double min_accuracy = 0;
  std::string data_dir = trainloop::fashion_mnist_debian_dir;
  std::string log_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--smoke") smoke = true;
    else if (arg == "--epochs" && i + 1 < argc) epochs = std::stoull(argv[++i]);
    else if (arg == "--data" && i + 1 < argc) data_dir = argv[++i];
    else if (arg == "--log-dir" && i + 1 < argc) log_dir = argv[++i];
    else if (arg == "--min-accuracy" && i + 1 < argc) min_accuracy = std::stod(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--smoke] [--epochs N] [--data DIR] [--log-dir DIR] [--min-accuracy A]\n",
                   argv[0]);
      return 2;
    }
  }
  using namespace trainloop;
  torch::manual_seed(0);

  MnistSplit train_split, test_split;
  try {
    train_split = read_mnist_split(data_dir, /*train=*/true);
    test_split = read_mnist_split(data_dir, /*train=*/false);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s\n", error.what());
    return 1;
  }
  std::ofstream metrics_csv;
  if (!open_metrics_csv(log_dir, "epoch,iteration,train_loss,test_accuracy,epoch_seconds", metrics_csv)) return 1;
  if (smoke) {
    test_split.images = test_split.images.slice(0, 0, 1000);
    test_split.labels = test_split.labels.slice(0, 0, 1000);
  }
  std::vector<Batch> test_batches;
  for (std::int64_t start = 0; start < test_split.labels.size(0); start += 1000)
    test_batches.emplace_back(test_split.images.slice(0, start, start + 1000), test_split.labels.slice(0, start, start + 1000));
  // A new order at every pass, from the loader's own seed.
  DataLoader train_batches(TensorDataset(train_split.images, train_split.labels),
                           DataLoaderOptions().batch_size(64).shuffle(true).seed(0));

  auto model = std::make_shared<Mlp>();
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-3));

  // The evaluator: counts correct predictions on the device; the host reads the count once, at the end.
  torch::Tensor correct;
  auto evaluator = make_engine([&](Batch& batch) {
    return model->forward(batch.first).argmax(1).eq(batch.second).sum();
  });
  evaluator.on(Events::started, [&] { correct = torch::zeros({}, torch::kLong); });
  evaluator.on(Events::iteration_completed, [&](auto& e) { correct += e.output(); });
  evaluator.on(Events::completed, [&](auto& e) {
    e.state.metrics["accuracy"] = correct.template item<double>() / double(test_split.labels.size(0));
  });

  // The trainer: the step returns the loss as a tensor (no host sync); handlers read it only when they print.
  torch::Tensor loss_sum;
  auto trainer = make_engine([&](Batch& batch) {
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(batch.first), batch.second);
    loss.backward();
    optimizer.step();
    return loss.detach();
  });
  trainer.on(Events::epoch_started, [&] { loss_sum = torch::zeros({}); });
  trainer.on(Events::iteration_completed, [&](auto& e) { loss_sum += e.output(); });
  trainer.on(Events::iteration_completed | every(smoke ? 10 : 300), [&](auto& e) {
    std::printf("  epoch %llu  iteration %5llu  loss %.4f\n", static_cast<unsigned long long>(e.state.epoch),
                static_cast<unsigned long long>(e.state.iteration), e.output().template item<double>());
    std::fflush(stdout);
  });
  trainer.on(Events::epoch_completed, [&](auto& e) {
    model->eval();
    {
      torch::NoGradGuard no_grad;
      evaluator.run(test_batches);
    }
    model->train();
    const double mean_loss = loss_sum.template item<double>() / double(e.state.epoch_iteration);
    e.state.metrics["test_accuracy"] = evaluator.state.metrics["accuracy"];
    std::printf("epoch %llu: train loss %.4f, test accuracy %.2f%% (%.1f s)\n",
                static_cast<unsigned long long>(e.state.epoch), mean_loss, 100 * evaluator.state.metrics["accuracy"],
                e.state.times["epoch_completed"]);
    std::fflush(stdout);
    metrics_csv << e.state.epoch << ',' << e.state.iteration << ',' << mean_loss << ','
                  << evaluator.state.metrics["accuracy"] << ',' << e.state.times["epoch_completed"] << std::endl;
  });

  RunOptions run = max_epochs(smoke ? 1 : epochs);  // an epoch is one pass over the batches...
  if (smoke) run.epoch_length(20);                   // ... or, for --smoke, its first 20
  trainer.run(train_batches, run);

  const double accuracy = trainer.state.metrics["test_accuracy"];
  std::printf("final test accuracy: %.2f%%\n", 100 * accuracy);
  if (!log_dir.empty()) std::printf("metrics written to %s/metrics.csv\n", log_dir.c_str());
  if (accuracy < min_accuracy) {
    std::fprintf(stderr, "test accuracy %.4f is below the required %.4f\n", accuracy, min_accuracy);
    return 1;
  }
  return 0;
}
