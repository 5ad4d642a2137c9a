// CUDA checks of mixed precision, built and run by tools/gpu_check.sh on a machine with a GPU:
//  1. the fused scaler kernels (CUDA) and trainloop's ordinary-op fallback give the same numbers (unscale, found-inf,
//     back-off, growth, a growth that would overflow);
//  2. fp16 autocast on CUDA: a Linear's output is fp16, its weight and gradient fp32, the state restored after;
//  3. Trainer "16-mixed" on CUDA: trains (the loss falls), the scaler grows, a batch with an inf loss is skipped
//     (global_step and the per-step scheduler do not advance, skipped_steps counts it), the weights stay fp32, the
//     checkpoint holds the scaler's state and a fresh Trainer resumes from it with the same scale;
//  4. Trainer "bf16-mixed" on CUDA trains, with no scaler.
// Prints one line per check and exits non-zero when one fails.
#include <trainloop.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "report.hpp"

using namespace trainloop;
using Batch = std::pair<torch::Tensor, torch::Tensor>;

namespace {

struct Net : LightningModule<Net> {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  std::int64_t inf_batch = -1;
  at::ScalarType logits_dtype = at::kFloat;
  Net() {
    torch::manual_seed(0);
    fc1 = register_module("fc1", torch::nn::Linear(32, 256));
    fc2 = register_module("fc2", torch::nn::Linear(256, 4));
  }
  torch::Tensor training_step(Batch& b, std::int64_t batch_idx) {
    torch::Tensor logits = fc2(torch::relu(fc1(b.first)));
    logits_dtype = logits.scalar_type();
    torch::Tensor loss = torch::nn::functional::cross_entropy(logits.to(torch::kFloat32), b.second);
    log("loss", loss, LogOptions().on_epoch(true).on_step(false));
    if (batch_idx == inf_batch && current_epoch() == 0) return loss * std::numeric_limits<double>::infinity();
    return loss;
  }
  OptimizerConfig configure_optimizers() {
    auto adam = std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(1e-3));
    auto schedule = std::make_shared<ParamScheduler>(*adam, linear_cyclical(1e-4, 1e-3, 50));
    return OptimizerConfig(adam).scheduler(SchedulerConfig(schedule).interval(Interval::step));
  }
};

std::vector<Batch> data_on(const torch::Device& device, int batches) {
  torch::manual_seed(1);
  const torch::Tensor w = torch::randn({32, 4});
  std::vector<Batch> data;
  for (int i = 0; i < batches; ++i) {
    torch::Tensor x = torch::randn({128, 32});
    data.emplace_back(x.to(device), x.mm(w).argmax(1).to(device));
  }
  return data;
}
}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // every line out before a crash
  if (!torch::cuda::is_available()) {
    std::printf("amp_cuda: no CUDA device\n");
    return 1;
  }
  const torch::Device cuda(torch::kCUDA, 0);
  {
    const torch::Tensor g = torch::randn({1000}, cuda) * 1e4;
    g[17] = std::numeric_limits<float>::quiet_NaN();
    const torch::Tensor inv = torch::full({1}, 1.0f / 3, torch::TensorOptions().device(cuda));
    std::vector<torch::Tensor> fused{g.clone(), torch::randn({33}, cuda)}, fallback{fused[0].clone(), fused[1].clone()};
    torch::Tensor fused_found = torch::zeros({1}, cuda), fallback_found = torch::zeros({1}, cuda);
    at::_amp_foreach_non_finite_check_and_unscale_(fused, fused_found, inv);
    trainloop::detail::amp_unscale_fallback(fallback, fallback_found, inv);
    const bool unscale_same = torch::equal(fused[1], fallback[1]) && torch::equal(fused_found, fallback_found) &&
                              fused_found.item<float>() == 1 &&
                              torch::equal(fused[0].nan_to_num(0), fallback[0].nan_to_num(0));
    bool update_same = true;
    for (float scale : {100.0f, 3e38f, 3.0f, 1e-30f})
      for (int tracker : {0, 1, 2})
        for (float inf : {0.0f, 1.0f}) {
          torch::Tensor s1 = torch::full({1}, scale, cuda), s2 = s1.clone();
          torch::Tensor t1 = torch::full({1}, tracker, torch::TensorOptions().dtype(torch::kInt32).device(cuda)), t2 = t1.clone();
          const torch::Tensor f = torch::full({1}, inf, cuda);
          at::_amp_update_scale_(s1, t1, f, 2.0, 0.5, 3);
          trainloop::detail::amp_update_scale_fallback(s2, t2, f, 2.0, 0.5, 3);
          update_same = update_same && torch::equal(s1, s2) && torch::equal(t1, t2);
        }
    report("fused CUDA scaler kernels == ordinary-op fallback", unscale_same && update_same);
  }
  {
    torch::nn::Linear linear(8, 8);
    linear->to(cuda);
    torch::Tensor y;
    {
      amp::Autocast autocast(torch::kCUDA, torch::kHalf);
      y = linear(torch::randn({4, 8}, cuda));
    }
    y.to(torch::kFloat32).sum().backward();
    report("fp16 autocast on CUDA: fp16 output, fp32 weight and gradient, state restored",
           y.scalar_type() == torch::kHalf && linear->weight.grad().scalar_type() == torch::kFloat32 &&
               !trainloop::detail::autocast_enabled(torch::kCUDA));
  }
  const auto data = data_on(cuda, 40);
  // POSIX calls, not std::filesystem::remove_all: PyTorch 2.11's libtorch.so exports its own copy of it, which the
  // dynamic linker binds ahead of libstdc++'s, and that copy jumps to address 0 (gpu_check, H100, 2026-11-27).
  char pattern[] = "/tmp/trainloop-amp-cuda-XXXXXX";
  if (!mkdtemp(pattern)) return 3;
  const std::filesystem::path dir = pattern;
  {
    Net net;
    net.inf_batch = 5;
    Trainer<> trainer(TrainerOptions().accelerator("cuda").max_epochs(3).barebones(true).precision("16-mixed").grad_scaler(
        amp::GradScalerOptions().growth_interval(20)));
    trainer.fit(net, data);
    const double first = trainer.callback_metrics().at("loss").item<double>();
    trainer.fit(net, data);  // a second fit: the scaler and the model continue
    const double later = trainer.callback_metrics().at("loss").item<double>();
    const double scale = trainer.grad_scaler()->get_scale();
    report("16-mixed on CUDA: fp16 forward, the loss falls", net.logits_dtype == torch::kHalf && later < first,
           std::to_string(first) + " -> " + std::to_string(later));
    // 120 batches over both fits: the inf batch and any batch whose fp16 gradients overflow the growing scale are
    // skipped, and only the others count as optimizer steps.
    report("16-mixed on CUDA: the inf batch skipped, not counted",
           trainer.skipped_steps() >= 1 && trainer.global_step() + trainer.skipped_steps() == 120,
           "skipped " + std::to_string(trainer.skipped_steps()) + ", global_step " + std::to_string(trainer.global_step()));
    bool fp32 = true;
    for (const auto& p : net.parameters()) fp32 = fp32 && p.scalar_type() == torch::kFloat32;
    report("16-mixed on CUDA: weights stay fp32", fp32);
    trainer.save_checkpoint((dir / "amp.ckpt").string());
    const auto states = read_checkpoint_states((dir / "amp.ckpt").string());
    const bool has_scaler = states.count("precision/grad_scaler") &&
                            std::get<double>(states.at("precision/grad_scaler").at("scale")) == scale;
    Net resumed;
    Trainer<> again(TrainerOptions().accelerator("cuda").max_epochs(4).barebones(true).precision("16-mixed").grad_scaler(
        amp::GradScalerOptions().growth_interval(20)));
    again.fit(resumed, data, (dir / "amp.ckpt").string());
    report("16-mixed on CUDA: the checkpoint holds the scaler; a resumed fit continues from it",
           has_scaler && again.skipped_steps() >= trainer.skipped_steps() &&
               again.global_step() + again.skipped_steps() == 120 + 40,
           "scale " + std::to_string(scale) + " -> " + std::to_string(again.grad_scaler()->get_scale()));
  }
  {
    Net net;
    Trainer<> trainer(TrainerOptions().accelerator("cuda").max_epochs(2).barebones(true).precision("bf16-mixed"));
    trainer.fit(net, data);
    report("bf16-mixed on CUDA: bf16 forward, no scaler",
           net.logits_dtype == torch::kBFloat16 && trainer.grad_scaler() == nullptr &&
               std::isfinite(trainer.callback_metrics().at("loss").item<double>()));
  }
  std::remove((dir / "amp.ckpt").c_str());
  ::rmdir(dir.c_str());
  std::printf("amp_cuda: %s\n", failures ? "FAILED" : "all ok");
  return failures ? 1 : 0;
}
