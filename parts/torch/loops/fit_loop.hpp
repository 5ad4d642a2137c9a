// trainloop: the fit loop (Lightning's _FitLoop and _TrainingEpochLoop): the training Engine runs the epochs and
// batches, its events drive Lightning's epoch-level hooks, the batch-end stop checks and mid-epoch validations, and a
// resumed fit first does what was left where its checkpoint was written (LoopPoint). FitLoopCore holds the decisions
// that depend on neither the module, the data nor the callbacks (compiled once under separate compilation); FitLoop
// calls the module and the callbacks around them.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "parts/core/engine.hpp"
#include "parts/core/events.hpp"
#include "parts/core/hooks.hpp"
#include "parts/torch/callback_list.hpp"
#include "parts/torch/checkpoint_connector.hpp"
#include "parts/torch/loop_progress.hpp"
#include "parts/torch/loops/evaluation_loop.hpp"
#include "parts/torch/loops/optimization.hpp"
#include "parts/torch/trainer_core.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
/// fit() without validation data.
struct NoData {};

// Keeps an lvalue by reference and an rvalue by value, so fit() can run the same data several times.
template <class T>
struct Held {
  T value;
  std::remove_reference_t<T>& get() { return value; }
};

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
  IsolatedRng rng_;
  std::map<std::string, torch::Tensor> callback_metrics_, logged_metrics_;
};

// The fit loop's decisions (Lightning's rules; docs/trainer.md: TrainerOptions) and what it owns: the fit's clock,
// its validation limit, whether the epoch's size is known.
class FitLoopCore {
 public:
  TRAINLOOP_DETAIL_API explicit FitLoopCore(TrainerCore& trainer);
  // Validation batches per run while fitting (nullopt: all).
  std::optional<std::int64_t> val_limit() const noexcept { return val_limit_; }
  void val_limit(std::optional<std::int64_t> limit) noexcept { val_limit_ = limit; }

  // Lightning refuses an integer val_check_interval longer than an epoch: it would never validate.
  TRAINLOOP_DETAIL_API void check_val_check_interval() const;
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

 private:
  using Clock = std::chrono::steady_clock;
  TrainerCore& t_;
  Clock::time_point start_;                // for max_time
  std::optional<std::int64_t> val_limit_;  // validation batches per run while fitting (nullopt: all)
  bool epoch_sized_ = true;                // the epoch's batch count was known when it began
};

// Forwards an Engine's events to an owner's `engine_event<E>(engine)`.
template <class Owner>
struct EngineEventsTo {
  Owner* owner;
#define TRAINLOOP_DETAIL_FORWARD(name)                                                                                 \
  template <class E>                                                                                                   \
  void on_##name(E& engine) {                                                                                          \
    owner->template engine_event<Event::name>(engine);                                                                 \
  }
  TRAINLOOP_DETAIL_FORWARD(started)
  TRAINLOOP_DETAIL_FORWARD(epoch_started)
  TRAINLOOP_DETAIL_FORWARD(get_batch_started)
  TRAINLOOP_DETAIL_FORWARD(get_batch_completed)
  TRAINLOOP_DETAIL_FORWARD(iteration_started)
  TRAINLOOP_DETAIL_FORWARD(iteration_completed)
  TRAINLOOP_DETAIL_FORWARD(epoch_completed)
  TRAINLOOP_DETAIL_FORWARD(completed)
  TRAINLOOP_DETAIL_FORWARD(terminate)
  TRAINLOOP_DETAIL_FORWARD(terminate_single_epoch)
  TRAINLOOP_DETAIL_FORWARD(data_exhausted)
  TRAINLOOP_DETAIL_FORWARD(interrupt)
#undef TRAINLOOP_DETAIL_FORWARD
  template <class E>
  void on_exception_raised(E& engine, std::exception_ptr) {
    owner->template engine_event<Event::exception_raised>(engine);
  }
};

// One fit: `T` is the Trainer (which befriends this), the data held as fit keeps it (TrainHeld, ValHeld: Held<...>),
// `Batch` the training data's batch type.
template <class T, class Module, class TrainHeld, class ValHeld, class Batch>
class FitLoop {
 public:
  FitLoop(T& trainer, Module& module, TrainHeld& train, ValHeld& val)
      : t_(trainer), module_(module), train_(train), val_(val), core_(trainer) {}
  static constexpr bool has_val = !std::is_same_v<std::decay_t<decltype(std::declval<ValHeld&>().get())>, NoData>;

  // Trains, resuming from `ckpt_path` when it is not empty.
  void run(const std::string& ckpt_path) {
    T& t = t_;
    const TrainerOptions& o = t.options_;
    t.configure_optimizers(module_);
    module_.train();
    t.begin_fit(data_size(train_.get()));
    // Resuming, as Lightning: the model and callbacks before on_fit_start, the loop's counters after it.
    std::optional<CheckpointConnector::Loaded> loaded;
    if (!ckpt_path.empty()) loaded = CallbackCheckpoints::restore(t, ckpt_path, module_);
    if constexpr (has_val) {
      core_.val_limit(o.overfit_batches().is_set() ? t.num_training_batches_
                                                   : t.eval_limit(o.limit_val_batches(), val_.get(), "limit_val_batches"));
      core_.check_val_check_interval();
    }

    t.template call_hook<tags::on_fit_start>(module_);
    std::optional<StateDict> loop_state;
    bool data_positioned = false;
    if (loaded) {
      loop_state = t.checkpoints_.restore_loop(ckpt_path, *loaded);
      t.runtime_.global_step = t.progress_.global_step;
      t.runtime_.current_epoch = t.progress_.current_epoch;
      data_positioned = restore_data_position(ckpt_path, *loaded);
      loaded.reset();
    }
    if constexpr (has_val) {
      // The sanity check runs on resume too (Lightning's does), isolated from the fit (SanityCheckScope).
      std::optional<std::int64_t> limit;
      if (core_.sanity_check_due(limit)) {
        SanityCheckScope sanity_check(t);
        t.template call_hook<tags::on_sanity_check_start>(module_);
        validate_now(limit);
        t.template call_hook<tags::on_sanity_check_end>(module_);
      }
    }
    t.template call_hook<tags::on_train_start>(module_);
    if ((!t.num_training_batches_ || *t.num_training_batches_ > 0) && !core_.finished_before(loop_state)) {
      auto engine = make_engine<Batch>(
          [this](EngineCore& core, Batch&) {
            return t_.profiled(profiler_actions::run_training_batch, [&] { return train_batch(core, *batch_); });
          },
          EngineEventsTo<FitLoop>{this});
      t.template check_callback_engine_hooks<decltype(engine)>();
      CheckpointConnector::EngineScope running(t.checkpoints_, engine);
      if (loop_state) {
        engine.state.load_state_dict(*loop_state);
        // A checkpoint in Lightning's format has no epoch length: this run's.
        if (!engine.state.epoch_length && t.num_training_batches_)
          engine.state.epoch_length = static_cast<std::uint64_t>(*t.num_training_batches_);
      }
      RunOptions run;
      run.max_epochs(core_.max_epochs_to_run());
      if (t.num_training_batches_) run.epoch_length(static_cast<std::uint64_t>(*t.num_training_batches_));
      run.restart_data_each_epoch(true);
      run.skip_consumed_batches(!data_positioned);  // plain ranges resume mid-epoch at the right batch too
      engine.run(train_.get(), run);
      if (engine.interrupted())
        throw std::logic_error("trainloop: the training Engine was interrupted; in a Trainer, stop with "
                               "trainer.should_stop(true) or trainer.terminate()");
    }
    t.progress_.point = LoopPoint::training_done;
    t.template call_hook<tags::on_train_end>(module_);
    t.template call_hook<tags::on_fit_end>(module_);
  }

  // The training Engine's events: callbacks' Engine hooks first, then the loop's own work.
  template <Event E, class Engine>
  void engine_event(Engine& engine) {
    auto hook = [&](auto& callback) { call_engine_hook<E>(callback, engine); };
    t_.template for_each_callback<CallbackOrder::pack>(module_, hook);
    if constexpr (E == Event::get_batch_started)
      if (t_.profiling_) fetch_started_ = Profiler::Clock::now();
    if constexpr (E == Event::get_batch_completed)
      if (t_.profiling_) t_.profiler_.record(profiler_actions::get_train_batch, Profiler::Clock::now() - fetch_started_);
    if constexpr (E == Event::started) resume_between_epochs(engine);
    if constexpr (E == Event::epoch_started) epoch_started(engine);
    if constexpr (E == Event::iteration_started) iteration_started(engine);
    if constexpr (E == Event::iteration_completed) iteration_completed(engine);
    if constexpr (E == Event::epoch_completed) finish_epoch(engine, LoopPoint::in_batch);
  }

 private:
  template <Event E, class C, class Engine>
  static void call_engine_hook(C& callback, Engine& engine) {
    if constexpr (hook<E>::template callable<C, Engine>) {
      if constexpr (E == Event::exception_raised)
        hook<E>::call(callback, engine, engine.current_exception());
      else
        hook<E>::call(callback, engine);
    }
  }

  // The training data's position from the checkpoint, when the data has one; returns whether it restored it (else the
  // Engine skips what the epoch consumed).
  bool restore_data_position(const std::string& path, const CheckpointConnector::Loaded& loaded) {
    if constexpr (is_detected_v<load_state_dict_t, std::remove_reference_t<decltype(train_.get())>>) {
      if (std::optional<StateDict> position = t_.checkpoints_.train_data_position(loaded)) {
        CheckpointConnector::restoring(path, "train_data", [&] { train_.get().load_state_dict(*position); });
        return true;
      }
    }
    (void)path;
    (void)loaded;
    return false;
  }

  void validate_now(std::optional<std::int64_t> limit) {
    if constexpr (has_val) {
      constexpr bool validates_train_batches =
          lightning_hook<tags::validation_step>::callable<Module, Batch&, std::int64_t>;
      if constexpr (validates_train_batches) {  // overfit_batches validates on them (fit refused it otherwise)
        if (t_.options_.overfit_batches().is_set()) {
          EvaluationLoop::run<false>(t_, module_, train_.get(), Stage::validate, limit);
          return;
        }
      }
      EvaluationLoop::run<false>(t_, module_, val_.get(), Stage::validate, limit);
    }
  }

  // --- the training batch ---------------------------------------------------------------------------------------

  // One training batch, Lightning's procedure (the batch-start hooks already ran: iteration_started): in manual
  // optimisation training_step steps the optimizers itself; in automatic optimisation training_step runs inside the
  // batch's closure, which the optimizers' step runs (loops/optimization.hpp).
  auto train_batch(EngineCore& core, Batch& batch) {
    T& t = t_;
    const std::int64_t batch_idx = t.progress_.batch_idx;
    auto action = T::template hook_action<tags::training_step, Module>("[LightningModule]");
    auto training_step = [&] {
      t.strategy_.before_forward();
      return t.profiled(action, [&] {
        [[maybe_unused]] auto autocast = t.precision_.forward_guard();
        return module_.training_step(batch, batch_idx);
      });
    };
    using Out = decltype(module_.training_step(batch, batch_idx));
    if constexpr (std::is_void_v<Out>) {
      if (module_.automatic_optimization())
        throw std::logic_error("trainloop: " + type_name<Module>() +
                               "::training_step returns nothing, so there is no loss to optimise; return it, or use "
                               "manual optimisation with automatic_optimization(false)");
      training_step();
      const std::monostate out{};
      end_train_batch(out, batch, batch_idx);
      return out;
    } else {
      if (!module_.automatic_optimization()) {
        Out out = training_step();
        end_train_batch(out, batch, batch_idx);
        return out;
      }
      std::optional<Out> out;  // the last evaluation's: an optimizer may run the closure several times
      last_loss_ = AutomaticOptimization::run(t, module_, core, batch_idx, [&] {
        out.reset();
        out.emplace(training_step());
        return training_loss<Module>(*out);
      });
      end_train_batch(*out, batch, batch_idx);
      return std::move(*out);
    }
  }
  // The batch is counted and its step values published before on_train_batch_end, so callbacks (a checkpoint
  // monitoring a step metric) see this batch's values, and a checkpoint written there holds the counted batch.
  template <class Out>
  void end_train_batch(const Out& out, Batch& batch, std::int64_t batch_idx) {
    T& t = t_;
    t.precision_.update();  // once per batch, after all its steps (manual optimisation's too)
    ++t.progress_.total_batches;
    t.publish_step_values(t.logs_.store(Stage::train));
    t.progress_.point = LoopPoint::batch_end;
    t.template call_hook<tags::on_train_batch_end>(module_, out, batch, batch_idx);
    t.write_logs();
  }

  // --- epochs and batches: the Engine's events ----------------------------------------------------------------------

  // A checkpoint written during an epoch's end: what was left of it runs before the next epoch.
  void resume_between_epochs(EngineCore& engine) {
    CheckpointConnector& checkpoints = t_.checkpoints_;
    if (!checkpoints.resumed_at || checkpoints.resuming_mid_epoch) return;
    const LoopPoint point = *checkpoints.resumed_at;
    checkpoints.resumed_at.reset();
    if (point == LoopPoint::epoch_validation || point == LoopPoint::epoch_hooks || point == LoopPoint::epoch_rest)
      finish_epoch(engine, point);
    t_.progress_.point = LoopPoint::between_batches;
  }

  void epoch_started(EngineCore& engine) {
    T& t = t_;
    core_.start_epoch(engine.state);
    module_.train();
    t.template call_hook<tags::on_train_epoch_start>(module_);  // again at a mid-epoch resume, as in Lightning
    CheckpointConnector& checkpoints = t.checkpoints_;
    if (checkpoints.resuming_mid_epoch) {  // what was left of the batch the checkpoint was written at runs now
      checkpoints.resuming_mid_epoch = false;
      const LoopPoint point = checkpoints.resumed_at.value_or(LoopPoint::between_batches);
      checkpoints.resumed_at.reset();
      t.progress_.batch_idx = static_cast<std::int64_t>(engine.state.epoch_iteration) - 1;
      if (point == LoopPoint::batch_end) {
        finish_batch(engine);
      } else if (point == LoopPoint::batch_validation) {
        t.progress_.point = LoopPoint::batch_validation;
        validate_now(core_.val_limit());
      }
      t.progress_.point = LoopPoint::between_batches;
    }
  }

  template <class Engine>
  void iteration_started(Engine& engine) {
    T& t = t_;
    t.progress_.point = LoopPoint::in_batch;
    t.progress_.batch_idx = static_cast<std::int64_t>(engine.state.epoch_iteration) - 1;
    batch_ = t.transfer(module_, *engine.batch(), slot_);
    auto result = t.template call_hook<tags::on_train_batch_start>(module_, *batch_, t.progress_.batch_idx);
    if constexpr (std::is_convertible_v<decltype(result), int>) {
      if (static_cast<int>(result) == -1) {  // Lightning: -1 skips the rest of the epoch, this batch included
        t.progress_.skip_rest_of_epoch = true;
        t.progress_.point = LoopPoint::between_batches;
        engine.terminate_epoch();
      }
    }
  }

  // After a batch's on_train_batch_end: the stop checks, then a mid-epoch validation when due.
  void iteration_completed(EngineCore& engine) {
    finish_batch(engine);
    t_.progress_.point = LoopPoint::between_batches;
  }
  void finish_batch(EngineCore& engine) {
    LoopProgress& progress = t_.progress_;
    if (progress.terminate_requested) return engine.terminate();
    const bool out_of_time = core_.out_of_time();
    if (has_val && core_.validation_due_at_batch_end(engine.state, out_of_time)) {
      progress.point = LoopPoint::batch_validation;
      validate_now(core_.val_limit());
      progress.point = LoopPoint::between_batches;
    }
    if (core_.stop_due(out_of_time)) {  // the epoch ends here, then the fit
      progress.stop_after_epoch = true;
      engine.terminate_epoch();
    }
  }

  // The epoch's end, from the start (`from` = in_batch) or from where a checkpoint was written.
  void finish_epoch(EngineCore& engine, LoopPoint from) {
    T& t = t_;
    LoopProgress& progress = t.progress_;
    if (from == LoopPoint::in_batch) {
      if (!t.num_training_batches_ && engine.state.epoch_length)  // unsized data: the first pass told its length
        t.num_training_batches_ = static_cast<std::int64_t>(*engine.state.epoch_length);
      if (progress.batches_since_step > 0 && module_.automatic_optimization()) {  // the epoch ended inside a window
        AutomaticOptimization::step_without_batch(t, module_, last_loss_);
        t.precision_.update();
      }
    }
    if (from == LoopPoint::in_batch || from == LoopPoint::epoch_validation) {
      if (has_val && core_.validation_at_epoch_end() && core_.validation_due_this_epoch() && !progress.skip_rest_of_epoch) {
        progress.point = LoopPoint::epoch_validation;  // its on_validation_end moves on to epoch_hooks
        validate_now(core_.val_limit());
      }
      from = LoopPoint::epoch_hooks;
    }
    if (from == LoopPoint::epoch_hooks) {
      // on_train_epoch_end: callbacks, the module, the epoch's train values, the monitoring callbacks; then the
      // checkpointing callbacks, whose checkpoints resume with what follows.
      auto epoch_end = [&](auto& callback) { t.template call_callback<tags::on_train_epoch_end>(callback, module_); };
      progress.point = LoopPoint::epoch_hooks;
      t.template for_each_callback<CallbackOrder::plain>(module_, epoch_end);
      t.template call_module<tags::on_train_epoch_end>(module_);
      t.publish_epoch_values(t.logs_.store(Stage::train));
      t.template for_each_callback<CallbackOrder::monitoring>(module_, epoch_end);
      progress.point = LoopPoint::epoch_rest;
      t.template for_each_callback<CallbackOrder::checkpointing>(module_, epoch_end);
    }
    t.write_logs();
    core_.end_epoch(engine);
  }

  T& t_;
  Module& module_;
  TrainHeld& train_;
  ValHeld& val_;
  FitLoopCore core_;
  std::optional<Batch> slot_;  // the batch on the device (when it was moved)
  Batch* batch_ = nullptr;     // the batch training_step gets
  torch::Tensor last_loss_;    // the last training batch's loss (automatic optimisation)
  Profiler::Clock::time_point fetch_started_;
};
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API detail::IsolatedRng::IsolatedRng() : cpu_(cpu_generator().get_state()) {
  for (std::size_t i = 0; i < cuda_generator_count(); ++i) cuda_.push_back(cuda_generator(i).get_state());
}
TRAINLOOP_DETAIL_API detail::IsolatedRng::~IsolatedRng() {
  cpu_generator().set_state(cpu_);
  for (std::size_t i = 0; i < cuda_.size(); ++i) cuda_generator(i).set_state(cuda_[i]);
}

TRAINLOOP_DETAIL_API detail::SanityCheckScope::SanityCheckScope(TrainerCore& trainer)
    : trainer_(trainer), callback_metrics_(trainer.logs_.callback_metrics()), logged_metrics_(trainer.logs_.logged_metrics()) {
  trainer_.sanity_checking_ = true;
}
TRAINLOOP_DETAIL_API detail::SanityCheckScope::~SanityCheckScope() {
  trainer_.sanity_checking_ = false;
  trainer_.logs_.callback_metrics() = std::move(callback_metrics_);
  trainer_.logs_.logged_metrics() = std::move(logged_metrics_);
}

TRAINLOOP_DETAIL_API detail::FitLoopCore::FitLoopCore(TrainerCore& trainer) : t_(trainer), start_(Clock::now()) {}

TRAINLOOP_DETAIL_API void detail::FitLoopCore::check_val_check_interval() const {
  const auto& n = t_.options_.val_check_batches();
  if (n && t_.options_.check_val_every_n_epoch() && t_.num_training_batches_ && *n > *t_.num_training_batches_ &&
      (!val_limit_ || *val_limit_ > 0))
    throw std::invalid_argument(
        "trainloop: val_check_interval(" + std::to_string(*n) + ") must not exceed the number of training "
        "batches (" + std::to_string(*t_.num_training_batches_) + "); to validate every " + std::to_string(*n) +
        " batches across epochs, set check_val_every_n_epoch(std::nullopt); to turn validation off, "
        "limit_val_batches(0)");
}

TRAINLOOP_DETAIL_API bool detail::FitLoopCore::sanity_check_due(std::optional<std::int64_t>& limit) const {
  const std::int64_t steps = t_.options_.fast_dev_run() > 0 ? 0 : t_.options_.num_sanity_val_steps();
  if (steps == 0) return false;
  limit = val_limit_;
  if (steps > 0) limit = limit ? std::min(*limit, steps) : steps;
  return true;
}

TRAINLOOP_DETAIL_API std::uint64_t detail::FitLoopCore::max_epochs_to_run() const {
  const auto epochs = t_.options_.effective_max_epochs();
  return epochs ? static_cast<std::uint64_t>(*epochs) : std::numeric_limits<std::uint64_t>::max();
}

TRAINLOOP_DETAIL_API bool detail::FitLoopCore::finished_before(const std::optional<StateDict>& loop_state) const {
  if (!loop_state || t_.checkpoints_.resumed_at != LoopPoint::training_done) return false;
  if (t_.options_.max_steps() > 0 && t_.progress_.global_step >= t_.options_.max_steps()) return true;
  if (t_.progress_.should_stop && minimums_reached()) return true;
  auto epoch = loop_state->find("epoch");
  return epoch != loop_state->end() && std::holds_alternative<std::int64_t>(epoch->second) &&
         static_cast<std::uint64_t>(std::get<std::int64_t>(epoch->second)) >= max_epochs_to_run();
}

TRAINLOOP_DETAIL_API bool detail::FitLoopCore::minimums_reached() const {
  return t_.progress_.current_epoch + 1 >= t_.options_.min_epochs() && t_.progress_.global_step >= t_.options_.min_steps();
}

TRAINLOOP_DETAIL_API bool detail::FitLoopCore::validation_due_this_epoch() const {
  const auto& every = t_.options_.check_val_every_n_epoch();
  return !every || (t_.progress_.current_epoch + 1) % *every == 0;
}

TRAINLOOP_DETAIL_API bool detail::FitLoopCore::validation_due_at_batch(const State& state) const {
  if (const auto& steps = t_.options_.val_every_n_optimizer_steps())
    return t_.progress_.batches_since_step == 0 && !t_.progress_.last_step_skipped && t_.progress_.global_step > 0 && t_.progress_.global_step % *steps == 0;
  if (const auto& n = t_.options_.val_check_batches())
    return (t_.options_.check_val_every_n_epoch() ? t_.progress_.batch_idx + 1 : t_.progress_.total_batches) % *n == 0;
  if (!epoch_sized_) return false;
  const auto every = std::max<std::int64_t>(
      1, static_cast<std::int64_t>(static_cast<double>(*state.epoch_length) * t_.options_.val_check_fraction()));
  return (t_.progress_.batch_idx + 1) % every == 0;
}

TRAINLOOP_DETAIL_API bool detail::FitLoopCore::validation_at_epoch_end() const {
  return !epoch_sized_ && !t_.options_.val_every_n_optimizer_steps() && !t_.options_.val_check_batches();
}

TRAINLOOP_DETAIL_API bool detail::FitLoopCore::out_of_time() const {
  return t_.options_.max_time().count() > 0 && Clock::now() - start_ >= t_.options_.max_time();
}

TRAINLOOP_DETAIL_API bool detail::FitLoopCore::validation_due_at_batch_end(const State& state, bool out_of_time) const {
  const bool asked_to_stop = (t_.progress_.should_stop && minimums_reached()) || out_of_time;
  return !t_.progress_.stop_after_epoch && !t_.progress_.skip_rest_of_epoch && validation_due_this_epoch() &&
         (validation_due_at_batch(state) || asked_to_stop);
}

TRAINLOOP_DETAIL_API bool detail::FitLoopCore::stop_due(bool out_of_time) const {
  return (t_.options_.max_steps() > 0 && t_.progress_.global_step >= t_.options_.max_steps()) || out_of_time ||
         (t_.progress_.should_stop && minimums_reached());
}

TRAINLOOP_DETAIL_API void detail::FitLoopCore::start_epoch(const State& state) {
  epoch_sized_ = state.epoch_length.has_value();
  LoopProgress& progress = t_.progress_;
  progress.current_epoch = static_cast<std::int64_t>(state.epoch) - 1;
  t_.runtime_.current_epoch = progress.current_epoch;
  if (!t_.checkpoints_.resuming_mid_epoch) {  // a resumed epoch keeps its running sums and skip flag from the checkpoint
    t_.logs_.store(Stage::train).start_epoch();
    progress.skip_rest_of_epoch = false;
  }
}

TRAINLOOP_DETAIL_API void detail::FitLoopCore::end_epoch(EngineCore& engine) {
  LoopProgress& progress = t_.progress_;
  t_.step_schedulers(Interval::epoch, progress.current_epoch + 1);
  if (progress.should_stop && minimums_reached()) progress.stop_after_epoch = true;
  if (progress.stop_after_epoch) engine.terminate();
  progress.current_epoch = static_cast<std::int64_t>(engine.state.epoch);  // epochs run, as Lightning reports after fit
  t_.runtime_.current_epoch = progress.current_epoch;
  progress.point = LoopPoint::between_batches;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
