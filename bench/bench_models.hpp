// The models the step-time benchmarks train, one definition each: the loop is what they compare.
#pragma once
#include <trainloop.hpp>

#include <cstdint>
#include <memory>
#include <utility>

namespace bench {
using Batch = std::pair<torch::Tensor, torch::Tensor>;

// Fashion-MNIST's shape: 784 -> 128 -> 10, cross-entropy, plain SGD (what the hand-written baselines use too).
struct Mlp : trainloop::LightningModule<Mlp> {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  Mlp() {
    fc1 = register_module("fc1", torch::nn::Linear(784, 128));
    fc2 = register_module("fc2", torch::nn::Linear(128, 10));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  torch::Tensor training_step(Batch& b, std::int64_t) {
    return torch::nn::functional::cross_entropy(forward(b.first), b.second);
  }
  std::shared_ptr<torch::optim::SGD> configure_optimizers() {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(1e-3));
  }
};

// The main example's CNN shape (two 3x3 convolutions, two linear layers), SGD with momentum; the loss in float32, as
// autocast's outputs need.
struct Cnn : trainloop::LightningModule<Cnn> {
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  Cnn() {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 3)));
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 3)));
    fc1 = register_module("fc1", torch::nn::Linear(32 * 5 * 5, 128));
    fc2 = register_module("fc2", torch::nn::Linear(128, 10));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = torch::max_pool2d(torch::relu(conv1(x)), 2);
    h = torch::max_pool2d(torch::relu(conv2(h)), 2);
    return fc2(torch::relu(fc1(h.flatten(1))));
  }
  static torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& y) {
    return torch::nn::functional::cross_entropy(logits.to(torch::kFloat32), y);
  }
  torch::Tensor training_step(Batch& b, std::int64_t) { return loss(forward(b.first), b.second); }
  std::shared_ptr<torch::optim::SGD> configure_optimizers() {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(1e-3).momentum(0.9));
  }
};
}  // namespace bench
