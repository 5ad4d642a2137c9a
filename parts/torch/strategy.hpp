// trainloop: the Trainer's strategy seam (DESIGN.md §6), the twin of the precision policy: how many processes train
// and what they do together (Lightning's strategies/, Ignite's comp_models). SingleProcess is the one here: one
// process, rank 0 of 1 unless a launcher says otherwise, every call compiled to nothing. distributed::DDPStrategy
// (distributed/strategy.hpp, TRAINLOOP_WITH_DISTRIBUTED=1) is the data-parallel one; the Trainer calls both alike.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <string>

#include "parts/core/launch_environment.hpp"
#include "parts/torch/metrics/metric.hpp"

TRAINLOOP_DETAIL_BEGIN

/// One process trains. Its rank is detail::process_rank() (a launcher's environment may make it another than 0: with
/// strategy("single") under torchrun, only rank 0 writes logs and checkpoints), its world one process.
class SingleProcess {
 public:
  /// Each stage's start: the device stays, the rank is read once (the hooks ask for it at every batch).
  template <class Options>
  void setup(const Options&, torch::Device&) {
    rank_ = detail::process_rank();
  }
  /// Mixed precision's loss scaler: no other rank to agree with on skipped steps.
  template <class Precision>
  void connect(Precision&) {}
  int global_rank() const noexcept { return rank_; }
  int world_size() const noexcept { return 1; }
  int local_rank() const noexcept { return 0; }
  bool reduce_decision(bool decision, bool /*all*/) { return decision; }
  void barrier() {}
  /// In place across ranks: nothing to reduce.
  void all_reduce(torch::Tensor&, SyncOp) {}

  /// While fit trains `module`: nothing to synchronise (the returned guard ends it).
  struct NoSync {};
  template <class Module, class Options>
  NoSync train_module(Module&, const Options&) {
    return {};
  }
  void before_forward() {}
  /// Around backward: `sync` false for accumulation micro-steps.
  void before_backward(bool /*sync*/) {}
  void after_backward() {}
  void before_optimizer_step() {}
  /// A stage failed on this process.
  void on_exception() {}

 private:
  int rank_ = 0;
};

namespace detail {
#if !TRAINLOOP_WITH_DISTRIBUTED
using StrategyPolicy = SingleProcess;
#endif
}  // namespace detail

TRAINLOOP_DETAIL_END

#if TRAINLOOP_WITH_DISTRIBUTED  // the data-parallel policy, which is then detail::StrategyPolicy
#include "parts/torch/distributed/strategy.hpp"
#endif
