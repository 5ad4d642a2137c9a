// The data-parallel run tests/torch/test_distributed.cpp launches: a small MLP trained by the Trainer on synthetic
// data (the same on every rank: torch::manual_seed before anything draws), with validation logging a loss and a sum
// with sync_dist and an Accuracy metric, which sync across ranks.
//   trainloop_ddp_child OUT [--devices N] [--strategy S] [--batch B] [--accumulate K] [--epochs E]
//                       [--kill-rank R --kill-step S] [--ckpt DIR [--resume]] [--rendezvous-timeout SECONDS]
//                       [--timeout SECONDS] [--setup-delay SECONDS] [--exit-early-rank R] [--catch]
// Rank 0 writes OUT: one "name value" line per number (parameters in order, then the validation values and the step
// counter), printed exactly ("%.17g"), so a test can compare runs. --kill-rank sends SIGKILL to rank R right after its
// optimizer step S (under torchrun, in the first attempt only). --ckpt adds a ModelCheckpoint writing DIR/last.ckpt
// after every step; --resume fits from "last" when DIR/last.ckpt exists (a torchrun restart runs the same command).
// --setup-delay sleeps before fit on every rank (slow data loading, which a local launch's ranks repeat);
// --exit-early-rank makes rank R (started by a launcher) exit with status 3 before it joins. --catch catches fit's
// error as a program that handles it would: prints it, calls distributed::destroy() and returns 0 (an atexit handler
// then writes OUT.atexit, showing the process ended normally). The training examples come through a dataset of the
// user's type read by two worker threads (the same batches as a TensorDataset's), the validation ones from a
// TensorDataset: the Trainer re-shards both kinds.
#include <trainloop.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

using namespace trainloop;
using Batch = TensorBatch<2>;

struct Net : LightningModule<Net> {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  Accuracy accuracy{ClassificationOptions().task(Task::multiclass).num_classes(3)};
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 16));
    fc2 = register_module("fc2", torch::nn::Linear(16, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  torch::Tensor training_step(Batch& b, std::int64_t) {
    auto loss = torch::nn::functional::cross_entropy(forward(b.first), b.second);
    log("train_loss", loss, LogOptions().on_epoch(true).sync_dist(true));
    return loss;
  }
  void validation_step(Batch& b, std::int64_t) {
    const torch::Tensor logits = forward(b.first);
    log("val_loss", torch::nn::functional::cross_entropy(logits, b.second), LogOptions().sync_dist(true));
    log("val_correct", (logits.argmax(1) == b.second).sum().to(torch::kFloat64),
        LogOptions().reduce(Reduce::sum).sync_dist(true));
    accuracy.update(logits, b.second);
    log("val_acc", accuracy);
  }
  OptimizerConfig configure_optimizers() { return OptimizerConfig(std::make_shared<torch::optim::SGD>(parameters(), 0.2)); }
};

// Kills its own process (SIGKILL: no cleanup, like the OOM killer) right after optimizer step `step` on `rank`.
struct KillAt {
  int rank = -1;
  std::int64_t step = -1;
  template <class T, class M, class O, class B>
  void on_train_batch_end(T& trainer, M&, const O&, B&, std::int64_t) {
    const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT");  // under torchrun: the first attempt only
    if (trainer.global_rank() == rank && trainer.global_step() == step && (!restart || std::string(restart) == "0"))
      std::raise(SIGKILL);
  }
};

// Example i is (x[i], y[i]), read one by one.
struct Rows {
  torch::Tensor x, y;
  std::int64_t size() const { return x.size(0); }
  std::pair<torch::Tensor, torch::Tensor> get(std::size_t i) const {
    return {x[static_cast<std::int64_t>(i)], y[static_cast<std::int64_t>(i)]};
  }
};

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT [options]\n", argv[0]);
    return 2;
  }
  const std::string out = argv[1];
  int devices = 0, batch = 8, accumulate = 1, epochs = 2, rendezvous = 60, timeout = 20, setup_delay = 0, exit_early = -1;
  std::string strategy = "auto", ckpt;
  bool resume = false, catch_error = false;
  KillAt kill;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--devices") devices = std::stoi(next());
    else if (a == "--strategy") strategy = next();
    else if (a == "--batch") batch = std::stoi(next());
    else if (a == "--accumulate") accumulate = std::stoi(next());
    else if (a == "--epochs") epochs = std::stoi(next());
    else if (a == "--kill-rank") kill.rank = std::stoi(next());
    else if (a == "--kill-step") kill.step = std::stoll(next());
    else if (a == "--ckpt") ckpt = next();
    else if (a == "--resume") resume = true;
    else if (a == "--rendezvous-timeout") rendezvous = std::stoi(next());
    else if (a == "--timeout") timeout = std::stoi(next());
    else if (a == "--setup-delay") setup_delay = std::stoi(next());
    else if (a == "--exit-early-rank") exit_early = std::stoi(next());
    else if (a == "--catch") catch_error = true;
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  const char* launched_rank = std::getenv("RANK");
  if (launched_rank && std::atoi(launched_rank) == exit_early) return 3;
  static std::string atexit_marker;
  atexit_marker = out + ".atexit";
  std::atexit([] {
    if (std::FILE* f = std::fopen(atexit_marker.c_str(), "w")) std::fclose(f);
  });
  std::this_thread::sleep_for(std::chrono::seconds(setup_delay));
  torch::manual_seed(0);
  const torch::Tensor x = torch::randn({96, 4}), y = torch::randint(0, 3, {96});
  const torch::Tensor vx = torch::randn({48, 4}), vy = torch::randint(0, 3, {48});
  Net net;
  DataLoader train(Rows{x, y}, DataLoaderOptions().batch_size(batch).shuffle(true).seed(7).workers(2));
  DataLoader val(TensorDataset<2>(vx, vy), DataLoaderOptions().batch_size(batch));
  TrainerOptions options = TrainerOptions()
                               .max_epochs(epochs)
                               .accumulate_grad_batches(accumulate)
                               .strategy(strategy)
                               .devices(devices)
                               .num_sanity_val_steps(0)
                               .enable_progress_bar(false)
                               .enable_model_summary(false)
                               .accelerator("cpu")
                               .process_group(distributed::InitOptions()
                                                  .timeout(std::chrono::seconds(timeout))
                                                  .rendezvous_timeout(std::chrono::seconds(rendezvous)))
                               .ddp(distributed::DDPOptions().bucket_cap_mb(0.0005));  // several buckets
  auto run = [&](auto... checkpoint) {
    Trainer trainer(options, kill, checkpoint...);
    try {
      trainer.fit(net, train, val, resume && std::filesystem::exists(ckpt + "/last.ckpt") ? "last" : "");
    } catch (const std::exception& error) {
      if (!catch_error) throw;
      std::fprintf(stderr, "caught: %s\n", error.what());
      distributed::destroy();
      std::fprintf(stderr, "destroy() returned\n");
      return 0;
    }
    if (!trainer.is_global_zero()) return 0;
    std::FILE* f = std::fopen(out.c_str(), "w");
    if (!f) return 3;
    std::int64_t n = 0;
    for (const auto& p : net.parameters()) {
      const torch::Tensor flat = p.detach().reshape(-1).to(torch::kFloat64).contiguous();
      for (std::int64_t i = 0; i < flat.numel(); ++i)
        std::fprintf(f, "param%lld %.17g\n", static_cast<long long>(n++), flat[i].item<double>());
    }
    for (const char* name : {"val_loss", "val_correct", "val_acc", "train_loss"})
      std::fprintf(f, "%s %.17g\n", name, trainer.callback_metrics().at(name).template item<double>());
    std::fprintf(f, "global_step %lld\nworld_size %d\n", static_cast<long long>(trainer.global_step()), trainer.world_size());
    std::fclose(f);
    return 0;
  };
  if (ckpt.empty()) return run();
  ModelCheckpoint::Options every_step;
  every_step.dirpath = ckpt;
  every_step.save_top_k = 0;
  every_step.save_last = true;
  every_step.every_n_train_steps = 1;
  return run(ModelCheckpoint(every_step));
}
