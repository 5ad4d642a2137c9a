// expect: trainloop: optimizer_step\(epoch, batch_idx, optimizer\) takes Lightning's closure now
#include "common.hpp"
// trainloop 0.1's optimizer_step form, which stepped after the backward: the error names Lightning's form instead of
// leaving the override uncalled.
struct Net : trainloop::LightningModule<Net> {
  torch::nn::Linear fc{nullptr};
  Net() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  torch::Tensor training_step(Batch& b, std::int64_t) { return torch::mse_loss(fc(b.first), b.second); }
  auto configure_optimizers() { return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1)); }
  void optimizer_step(std::int64_t, std::int64_t, torch::optim::Optimizer& optimizer) { optimizer.step(); }
};
int main() {
  Net net;
  trainloop::Trainer trainer{trainloop::TrainerOptions()};
  trainer.fit(net, some_data());
}
