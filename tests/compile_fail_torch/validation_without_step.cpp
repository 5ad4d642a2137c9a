// expect: trainloop: fit\(\) was given validation data, but the module has no validation_step
#include "common.hpp"
struct Net : trainloop::LightningModule<Net> {
  torch::nn::Linear fc{nullptr};
  Net() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  torch::Tensor training_step(Batch& b, std::int64_t) { return torch::mse_loss(fc(b.first), b.second); }
  auto configure_optimizers() { return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1)); }
};
int main() {
  Net net;
  trainloop::Trainer trainer;
  trainer.fit(net, some_data(), some_data());
}
