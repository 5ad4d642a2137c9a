// Compile-only check: instantiates the torch-facing parts of the header, so `-fsyntax-only` against another
// LibTorch (2.x, CUDA builds) or another language standard (C++20) proves they still compile there.
#include <trainloop.hpp>

#include <utility>
#include <vector>

int main() {
  using Batch = std::pair<torch::Tensor, torch::Tensor>;
  torch::nn::Linear model(4, 2);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1));
  auto engine = trainloop::make_engine([&](trainloop::EngineCore&, Batch& batch) {
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model(batch.first), batch.second);
    loss.backward();
    optimizer.step();
    return loss.detach();
  }, trainloop::Timer{}, trainloop::on(trainloop::Events::iteration_completed | trainloop::every(10), [](auto& e) {
    e.state.metrics["loss"] = e.output().template item<double>();
  }));
  std::vector<Batch> data{{torch::randn({8, 4}), torch::randint(2, {8})}};
  engine.run(data, trainloop::max_epochs(1));
  trainloop::MnistSplit split = trainloop::read_mnist_split(trainloop::fashion_mnist_debian_dir, false);
  return static_cast<int>(split.labels.size(0) + trainloop::read_idx("x.idx").dim());
}
