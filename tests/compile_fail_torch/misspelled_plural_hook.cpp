// expect: trainloop: a LightningModule or callback declares on_train_epoch_ends, which is not a hook; write on_train_epoch_end
#include "common.hpp"
struct Net : trainloop::LightningModule<Net> {
  torch::nn::Linear fc{nullptr};
  Net() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  torch::Tensor training_step(Batch& b, std::int64_t) { return torch::mse_loss(fc(b.first), b.second); }
  auto configure_optimizers() { return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1)); }
};
struct Reporter {
  template <class T, class M>
  void on_train_epoch_ends(T&, M&) {}  // a plural: compiled silently before, never called
};
int main() {
  Net net;
  trainloop::Trainer trainer(trainloop::TrainerOptions(), Reporter{});
  trainer.fit(net, some_data());
}
