// compile_cost: the baseline. An MLP trained with Adam by a hand-written LibTorch loop, with a validation pass per
// epoch and a test pass: what trainer.cpp does through the Trainer, written the way a LibTorch user would.
#include <torch/torch.h>

#include <cstdio>
#include <utility>
#include <vector>

using Batch = std::pair<torch::Tensor, torch::Tensor>;

struct MlpImpl : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  MlpImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(16, 32));
    fc2 = register_module("fc2", torch::nn::Linear(32, 4));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x))); }
};
TORCH_MODULE(Mlp);

double evaluate(Mlp& model, const std::vector<Batch>& data) {
  torch::NoGradGuard no_grad;
  model->eval();
  torch::Tensor loss_sum = torch::zeros({});
  torch::Tensor correct = torch::zeros({}, torch::kLong);
  std::int64_t seen = 0;
  for (const auto& [x, y] : data) {
    const torch::Tensor logits = model->forward(x);
    loss_sum += torch::nn::functional::cross_entropy(logits, y) * x.size(0);
    correct += (logits.argmax(1) == y).sum();
    seen += x.size(0);
  }
  model->train();
  std::printf("loss %.4f accuracy %.4f\n", loss_sum.item<double>() / seen, correct.item<double>() / seen);
  return loss_sum.item<double>() / seen;
}

int main() {
  torch::manual_seed(0);
  std::vector<Batch> train, val;
  for (int i = 0; i < 8; ++i) train.emplace_back(torch::randn({32, 16}), torch::randint(0, 4, {32}));
  for (int i = 0; i < 2; ++i) val.emplace_back(torch::randn({32, 16}), torch::randint(0, 4, {32}));
  Mlp model;
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-3));
  for (int epoch = 0; epoch < 2; ++epoch) {
    for (const auto& [x, y] : train) {
      optimizer.zero_grad();
      torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
      loss.backward();
      optimizer.step();
    }
    evaluate(model, val);
  }
  evaluate(model, val);  // the test pass
}
