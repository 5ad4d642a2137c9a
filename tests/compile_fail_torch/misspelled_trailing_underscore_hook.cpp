// expect: trainloop: a LightningModule or callback declares on_validation_end_, which is not a hook; write on_validation_end
#include "common.hpp"
struct Net : trainloop::LightningModule<Net> {
  torch::nn::Linear fc{nullptr};
  Net() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  torch::Tensor training_step(Batch& b, std::int64_t) { return torch::mse_loss(fc(b.first), b.second); }
  void on_validation_end_() {}  // a stray underscore
  auto configure_optimizers() { return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1)); }
};
int main() {
  Net net;
  trainloop::Trainer trainer;
  trainer.fit(net, some_data());
}
