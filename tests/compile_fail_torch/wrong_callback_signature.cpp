// expect: trainloop: a callback declares on_train_batch_end but it cannot be called as on_train_batch_end\(trainer&, module&, const Output& outputs, Batch& batch, std::int64_t batch_idx\)
#include "common.hpp"
struct Net : trainloop::LightningModule<Net> {
  torch::nn::Linear fc{nullptr};
  Net() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  torch::Tensor training_step(Batch& b, std::int64_t) { return torch::mse_loss(fc(b.first), b.second); }
  auto configure_optimizers() { return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1)); }
};
struct Printer {
  void on_train_batch_end(std::int64_t batch_idx) { (void)batch_idx; }  // misses trainer, module, outputs, batch
};
int main() {
  Net net;
  trainloop::Trainer trainer(trainloop::TrainerOptions(), Printer{});
  trainer.fit(net, some_data());
}
