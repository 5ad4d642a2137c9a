// expect: trainloop: the module must derive from trainloop::LightningModule<Module>
#include "common.hpp"
struct Net : torch::nn::Module {
  torch::Tensor training_step(Batch& b, std::int64_t) { return b.first.sum(); }
};
int main() {
  Net net;
  trainloop::Trainer trainer;
  trainer.fit(net, some_data());
}
