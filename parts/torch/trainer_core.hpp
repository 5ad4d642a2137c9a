// trainloop: TrainerCore, what every Trainer is whatever its callbacks: the objects that own the Trainer's state
// (options, progress, strategy, precision, logged values, optimizers, checkpoints, profiler) and what does not depend
// on the module, the data or the callbacks (stage setup, optimizer-step bookkeeping). Its functions are ordinary
// functions: instantiated once rather than per Trainer type, and compiled once for a whole program under
// TRAINLOOP_IMPLEMENTATION. The Trainer (trainer.hpp) derives from it; its loops (loops/) work on it.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "parts/core/engine.hpp"
#include "parts/torch/allocator.hpp"
#include "parts/torch/checkpoint_connector.hpp"
#include "parts/torch/logger_connector.hpp"
#include "parts/torch/loop_progress.hpp"
#include "parts/torch/module.hpp"
#include "parts/torch/optim.hpp"
#include "parts/torch/precision.hpp"
#include "parts/torch/profiler.hpp"
#include "parts/torch/schedulers.hpp"
#include "parts/torch/strategy.hpp"
#include "parts/torch/trainer_options.hpp"

TRAINLOOP_DETAIL_BEGIN

class Tuner;
namespace detail {
class FitLoopCore;
class SanityCheckScope;
class EvaluationScope;
}  // namespace detail

/// The Trainer's state and its type-independent members: a Trainer<Callbacks...> is a TrainerCore, and callbacks may
/// take either.
class TrainerCore {
 public:
  const TrainerOptions& options() const noexcept { return options_; }
  /// 0-based epoch while running; after fit, the number of epochs run.
  std::int64_t current_epoch() const noexcept { return progress_.current_epoch; }
  /// Optimizer steps taken (not batches: with accumulate_grad_batches(4), one step per 4 batches).
  std::int64_t global_step() const noexcept { return progress_.global_step; }
  /// Optimizer steps the loss scaler skipped ("16-mixed": inf/NaN gradients). They do not count in global_step and do
  /// not step the per-step schedulers.
  std::int64_t skipped_steps() const noexcept { return progress_.skipped_steps; }
  /// Whether the last optimizer step was skipped by the loss scaler.
  bool last_step_skipped() const noexcept { return progress_.last_step_skipped; }
  /// The loss scaler ("16-mixed", or grad_scaler(GradScalerOptions()) with "bf16-mixed") once a stage has started;
  /// nullptr without one (always, in a build without TRAINLOOP_WITH_AMP: then it points to no usable type).
  auto* grad_scaler() noexcept { return precision_.grad_scaler(); }
  /// Training batches run, over all epochs.
  std::int64_t total_batches() const noexcept { return progress_.total_batches; }
  /// The batch index within the current epoch (0-based).
  std::int64_t batch_idx() const noexcept { return progress_.batch_idx; }
  std::optional<std::int64_t> max_epochs() const { return options_.effective_max_epochs(); }
  std::optional<std::int64_t> num_training_batches() const noexcept { return num_training_batches_; }
  std::optional<std::int64_t> num_val_batches() const noexcept { return num_val_batches_; }
  std::optional<std::int64_t> num_test_batches() const noexcept { return num_test_batches_; }
  std::optional<std::int64_t> num_predict_batches() const noexcept { return num_predict_batches_; }
  Stage stage() const noexcept { return stage_; }
  /// Inside fit (validation runs included), as opposed to a standalone validate/test/predict.
  bool fitting() const noexcept { return fitting_; }
  bool sanity_checking() const noexcept { return sanity_checking_; }
  torch::Device device() const noexcept { return device_; }
  /// Ask fit to stop (early stopping): honoured at the next batch end once min_epochs and min_steps are reached.
  bool should_stop() const noexcept { return progress_.should_stop; }
  void should_stop(bool stop) noexcept { progress_.should_stop = stop; }
  /// Stop fit right after the current batch, whatever the minimums: no more batches and no epoch end
  /// (on_train_end and on_fit_end still run). A checkpoint saved just before resumes mid-epoch, exactly.
  void terminate() noexcept { progress_.terminate_requested = true; }
  /// Latest values (device tensors) for callbacks: step values during an epoch, epoch values after it.
  const std::map<std::string, torch::Tensor>& callback_metrics() const noexcept { return logs_.callback_metrics(); }
  /// What loggers receive: step values every log_every_n_steps ("name" or "name_step") and epoch values
  /// ("name" or "name_epoch"), as in Lightning.
  const std::map<std::string, torch::Tensor>& logged_metrics() const noexcept { return logs_.logged_metrics(); }
  /// The prog_bar metrics read to the host now (this is the one place the progress bar syncs).
  TRAINLOOP_DETAIL_API std::map<std::string, double> progress_bar_metrics() const;
  /// Hands values to the loggers in the pack (LearningRateMonitor does): they join the next record, written at the
  /// end of the current training batch (or evaluation, or stage).
  void log_metrics(const std::map<std::string, double>& values) { logs_.add_host_values(values); }
  /// Whether the optimizer step about to happen ends on a logging step (every log_every_n_steps).
  bool logging_next_step() const noexcept { return (progress_.global_step + 1) % options_.log_every_n_steps() == 0; }
  /// Batches whose gradients add up to one optimizer step; starts at the option, a callback may change it
  /// (GradientAccumulationScheduler does at epoch starts).
  std::int64_t accumulate_grad_batches() const noexcept { return progress_.accumulate_grad_batches; }
  void accumulate_grad_batches(std::int64_t n) {
    if (n < 1) throw std::invalid_argument("trainloop: Trainer::accumulate_grad_batches(n): n must be at least 1");
    progress_.accumulate_grad_batches = n;
  }
  /// What configure_optimizers returned, during and after fit.
  const Optimizers& optimizers() const noexcept { return optimizers_; }
  /// What the profiler measured in the last stage (TrainerOptions().profiler(true)).
  const Profiler& profiler() const noexcept { return profiler_; }
  /// Writes a checkpoint of the fit in progress, or of the last fit after it returned (the module must still be
  /// alive; resuming it with a larger max_epochs continues exactly): the model, the optimizers, the loop's counters
  /// and where in the loop it stands, the schedulers', callbacks' and training data's states, the values callbacks
  /// monitor, the RNG. Atomic; see save_checkpoint. With weights_only, the model's parameters and buffers alone.
  /// A model holding NaN or inf is refused (NonFiniteStateError), except while the fit is terminating (TerminateOnNan),
  /// when the save is skipped: a diverged run never replaces a good checkpoint.
  /// Returns whether the file was written (false: skipped, see above).
  /// Under data-parallel training rank 0 writes and every rank waits until the file is complete (call it on every
  /// rank, as callbacks do).
  bool save_checkpoint(const std::string& path, bool weights_only = false) {
    return checkpoints_.save_on_rank_zero(path, weights_only, CheckpointFormat::trainloop);
  }
  /// The same in a chosen layout: CheckpointFormat::lightning writes Lightning's (a torch.save dict: "epoch",
  /// "global_step", "state_dict", "optimizer_states", "lr_schedulers", "loops", "callbacks", "hyper_parameters", ...),
  /// which Python's MyModule.load_from_checkpoint(path) and Trainer.fit(model, ckpt_path=path) read, and fit(...,
  /// ckpt_path) here too (docs/checkpoints.md lists what maps). weights_only: Lightning's weights-only layout.
  bool save_checkpoint(const std::string& path, CheckpointFormat format, bool weights_only = false) {
    return checkpoints_.save_on_rank_zero(path, weights_only, format);
  }

  // --- data-parallel training (one process: rank 0 of 1) ---------------------------------------------------------

  /// This process's rank among all the job's processes (detail::process_rank: the process group's, else the
  /// launcher's environment).
  int global_rank() const noexcept { return strategy_.global_rank(); }
  /// The job's processes.
  int world_size() const noexcept { return strategy_.world_size(); }
  /// This process's rank on its machine.
  int local_rank() const noexcept { return strategy_.local_rank(); }
  /// Rank 0 writes logs, checkpoints and the progress bar.
  bool is_global_zero() const noexcept { return global_rank() == 0; }
  /// Whether `decision` holds on every rank (all = true) or on at least one (all = false): callbacks that take a
  /// branch every rank must take with them (stop, save) agree through it. `decision` itself in a single process.
  bool reduce_decision(bool decision, bool all) { return strategy_.reduce_decision(decision, all); }
  /// Waits until every rank arrives (nothing in a single process).
  void barrier() { strategy_.barrier(); }
  /// How the ranks train together: SingleProcess, or distributed::DDPStrategy (its process_group() and ddp()) in a
  /// build with TRAINLOOP_WITH_DISTRIBUTED=1.
  detail::StrategyPolicy& strategy() noexcept { return strategy_; }

 protected:
  // The type-independent halves of the Trainer's units work on its state.
  friend class detail::FitLoopCore;
  friend class detail::SanityCheckScope;
  friend class detail::EvaluationScope;
  friend class Tuner;  // runs its searches on a Trainer of its own, in tuning mode
  using LoopPoint = detail::LoopPoint;

  // Out of line (as the destructor): initialising and destroying every member is a lot of code for every TU.
  TRAINLOOP_DETAIL_API TrainerCore(TrainerOptions&& options, bool has_loggers);
  TRAINLOOP_DETAIL_API ~TrainerCore();
  TrainerCore(const TrainerCore&) = delete;
  TrainerCore& operator=(const TrainerCore&) = delete;

  // --- stages ----------------------------------------------------------------------------------------------------

  // What every stage does before the module's hooks run: allocator, seed, determinism, device, data-parallel group,
  // precision, the module's runtime view (its log() target, the stage), the profiler, no values pending.
  TRAINLOOP_DETAIL_API void prepare_stage(Stage stage, const std::string& stage_name);
  // The profiler's report at a stage's end (TrainerOptions().profiler(true)): to stderr or profiler_path.
  TRAINLOOP_DETAIL_API void report_profile();

  // Runs f, timed under the action when profiling: a name from profiler_actions, or a function returning a name
  // built once (so nothing is built while the profiler is off). f is expanded once, not once per profiler state.
  template <class Action, class F>
  decltype(auto) profiled(const Action& action, F&& f) {
    const std::string* name = nullptr;
    if (profiling_) {
      if constexpr (std::is_invocable_v<const Action&>) name = &action();
      else name = &action;
    }
    Profiler::Section section(profiler_, name);
    return f();
  }

  // A hook's profiler action name: "[Callback]ProgressBar.on_train_batch_end" (kind, owner's mangled type, hook).
  TRAINLOOP_DETAIL_API static std::string hook_action_name(const char* kind, const char* owner_type, const char* hook);

  // --- optimisation ------------------------------------------------------------------------------------------------

  // training_step's loss must be one number that requires grad; errors name the module (`module_type`), epoch, batch.
  TRAINLOOP_DETAIL_API void check_loss(const torch::Tensor& loss, std::int64_t batch_idx,
                                       std::string (*module_type)()) const;

  // What configure_optimizers returned, checked (`module` names it in errors), and handed to the module's runtime.
  TRAINLOOP_DETAIL_API void check_optimizers(const std::string& module, bool automatic_optimization);

  // Device-side clipping: no host sync (LibTorch's clip_grad_norm_ returns the norm as a double, which syncs).
  TRAINLOOP_DETAIL_API static void clip_gradients(torch::optim::Optimizer& optimizer, double limit,
                                                   ClipAlgorithm algorithm);

  // After optimizer steps: the accumulation window closes; a step taken counts and steps the schedulers that run per
  // step, a step the loss scaler skipped does neither.
  TRAINLOOP_DETAIL_API void count_optimizer_step(bool stepped);
  TRAINLOOP_DETAIL_API void step_schedulers(Interval interval, std::int64_t counter);

  // --- fit ---------------------------------------------------------------------------------------------------------

  // A fit's start: counters, flags and logged values back to zero; the training batches per epoch from the data's
  // size (nullopt: unknown) and the limits (overfit_batches, fast_dev_run, limit_train_batches).
  TRAINLOOP_DETAIL_API void begin_fit(std::optional<std::int64_t> train_size);

  // --- logged values -------------------------------------------------------------------------------------------------

  // A stage's step values published (logger_connector.hpp), with the loss scaler's skipped steps on logging steps.
  TRAINLOOP_DETAIL_API void publish_step_values(MetricStore& store);
  void publish_epoch_values(MetricStore& store) { logs_.publish_epoch_values(store, strategy_); }

  TrainerOptions options_;
  torch::Device device_ = torch::Device(torch::kCPU);
  Stage stage_ = Stage::train;
  bool sanity_checking_ = false;
  bool fitting_ = false;
  detail::LoopProgress progress_;      // the fit's counters, flags and where it stands
  detail::StrategyPolicy strategy_;    // one process, or data-parallel ranks (DESIGN.md §6)
  detail::PrecisionPolicy precision_;  // autocast and loss scaling ("16-mixed", "bf16-mixed"), or nothing ("32")
  std::optional<std::int64_t> num_training_batches_, num_val_batches_, num_test_batches_, num_predict_batches_;
  detail::LoggerConnector logs_;  // what is logged: per-stage stores, callback and logged metrics, the pending record
  Optimizers optimizers_;
  detail::CheckpointConnector checkpoints_{{progress_, precision_, logs_, optimizers_, strategy_, device_}};
  detail::ModuleRuntime runtime_;
  std::function<void(const SchedulerConfig&, std::optional<double>)> scheduler_step_;
  Profiler profiler_;
  bool profiling_ = false;
  // A Tuner's search (tuner.hpp): the module's configure_callbacks() and its schedulers are left out, as Lightning's
  // tuner swaps in its own callback and drops the schedulers for the search.
  bool tuning_ = false;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API TrainerCore::TrainerCore(TrainerOptions&& options, bool has_loggers)
    : options_(std::move(options)), logs_(has_loggers) {
  options_.validate();
}
TRAINLOOP_DETAIL_API TrainerCore::~TrainerCore() = default;

TRAINLOOP_DETAIL_API std::string TrainerCore::hook_action_name(const char* kind, const char* owner_type,
                                                              const char* hook) {
  return kind + detail::readable_type_name(owner_type) + "." + hook;
}

TRAINLOOP_DETAIL_API void TrainerCore::check_loss(const torch::Tensor& loss, std::int64_t batch_idx,
                                                  std::string (*module_type)()) const {
  auto where = [&] {
    return module_type() + "::training_step at epoch " + std::to_string(progress_.current_epoch) + ", batch " +
           std::to_string(batch_idx);
  };
  if (!loss.defined()) throw std::runtime_error("trainloop: " + where() + " returned an undefined loss tensor");
  if (loss.numel() != 1)
    throw std::runtime_error("trainloop: " + where() + " returned a loss of shape " + c10::str(loss.sizes()) +
                             "; the loss must hold one number (reduce it, for example with .mean())");
  if (!loss.requires_grad())
    throw std::runtime_error("trainloop: " + where() +
                             " returned a loss that does not require grad (computed under NoGradGuard, detached, or "
                             "from parameters with requires_grad false?)");
}

TRAINLOOP_DETAIL_API std::map<std::string, double> TrainerCore::progress_bar_metrics() const {
  std::map<std::string, double> values = logs_.progress_bar_values();
  if (precision_.scaling() && stage_ == Stage::train) values["skipped_steps"] = static_cast<double>(progress_.skipped_steps);
  return values;
}

TRAINLOOP_DETAIL_API void TrainerCore::prepare_stage(Stage stage, const std::string& stage_name) {
  if (options_.tune_malloc()) tune_glibc_malloc();
  if (options_.seed()) torch::manual_seed(*options_.seed());
  if (options_.deterministic()) {
    at::globalContext().setDeterministicAlgorithms(true, false);
    at::globalContext().setDeterministicCuDNN(true);
    at::globalContext().setBenchmarkCuDNN(false);
  }
  device_ = parse_accelerator(options_.accelerator());
  strategy_.setup(options_, device_);
  precision_.setup(options_, device_);
  strategy_.connect(precision_);
  stage_ = stage;
  runtime_ = detail::ModuleRuntime{};
  runtime_.metrics = &logs_.store(stage);
  runtime_.stage = stage;
  runtime_.device = device_;
  runtime_.current_epoch = progress_.current_epoch;
  runtime_.global_step = progress_.global_step;
  runtime_.clip_gradients = &TrainerCore::clip_gradients;
  profiling_ = options_.profiler();
  if (profiling_) profiler_.start(stage_name);
  logs_.drop_pending();
}

TRAINLOOP_DETAIL_API void TrainerCore::report_profile() {
  const std::string report = profiler_.report();
  if (options_.profiler_path().empty()) {
    std::fputs(report.c_str(), stderr);
    return;
  }
  std::FILE* file = std::fopen(options_.profiler_path().c_str(), "a");
  if (!file)
    throw std::runtime_error("trainloop: profiler_path '" + options_.profiler_path() + "': " + std::strerror(errno));
  std::fputs(report.c_str(), file);
  std::fclose(file);
}

TRAINLOOP_DETAIL_API void TrainerCore::check_optimizers(const std::string& module, bool automatic_optimization) {
  for (std::size_t i = 0; i < optimizers_.size(); ++i) {
    const auto& config = optimizers_[i];
    if (!config.optimizer())
      throw std::invalid_argument("trainloop: " + module + "::configure_optimizers() returned a null optimizer (entry " +
                                  std::to_string(i) + ")");
    // Lightning's and PyTorch's rule: a loss scaler steps after the closure ran (to skip a step with inf/NaN
    // gradients), which an optimizer that re-evaluates the loss inside its step cannot allow.
    if (precision_.scaling() && dynamic_cast<torch::optim::LBFGS*>(config.optimizer().get()))
      throw std::invalid_argument("trainloop: " + module + "::configure_optimizers() returned torch::optim::LBFGS "
                                  "(entry " + std::to_string(i) + "), which the loss scaler cannot drive (it "
                                  "re-evaluates the loss inside its step; as in Lightning and PyTorch's GradScaler); "
                                  "use precision(\"bf16-mixed\") without grad_scaler(...), or \"32\"");
    if (const auto& s = config.scheduler()) {
      if (!s->monitor().empty() && !s->can_step_on_metric())
        throw std::invalid_argument("trainloop: the scheduler of optimizer " + std::to_string(i) + " monitors '" +
                                    s->monitor() + "' but has no step(double metric)");
      if (s->monitor().empty() && !s->can_step_plainly())
        throw std::invalid_argument("trainloop: the scheduler of optimizer " + std::to_string(i) +
                                    " only has step(double metric); give it a metric with .monitor(\"name\")");
    }
  }
  if (automatic_optimization && optimizers_.empty())
    throw std::invalid_argument("trainloop: " + module +
                                " has no optimizer: its configure_optimizers() must return one (for example "
                                "std::make_shared<torch::optim::Adam>(parameters())), or switch to manual "
                                "optimisation with automatic_optimization(false)");
  runtime_.optimizers = detail::optimizer_pointers(optimizers_);
}

TRAINLOOP_DETAIL_API void TrainerCore::clip_gradients(torch::optim::Optimizer& optimizer, double limit,
                                                     ClipAlgorithm algorithm) {
  if (limit <= 0) return;
  std::vector<torch::Tensor> grads;
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params())
      if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return;
  torch::NoGradGuard no_grad;
  if (algorithm == ClipAlgorithm::value) {
    for (auto& g : grads) g.clamp_(-limit, limit);
    return;
  }
  std::vector<torch::Tensor> norms;
  norms.reserve(grads.size());
  for (auto& g : grads) norms.push_back(g.norm(2).to(torch::kFloat32));
  const torch::Tensor total = torch::stack(norms).norm(2);
  const torch::Tensor scale = (limit / (total + 1e-6)).clamp_max(1.0);
  for (auto& g : grads) g.mul_(scale.to(g.dtype()));
}

TRAINLOOP_DETAIL_API void TrainerCore::count_optimizer_step(bool stepped) {
  progress_.batches_since_step = 0;
  progress_.last_step_skipped = !stepped;
  if (!stepped) {
    ++progress_.skipped_steps;
    return;
  }
  ++progress_.global_step;
  runtime_.global_step = progress_.global_step;
  step_schedulers(Interval::step, progress_.global_step);
}

TRAINLOOP_DETAIL_API void TrainerCore::step_schedulers(Interval interval, std::int64_t counter) {
  for (std::size_t i = 0; i < optimizers_.size(); ++i) {
    const auto& s = optimizers_[i].scheduler();
    if (!s || s->interval() != interval || counter % s->frequency() != 0) continue;
    if (s->monitor().empty()) {
      scheduler_step_(*s, std::nullopt);
      continue;
    }
    const auto& callback_metrics = logs_.callback_metrics();
    auto it = callback_metrics.find(s->monitor());
    if (it == callback_metrics.end()) {
      std::string logged;
      for (const auto& entry : callback_metrics) logged += (logged.empty() ? "" : ", ") + entry.first;
      throw std::runtime_error("trainloop: the scheduler of optimizer " + std::to_string(i) + " monitors '" +
                               s->monitor() + "', which was not logged (logged: " +
                               (logged.empty() ? "nothing" : logged) + ")");
    }
    scheduler_step_(*s, it->second.item<double>());
  }
}

TRAINLOOP_DETAIL_API void TrainerCore::publish_step_values(MetricStore& store) {
  const bool log_now = progress_.global_step % options_.log_every_n_steps() == 0;
  const bool training = &store == &logs_.store(Stage::train);
  if (training && log_now && precision_.scaling()) logs_.add_host_values({{"skipped_steps", static_cast<double>(progress_.skipped_steps)}});
  logs_.publish_step_values(store, log_now, training);
}

TRAINLOOP_DETAIL_API void TrainerCore::begin_fit(std::optional<std::int64_t> train_size) {
  progress_.current_epoch = 0;
  progress_.global_step = 0;
  progress_.skipped_steps = 0;
  progress_.last_step_skipped = false;
  progress_.total_batches = 0;
  progress_.batches_since_step = 0;
  progress_.accumulate_grad_batches = options_.accumulate_grad_batches();
  progress_.should_stop = false;
  progress_.terminate_requested = false;
  progress_.stop_after_epoch = false;
  progress_.skip_rest_of_epoch = false;
  progress_.point = LoopPoint::between_batches;
  checkpoints_.begin_fit();
  logs_.clear();
  BatchLimit limit = options_.overfit_batches().is_set() ? options_.overfit_batches() : options_.limit_train_batches();
  if (options_.fast_dev_run() > 0) limit = BatchLimit(options_.fast_dev_run());
  num_training_batches_ = limit.apply(train_size, "limit_train_batches");
}

#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
