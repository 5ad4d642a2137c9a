// CUDA checks of checkpoints, built and run by tools/gpu_check.sh on a machine with a GPU and LibTorch 2.x:
//  1. a file written from a CUDA model loads into a CPU model and a CUDA model (another device), values equal;
//  2. the CUDA RNG state is saved and restored (the same numbers are drawn again);
//  3. a Trainer fit on CUDA, saved after its first epoch and resumed in a new Trainer, ends as the uninterrupted fit
//     (bitwise with deterministic algorithms; the largest difference is printed otherwise), with dropout and a
//     validation that draws from the device's RNG: the resumed fit's sanity check must leave the CUDA stream alone;
//  4. LibTorch 2.x reads our files through the integrity check, and rejects a flipped bit.
// Prints one line per check and exits non-zero when one fails.
#include <trainloop.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>
#include <fstream>

#include "report.hpp"

using namespace trainloop;
using Batch = TensorBatch<2>;

namespace {

struct Net : LightningModule<Net> {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(32, 64));
    fc2 = register_module("fc2", torch::nn::Linear(64, 4));
  }
  torch::Tensor training_step(Batch& b, std::int64_t) {
    auto hidden = torch::dropout(torch::relu(fc1(b.first)), 0.1, is_training());
    auto loss = torch::nn::functional::cross_entropy(fc2(hidden), b.second);
    log("train_loss", loss, LogOptions().on_epoch(true));
    return loss;
  }
  void validation_step(Batch& b, std::int64_t) {
    const torch::Tensor noise = torch::rand({1}, b.first.options());  // draws from the device's generator
    log("val_loss", torch::nn::functional::cross_entropy(fc2(torch::relu(fc1(b.first))), b.second) + 0 * noise.sum());
  }
  OptimizerConfig configure_optimizers() {
    auto adam = std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(1e-2));
    auto cosine = std::make_shared<ParamScheduler>(*adam, cosine_annealing(1e-2, 1e-3, 40));
    return OptimizerConfig(adam).scheduler(SchedulerConfig(cosine).interval(Interval::step));
  }
};

double max_difference(torch::nn::Module& a, torch::nn::Module& b) {
  double worst = 0;
  auto pb = b.named_parameters();
  for (const auto& p : a.named_parameters())
    worst = std::max(worst, (p.value().to(torch::kCPU) - pb[p.key()].to(torch::kCPU)).abs().max().item<double>());
  return worst;
}
}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // every line out before a crash
  std::printf("started\n");
  if (!torch::cuda::is_available()) {
    std::printf("no CUDA device\n");
    return 2;
  }
  // POSIX calls, not std::filesystem::remove_all: PyTorch 2.11's libtorch.so exports its own copy of it, which the
  // dynamic linker binds ahead of libstdc++'s, and that copy jumps to address 0 (seen in gdb, H100, 2026-11-27).
  char pattern[] = "/tmp/trainloop-gpu-check-XXXXXX";
  if (!mkdtemp(pattern)) return 3;
  const std::string dir = pattern;
  const torch::Device cuda(torch::kCUDA);

  {  // 1 + 2
    torch::manual_seed(1);
    torch::nn::Sequential model(torch::nn::Linear(16, 8), torch::nn::ReLU(), torch::nn::Linear(8, 2));
    model->to(cuda);
    std::printf("model on CUDA\n");
    auto adam = std::make_shared<torch::optim::Adam>(model->parameters());
    adam->zero_grad();
    model->forward(torch::randn({4, 16}, cuda)).sum().backward();
    adam->step();
    std::printf("one Adam step on CUDA\n");
    const std::string path = dir + "/cuda.ckpt";
    save_checkpoint(path, *model, {adam});
    std::printf("saved a CUDA model's checkpoint\n");
    const torch::Tensor drawn = torch::randn({8}, cuda);

    torch::nn::Sequential on_cpu(torch::nn::Linear(16, 8), torch::nn::ReLU(), torch::nn::Linear(8, 2));
    auto cpu_adam = std::make_shared<torch::optim::Adam>(on_cpu->parameters());
    std::printf("loading it into a CPU model and Adam\n");
    load_checkpoint(path, *on_cpu, {cpu_adam}, torch::Device(torch::kCPU), false);
    report("CUDA checkpoint -> CPU model", max_difference(*on_cpu, *model) == 0.0);
    torch::nn::Sequential on_cuda(torch::nn::Linear(16, 8), torch::nn::ReLU(), torch::nn::Linear(8, 2));
    on_cuda->to(cuda);
    auto adam2 = std::make_shared<torch::optim::Adam>(on_cuda->parameters());
    std::printf("loading it into a CUDA model and Adam\n");
    load_checkpoint(path, *on_cuda, {adam2});  // restores the RNG too
    report("CUDA checkpoint -> CUDA model, with Adam's state", max_difference(*on_cuda, *model) == 0.0);
    report("CUDA RNG state restored", torch::equal(torch::randn({8}, cuda), drawn));
    report("a CUDA model's tensors stay on CUDA after load", on_cuda->parameters()[0].is_cuda());

    std::string bytes;
    {
      std::ifstream in(path, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    bytes[bytes.size() / 2] ^= 4;
    std::ofstream(dir + "/flipped.ckpt", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    bool rejected = false;
    try {
      load_checkpoint(dir + "/flipped.ckpt", *on_cpu, {cpu_adam});
    } catch (const CheckpointError& error) {
      rejected = std::string(error.what()).find("corrupt") != std::string::npos;
    }
    report("a flipped bit is a CheckpointError (LibTorch 2.x)", rejected);
  }

  for (const char* accelerator : {"cpu", "cuda"}) {  // 3
    std::printf("fitting on %s\n", accelerator);
    torch::manual_seed(0);
    const torch::Tensor x = torch::randn({256, 32}), y = torch::randint(0, 4, {256});
    auto options = [&] {
      return TrainerOptions().accelerator(accelerator).barebones(true).deterministic(true).seed(3);
    };
    auto loader = [&] { return DataLoader(TensorDataset(x, y), DataLoaderOptions().batch_size(32).shuffle(true).seed(5)); };
    auto val_loader = [&] { return DataLoader(TensorDataset(x.slice(0, 0, 64), y.slice(0, 0, 64)), DataLoaderOptions().batch_size(32)); };
    torch::manual_seed(7);  // both fits start from the same weights
    Net reference;
    Trainer uninterrupted(options().max_epochs(4));
    auto data = loader();
    uninterrupted.fit(reference, data, val_loader());

    torch::manual_seed(7);
    Net first;
    Trainer stopped(options().max_epochs(2));
    auto data2 = loader();
    stopped.fit(first, data2, val_loader());
    stopped.save_checkpoint(dir + "/after_two.ckpt");
    {  // what the file holds is what the fit ended with
      Net reloaded;
      reloaded.to(first.fc1->weight.device());
      auto adam = std::make_shared<torch::optim::Adam>(reloaded.parameters(), torch::optim::AdamOptions(1e-2));
      load_checkpoint(dir + "/after_two.ckpt", reloaded, {adam}, std::nullopt, false);
      const auto& saved_adam = *stopped.optimizers()[0].optimizer();
      std::printf("  file vs fit: weights %g, lr %g vs %g\n", max_difference(reloaded, first),
                  adam->param_groups()[0].options().get_lr(), saved_adam.param_groups()[0].options().get_lr());
    }
    Net resumed;
    Trainer continued(options().max_epochs(4));
    auto data3 = loader();
    continued.fit(resumed, data3, val_loader(), dir + "/after_two.ckpt");
    const double difference = max_difference(resumed, reference);
    report((std::string("fit resumed after 2 of 4 epochs = uninterrupted fit, ") + accelerator).c_str(), difference == 0.0,
           "(largest difference " + std::to_string(difference) + ", steps " + std::to_string(continued.global_step()) + ")");
  }
  for (const char* name : {"/cuda.ckpt", "/flipped.ckpt", "/after_two.ckpt"}) std::remove((dir + name).c_str());
  ::rmdir(dir.c_str());
  std::printf("%s\n", failures ? "gpu checks FAILED" : "gpu checks passed");
  return failures ? 1 : 0;
}
