// The training run that tests/torch/test_resume.cpp kills and resumes: a small model with dropout (it draws random
// numbers), momentum, a per-step scheduler and a shuffling DataLoader, checkpointed after every optimizer step.
//   trainloop_resume_child DIR OUT_WEIGHTS [--kill-at STEP] [--resume [FILE]] [--announce FILE]
// --kill-at sends itself SIGKILL right after that step's checkpoint; --resume continues from DIR/last.ckpt (or FILE);
// --announce creates FILE after step 3 and slows training down (20 ms a step), so a test can send SIGTERM to a
// running fit, which the Preemption callback turns into DIR/preempted.ckpt. At the end the final weights go to
// OUT_WEIGHTS.
#include <trainloop.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>
#include <cstring>
#include <string>

using namespace trainloop;
using Batch = TensorBatch<2>;

struct Net : LightningModule<Net> {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout dropout{nullptr};
  std::shared_ptr<torch::optim::SGD> optimizer;
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 16));
    dropout = register_module("dropout", torch::nn::Dropout(0.3));
    fc2 = register_module("fc2", torch::nn::Linear(16, 3));
  }
  torch::Tensor training_step(Batch& b, std::int64_t) {
    return torch::nn::functional::cross_entropy(fc2(dropout(torch::relu(fc1(b.first)))), b.second);
  }
  OptimizerConfig configure_optimizers() {
    optimizer = std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
    auto schedule = std::make_shared<ParamScheduler>(*optimizer, cosine_annealing(0.1, 0.01, 10));
    return OptimizerConfig(optimizer).scheduler(SchedulerConfig(schedule).interval(Interval::step));
  }
};

struct Announce {
  std::string file;
  template <class T, class M, class O, class B>
  void on_train_batch_end(T& trainer, M&, const O&, B&, std::int64_t) {
    if (file.empty()) return;
    if (trainer.global_step() == 3) std::fclose(std::fopen(file.c_str(), "w"));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
};

struct KillAt {
  std::int64_t step;
  template <class T, class M, class O, class B>
  void on_train_batch_end(T& trainer, M&, const O&, B&, std::int64_t) {
    if (trainer.global_step() == step) std::raise(SIGKILL);
  }
};

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const std::string dir = argv[1], out = argv[2];
  std::int64_t kill_at = -1;
  std::string resume_from, announce;
  for (int i = 3; i < argc; ++i) {
    if (std::strcmp(argv[i], "--kill-at") == 0 && i + 1 < argc) kill_at = std::stoll(argv[++i]);
    else if (std::strcmp(argv[i], "--resume") == 0)
      resume_from = i + 1 < argc && argv[i + 1][0] != '-' ? argv[++i] : dir + "/last.ckpt";
    else if (std::strcmp(argv[i], "--announce") == 0 && i + 1 < argc) announce = argv[++i];
  }
  torch::manual_seed(123);
  const torch::Tensor x = torch::randn({96, 4});
  const torch::Tensor y = (x.sum(1) > 0).to(torch::kLong) + (x.select(1, 0) > 1).to(torch::kLong);
  DataLoader<2> loader(TensorDataset(x, y), DataLoaderOptions().batch_size(8).shuffle(true).seed(7));
  Net net;  // initialised from the same seed in every process; a resume overwrites it from the checkpoint anyway

  ModelCheckpoint::Options every_step;
  every_step.dirpath = dir;
  every_step.every_n_train_steps = 1;
  every_step.save_top_k = 0;
  every_step.save_last = true;
  Preemption::Options on_signal;
  on_signal.path = dir + "/preempted.ckpt";
  Trainer trainer(TrainerOptions().barebones(true).accelerator("cpu").max_epochs(3).deterministic(true).seed(0),
                  ModelCheckpoint(every_step), KillAt{kill_at}, Announce{announce}, Preemption(on_signal));
  trainer.fit(net, loader, trainloop::detail::NoData{}, resume_from);
  save_weights(out, net);
  return 0;
}
