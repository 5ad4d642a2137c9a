// Mixed precision's step time: the Fashion-MNIST CNN (batch 64) trained by the Trainer in "32", in "bf16-mixed", and
// with autocast plus the loss scaler ("16-mixed" on CUDA; on CPU, where fp16 autocast needs LibTorch 2.4, bf16 with
// the scaler forced on), each against a hand-written LibTorch loop doing the same work (autocast and the same
// amp::GradScaler by hand), interleaved in one process, median of repeats, one intra-op thread on CPU.
//
//   amp_step [--smoke]
#include <trainloop.hpp>

#include <cstring>
#include <vector>

#include "bench_common.hpp"
#include "bench_models.hpp"

using namespace trainloop;
using Batch = std::pair<torch::Tensor, torch::Tensor>;

namespace {
using bench::Cnn;

// The loops a LibTorch user writes by hand: plain, with autocast, with autocast and the scaler.
void hand_written(Cnn& model, const std::vector<Batch>& data, std::optional<at::ScalarType> autocast,
                  amp::GradScaler* scaler, torch::Device device) {
  torch::optim::SGD optimizer(model.parameters(), torch::optim::SGDOptions(1e-3).momentum(0.9));
  for (const auto& [x, y] : data) {
    optimizer.zero_grad();
    torch::Tensor loss;
    {
      std::optional<amp::Autocast> guard;
      if (autocast) guard.emplace(device.type(), *autocast);
      loss = Cnn::loss(model.forward(x), y);
    }
    if (scaler) {
      scaler->scale(loss).backward();
      scaler->step(optimizer);
      scaler->update();
    } else {
      loss.backward();
      optimizer.step();
    }
  }
}
}  // namespace

int main(int argc, char** argv) {
  const bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  const bool cuda = torch::cuda::is_available();
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (!cuda) torch::set_num_threads(1);
  tune_glibc_malloc();
  torch::manual_seed(0);
  const int rounds = smoke ? 2 : 11;
  std::vector<Batch> data;
  for (int i = 0; i < (smoke ? 4 : cuda ? 400 : 60); ++i)
    data.emplace_back(torch::randn({64, 1, 28, 28}).to(device), torch::randint(10, {64}).to(device));
  const double steps = static_cast<double>(data.size());
  std::printf("amp_step: %s, LibTorch %s\n", device.str().c_str(), TORCH_VERSION);

  // One model for every variant: the same parameters in the same memory, so only the loop differs.
  Cnn model;
  model.to(device);
  const at::ScalarType half = cuda ? at::kHalf : at::kBFloat16;
  const std::string scaled_precision = cuda ? "16-mixed" : "bf16-mixed";
  TrainerOptions base = TrainerOptions().barebones(true).accelerator(device.str()).max_epochs(1);
  Trainer<> fp32(TrainerOptions(base).precision("32"));
  Trainer<> bf16(TrainerOptions(base).precision("bf16-mixed"));
  // growth_interval so large the scale never changes: every variant does the same arithmetic in every round.
  const auto scaler_options = amp::GradScalerOptions().init_scale(1024).growth_interval(1 << 30);
  Trainer<> scaled(TrainerOptions(base).precision(scaled_precision).grad_scaler(scaler_options));
  amp::GradScaler hand_scaler(scaler_options);
  auto sync = [&] {
    if (cuda) torch::cuda::synchronize();
  };
  std::vector<bench::Variant> variants{
      {"hand-written loop, fp32 (baseline)", [&] { hand_written(model, data, std::nullopt, nullptr, device), sync(); }, steps},
      {"Trainer, precision 32", [&] { fp32.fit(model, data), sync(); }, steps},
      {"hand-written loop, bf16 autocast", [&] { hand_written(model, data, at::kBFloat16, nullptr, device), sync(); }, steps},
      {"Trainer, precision bf16-mixed", [&] { bf16.fit(model, data), sync(); }, steps},
      {std::string("hand-written loop, ") + (cuda ? "fp16" : "bf16") + " autocast + GradScaler",
       [&] { hand_written(model, data, half, &hand_scaler, device), sync(); }, steps},
      {"Trainer, " + scaled_precision + " + GradScaler", [&] { scaled.fit(model, data), sync(); }, steps},
  };
  bench::run_interleaved("amp_step: CNN, batch 64, one step", variants, rounds, 1e6, "us/step");
  auto ratio = [&](std::size_t trainer, std::size_t hand) {
    return bench::median(variants[trainer].seconds_per_unit) / bench::median(variants[hand].seconds_per_unit);
  };
  std::printf("  Trainer / hand-written: fp32 %.3f, bf16-mixed %.3f, with the scaler %.3f\n", ratio(1, 0), ratio(3, 2),
              ratio(5, 4));
  std::printf("  bf16-mixed / fp32 (hand-written): %.3f\n", ratio(2, 0));
  return 0;
}
