// expect: trainloop: fit\(\): the module has no training_step\(Batch& batch, std::int64_t batch_idx\)
#include "common.hpp"
struct Net : trainloop::LightningModule<Net> {
  torch::nn::Linear fc{nullptr};
  Net() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  torch::Tensor training_step(const torch::Tensor& x) { return fc(x).sum(); }  // not (batch, batch_idx)
};
int main() {
  Net net;
  trainloop::Trainer trainer;
  trainer.fit(net, some_data());
}
