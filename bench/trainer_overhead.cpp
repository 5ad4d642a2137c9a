// What the Trainer costs: Trainer(barebones) fitting a model, against a hand-written LibTorch loop doing identical
// work (zero_grad, forward, loss, backward, step) on the same batches, interleaved in one process, median of
// repeats, one intra-op thread, the same allocator tuning for both. Two models: Linear(1, 1) with batch 1 (so the
// loop's own cost shows) and a 784-128-10 MLP with batch 64. Then what weight and gradient histograms cost: the
// Trainer with a TensorBoardLogger, with and without ParameterHistograms every 100 steps (every parameter's weights
// and gradients over TensorFlow's edges), on the MLP and on the main example's CNN, batch 64.
//
//   trainer_overhead [--smoke]
#include <trainloop.hpp>

#include <cstring>
#include <filesystem>
#include <vector>

#include "bench_common.hpp"
#include "bench_models.hpp"

using namespace trainloop;
using Batch = std::pair<torch::Tensor, torch::Tensor>;

namespace {
struct Tiny : LightningModule<Tiny> {
  torch::nn::Linear fc{nullptr};
  Tiny() { fc = register_module("fc", torch::nn::Linear(1, 1)); }
  torch::Tensor forward(const torch::Tensor& x) { return fc(x); }
  torch::Tensor training_step(Batch& b, std::int64_t) { return torch::mse_loss(forward(b.first), b.second); }
  std::shared_ptr<torch::optim::SGD> configure_optimizers() {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(1e-3));
  }
};
using bench::Mlp;

// The physical limit: the loop a LibTorch user writes by hand.
template <class Model, class Loss>
void hand_written(Model& model, const std::vector<Batch>& data, Loss loss_fn) {
  torch::optim::SGD optimizer(model.parameters(), torch::optim::SGDOptions(1e-3));
  for (const auto& [x, y] : data) {
    optimizer.zero_grad();
    torch::Tensor loss = loss_fn(model.forward(x), y);
    loss.backward();
    optimizer.step();
  }
}

template <class Model, class Loss>
void compare(const char* title, std::vector<Batch> data, Loss loss_fn, int rounds) {
  // One model for both: the same parameters in the same memory, so only the loop differs.
  Model model;
  Trainer trainer(TrainerOptions().barebones(true).accelerator("cpu").max_epochs(1));
  std::vector<bench::Variant> variants{
      {"hand-written LibTorch loop (baseline)", [&] { hand_written(model, data, loss_fn); }, double(data.size())},
      {"Trainer, barebones", [&] { trainer.fit(model, data); }, double(data.size())},
  };
  bench::run_interleaved(title, variants, rounds, 1e6, "us/step");
}

template <class Model, class Loss>
void compare_histograms(const char* title, std::vector<Batch> data, Loss loss_fn, int rounds) {
  Model model;
  const std::filesystem::path logs = std::filesystem::temp_directory_path() / "trainloop_bench_histograms";
  std::filesystem::remove_all(logs);
  VersionedLoggerOptions plain_logs, histogram_logs;
  plain_logs.save_dir = (logs / "plain").string();
  histogram_logs.save_dir = (logs / "histograms").string();
  const TrainerOptions options = TrainerOptions().accelerator("cpu").max_epochs(1).enable_progress_bar(false)
                                     .enable_model_summary(false).num_sanity_val_steps(0);
  Trainer plain(options, TensorBoardLogger(plain_logs));
  Trainer with_histograms(options, TensorBoardLogger(histogram_logs), ParameterHistograms());
  std::vector<bench::Variant> variants{
      {"hand-written LibTorch loop (baseline)", [&] { hand_written(model, data, loss_fn); }, double(data.size())},
      {"Trainer + TensorBoardLogger", [&] { plain.fit(model, data); }, double(data.size())},
      {"Trainer + TensorBoardLogger + ParameterHistograms(every 100 steps)", [&] { with_histograms.fit(model, data); },
       double(data.size())},
  };
  bench::run_interleaved(title, variants, rounds, 1e6, "us/step");
  std::filesystem::remove_all(logs);
}
}  // namespace

int main(int argc, char** argv) {
  const bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  torch::set_num_threads(1);
  tune_glibc_malloc();  // what the Trainer does by default, given to the hand-written loop too
  torch::manual_seed(0);
  const int rounds = smoke ? 2 : 21;

  std::vector<Batch> tiny;
  for (int i = 0; i < (smoke ? 100 : 4000); ++i) tiny.emplace_back(torch::randn({1, 1}), torch::randn({1, 1}));
  compare<Tiny>("trainer_overhead: Linear(1, 1), batch 1", tiny,
                [](const torch::Tensor& out, const torch::Tensor& y) { return torch::mse_loss(out, y); }, rounds);

  std::vector<Batch> mnist_like;
  for (int i = 0; i < (smoke ? 10 : 300); ++i)
    mnist_like.emplace_back(torch::rand({64, 784}), torch::randint(10, {64}, torch::kLong));
  compare<Mlp>("trainer_overhead: MLP 784-128-10, batch 64", mnist_like,
               [](const torch::Tensor& out, const torch::Tensor& y) {
                 return torch::nn::functional::cross_entropy(out, y);
               },
               rounds);
  compare_histograms<Mlp>("trainer_overhead: MLP 784-128-10, batch 64, histograms", mnist_like,
                          [](const torch::Tensor& out, const torch::Tensor& y) {
                            return torch::nn::functional::cross_entropy(out, y);
                          },
                          rounds);
  std::vector<Batch> images;
  for (int i = 0; i < (smoke ? 10 : 300); ++i)
    images.emplace_back(torch::rand({64, 1, 28, 28}), torch::randint(10, {64}, torch::kLong));
  compare_histograms<bench::Cnn>("trainer_overhead: the example's CNN, batch 64, histograms", images, &bench::Cnn::loss, rounds);
  return 0;
}
