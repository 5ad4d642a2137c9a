// The Conan package's test, for every value of its options: with_torch=False runs the torch-free Engine (a step
// function over data with a filtered handler); with_torch=True (the recipe's default) fits y = 3x - 1 with the Trainer
// on this machine's LibTorch, which the package's build module found and linked.
#include <trainloop.hpp>

#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#if TRAINLOOP_WITH_TORCH
struct Line : trainloop::LightningModule<Line> {
  torch::nn::Linear fc{nullptr};
  Line() { fc = register_module("fc", torch::nn::Linear(1, 1)); }
  torch::Tensor training_step(trainloop::TensorBatch<2>& batch, std::int64_t) {
    return torch::mse_loss(fc(batch.first), batch.second);
  }
  trainloop::OptimizerConfig configure_optimizers() {
    return trainloop::OptimizerConfig(std::make_shared<torch::optim::SGD>(parameters(), 0.5));
  }
};

int main() {
  torch::manual_seed(0);
  const torch::Tensor x = torch::rand({64, 1}), y = 3 * x - 1;
  trainloop::DataLoader data(trainloop::TensorDataset<2>(x, y), trainloop::DataLoaderOptions().batch_size(16));
  Line line;
  trainloop::Trainer trainer(trainloop::TrainerOptions().max_epochs(100).accelerator("cpu").enable_progress_bar(false)
                                 .enable_model_summary(false));
  trainer.fit(line, data);
  const double w = line.fc->weight.item<double>(), b = line.fc->bias.item<double>();
  std::printf("trainloop %s with LibTorch: the Trainer fitted y = %.3fx %+.3f in %lld steps\n", trainloop::version_string,
              w, b, static_cast<long long>(trainer.global_step()));
  return std::abs(w - 3) < 0.1 && std::abs(b + 1) < 0.1 ? 0 : 1;
}
#else
int main() {
  std::vector<int> data{1, 2, 3, 4};
  int sum = 0, every_second = 0;
  auto engine = trainloop::make_engine([&sum](int& batch) { sum += batch; });
  engine.on(trainloop::Events::iteration_completed | trainloop::every(2), [&every_second](auto&) { ++every_second; });
  engine.run(data, trainloop::max_epochs(3));
  std::printf("trainloop %s, torch-free: sum %d, handler called %d times\n", trainloop::version_string, sum,
              every_second);
  return sum == 30 && every_second == 6 ? 0 : 1;
}
#endif
