// The CNN that examples/fashion_mnist_dataset and examples/image_folder train on the same augmented Fashion-MNIST
// pixels (from the IDX files in memory, and from image files): one model, so their accuracies compare.
#pragma once
#include <trainloop.hpp>

#include <memory>

using ImageBatch = trainloop::TensorBatch<2>;  // images [B, 1, 28, 28] float, labels [B] int64

struct AugmentedCnn : trainloop::LightningModule<AugmentedCnn> {
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  AugmentedCnn() {
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
  torch::Tensor training_step(ImageBatch& batch, std::int64_t) {
    torch::Tensor loss = torch::nn::functional::cross_entropy(forward(batch.first), batch.second);
    log("loss", loss, trainloop::LogOptions().prog_bar(true).on_epoch(true));
    return loss;
  }
  void test_step(ImageBatch& batch, std::int64_t) {
    log("test_acc", forward(batch.first).argmax(1).eq(batch.second).to(torch::kFloat32).mean(),
        trainloop::LogOptions().prog_bar(true).batch_size(batch.second.size(0)));
  }
  std::shared_ptr<torch::optim::Adam> configure_optimizers() {
    return std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(1e-3));
  }
};
