// compile_cost: the same work as hand_written.cpp through LightningModule + Trainer (fit with validation, then test).
#include <trainloop.hpp>

#include <utility>
#include <vector>

using namespace trainloop;
using Batch = std::pair<torch::Tensor, torch::Tensor>;

struct Mlp : LightningModule<Mlp> {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  Mlp() {
    fc1 = register_module("fc1", torch::nn::Linear(16, 32));
    fc2 = register_module("fc2", torch::nn::Linear(32, 4));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  torch::Tensor training_step(Batch& b, std::int64_t) {
    return torch::nn::functional::cross_entropy(forward(b.first), b.second);
  }
  void validation_step(Batch& b, std::int64_t) { evaluate(b, "val"); }
  void test_step(Batch& b, std::int64_t) { evaluate(b, "test"); }
  void evaluate(Batch& b, const std::string& stage) {
    const torch::Tensor logits = forward(b.first);
    log(stage + "_loss", torch::nn::functional::cross_entropy(logits, b.second));
    log(stage + "_acc", (logits.argmax(1) == b.second).to(torch::kFloat).mean());
  }
  std::shared_ptr<torch::optim::Adam> configure_optimizers() {
    return std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(1e-3));
  }
};

int main() {
  torch::manual_seed(0);
  std::vector<Batch> train, val;
  for (int i = 0; i < 8; ++i) train.emplace_back(torch::randn({32, 16}), torch::randint(0, 4, {32}));
  for (int i = 0; i < 2; ++i) val.emplace_back(torch::randn({32, 16}), torch::randint(0, 4, {32}));
  Mlp model;
  Trainer trainer(TrainerOptions().max_epochs(2).accelerator("cpu"));
  trainer.fit(model, train, val);
  trainer.test(model, val);
}
