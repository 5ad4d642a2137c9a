// trainloop: the data-parallel strategy (TRAINLOOP_WITH_DISTRIBUTED=1), the Trainer's other policy besides
// SingleProcess (strategy.hpp): the first stage that wants several ranks joins (or, with devices(n) and no launcher,
// starts) them; fit's gradients are averaged over them; rank 0 writes. With one process it acts as SingleProcess.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "parts/core/launch_environment.hpp"
#include "parts/torch/distributed/ddp.hpp"
#include "parts/torch/distributed/process_group.hpp"
#include "parts/torch/trainer_options.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace distributed {

/// Lightning's DDPStrategy: one process per device (rank), gradients all-reduced in buckets during backward.
class DDPStrategy {
 public:
  /// Joins the job's process group when the options or the launcher ask for several ranks (once: the group stays for
  /// the Trainer's later stages); each rank takes its own CUDA device.
  TRAINLOOP_DETAIL_API void setup(const TrainerOptions& options, torch::Device& device);
  /// "16-mixed": every rank skips the same steps (found-inf flags are max-reduced).
  template <class Precision>
  void connect(Precision& precision) {
#if TRAINLOOP_WITH_AMP
    if (group_ && precision.grad_scaler())
      precision.grad_scaler()->set_found_inf_reducer(
          [group = group_](torch::Tensor& found) { group->all_reduce(found, ReduceOp::max); });
#else
    (void)precision;
#endif
  }
  int global_rank() const noexcept { return group_ ? group_->rank() : rank_; }
  int world_size() const noexcept { return group_ ? group_->size() : 1; }
  int local_rank() const noexcept { return group_ ? group_->local_rank() : 0; }
  bool reduce_decision(bool decision, bool all) { return group_ ? group_->agree(decision, all) : decision; }
  void barrier() {
    if (group_) group_->barrier();
  }
  void all_reduce(torch::Tensor& tensor, SyncOp op) {
    if (group_)
      group_->all_reduce(tensor, op == SyncOp::sum ? ReduceOp::sum : op == SyncOp::max ? ReduceOp::max : ReduceOp::min);
  }

  /// While fit trains `module` (until the returned guard goes): gradients averaged over the ranks, rank 0's weights
  /// broadcast first.
  class TrainingScope {
   public:
    explicit TrainingScope(DDPStrategy* strategy) : strategy_(strategy) {}
    TrainingScope(TrainingScope&& other) noexcept : strategy_(std::exchange(other.strategy_, nullptr)) {}
    TrainingScope(const TrainingScope&) = delete;
    TrainingScope& operator=(const TrainingScope&) = delete;
    TrainingScope& operator=(TrainingScope&&) = delete;
    ~TrainingScope() {
      if (strategy_) strategy_->ddp_.reset();
    }

   private:
    DDPStrategy* strategy_;
  };
  TRAINLOOP_DETAIL_API TrainingScope train_module(torch::nn::Module& module, const TrainerOptions& options);
  /// Rank 0's buffers (batch-norm statistics) before each training forward.
  void before_forward() {
    if (ddp_) ddp_->sync_buffers();
  }
  /// Accumulation micro-steps (`sync` false) communicate nothing until the batch that steps.
  void before_backward(bool sync) {
    if (ddp_) ddp_->require_sync(sync);
  }
  void after_backward() {
    if (ddp_) ddp_->require_sync(true);
  }
  /// The gradients averaged over the ranks (once per backward; later optimizers find it done).
  void before_optimizer_step() {
    if (ddp_) ddp_->wait();
  }
  /// Ranks this process started cannot finish without it.
  void on_exception() {
    if (group_) group_->abort_local_ranks();
  }

  /// The process group once a stage ran data-parallel; nullptr otherwise.
  ProcessGroup* process_group() noexcept { return group_.get(); }
  /// The gradient synchronisation while fit runs data-parallel; nullptr otherwise.
  DistributedDataParallel* ddp() noexcept { return ddp_.get(); }

 private:
  std::shared_ptr<ProcessGroup> group_;
  std::unique_ptr<DistributedDataParallel> ddp_;
  int rank_ = 0;  // without a group: what the launcher's environment says (detail::process_rank)
};

}  // namespace distributed

namespace detail {
using StrategyPolicy = distributed::DDPStrategy;
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API void distributed::DDPStrategy::setup(const TrainerOptions& options, torch::Device& device) {
  if (!group_ && options.strategy() != "single") {
    const Environment env = detect_environment();
    if (options.strategy() == "ddp" || options.devices() > 1 || env.world_size > 1) {
      group_ = default_group();
      if (!group_) {
        InitOptions init_options = options.process_group();
        if (options.devices() > 0) init_options.processes(options.devices());
        group_ = init(init_options.device(device), env);
        // What Lightning prints as its process group comes up: each rank's line, then rank 0's banner.
        const int rank = group_->rank(), size = group_->size();
        std::fprintf(stderr, "Initializing distributed: GLOBAL_RANK: %d, MEMBER: %d/%d\n", rank, rank + 1, size);
        const std::string rule(100, '-');
        if (rank == 0)
          std::fprintf(stderr, "%s\ndistributed_backend=%s\nAll distributed processes registered. Starting with %d "
                       "processes\n%s\n\n", rule.c_str(), group_->backend_name().c_str(), size, rule.c_str());
      }
    }
  }
  rank_ = trainloop::detail::process_rank();
  if (group_ && device.is_cuda()) device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(group_->local_rank()));
}

TRAINLOOP_DETAIL_API distributed::DDPStrategy::TrainingScope distributed::DDPStrategy::train_module(
    torch::nn::Module& module, const TrainerOptions& options) {
  if (group_) ddp_ = std::make_unique<DistributedDataParallel>(module, group_, options.ddp());
  return TrainingScope(this);
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
