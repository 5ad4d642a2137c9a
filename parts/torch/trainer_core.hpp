// trainloop: TrainerCore, what every Trainer is whatever its callbacks: the options, the loop's counters and logged
// values, the optimizers and schedulers, the profiler, the process group, and the parts of the loop that do not depend
// on the module, the data or the callbacks (stage setup, optimizer-step bookkeeping, publishing logged values,
// checkpoint state). These are ordinary functions: instantiated once rather than per Trainer type, and compiled once
// for a whole program under TRAINLOOP_IMPLEMENTATION. The Trainer (trainer.hpp) derives from it.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

TRAINLOOP_DETAIL_BEGIN

namespace detail {
// The RNG state around the sanity check, so it draws nothing from the fit's stream (Lightning's isolate_rng).
class IsolatedRng {
 public:
  TRAINLOOP_DETAIL_API IsolatedRng();
  TRAINLOOP_DETAIL_API ~IsolatedRng();
  IsolatedRng(const IsolatedRng&) = delete;
  IsolatedRng& operator=(const IsolatedRng&) = delete;

 private:
  torch::Tensor cpu_;
  std::vector<torch::Tensor> cuda_;
};
}  // namespace detail

/// The Trainer's state and its type-independent members: a Trainer<Callbacks...> is a TrainerCore, and callbacks may
/// take either.
class TrainerCore {
 public:
  const TrainerOptions& options() const noexcept { return options_; }
  /// 0-based epoch while running; after fit, the number of epochs run.
  std::int64_t current_epoch() const noexcept { return current_epoch_; }
  /// Optimizer steps taken (not batches: with accumulate_grad_batches(4), one step per 4 batches).
  std::int64_t global_step() const noexcept { return global_step_; }
  /// Optimizer steps the loss scaler skipped ("16-mixed": inf/NaN gradients). They do not count in global_step and do
  /// not step the per-step schedulers.
  std::int64_t skipped_steps() const noexcept { return skipped_steps_; }
  /// Whether the last optimizer step was skipped by the loss scaler.
  bool last_step_skipped() const noexcept { return last_step_skipped_; }
#if TRAINLOOP_WITH_AMP
  /// The loss scaler ("16-mixed", or grad_scaler(GradScalerOptions()) with "bf16-mixed") once a stage has started;
  /// nullptr without one.
  amp::GradScaler* grad_scaler() noexcept { return precision_.grad_scaler(); }
#endif
  /// Training batches run, over all epochs.
  std::int64_t total_batches() const noexcept { return total_batches_; }
  /// The batch index within the current epoch (0-based).
  std::int64_t batch_idx() const noexcept { return batch_idx_; }
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
  bool should_stop() const noexcept { return should_stop_; }
  void should_stop(bool stop) noexcept { should_stop_ = stop; }
  /// Stop fit right after the current batch, whatever the minimums: no more batches and no epoch end
  /// (on_train_end and on_fit_end still run). A checkpoint saved just before resumes mid-epoch, exactly.
  void terminate() noexcept { terminate_requested_ = true; }
  /// Latest values (device tensors) for callbacks: step values during an epoch, epoch values after it.
  const std::map<std::string, torch::Tensor>& callback_metrics() const noexcept { return callback_metrics_; }
  /// What loggers receive: step values every log_every_n_steps ("name" or "name_step") and epoch values
  /// ("name" or "name_epoch"), as in Lightning.
  const std::map<std::string, torch::Tensor>& logged_metrics() const noexcept { return logged_metrics_; }
  /// The prog_bar metrics read to the host now (this is the one place the progress bar syncs).
  TRAINLOOP_DETAIL_API std::map<std::string, double> progress_bar_metrics() const;
  /// Hands values to the loggers in the pack (LearningRateMonitor does): they join the next record, written at the
  /// end of the current training batch (or evaluation, or stage).
  void log_metrics(const std::map<std::string, double>& values) {
    for (const auto& [name, value] : values) pending_host_log_[name] = value;
  }
  /// Whether the optimizer step about to happen ends on a logging step (every log_every_n_steps).
  bool logging_next_step() const noexcept { return (global_step_ + 1) % options_.log_every_n_steps() == 0; }
  /// Batches whose gradients add up to one optimizer step; starts at the option, a callback may change it
  /// (GradientAccumulationScheduler does at epoch starts).
  std::int64_t accumulate_grad_batches() const noexcept { return accumulate_grad_batches_; }
  void accumulate_grad_batches(std::int64_t n) {
    if (n < 1) throw std::invalid_argument("trainloop: Trainer::accumulate_grad_batches(n): n must be at least 1");
    accumulate_grad_batches_ = n;
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
  TRAINLOOP_DETAIL_API bool save_checkpoint(const std::string& path, bool weights_only = false);

  // --- data-parallel training (one process: rank 0 of 1) ---------------------------------------------------------

  /// This process's rank among all the job's processes.
  int global_rank() const noexcept {
#if TRAINLOOP_WITH_DISTRIBUTED
    if (group_) return group_->rank();
#endif
    return 0;
  }
  /// The job's processes.
  int world_size() const noexcept {
#if TRAINLOOP_WITH_DISTRIBUTED
    if (group_) return group_->size();
#endif
    return 1;
  }
  /// This process's rank on its machine.
  int local_rank() const noexcept {
#if TRAINLOOP_WITH_DISTRIBUTED
    if (group_) return group_->local_rank();
#endif
    return 0;
  }
  /// Rank 0 writes logs, checkpoints and the progress bar.
  bool is_global_zero() const noexcept { return global_rank() == 0; }
  /// Whether `decision` holds on every rank (all = true) or on at least one (all = false): callbacks that take a
  /// branch every rank must take with them (stop, save) agree through it. `decision` itself in a single process.
  bool reduce_decision(bool decision, bool all) {
#if TRAINLOOP_WITH_DISTRIBUTED
    if (group_) return group_->agree(decision, all);
#endif
    (void)all;
    return decision;
  }
  /// Waits until every rank arrives (nothing in a single process).
  void barrier() {
#if TRAINLOOP_WITH_DISTRIBUTED
    if (group_) group_->barrier();
#endif
  }
#if TRAINLOOP_WITH_DISTRIBUTED
  /// The process group once a stage ran data-parallel; nullptr otherwise.
  distributed::ProcessGroup* process_group() noexcept { return group_.get(); }
  /// The gradient synchronisation while fit runs data-parallel; nullptr otherwise.
  distributed::DistributedDataParallel* ddp() noexcept { return ddp_.get(); }
#endif

 protected:
  using Clock = std::chrono::steady_clock;
  static constexpr std::size_t index(Stage s) { return static_cast<std::size_t>(s); }

  // Where in the loop a fit stands. Checkpoints record it, and a resumed fit first does what was left at that point,
  // so it ends where the uninterrupted fit would (README: "what resumes exactly").
  enum class LoopPoint : std::int64_t {
    in_batch = 0,          // inside a training batch, before on_train_batch_end: not an exact resume point
    batch_end = 1,         // on_train_batch_end: the batch's stop checks and validation are still to come
    batch_validation = 2,  // inside that validation, before its on_validation_end: it runs again
    between_batches = 3,   // nothing left of the batch (or of the epoch)
    epoch_validation = 4,  // inside the epoch-end validation (data of unknown size), before its on_validation_end:
                           // it runs again
    epoch_hooks = 5,       // on_validation_end of that validation: on_train_epoch_end and the rest to come
    epoch_rest = 6,        // checkpointing callbacks' on_train_epoch_end: the epoch's schedulers and stop to come
    training_done = 7,     // on_train_end, on_fit_end, after fit
  };

  // Out of line (as the destructor): initialising and destroying every member is a lot of code for every TU.
  TRAINLOOP_DETAIL_API TrainerCore(TrainerOptions&& options, bool has_loggers);
  TRAINLOOP_DETAIL_API ~TrainerCore();
  TrainerCore(const TrainerCore&) = delete;
  TrainerCore& operator=(const TrainerCore&) = delete;

  // --- stages ----------------------------------------------------------------------------------------------------

  // What every stage does before the module's hooks run: allocator, seed, determinism, device, data-parallel group,
  // precision, the module's runtime view (its log() target, the stage), the profiler, no values pending.
  TRAINLOOP_DETAIL_API void prepare_stage(Stage stage, const std::string& stage_name);

  // The first stage that wants several ranks joins (or, with devices(n) and no launcher, starts) them; the group
  // stays for the Trainer's later stages (init() also makes the metrics reduce over it). Each rank takes its own
  // CUDA device.
  TRAINLOOP_DETAIL_API void setup_distributed();
  // An epoch value logged with sync_dist, over every rank's batches: a mean is the ranks' weighted sums over their
  // weights (exactly the mean over all batches), sum/max/min reduce as named.
  TRAINLOOP_DETAIL_API torch::Tensor epoch_value_across_ranks(const MetricStore::Entry& e);

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

  // --- checkpoint state --------------------------------------------------------------------------------------------

  // The loop's own states in a checkpoint (the callbacks' are added by the Trainer): the training Engine's, the
  // counters, where the loop stands, the loss scaler, the epoch's running sums, the data's position, the schedulers.
  TRAINLOOP_DETAIL_API std::map<std::string, StateDict> loop_states();
  // What callbacks monitor and the epoch's running sums: a resumed fit ranks, stops and reports as the first did.
  TRAINLOOP_DETAIL_API std::map<std::string, TensorDict> loop_tensor_states() const;

  // A state's own load error (a missing key in a DataLoader's state) names the checkpoint and the state's key too.
  template <class F>
  static void restoring(const std::string& path, const std::string& key, F&& load) {
    try {
      load();
    } catch (const std::exception& error) {
      throw_restore_error(path, key, error);
    }
  }
  [[noreturn]] TRAINLOOP_DETAIL_API static void throw_restore_error(const std::string& path, const std::string& key,
                                                                    const std::exception& error);
  // A hook's profiler action name: "[Callback]ProgressBar.on_train_batch_end" (kind, owner's mangled type, hook).
  TRAINLOOP_DETAIL_API static std::string hook_action_name(const char* kind, const char* owner_type, const char* hook);

  // Restoring a checkpoint, in Lightning's two phases: the model and the callbacks before on_fit_start, the loop's
  // counters and the rest of the training state after it.
  struct LoadedCheckpoint {
    std::map<std::string, StateDict> states;
    std::map<std::string, TensorDict> tensors;
    TRAINLOOP_DETAIL_API const StateDict& need(const std::string& path, const std::string& key) const;
    // A callback's tensor state (`key`), which a checkpoint written with that callback always holds.
    TRAINLOOP_DETAIL_API const TensorDict& need_tensors(const std::string& path, const std::string& key) const;
    // The on_save_checkpoint entries (empty when the checkpoint has none).
    TRAINLOOP_DETAIL_API const StateDict& entries() const;
    TRAINLOOP_DETAIL_API const TensorDict& entry_tensors() const;
  };
  // The checkpoint read into the model and the optimizers (and the RNG); the rest waits for its phase.
  TRAINLOOP_DETAIL_API LoadedCheckpoint load_fit_checkpoint(const std::string& path, torch::nn::Module& module);

  // The counters, where the loop stood, the loss scaler, the values callbacks monitor, the epoch's running sums and
  // the schedulers, from a checkpoint (the training data's position is the Trainer's, which knows the data's type).
  // Returns the training Engine's state.
  TRAINLOOP_DETAIL_API StateDict restore_loop_state(const std::string& path, const LoadedCheckpoint& loaded);
  // The training data's saved position for this rank (rank 0 saved it: every rank takes the same position in its own
  // shard); nullopt when the checkpoint has none.
  TRAINLOOP_DETAIL_API std::optional<StateDict> train_data_state(const LoadedCheckpoint& loaded) const;

  // What fit's checkpoint holds besides the model and the optimizers: the loop's states, the callbacks' (keyed by
  // type) and Lightning's on_save_checkpoint entries.
  struct CheckpointContents {
    std::map<std::string, StateDict> states;
    std::map<std::string, TensorDict> tensors;
    StateDict entries;
    TensorDict entry_tensors;
  };
  // Writes fit's checkpoint: the weights only, or everything, the callbacks' part added by `add_callbacks` (the
  // Trainer knows their types). Returns false when it is skipped: a non-finite state while the fit terminates.
  TRAINLOOP_DETAIL_API bool write_fit_checkpoint(const std::string& path, bool weights_only, torch::nn::Module& module,
                                                 const StateDict& hparams,
                                                 detail::FunctionRef<void(CheckpointContents&)> add_callbacks);

  // --- optimisation ------------------------------------------------------------------------------------------------

  // training_step's loss must be one number that requires grad; errors name the module (`module_type`), epoch, batch.
  TRAINLOOP_DETAIL_API void check_loss(const torch::Tensor& loss, std::int64_t batch_idx,
                                       std::string (*module_type)()) const;

  // What configure_optimizers returned, checked (`module` names it in errors), and handed to the module's runtime.
  TRAINLOOP_DETAIL_API void check_optimizers(const std::string& module, bool automatic_optimization);

  // The configured optimizers, in order (for checkpoints and the module's optimizers()).
  TRAINLOOP_DETAIL_API std::vector<std::shared_ptr<torch::optim::Optimizer>> optimizer_pointers() const;

  // Device-side clipping: no host sync (LibTorch's clip_grad_norm_ returns the norm as a double, which syncs).
  TRAINLOOP_DETAIL_API static void clip_gradients(torch::optim::Optimizer& optimizer, double limit,
                                                   ClipAlgorithm algorithm);

  // After optimizer steps: the accumulation window closes; a step taken counts and steps the schedulers that run per
  // step, a step the loss scaler skipped does neither.
  TRAINLOOP_DETAIL_API void count_optimizer_step(bool stepped);
  TRAINLOOP_DETAIL_API void step_schedulers(Interval interval, std::int64_t counter);

  // --- the fit loop's decisions --------------------------------------------------------------------------------------
  // What does not depend on the module, the data or the callbacks (Lightning's rules; README: TrainerOptions); the
  // Trainer's FitContext calls the module and the callbacks around these.

  struct FitProgress {
    Clock::time_point start;                // for max_time
    std::optional<std::int64_t> val_limit;  // validation batches per run while fitting (nullopt: all)
    std::optional<LoopPoint> resumed_at;    // a resumed fit: where its checkpoint was written,
    bool resuming_mid_epoch = false;        // and whether that was inside an epoch
    bool epoch_sized = true;                // the epoch's batch count was known when it began
  };

  // A fit's start: counters, flags and logged values back to zero; the training batches per epoch from the data's
  // size (nullopt: unknown) and the limits (overfit_batches, fast_dev_run, limit_train_batches).
  TRAINLOOP_DETAIL_API void begin_fit(std::optional<std::int64_t> train_size);
  // Lightning refuses an integer val_check_interval longer than an epoch: it would never validate.
  TRAINLOOP_DETAIL_API void check_val_check_interval() const;
  // After the loop state is restored: where its checkpoint was written, and whether inside an epoch.
  TRAINLOOP_DETAIL_API void note_resume_point(const StateDict& loop_state);
  // Whether the sanity check runs, and over how many batches (`limit`; nullopt: all).
  TRAINLOOP_DETAIL_API bool sanity_check_due(std::optional<std::int64_t>& limit) const;
  TRAINLOOP_DETAIL_API std::uint64_t max_epochs_to_run() const;
  // A checkpoint written after training ended resumes only to go further: more epochs or more steps.
  TRAINLOOP_DETAIL_API bool finished_before(const std::optional<StateDict>& loop_state) const;
  TRAINLOOP_DETAIL_API bool minimums_reached() const;  // min_epochs and min_steps: should_stop waits for them
  TRAINLOOP_DETAIL_API bool validation_due_this_epoch() const;
  // Lightning's batch-end rule: every val_check_interval batches of the epoch (or across epochs), or each
  // floor(fraction * batches)-th batch; trainloop's every n optimizer steps. Data of unknown size validates at the
  // epoch's end instead.
  TRAINLOOP_DETAIL_API bool validation_due_at_batch(const State& state) const;
  TRAINLOOP_DETAIL_API bool validation_at_epoch_end() const;
  // At a batch's end: Lightning validates when its interval says so, and when the fit is asked to stop there
  // (should_stop with the minimums reached, or the time limit), before stopping.
  TRAINLOOP_DETAIL_API bool out_of_time() const;
  TRAINLOOP_DETAIL_API bool validation_due_at_batch_end(const State& state, bool out_of_time) const;
  TRAINLOOP_DETAIL_API bool stop_due(bool out_of_time) const;
  // An epoch's start: the counters, and unless the fit resumes inside it, its running sums and skip flag.
  TRAINLOOP_DETAIL_API void start_epoch(const State& state);
  // An epoch's end, after its logs: the epoch's schedulers, the stop check, the epochs run (as Lightning reports).
  TRAINLOOP_DETAIL_API void end_epoch(EngineCore& engine);

  // The sanity check's scope: it draws nothing from the fit's RNG stream and leaves callback_metrics and
  // logged_metrics as they were (empty in a fresh fit, the checkpoint's in a resumed one).
  class SanityCheckScope {
   public:
    TRAINLOOP_DETAIL_API explicit SanityCheckScope(TrainerCore& trainer);
    TRAINLOOP_DETAIL_API ~SanityCheckScope();
    SanityCheckScope(const SanityCheckScope&) = delete;
    SanityCheckScope& operator=(const SanityCheckScope&) = delete;

   private:
    TrainerCore& trainer_;
    detail::IsolatedRng rng_;
    std::map<std::string, torch::Tensor> callback_metrics_, logged_metrics_;
  };
  // While the training Engine runs, checkpoints read the loop's state from it; from a copy once it is gone.
  class TrainingEngineScope {
   public:
    TRAINLOOP_DETAIL_API TrainingEngineScope(TrainerCore& trainer, EngineCore& engine);
    TRAINLOOP_DETAIL_API ~TrainingEngineScope();
    TrainingEngineScope(const TrainingEngineScope&) = delete;
    TrainingEngineScope& operator=(const TrainingEngineScope&) = delete;

   private:
    TrainerCore& trainer_;
    EngineCore& engine_;
  };

  // --- evaluation ------------------------------------------------------------------------------------------------

  // What an evaluation changes, put back when it ends (by an exception too): the stage, the metric store the module
  // logs to, the module's mode (unless an on_<stage>_model_train hook took care of it). A sanity check's evaluation
  // (SanityCheckScope owns the flag) publishes nothing and leaves no values in the store.
  class EvaluationScope {
   public:
    // `batches`: the evaluation's batch count (nullopt: unknown), for num_val_batches() and the progress bar.
    TRAINLOOP_DETAIL_API EvaluationScope(TrainerCore& trainer, torch::nn::Module& module, Stage stage,
                                         std::optional<std::int64_t> batches);
    TRAINLOOP_DETAIL_API ~EvaluationScope();
    EvaluationScope(const EvaluationScope&) = delete;
    EvaluationScope& operator=(const EvaluationScope&) = delete;
    MetricStore& store() const noexcept { return store_; }
    // After the evaluation's last batch: the epoch's values published (not the sanity check's), and a validation
    // inside fit moves the loop point on (see LoopPoint).
    TRAINLOOP_DETAIL_API void end_epoch();
    bool restore_mode = true;

   private:
    TrainerCore& trainer_;
    torch::nn::Module& module_;
    Stage stage_, previous_stage_;
    bool sanity_, was_training_;
    MetricStore& store_;
  };

  // --- logged values -------------------------------------------------------------------------------------------------

  // Step values into callback_metrics (always) and logged_metrics (every log_every_n_steps): tensors, no host sync.
  // Training step values reach the loggers on logging steps; evaluation step values stay out of the loggers (their
  // step does not advance), as their epoch values go in.
  TRAINLOOP_DETAIL_API void publish_step_values(MetricStore& store);
  TRAINLOOP_DETAIL_API void publish_epoch_values(MetricStore& store);

  // The values waiting for the loggers, read to the host with one transfer, plus "epoch"; nothing stays pending.
  // This is where logging syncs the device, and only when something is written.
  TRAINLOOP_DETAIL_API std::map<std::string, double> take_log_record();
  // The epoch values a validate/test run published, read to the host.
  TRAINLOOP_DETAIL_API std::map<std::string, double> host_values(const MetricStore& store) const;

  TrainerOptions options_;
  bool has_loggers_;  // the Trainer's callbacks include a logger: logged values are kept for it
  torch::Device device_ = torch::Device(torch::kCPU);
  Stage stage_ = Stage::train;
  bool sanity_checking_ = false;
  bool fitting_ = false;
  bool should_stop_ = false;
  bool terminate_requested_ = false;
  std::int64_t current_epoch_ = 0, global_step_ = 0, total_batches_ = 0, batch_idx_ = 0;
  std::int64_t batches_since_step_ = 0;  // batches whose gradients wait for the next optimizer step
  detail::PrecisionPolicy precision_;      // autocast and loss scaling ("16-mixed", "bf16-mixed"), or nothing ("32")
  std::int64_t skipped_steps_ = 0;
  bool last_step_skipped_ = false;
  std::optional<std::int64_t> num_training_batches_, num_val_batches_, num_test_batches_, num_predict_batches_;
  std::array<MetricStore, 4> metrics_;  // one per Stage: train, validate (the sanity check too), test, predict
  std::map<std::string, torch::Tensor> callback_metrics_, logged_metrics_;
  Optimizers optimizers_;
  detail::ModuleRuntime runtime_;
  // While fitting: the training Engine, how to save, and the training data's position (when it has one).
  EngineCore* train_engine_ = nullptr;
  std::optional<StateDict> final_loop_state_;  // the training Engine's state once it is gone (after training)
  LoopPoint loop_point_ = LoopPoint::between_batches;
  bool stop_after_epoch_ = false;    // a stop condition was met: the epoch ends, then the fit
  FitProgress fit_;
  bool skip_rest_of_epoch_ = false;  // on_train_batch_start returned -1
  std::function<bool(const std::string&, bool)> save_;
  std::function<void(const SchedulerConfig&, std::optional<double>)> scheduler_step_;
  std::function<StateDict()> train_data_state_;
  std::int64_t accumulate_grad_batches_ = 1;
  std::map<std::string, torch::Tensor> pending_log_;  // logged values waiting for the next record to the loggers
  std::map<std::string, double> pending_host_log_;    // values callbacks handed over with log_metrics()
  Profiler profiler_;
  bool profiling_ = false;
#if TRAINLOOP_WITH_DISTRIBUTED
  std::shared_ptr<distributed::ProcessGroup> group_;
  std::unique_ptr<distributed::DistributedDataParallel> ddp_;
#endif
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API detail::IsolatedRng::IsolatedRng() : cpu_(cpu_generator().get_state()) {
  for (std::size_t i = 0; i < cuda_generator_count(); ++i) cuda_.push_back(cuda_generator(i).get_state());
}
TRAINLOOP_DETAIL_API detail::IsolatedRng::~IsolatedRng() {
  cpu_generator().set_state(cpu_);
  for (std::size_t i = 0; i < cuda_.size(); ++i) cuda_generator(i).set_state(cuda_[i]);
}

TRAINLOOP_DETAIL_API TrainerCore::TrainerCore(TrainerOptions&& options, bool has_loggers)
    : options_(std::move(options)), has_loggers_(has_loggers) {
  options_.validate();
}
TRAINLOOP_DETAIL_API TrainerCore::~TrainerCore() = default;

TRAINLOOP_DETAIL_API void TrainerCore::throw_restore_error(const std::string& path, const std::string& key,
                                                          const std::exception& error) {
  throw CheckpointError("trainloop: checkpoint '" + path + "': key '" + key + "': " + error.what());
}

TRAINLOOP_DETAIL_API std::string TrainerCore::hook_action_name(const char* kind, const char* owner_type,
                                                              const char* hook) {
  return kind + detail::readable_type_name(owner_type) + "." + hook;
}

TRAINLOOP_DETAIL_API const StateDict& TrainerCore::LoadedCheckpoint::need(const std::string& path,
                                                                          const std::string& key) const {
  auto it = states.find(key);
  if (it == states.end())
    throw CheckpointError("trainloop: checkpoint '" + path + "': key '" + key + "' is missing (not written by fit?)");
  return it->second;
}

TRAINLOOP_DETAIL_API const TensorDict& TrainerCore::LoadedCheckpoint::need_tensors(const std::string& path,
                                                                                  const std::string& key) const {
  auto it = tensors.find(key);
  if (it == tensors.end())
    throw CheckpointError("trainloop: checkpoint '" + path + "': key '" + key +
                          "' (tensors) is missing: it was written without this callback");
  return it->second;
}
TRAINLOOP_DETAIL_API const StateDict& TrainerCore::LoadedCheckpoint::entries() const {
  static const StateDict none;
  auto it = states.find("checkpoint");
  return it != states.end() ? it->second : none;
}
TRAINLOOP_DETAIL_API const TensorDict& TrainerCore::LoadedCheckpoint::entry_tensors() const {
  static const TensorDict none;
  auto it = tensors.find("checkpoint");
  return it != tensors.end() ? it->second : none;
}

TRAINLOOP_DETAIL_API TrainerCore::LoadedCheckpoint TrainerCore::load_fit_checkpoint(const std::string& path,
                                                                                   torch::nn::Module& module) {
  LoadedCheckpoint loaded;
  loaded.states = trainloop::load_checkpoint(path, module, optimizer_pointers(), device_, true, &loaded.tensors);
  return loaded;
}

TRAINLOOP_DETAIL_API bool TrainerCore::write_fit_checkpoint(const std::string& path, bool weights_only,
                                                           torch::nn::Module& module, const StateDict& hparams,
                                                           detail::FunctionRef<void(CheckpointContents&)> add_callbacks) {
  try {
    if (weights_only) {
      trainloop::save_weights(path, module);
      return true;
    }
    CheckpointContents contents{loop_states(), loop_tensor_states(),
                                {{"epoch", current_epoch_}, {"global_step", global_step_}}, {}};
    add_callbacks(contents);
    contents.states["checkpoint"] = std::move(contents.entries);
    if (!contents.entry_tensors.empty()) contents.tensors["checkpoint"] = std::move(contents.entry_tensors);
    if (!hparams.empty()) contents.states["hparams"] = hparams;
    trainloop::save_checkpoint(path, module, optimizer_pointers(), contents.states, true, contents.tensors);
    return true;
  } catch (const NonFiniteStateError& error) {
    if (!terminate_requested_) throw;  // a diverged fit fails, its last finite checkpoint intact
    std::fprintf(stderr, "%s; the fit is stopping, so this checkpoint is skipped\n", error.what());
    return false;
  }
}

TRAINLOOP_DETAIL_API void TrainerCore::check_loss(const torch::Tensor& loss, std::int64_t batch_idx,
                                                  std::string (*module_type)()) const {
  auto where = [&] {
    return module_type() + "::training_step at epoch " + std::to_string(current_epoch_) + ", batch " +
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
  std::map<std::string, double> values;
  for (const auto& store : metrics_)
    for (const auto& [name, entry] : store.entries()) {
      if (!entry.prog_bar) continue;
      auto it = callback_metrics_.find(name);
      if (it != callback_metrics_.end() && it->second.defined()) values[name] = it->second.template item<double>();
    }
  if (precision_.scaling() && stage_ == Stage::train) values["skipped_steps"] = static_cast<double>(skipped_steps_);
  return values;
}

TRAINLOOP_DETAIL_API bool TrainerCore::save_checkpoint(const std::string& path, bool weights_only) {
  if (!save_) throw std::logic_error("trainloop: Trainer::save_checkpoint(\"" + path + "\") needs a fit in progress or done");
  if (world_size() == 1) return save_(path, weights_only);
  bool written = true;
  std::exception_ptr error;
  if (is_global_zero()) {
    try {
      written = save_(path, weights_only);
    } catch (...) {
      error = std::current_exception();
    }
  }
  barrier();  // no rank reads (or resumes from) a checkpoint before it is complete
  if (error) std::rethrow_exception(error);
  return written;
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
  setup_distributed();
  precision_.setup(options_, device_);
#if TRAINLOOP_WITH_DISTRIBUTED && TRAINLOOP_WITH_AMP
  if (group_ && precision_.grad_scaler())  // every rank skips the same steps ("16-mixed")
    precision_.grad_scaler()->set_found_inf_reducer(
        [group = group_](torch::Tensor& found) { group->all_reduce(found, distributed::ReduceOp::max); });
#endif
  stage_ = stage;
  runtime_ = detail::ModuleRuntime{};
  runtime_.metrics = &metrics_[index(stage)];
  runtime_.stage = stage;
  runtime_.device = device_;
  runtime_.current_epoch = current_epoch_;
  runtime_.global_step = global_step_;
  runtime_.clip_gradients = &TrainerCore::clip_gradients;
  profiling_ = options_.profiler();
  if (profiling_) profiler_.start(stage_name);
  pending_log_.clear();
  pending_host_log_.clear();
}

TRAINLOOP_DETAIL_API void TrainerCore::setup_distributed() {
#if TRAINLOOP_WITH_DISTRIBUTED
  if (!group_ && options_.strategy() != "single") {
    const distributed::Environment env = distributed::detect_environment();
    if (options_.strategy() == "ddp" || options_.devices() > 1 || env.world_size > 1) {
      group_ = distributed::default_group();
      if (!group_) {
        distributed::InitOptions init = options_.process_group();
        if (options_.devices() > 0) init.processes(options_.devices());
        group_ = distributed::init(init.device(device_), env);
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
  if (group_ && device_.is_cuda()) device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(group_->local_rank()));
#endif
}

TRAINLOOP_DETAIL_API torch::Tensor TrainerCore::epoch_value_across_ranks(const MetricStore::Entry& e) {
  torch::Tensor value = MetricStore::epoch_value(e);
#if TRAINLOOP_WITH_DISTRIBUTED
  if (!group_ || group_->size() == 1 || !e.sync_dist || e.metric_compute || !value.defined()) return value;
  if (e.reduce == Reduce::mean) {
    torch::Tensor sums = torch::stack({e.accumulated.reshape({}), torch::full({}, e.weight, e.accumulated.options())});
    group_->all_reduce(sums, distributed::ReduceOp::sum);
    return sums[0] / sums[1];
  }
  value = value.clone();
  group_->all_reduce(value, e.reduce == Reduce::sum   ? distributed::ReduceOp::sum
                            : e.reduce == Reduce::max ? distributed::ReduceOp::max
                                                      : distributed::ReduceOp::min);
#endif
  return value;
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

TRAINLOOP_DETAIL_API std::map<std::string, StateDict> TrainerCore::loop_states() {
  std::map<std::string, StateDict> states;
  if (train_engine_) states["loop"] = train_engine_->state.state_dict();
  else if (final_loop_state_) states["loop"] = *final_loop_state_;
  auto flag = [](bool b) { return std::int64_t{b ? 1 : 0}; };
  states["trainer"] = {{"global_step", global_step_},
                       {"total_batches", total_batches_},
                       {"batches_since_step", batches_since_step_},
                       {"current_epoch", current_epoch_},
                       {"accumulate_grad_batches", accumulate_grad_batches_},
                       {"loop_point", static_cast<std::int64_t>(loop_point_)},
                       {"should_stop", flag(should_stop_)},
                       {"stop_after_epoch", flag(stop_after_epoch_)},
                       {"skip_rest_of_epoch", flag(skip_rest_of_epoch_)},
                       {"skipped_steps", skipped_steps_},
                       {"last_step_skipped", flag(last_step_skipped_)}};
  if (precision_.scaling()) states["precision/grad_scaler"] = precision_.state_dict();
  states["trainer/train_epoch_sums"] = metrics_[index(Stage::train)].epoch_state();
  if (train_data_state_) states["train_data"] = train_data_state_();
  for (std::size_t i = 0; i < optimizers_.size(); ++i)
    if (const auto& s = optimizers_[i].scheduler())
      if (auto state = s->state_dict()) states["scheduler/" + std::to_string(i)] = *state;
  return states;
}

TRAINLOOP_DETAIL_API std::map<std::string, TensorDict> TrainerCore::loop_tensor_states() const {
  std::map<std::string, TensorDict> tensors;
  tensors["trainer/callback_metrics"] = TensorDict(callback_metrics_.begin(), callback_metrics_.end());
  tensors["trainer/train_epoch_sums"] = metrics_[index(Stage::train)].epoch_sums();
  return tensors;
}

TRAINLOOP_DETAIL_API StateDict TrainerCore::restore_loop_state(const std::string& path,
                                                             const LoadedCheckpoint& loaded) {
  const StateDict& loop = loaded.need(path, "loop");
  const StateDict& counters = loaded.need(path, "trainer");
  auto count = [&](const char* key) {
    auto it = counters.find(key);
    if (it == counters.end() || !std::holds_alternative<std::int64_t>(it->second))
      throw CheckpointError("trainloop: checkpoint '" + path + "': key 'trainer/" + key + "' is missing");
    return std::get<std::int64_t>(it->second);
  };
  global_step_ = count("global_step");
  total_batches_ = count("total_batches");
  batches_since_step_ = count("batches_since_step");
  current_epoch_ = count("current_epoch");
  accumulate_grad_batches_ = count("accumulate_grad_batches");
  const std::int64_t point = count("loop_point");
  if (point < 0 || point > static_cast<std::int64_t>(LoopPoint::training_done))
    throw CheckpointError("trainloop: checkpoint '" + path + "': key 'trainer/loop_point' is " + std::to_string(point) +
                          ", not a point this trainloop knows");
  loop_point_ = static_cast<LoopPoint>(point);
  should_stop_ = count("should_stop") != 0;
  stop_after_epoch_ = count("stop_after_epoch") != 0;
  skip_rest_of_epoch_ = count("skip_rest_of_epoch") != 0;
  skipped_steps_ = counters.count("skipped_steps") ? count("skipped_steps") : 0;  // absent from older checkpoints
  last_step_skipped_ = counters.count("last_step_skipped") && count("last_step_skipped") != 0;
  if (precision_.scaling()) {
    const std::string key = "precision/grad_scaler";
    const StateDict& scaler = loaded.need(path, key);
    restoring(path, key, [&] { precision_.load_state_dict(scaler); });
  }
  auto metrics = loaded.tensors.find("trainer/callback_metrics");
  if (metrics != loaded.tensors.end()) callback_metrics_.insert(metrics->second.begin(), metrics->second.end());
  auto sums = loaded.tensors.find("trainer/train_epoch_sums");
  metrics_[index(Stage::train)].load_epoch_state(loaded.need(path, "trainer/train_epoch_sums"),
                                                 sums != loaded.tensors.end() ? sums->second : TensorDict{}, path);
  runtime_.global_step = global_step_;
  runtime_.current_epoch = current_epoch_;
  for (std::size_t i = 0; i < optimizers_.size(); ++i)
    if (const auto& s = optimizers_[i].scheduler()) {
      auto it = loaded.states.find("scheduler/" + std::to_string(i));
      if (it != loaded.states.end()) restoring(path, it->first, [&] { s->load_state_dict(it->second); });
    }
  return loop;
}

TRAINLOOP_DETAIL_API std::optional<StateDict> TrainerCore::train_data_state(const LoadedCheckpoint& loaded) const {
  auto it = loaded.states.find("train_data");
  if (it == loaded.states.end()) return std::nullopt;
  StateDict state = it->second;
  if (world_size() > 1 && state.count("rank")) state["rank"] = std::int64_t{global_rank()};
  return state;
}

TRAINLOOP_DETAIL_API TrainerCore::SanityCheckScope::SanityCheckScope(TrainerCore& trainer)
    : trainer_(trainer), callback_metrics_(trainer.callback_metrics_), logged_metrics_(trainer.logged_metrics_) {
  trainer_.sanity_checking_ = true;
}
TRAINLOOP_DETAIL_API TrainerCore::SanityCheckScope::~SanityCheckScope() {
  trainer_.sanity_checking_ = false;
  trainer_.callback_metrics_ = std::move(callback_metrics_);
  trainer_.logged_metrics_ = std::move(logged_metrics_);
}

TRAINLOOP_DETAIL_API TrainerCore::TrainingEngineScope::TrainingEngineScope(TrainerCore& trainer, EngineCore& engine)
    : trainer_(trainer), engine_(engine) {
  trainer_.train_engine_ = &engine;
}
TRAINLOOP_DETAIL_API TrainerCore::TrainingEngineScope::~TrainingEngineScope() {
  trainer_.final_loop_state_ = engine_.state.state_dict();
  trainer_.train_engine_ = nullptr;
}

TRAINLOOP_DETAIL_API TrainerCore::EvaluationScope::EvaluationScope(TrainerCore& trainer, torch::nn::Module& module,
                                                                  Stage stage, std::optional<std::int64_t> batches)
    : trainer_(trainer),
      module_(module),
      stage_(stage),
      previous_stage_(trainer.stage_),
      sanity_(trainer.sanity_checking_),
      was_training_(module.is_training()),
      store_(trainer.metrics_[index(stage)]) {
  trainer_.stage_ = stage;
  trainer_.runtime_.stage = stage;
  trainer_.runtime_.metrics = &store_;
  store_.start_epoch();
  (stage == Stage::test ? trainer_.num_test_batches_
   : stage == Stage::predict ? trainer_.num_predict_batches_
                             : trainer_.num_val_batches_) = batches;
}
TRAINLOOP_DETAIL_API void TrainerCore::EvaluationScope::end_epoch() {
  if (sanity_) return;
  trainer_.publish_epoch_values(store_);
  if (stage_ == Stage::validate && trainer_.fitting_) {  // the validation's results are in: see LoopPoint
    LoopPoint& point = trainer_.loop_point_;
    if (point == LoopPoint::batch_validation) point = LoopPoint::between_batches;
    if (point == LoopPoint::epoch_validation) point = LoopPoint::epoch_hooks;
  }
}
TRAINLOOP_DETAIL_API TrainerCore::EvaluationScope::~EvaluationScope() {
  if (sanity_) store_.clear();  // the sanity check's values are not results
  if (restore_mode) module_.train(was_training_);
  trainer_.stage_ = previous_stage_;
  trainer_.runtime_.stage = previous_stage_;
  trainer_.runtime_.metrics = &trainer_.metrics_[index(previous_stage_)];
}

TRAINLOOP_DETAIL_API void TrainerCore::check_optimizers(const std::string& module, bool automatic_optimization) {
  for (std::size_t i = 0; i < optimizers_.size(); ++i) {
    const auto& config = optimizers_[i];
    if (!config.optimizer())
      throw std::invalid_argument("trainloop: " + module + "::configure_optimizers() returned a null optimizer (entry " +
                                  std::to_string(i) + ")");
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
  runtime_.optimizers = optimizer_pointers();
}

TRAINLOOP_DETAIL_API std::vector<std::shared_ptr<torch::optim::Optimizer>> TrainerCore::optimizer_pointers() const {
  std::vector<std::shared_ptr<torch::optim::Optimizer>> pointers;
  for (const auto& config : optimizers_) pointers.push_back(config.optimizer());
  return pointers;
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
  batches_since_step_ = 0;
  last_step_skipped_ = !stepped;
  if (!stepped) {
    ++skipped_steps_;
    return;
  }
  ++global_step_;
  runtime_.global_step = global_step_;
  step_schedulers(Interval::step, global_step_);
}

TRAINLOOP_DETAIL_API void TrainerCore::step_schedulers(Interval interval, std::int64_t counter) {
  for (std::size_t i = 0; i < optimizers_.size(); ++i) {
    const auto& s = optimizers_[i].scheduler();
    if (!s || s->interval() != interval || counter % s->frequency() != 0) continue;
    if (s->monitor().empty()) {
      scheduler_step_(*s, std::nullopt);
      continue;
    }
    auto it = callback_metrics_.find(s->monitor());
    if (it == callback_metrics_.end()) {
      std::string logged;
      for (const auto& entry : callback_metrics_) logged += (logged.empty() ? "" : ", ") + entry.first;
      throw std::runtime_error("trainloop: the scheduler of optimizer " + std::to_string(i) + " monitors '" +
                               s->monitor() + "', which was not logged (logged: " +
                               (logged.empty() ? "nothing" : logged) + ")");
    }
    scheduler_step_(*s, it->second.item<double>());
  }
}

TRAINLOOP_DETAIL_API void TrainerCore::publish_step_values(MetricStore& store) {
  const bool log_now = global_step_ % options_.log_every_n_steps() == 0;
  const bool to_loggers = has_loggers_ && &store == &metrics_[index(Stage::train)];
  if (to_loggers && log_now && precision_.scaling()) pending_host_log_["skipped_steps"] = static_cast<double>(skipped_steps_);
  store.take_step_values([&](const std::string& name, const MetricStore::Entry& e) {
    callback_metrics_[name] = e.step_value;
    if (!e.logger || !log_now) return;
    const std::string logged = e.on_epoch ? name + "_step" : name;
    logged_metrics_[logged] = e.step_value;
    if (to_loggers) pending_log_[logged] = e.step_value;
  });
}

TRAINLOOP_DETAIL_API void TrainerCore::publish_epoch_values(MetricStore& store) {
  for (const auto& [name, e] : store.entries()) {
    torch::Tensor value = epoch_value_across_ranks(e);
    if (!value.defined()) continue;
    callback_metrics_[name] = value;
    if (!e.logger) continue;
    const std::string logged = e.on_step ? name + "_epoch" : name;
    logged_metrics_[logged] = value;
    if (has_loggers_) pending_log_[logged] = value;
  }
  store.reset_logged_metrics();
}

TRAINLOOP_DETAIL_API void TrainerCore::begin_fit(std::optional<std::int64_t> train_size) {
  fit_ = FitProgress{};
  fit_.start = Clock::now();
  current_epoch_ = 0;
  global_step_ = 0;
  skipped_steps_ = 0;
  last_step_skipped_ = false;
  total_batches_ = 0;
  batches_since_step_ = 0;
  accumulate_grad_batches_ = options_.accumulate_grad_batches();
  should_stop_ = false;
  terminate_requested_ = false;
  stop_after_epoch_ = false;
  skip_rest_of_epoch_ = false;
  loop_point_ = LoopPoint::between_batches;
  final_loop_state_.reset();
  callback_metrics_.clear();
  logged_metrics_.clear();
  for (auto& store : metrics_) store.clear();
  BatchLimit limit = options_.overfit_batches().is_set() ? options_.overfit_batches() : options_.limit_train_batches();
  if (options_.fast_dev_run() > 0) limit = BatchLimit(options_.fast_dev_run());
  num_training_batches_ = limit.apply(train_size, "limit_train_batches");
}

TRAINLOOP_DETAIL_API void TrainerCore::check_val_check_interval() const {
  const auto& n = options_.val_check_batches();
  if (n && options_.check_val_every_n_epoch() && num_training_batches_ && *n > *num_training_batches_ &&
      (!fit_.val_limit || *fit_.val_limit > 0))
    throw std::invalid_argument(
        "trainloop: val_check_interval(" + std::to_string(*n) + ") must not exceed the number of training "
        "batches (" + std::to_string(*num_training_batches_) + "); to validate every " + std::to_string(*n) +
        " batches across epochs, set check_val_every_n_epoch(std::nullopt); to turn validation off, "
        "limit_val_batches(0)");
}

TRAINLOOP_DETAIL_API void TrainerCore::note_resume_point(const StateDict& loop_state) {
  fit_.resumed_at = loop_point_;
  auto in_epoch = loop_state.find("in_epoch");
  fit_.resuming_mid_epoch = in_epoch != loop_state.end() && in_epoch->second == StateValue{std::int64_t{1}};
}

TRAINLOOP_DETAIL_API bool TrainerCore::sanity_check_due(std::optional<std::int64_t>& limit) const {
  const std::int64_t steps = options_.fast_dev_run() > 0 ? 0 : options_.num_sanity_val_steps();
  if (steps == 0) return false;
  limit = fit_.val_limit;
  if (steps > 0) limit = limit ? std::min(*limit, steps) : steps;
  return true;
}

TRAINLOOP_DETAIL_API std::uint64_t TrainerCore::max_epochs_to_run() const {
  const auto epochs = options_.effective_max_epochs();
  return epochs ? static_cast<std::uint64_t>(*epochs) : std::numeric_limits<std::uint64_t>::max();
}

TRAINLOOP_DETAIL_API bool TrainerCore::finished_before(const std::optional<StateDict>& loop_state) const {
  if (!loop_state || fit_.resumed_at != LoopPoint::training_done) return false;
  if (options_.max_steps() > 0 && global_step_ >= options_.max_steps()) return true;
  if (should_stop_ && minimums_reached()) return true;
  auto epoch = loop_state->find("epoch");
  return epoch != loop_state->end() && std::holds_alternative<std::int64_t>(epoch->second) &&
         static_cast<std::uint64_t>(std::get<std::int64_t>(epoch->second)) >= max_epochs_to_run();
}

TRAINLOOP_DETAIL_API bool TrainerCore::minimums_reached() const {
  return current_epoch_ + 1 >= options_.min_epochs() && global_step_ >= options_.min_steps();
}

TRAINLOOP_DETAIL_API bool TrainerCore::validation_due_this_epoch() const {
  const auto& every = options_.check_val_every_n_epoch();
  return !every || (current_epoch_ + 1) % *every == 0;
}

TRAINLOOP_DETAIL_API bool TrainerCore::validation_due_at_batch(const State& state) const {
  if (const auto& steps = options_.val_every_n_optimizer_steps())
    return batches_since_step_ == 0 && !last_step_skipped_ && global_step_ > 0 && global_step_ % *steps == 0;
  if (const auto& n = options_.val_check_batches())
    return (options_.check_val_every_n_epoch() ? batch_idx_ + 1 : total_batches_) % *n == 0;
  if (!fit_.epoch_sized) return false;
  const auto every = std::max<std::int64_t>(
      1, static_cast<std::int64_t>(static_cast<double>(*state.epoch_length) * options_.val_check_fraction()));
  return (batch_idx_ + 1) % every == 0;
}

TRAINLOOP_DETAIL_API bool TrainerCore::validation_at_epoch_end() const {
  return !fit_.epoch_sized && !options_.val_every_n_optimizer_steps() && !options_.val_check_batches();
}

TRAINLOOP_DETAIL_API bool TrainerCore::out_of_time() const {
  return options_.max_time().count() > 0 && Clock::now() - fit_.start >= options_.max_time();
}

TRAINLOOP_DETAIL_API bool TrainerCore::validation_due_at_batch_end(const State& state, bool out_of_time) const {
  const bool asked_to_stop = (should_stop_ && minimums_reached()) || out_of_time;
  return !stop_after_epoch_ && !skip_rest_of_epoch_ && validation_due_this_epoch() &&
         (validation_due_at_batch(state) || asked_to_stop);
}

TRAINLOOP_DETAIL_API bool TrainerCore::stop_due(bool out_of_time) const {
  return (options_.max_steps() > 0 && global_step_ >= options_.max_steps()) || out_of_time ||
         (should_stop_ && minimums_reached());
}

TRAINLOOP_DETAIL_API void TrainerCore::start_epoch(const State& state) {
  fit_.epoch_sized = state.epoch_length.has_value();
  current_epoch_ = static_cast<std::int64_t>(state.epoch) - 1;
  runtime_.current_epoch = current_epoch_;
  if (!fit_.resuming_mid_epoch) {  // a resumed epoch keeps its running sums and skip flag from the checkpoint
    metrics_[index(Stage::train)].start_epoch();
    skip_rest_of_epoch_ = false;
  }
}

TRAINLOOP_DETAIL_API void TrainerCore::end_epoch(EngineCore& engine) {
  step_schedulers(Interval::epoch, current_epoch_ + 1);
  if (should_stop_ && minimums_reached()) stop_after_epoch_ = true;
  if (stop_after_epoch_) engine.terminate();
  current_epoch_ = static_cast<std::int64_t>(engine.state.epoch);  // epochs run, as Lightning reports after fit
  runtime_.current_epoch = current_epoch_;
  loop_point_ = LoopPoint::between_batches;
}

TRAINLOOP_DETAIL_API std::map<std::string, double> TrainerCore::take_log_record() {
  std::map<std::string, double> record = std::move(pending_host_log_);
  if (!pending_log_.empty()) {
    std::vector<torch::Tensor> values;
    for (const auto& entry : pending_log_) values.push_back(entry.second.detach().reshape({}).to(torch::kFloat64));
    const torch::Tensor host = torch::stack(values).to(torch::kCPU);
    const double* data = host.data_ptr<double>();
    std::size_t i = 0;
    for (const auto& entry : pending_log_) record[entry.first] = data[i++];
  }
  record["epoch"] = static_cast<double>(current_epoch_);
  pending_log_.clear();
  pending_host_log_.clear();
  return record;
}

TRAINLOOP_DETAIL_API std::map<std::string, double> TrainerCore::host_values(const MetricStore& store) const {
  std::map<std::string, double> values;
  for (const auto& [name, e] : store.entries()) {
    auto it = callback_metrics_.find(name);
    if (e.on_epoch && e.logged_this_epoch && it != callback_metrics_.end())
      values[name] = it->second.item<double>();
  }
  return values;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
