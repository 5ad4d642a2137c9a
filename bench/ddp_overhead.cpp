// What data-parallel training costs and hides, on the 784-128-10 MLP (batch 64 per rank, SGD, one intra-op thread per
// process): one process, then two ranks on Gloo over 127.0.0.1 started by the local launch (this program re-executed).
// On the two ranks, interleaved in the same processes:
//   - a hand-written c10d loop: backward, then one all-reduce of all gradients flattened, averaged (the baseline);
//   - a hand-written loop with distributed::DistributedDataParallel (bucketed all-reduces started during backward);
//   - the Trainer with strategy("ddp") doing the same steps.
// Also: how much of the all-reduce the buckets hide behind backward (1 - time wait() blocks / time the same
// all-reduce takes alone). Rank 0 prints.
//
//   ddp_overhead [--smoke]
#include <trainloop.hpp>

#include <cstdio>
#include <cstring>
#include <vector>

#include "bench_common.hpp"
#include "bench_models.hpp"

using namespace trainloop;
using Batch = std::pair<torch::Tensor, torch::Tensor>;
using Clock = std::chrono::steady_clock;

namespace {
using bench::Mlp;
// Every rank builds the same model (DDP broadcasts rank 0's anyway; the baseline does not).
Mlp seeded_mlp() {
  torch::manual_seed(0);
  return Mlp();
}

std::vector<Batch> make_batches(int count, std::uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<Batch> data;
  for (int i = 0; i < count; ++i) data.emplace_back(torch::randn({64, 784}), torch::randint(0, 10, {64}));
  return data;
}

template <class Sync>
void hand_loop(Mlp& model, torch::optim::SGD& optimizer, const std::vector<Batch>& data, Sync&& sync) {
  for (const auto& [x, y] : data) {
    optimizer.zero_grad();
    torch::nn::functional::cross_entropy(model.forward(x), y).backward();
    sync();
    optimizer.step();
  }
}

// The baseline's synchronisation: every gradient into one buffer, one all-reduce, averaged, copied back.
void all_reduce_after_backward(Mlp& model, distributed::ProcessGroup& group) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (auto& p : model.parameters()) grads.push_back(p.grad().reshape(-1));
  torch::Tensor flat = torch::cat(grads);
  group.all_reduce(flat);
  flat.div_(group.size());
  std::int64_t offset = 0;
  for (auto& p : model.parameters()) {
    p.mutable_grad().copy_(flat.narrow(0, offset, p.numel()).view_as(p));
    offset += p.numel();
  }
}
}  // namespace

int main(int argc, char** argv) {
  const bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  const int steps = smoke ? 5 : 300, rounds = smoke ? 1 : 7;
  torch::set_num_threads(1);

  // One process (before the others exist): the same step, nothing to synchronise.
  double single_steps_per_second = 0;
  {
    Mlp model = seeded_mlp();
    torch::optim::SGD optimizer(model.parameters(), torch::optim::SGDOptions(1e-3));
    const auto data = make_batches(steps, 1);
    hand_loop(model, optimizer, data, [] {});
    std::vector<double> rates;
    for (int r = 0; r < rounds; ++r) {
      const auto start = Clock::now();
      hand_loop(model, optimizer, data, [] {});
      rates.push_back(steps / std::chrono::duration<double>(Clock::now() - start).count());
    }
    single_steps_per_second = bench::median(rates);
  }

  auto group = distributed::init(distributed::InitOptions().processes(2));
  if (group->rank() != 0 && !std::freopen("/dev/null", "w", stdout)) return 1;  // rank 0 reports
  const auto data = make_batches(steps, 100 + static_cast<std::uint64_t>(group->rank()));

  Mlp baseline_model = seeded_mlp(), ddp_model = seeded_mlp(), trainer_model = seeded_mlp();
  torch::optim::SGD baseline_sgd(baseline_model.parameters(), torch::optim::SGDOptions(1e-3));
  torch::optim::SGD ddp_sgd(ddp_model.parameters(), torch::optim::SGDOptions(1e-3));
  distributed::DistributedDataParallel ddp(ddp_model, group);
  Trainer trainer(TrainerOptions().barebones(true).accelerator("cpu").max_epochs(1).strategy("ddp"));
  std::vector<bench::Variant> variants{
      {"hand-written c10d loop, all-reduce after backward (baseline)",
       [&] { hand_loop(baseline_model, baseline_sgd, data, [&] { all_reduce_after_backward(baseline_model, *group); }); },
       double(steps)},
      {"hand-written loop, DistributedDataParallel", [&] { hand_loop(ddp_model, ddp_sgd, data, [&] { ddp.wait(); }); },
       double(steps)},
      {"Trainer, strategy(\"ddp\")", [&] { trainer.fit(trainer_model, data); }, double(steps)},
  };
  const auto blocked_before = ddp.blocked_time();
  const auto synced_before = ddp.synced_steps();
  bench::run_interleaved("2 ranks, MLP 784-128-10, batch 64 per rank (per step)", variants, rounds, 1e3, "ms");

  // The all-reduce alone, on a buffer of every gradient: what the buckets must hide.
  std::int64_t elements = 0;
  for (const auto& p : ddp_model.parameters()) elements += p.numel();
  torch::Tensor flat = torch::ones({elements});
  std::vector<double> alone;
  for (int r = 0; r < rounds; ++r) {
    const auto start = Clock::now();
    for (int i = 0; i < steps; ++i) group->all_reduce(flat);
    alone.push_back(std::chrono::duration<double>(Clock::now() - start).count() / steps);
  }
  const double comm = bench::median(alone);
  const double blocked = (ddp.blocked_time() - blocked_before).count() /
                         static_cast<double>(std::max<std::int64_t>(1, ddp.synced_steps() - synced_before));
  const double ddp_step = bench::median(variants[1].seconds_per_unit), trainer_step = bench::median(variants[2].seconds_per_unit);
  std::printf("\n  one process:        %8.1f steps/s (%d examples/s)\n", single_steps_per_second,
              static_cast<int>(single_steps_per_second * 64));
  std::printf("  two ranks (Trainer): %8.1f steps/s per rank (%d examples/s together)\n", 1 / trainer_step,
              static_cast<int>(2 * 64 / trainer_step));
  std::printf("  all-reduce of %lld gradients alone: %.3f ms; wait() blocked %.3f ms a step: %.0f%% hidden behind backward\n",
              static_cast<long long>(elements), comm * 1e3, blocked * 1e3, 100 * std::max(0.0, 1 - blocked / comm));
  std::printf("  Trainer / hand-written DistributedDataParallel loop: %.3f\n", trainer_step / ddp_step);
  group->barrier();
  return 0;
}
