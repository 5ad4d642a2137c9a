// trainloop: the Tuner, Lightning's (tuner/tuning.py): the learning-rate range test (lr_find, tuner/lr_finder.py) and
// the batch-size finder (scale_batch_size, tuner/batch_size_scaling.py). Each search runs on a Trainer of its own with
// the user's Trainer's options, no loggers, no checkpoints and no callbacks but its own, and leaves the model, the
// optimizers the module keeps, the data's position and the global RNG as it found them (bitwise).
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "parts/core/launch_environment.hpp"
#include "parts/core/loggers/common.hpp"
#include "parts/core/state.hpp"
#include "parts/core/type_name.hpp"
#include "parts/torch/device.hpp"
#include "parts/torch/trainer.hpp"

TRAINLOOP_DETAIL_BEGIN

/// Lightning's suggestion rule (_LRFinder.suggestion): the learning rate where the loss falls fastest. The series
/// without its first `skip_begin` and last `skip_end` points (Python's slice [skip_begin:-skip_end], so skip_end = 0
/// leaves nothing, as in Lightning), without non-finite losses, in float32; the gradient of loss over learning rate
/// (torch.gradient with the learning rates as coordinates); its minimum. The index into the whole series, or nullopt
/// when fewer than two points remain.
TRAINLOOP_DETAIL_API std::optional<std::size_t> lr_find_suggestion_index(const std::vector<double>& lrs,
                                                                         const std::vector<double>& losses,
                                                                         std::int64_t skip_begin = 10, std::int64_t skip_end = 1);
/// The learning rate at lr_find_suggestion_index.
TRAINLOOP_DETAIL_API std::optional<double> lr_find_suggestion(const std::vector<double>& lrs, const std::vector<double>& losses,
                                                              std::int64_t skip_begin = 10, std::int64_t skip_end = 1);

/// lr_find's settings; defaults are Lightning's.
class LRFinderOptions {
 public:
  LRFinderOptions& min_lr(double v) { return min_lr_ = v, *this; }
  LRFinderOptions& max_lr(double v) { return max_lr_ = v, *this; }
  /// Optimizer steps (learning rates tried).
  LRFinderOptions& num_training(std::int64_t v) { return num_training_ = v, *this; }
  /// "exponential" or "linear": how the learning rate grows from step to step.
  LRFinderOptions& mode(std::string v) { return mode_ = std::move(v), *this; }
  /// Stop when the smoothed loss exceeds this many times the best one; nullopt: never.
  LRFinderOptions& early_stop_threshold(std::optional<double> v) { return early_stop_threshold_ = v, *this; }
  /// Set the module's learning rate to the suggestion afterwards, where the module has it (Lightning's
  /// lightning_setattr): its `lr` (else `learning_rate`) member, and the hyperparameter attr_name names (else the
  /// "lr" and "learning_rate" hyperparameters of save_hyperparameters, when there).
  LRFinderOptions& update_attr(bool v) { return update_attr_ = v, *this; }
  LRFinderOptions& attr_name(std::string v) { return attr_name_ = std::move(v), *this; }
  double min_lr() const { return min_lr_; }
  double max_lr() const { return max_lr_; }
  std::int64_t num_training() const { return num_training_; }
  const std::string& mode() const { return mode_; }
  const std::optional<double>& early_stop_threshold() const { return early_stop_threshold_; }
  bool update_attr() const { return update_attr_; }
  const std::string& attr_name() const { return attr_name_; }
  /// The learning rate of the step-th optimizer step (0-based): Lightning's _ExponentialLR/_LinearLR, whose first
  /// step runs at min_lr and step k >= 1 at the fraction (k + 1) / num_training of the way to max_lr.
  TRAINLOOP_DETAIL_API double lr_at(std::int64_t step) const;
  TRAINLOOP_DETAIL_API void validate() const;

 private:
  double min_lr_ = 1e-8, max_lr_ = 1.0;
  std::int64_t num_training_ = 100;
  std::string mode_ = "exponential";
  std::optional<double> early_stop_threshold_ = 4.0;
  bool update_attr_ = false;
  std::string attr_name_;
};

/// What lr_find found: the learning rate of each step and the smoothed loss after it (Lightning's results["lr"] and
/// results["loss"]), and the suggestion.
class LRFinderResult {
 public:
  LRFinderResult() = default;
  LRFinderResult(std::string mode, std::vector<double> lrs, std::vector<double> losses)
      : mode_(std::move(mode)), lrs_(std::move(lrs)), losses_(std::move(losses)) {}
  const std::vector<double>& lrs() const noexcept { return lrs_; }
  const std::vector<double>& losses() const noexcept { return losses_; }
  const std::string& mode() const noexcept { return mode_; }
  std::optional<double> suggestion(std::int64_t skip_begin = 10, std::int64_t skip_end = 1) const {
    return lr_find_suggestion(lrs_, losses_, skip_begin, skip_end);
  }
  std::optional<std::size_t> suggestion_index(std::int64_t skip_begin = 10, std::int64_t skip_end = 1) const {
    return lr_find_suggestion_index(lrs_, losses_, skip_begin, skip_end);
  }
  /// Lightning's plot(suggest=True) as an SVG picture: loss against learning rate (log axis in exponential mode), the
  /// suggestion as a red dot. Written atomically.
  TRAINLOOP_DETAIL_API void save_plot(const std::string& path, bool suggest = true) const;
  /// The series as CSV (lr,loss), one row per step.
  TRAINLOOP_DETAIL_API void save_csv(const std::string& path) const;

 private:
  std::string mode_ = "exponential";
  std::vector<double> lrs_, losses_;
};

/// scale_batch_size's settings; defaults are Lightning's.
class BatchSizeFinderOptions {
 public:
  /// "power": double until a step fails; "binsearch": then search between the last size that fit and the first that
  /// did not.
  BatchSizeFinderOptions& mode(std::string v) { return mode_ = std::move(v), *this; }
  /// Optimizer steps per trial.
  BatchSizeFinderOptions& steps_per_trial(std::int64_t v) { return steps_per_trial_ = v, *this; }
  BatchSizeFinderOptions& init_val(std::int64_t v) { return init_val_ = v, *this; }
  BatchSizeFinderOptions& max_trials(std::int64_t v) { return max_trials_ = v, *this; }
  /// A trial whose peak resident memory grows by more than this fails as an out-of-memory error would (the CPU's
  /// budget; Linux). 0: only real out-of-memory errors (CUDA's, or the CPU allocator's) fail a trial.
  BatchSizeFinderOptions& max_memory_bytes(std::int64_t v) { return max_memory_bytes_ = v, *this; }
  /// The hyperparameter (save_hyperparameters) set to the result, when the module has it (Lightning's batch_arg_name).
  BatchSizeFinderOptions& batch_arg_name(std::string v) { return batch_arg_name_ = std::move(v), *this; }
  const std::string& mode() const { return mode_; }
  std::int64_t steps_per_trial() const { return steps_per_trial_; }
  std::int64_t init_val() const { return init_val_; }
  std::int64_t max_trials() const { return max_trials_; }
  std::int64_t max_memory_bytes() const { return max_memory_bytes_; }
  const std::string& batch_arg_name() const { return batch_arg_name_; }
  TRAINLOOP_DETAIL_API void validate() const;

 private:
  std::string mode_ = "power";
  std::int64_t steps_per_trial_ = 3, init_val_ = 2, max_trials_ = 25, max_memory_bytes_ = 0;
  std::string batch_arg_name_ = "batch_size";
};

/// One trial of the batch-size finder: the size and whether its steps fit.
struct BatchSizeTrial {
  std::int64_t batch_size = 0;
  bool fits = false;
  bool whole_dataset = false;   // one batch held the whole dataset: no larger size is tried (Lightning's rule)
  std::int64_t peak_bytes = 0;  // peak resident growth, when measured
};

namespace detail {
// What a search must leave as it found it: the module's parameters and buffers (values, gradients, training mode),
// the global RNG, and, once the search's Trainer has configured them, the state of every optimizer (a module may keep
// its optimizers across fits).
class TuningSnapshot {
 public:
  TRAINLOOP_DETAIL_API explicit TuningSnapshot(torch::nn::Module& module);
  // The first configuration seen is the one kept; an optimizer only the search's Trainer held is not restored.
  TRAINLOOP_DETAIL_API void keep_optimizers(const Optimizers& optimizers);
  TRAINLOOP_DETAIL_API void keep_optimizer(torch::optim::Optimizer& optimizer, std::shared_ptr<torch::optim::Optimizer> owner);
  TRAINLOOP_DETAIL_API void restore();

 private:
  torch::nn::Module& module_;
  std::vector<torch::Tensor> live_, values_, grads_;
  std::vector<bool> had_grad_;
  bool training_;
  torch::Tensor cpu_rng_;
  std::vector<torch::Tensor> cuda_rngs_;
  struct KeptOptimizer {
    torch::optim::Optimizer* optimizer;
    std::shared_ptr<torch::optim::Optimizer> owner;  // null: the caller's, always restored
    std::string state;  // LibTorch's archive: the per-parameter state (its load leaves the groups' options alone)
    std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> options;  // each group's: lr, betas, ...
  };
  std::vector<KeptOptimizer> optimizers_;
};

// Lightning's _LRCallback with its scheduler: sets the learning rate of each step, records it and the smoothed loss,
// stops when the loss diverges.
class LRFinderCallback {
 public:
  LRFinderCallback(LRFinderOptions options, TuningSnapshot& snapshot) : options_(std::move(options)), snapshot_(&snapshot) {}
  template <class T, class M>
  void on_train_start(T& trainer, M&) {
    if (trainer.optimizers().size() != 1)
      throw std::invalid_argument("trainloop: Tuner::lr_find: configure_optimizers() returned " +
                                  std::to_string(trainer.optimizers().size()) +
                                  " optimizers; the learning rate finder works with one (as Lightning's)");
    snapshot_->keep_optimizers(trainer.optimizers());
  }
  template <class T, class M, class B>
  void on_train_batch_start(T& trainer, M&, B&, std::int64_t batch_idx) {
    const double lr = options_.lr_at(trainer.global_step());
    for (auto& group : trainer.optimizers().front().optimizer()->param_groups()) group.options().set_lr(lr);
    if ((batch_idx + 1) % trainer.accumulate_grad_batches() == 0) lrs_.push_back(lr);
  }
  template <class T, class M, class Out, class B>
  void on_train_batch_end(T& trainer, M&, const Out& outputs, B&, std::int64_t batch_idx) {
    if ((batch_idx + 1) % trainer.accumulate_grad_batches() != 0) return;
    std::optional<double> loss;
    if constexpr (is_detected_v<loss_member_t, Out> || std::is_same_v<Out, torch::Tensor> || is_map<Out>::value) {
      const torch::Tensor tensor = loss_of(outputs);
      // Lightning's outputs["loss"]: the step's loss divided by accumulate_grad_batches.
      if (tensor.defined()) loss = tensor.item<double>() / static_cast<double>(trainer.accumulate_grad_batches());
    }
    record(trainer, loss);
  }
  std::vector<double>& lrs() noexcept { return lrs_; }
  std::vector<double>& losses() noexcept { return losses_; }

 private:
  TRAINLOOP_DETAIL_API void record(TrainerCore& trainer, std::optional<double> loss);

  LRFinderOptions options_;
  TuningSnapshot* snapshot_;
  std::vector<double> lrs_, losses_;
  double avg_loss_ = 0.0, best_loss_ = 0.0;
};

// Keeps what the first trial's Trainer configured; the batch-size search restores it.
class BatchSizeFinderCallback {
 public:
  explicit BatchSizeFinderCallback(TuningSnapshot& snapshot) : snapshot_(&snapshot) {}
  template <class T, class M>
  void on_train_start(T& trainer, M&) {
    snapshot_->keep_optimizers(trainer.optimizers());
  }

 private:
  TuningSnapshot* snapshot_;
};

// The process's peak resident memory around a trial (Linux: VmHWM, reset through /proc/self/clear_refs).
class PeakMemory {
 public:
  // Returns freed memory to the system and starts measuring; false where the peak cannot be reset.
  TRAINLOOP_DETAIL_API bool start();
  // Bytes the resident peak grew by since start().
  TRAINLOOP_DETAIL_API std::int64_t growth() const;

 private:
  std::int64_t baseline_ = 0;
};
TRAINLOOP_DETAIL_API bool is_out_of_memory(const std::exception& error);

// The finder's curve as an SVG picture: loss against learning rate, a log axis when asked, the suggestion in red.
TRAINLOOP_DETAIL_API void save_lr_finder_plot(const std::string& path, const std::vector<double>& lrs,
                                              const std::vector<double>& losses, bool log_x,
                                              std::optional<std::size_t> suggestion, const std::string& title);

template <class M>
using lr_member_t = decltype(std::declval<M&>().lr = 1.0);
template <class M>
using learning_rate_member_t = decltype(std::declval<M&>().learning_rate = 1.0);
template <class D>
using set_batch_size_t = decltype(std::declval<D&>().set_batch_size(std::int64_t{}));
template <class D>
using data_position_t = decltype(std::declval<D&>().load_state_dict(std::declval<D&>().state_dict()));
}  // namespace detail

/// Lightning's Tuner: `Tuner(trainer).lr_find(model, train_data)` and `Tuner(trainer).scale_batch_size(model, loader)`.
/// Each search trains a copy of the Trainer's configuration (its options; no loggers, checkpoints or callbacks) for a
/// few steps and puts everything back: the model's weights and buffers, the optimizers a module keeps, the data's
/// position, the global RNG. One process only (run it before data-parallel training, then train with the result).
class Tuner {
 public:
  explicit Tuner(TrainerCore& trainer) : trainer_(trainer) {}

  /// The learning-rate range test: num_training steps from min_lr to max_lr, the smoothed loss after each, stopping
  /// when it exceeds early_stop_threshold times the best. With update_attr, the module's learning rate (and the
  /// Trainer's optimizers', after a fit) becomes the suggestion. Skipped (an empty result) under fast_dev_run.
  template <class Module, class Data>
  LRFinderResult lr_find(Module& module, Data&& data, LRFinderOptions options = LRFinderOptions()) {
    options.validate();
    if (options.update_attr()) check_lr_attr(module, options.attr_name());  // before the search, as Lightning
    if (skip_for_fast_dev_run("learning rate finder")) return LRFinderResult(options.mode(), {}, {});
    TrainerOptions search = search_options();
    search.max_steps(options.num_training());
    Trainer<detail::LRFinderCallback> trainer(std::move(search), detail::LRFinderCallback(options, *snapshot_of(module)));
    run(trainer, module, std::forward<Data>(data));
    auto& recorder = trainer.template callback<detail::LRFinderCallback>();
    if (recorder.lrs().size() > recorder.losses().size()) recorder.lrs().resize(recorder.losses().size());
    LRFinderResult result(options.mode(), std::move(recorder.lrs()), std::move(recorder.losses()));
    if (options.update_attr())
      if (const auto lr = result.suggestion()) set_lr_attr(module, options.attr_name(), *lr);
    return result;
  }

  /// The largest batch size whose steps fit (a CUDA out-of-memory error, the CPU allocator's, or more than
  /// max_memory_bytes of resident growth fails a trial), by Lightning's power or binsearch rule, starting at
  /// init_val. `data`: a trainloop DataLoader (its batch size is set to the result, its position kept) or a callable
  /// making the training data for a batch size. The module's batch_arg_name hyperparameter, if it has one, is set to
  /// the result. trials() lists what was tried.
  template <class Module, class Data>
  std::int64_t scale_batch_size(Module& module, Data&& data, BatchSizeFinderOptions options = BatchSizeFinderOptions()) {
    options.validate();
    trials_.clear();
    using D = std::remove_reference_t<Data>;
    if constexpr (detail::is_detected_v<detail::set_batch_size_t, D>) {
      struct Restore {  // the loader's batch size and position, whatever happens
        D& data;
        const std::int64_t batch_size = data.options().batch_size();
        const StateDict position = data.state_dict();
        ~Restore() {
          data.set_batch_size(batch_size);
          data.load_state_dict(position);
        }
      };
      std::int64_t size = 0;
      {
        Restore restore{data};
        size = search_batch_size(module, options, [&](std::int64_t b) -> D& {
          data.set_batch_size(b);
          return data;
        });
        if (skipped_) return restore.batch_size;
      }
      data.set_batch_size(size);
      return size;
    } else {
      static_assert(std::is_invocable_v<Data&, std::int64_t>,
                    "trainloop: Tuner::scale_batch_size(module, data): data must be a trainloop DataLoader or a "
                    "callable making the training data for a batch size (std::int64_t)");
      return search_batch_size(module, options, data);
    }
  }
  /// The batch-size finder's trials, in order.
  const std::vector<BatchSizeTrial>& trials() const noexcept { return trials_; }

 private:
  TRAINLOOP_DETAIL_API TrainerOptions search_options() const;
  TRAINLOOP_DETAIL_API bool skip_for_fast_dev_run(const char* what) const;
  TRAINLOOP_DETAIL_API void set_optimizers_lr(double lr);

  detail::TuningSnapshot* snapshot_of(torch::nn::Module& module) {
    snapshot_ = std::make_unique<detail::TuningSnapshot>(module);
    return snapshot_.get();
  }

  // One search run: the snapshot is restored whatever happens; the data's position too.
  template <class T, class Module, class Data>
  void run(T& trainer, Module& module, Data&& data) {
    static_cast<TrainerCore&>(trainer).tuning_ = true;
    using D = std::remove_reference_t<Data>;
    struct Restore {
      detail::TuningSnapshot& snapshot;
      std::function<void()> data_position;
      ~Restore() {
        snapshot.restore();
        if (data_position) data_position();
      }
    } restore{*snapshot_, nullptr};
    if constexpr (std::is_lvalue_reference_v<Data> && detail::is_detected_v<detail::data_position_t, D>)
      restore.data_position = [&data, position = data.state_dict()] { data.load_state_dict(position); };
    trainer.fit(module, std::forward<Data>(data));
  }

  template <class Module, class MakeData>
  std::int64_t search_batch_size(Module& module, const BatchSizeFinderOptions& options, MakeData&& make_data) {
    skipped_ = skip_for_fast_dev_run("batch size finder");
    if (skipped_) return options.init_val();
    snapshot_of(module);
    struct Restore {
      detail::TuningSnapshot& snapshot;
      ~Restore() { snapshot.restore(); }
    } restore{*snapshot_};
    auto trial = [&](std::int64_t batch_size) {
      TrainerOptions search = search_options();
      search.max_steps(options.steps_per_trial()).max_epochs(-1).limit_train_batches(BatchLimit(1.0));
      Trainer<detail::BatchSizeFinderCallback> trainer(std::move(search), detail::BatchSizeFinderCallback(*snapshot_));
      static_cast<TrainerCore&>(trainer).tuning_ = true;
      detail::PeakMemory memory;
      if (options.max_memory_bytes() > 0 && !memory.start())
        throw std::runtime_error("trainloop: Tuner::scale_batch_size: max_memory_bytes needs the process's peak "
                                 "resident memory, which only Linux's /proc/self/status and clear_refs give");
      BatchSizeTrial result{batch_size, true, false, 0};
      try {
        auto&& data = make_data(batch_size);
        result.whole_dataset = detail::data_size(data) == std::optional<std::int64_t>(1);
        trainer.fit(module, std::forward<decltype(data)>(data));
      } catch (const std::exception& error) {
        if (!detail::is_out_of_memory(error)) throw;
        result.fits = false;
      }
      if (options.max_memory_bytes() > 0) {
        result.peak_bytes = memory.growth();
        if (result.peak_bytes > options.max_memory_bytes()) result.fits = false;
      }
      trials_.push_back(result);
      return result;
    };
    const std::int64_t size = options.mode() == "power" ? power_scaling(options, trial) : binary_scaling(options, trial);
    set_hparam(module, options.batch_arg_name(), size);
    return size;
  }
  // Lightning's _run_power_scaling: double while it fits; on a failure halve, and stop if anything fitted before.
  template <class Trial>
  static std::int64_t power_scaling(const BatchSizeFinderOptions& options, Trial& trial) {
    std::int64_t size = options.init_val();
    bool any_success = false;
    for (std::int64_t i = 0; i < options.max_trials(); ++i) {
      const BatchSizeTrial result = trial(size);
      if (result.fits) {
        if (result.whole_dataset) break;
        size *= 2;
        any_success = true;
      } else {
        size = std::max<std::int64_t>(size / 2, 1);
        if (any_success) break;
      }
    }
    return size;
  }
  // Lightning's _run_binary_scaling: double until a failure, then halve the interval between the last size that fit
  // and the first that did not.
  template <class Trial>
  static std::int64_t binary_scaling(const BatchSizeFinderOptions& options, Trial& trial) {
    std::int64_t size = options.init_val(), low = 1, count = 0;
    std::optional<std::int64_t> high;
    for (;;) {
      const BatchSizeTrial result = trial(size);
      if (result.fits) {
        if (++count > options.max_trials() || result.whole_dataset) break;
        low = size;
        if (high) {
          if (*high - low <= 1) break;
          size = (*high + low) / 2;
        } else {
          size *= 2;
        }
      } else {
        high = size;
        size = (*high + low) / 2;
        if (*high - low <= 1) break;
      }
    }
    return size;
  }

  // Lightning's lightning_setattr: the learning rate goes wherever the module has it: its `lr` (else `learning_rate`)
  // member, and the hyperparameter attr_name names (else "lr" and "learning_rate", when saved).
  template <class Module>
  static std::vector<std::string> lr_hparams(const Module& module, const std::string& attr_name) {
    const std::vector<std::string> candidates =
        attr_name.empty() ? std::vector<std::string>{"lr", "learning_rate"} : std::vector<std::string>{attr_name};
    std::vector<std::string> names;
    for (const auto& name : candidates)
      if (module.hparams().count(name)) names.push_back(name);
    return names;
  }
  template <class Module>
  static void check_lr_attr(const Module& module, const std::string& attr_name) {
    constexpr bool member = detail::is_detected_v<detail::lr_member_t, Module> ||
                            detail::is_detected_v<detail::learning_rate_member_t, Module>;
    if (!attr_name.empty() && lr_hparams(module, attr_name).empty())
      throw std::invalid_argument("trainloop: Tuner::lr_find(update_attr): " + detail::type_name<Module>() +
                                  " has no hyperparameter '" + attr_name + "' (save_hyperparameters)");
    if (!member && lr_hparams(module, attr_name).empty())
      throw std::invalid_argument(
          "trainloop: Tuner::lr_find(update_attr): " + detail::type_name<Module>() +
          " has no `lr` or `learning_rate` member or hyperparameter; name the hyperparameter with "
          "LRFinderOptions().attr_name(...), or set the learning rate from the suggestion yourself");
  }
  template <class Module>
  void set_lr_attr(Module& module, const std::string& attr_name, double lr) {
    if constexpr (detail::is_detected_v<detail::lr_member_t, Module>) module.lr = lr;
    else if constexpr (detail::is_detected_v<detail::learning_rate_member_t, Module>) module.learning_rate = lr;
    for (const auto& name : lr_hparams(module, attr_name)) set_hparam(module, name, lr);
    set_optimizers_lr(lr);  // the Trainer's optimizers after a fit, as Lightning updates the active ones
  }
  template <class Module, class V>
  static void set_hparam(Module& module, const std::string& name, V value) {
    StateDict hparams = module.hparams();
    auto it = hparams.find(name);
    if (it == hparams.end()) return;
    it->second = value;
    module.save_hyperparameters(std::move(hparams));
  }

  TrainerCore& trainer_;
  std::unique_ptr<detail::TuningSnapshot> snapshot_;
  std::vector<BatchSizeTrial> trials_;
  bool skipped_ = false;
};


/// Ignite's FastaiLRFinder.lr_suggestion rule on a loss series: the first lowest loss, the curve up to it, the
/// steepest central difference 0.5 (loss[i+1] - loss[i-1]) there (float32, as Ignite's tensors). Errors as Ignite's
/// when fewer than three points lead to the lowest.
TRAINLOOP_DETAIL_API std::size_t fastai_lr_suggestion_index(const std::vector<double>& losses);

/// FastaiLRFinder's settings (Ignite's attach() arguments and defaults).
class FastaiLRFinderOptions {
 public:
  /// Iterations of the range test; unset: the run's epoch_length x max_epochs (more than the run has raises its
  /// max_epochs, as Ignite does).
  FastaiLRFinderOptions& num_iter(std::uint64_t v) { return num_iter_ = v, *this; }
  /// The first learning rate; unset: each parameter group's own.
  FastaiLRFinderOptions& start_lr(double v) { return start_lr_ = v, *this; }
  FastaiLRFinderOptions& end_lr(double v) { return end_lr_ = v, *this; }
  /// "exp" or "linear".
  FastaiLRFinderOptions& step_mode(std::string v) { return step_mode_ = std::move(v), *this; }
  /// Loss smoothing in [0, 1): loss = smooth_f * loss + (1 - smooth_f) * previous.
  FastaiLRFinderOptions& smooth_f(double v) { return smooth_f_ = v, *this; }
  /// Stop when the loss exceeds diverge_th times the best (at least 1).
  FastaiLRFinderOptions& diverge_th(double v) { return diverge_th_ = v, *this; }
  const std::optional<std::uint64_t>& num_iter() const { return num_iter_; }
  const std::optional<double>& start_lr() const { return start_lr_; }
  double end_lr() const { return end_lr_; }
  const std::string& step_mode() const { return step_mode_; }
  double smooth_f() const { return smooth_f_; }
  double diverge_th() const { return diverge_th_; }

 private:
  std::optional<std::uint64_t> num_iter_;
  std::optional<double> start_lr_;
  double end_lr_ = 10.0;
  std::string step_mode_ = "exp";
  double smooth_f_ = 0.05, diverge_th_ = 5.0;
};

/// Ignite's FastaiLRFinder, the Engine's face of the range test: a handler in the Engine's pack
/// (`make_engine(step, std::ref(finder))`) that acts while an attach() scope is alive:
///
///     { auto scope = finder.attach(engine, model, optimizer); engine.run(data); }   // model, optimizer, state back
///     finder.lr_suggestion(); finder.apply_suggested_lr(optimizer); finder.save_plot("lr.svg");
///
/// Ignite's rules: the schedule (its _ExponentialLR or PiecewiseLinear, stepped at each iteration's end: the history
/// records the rate the scheduler sets for the next iteration, as Ignite's does), the loss from the step's output
/// (a tensor, a struct with `loss`, or a map with "loss"), smoothed from the second iteration on, stop when it passes
/// diverge_th times the best, stop after num_iter (the iteration past it still recorded), and the suggestion at the
/// steepest descent before the lowest loss. The scope's end restores the model, the optimizer (state and options),
/// the Engine's state and the global RNG.
class FastaiLRFinder {
 public:
  class Scope {
   public:
    Scope(Scope&& other) noexcept : finder_(std::exchange(other.finder_, nullptr)), restore_(std::move(other.restore_)) {}
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    Scope& operator=(Scope&&) = delete;
    ~Scope() {
      if (!finder_) return;
      finder_->active_ = false;
      restore_();
    }

   private:
    friend class FastaiLRFinder;
    Scope(FastaiLRFinder* finder, std::function<void()> restore) : finder_(finder), restore_(std::move(restore)) {}
    FastaiLRFinder* finder_;
    std::function<void()> restore_;
  };

  template <class Engine>
  [[nodiscard]] Scope attach(Engine& engine, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                             FastaiLRFinderOptions options = FastaiLRFinderOptions()) {
    start(optimizer, std::move(options));
    auto snapshot = std::make_shared<detail::TuningSnapshot>(model);
    snapshot->keep_optimizer(optimizer, nullptr);
    return Scope(this, [&engine, snapshot, state = engine.state.state_dict()] {
      snapshot->restore();
      engine.state.load_state_dict(state);
    });
  }

  // --- Engine hooks ---
  template <class E>
  void on_started(E& engine) {
    if (active_) begin_run(engine.state);
  }
  template <class E>
  void on_iteration_completed(E& engine) {
    if (!active_) return;
    if (engine.state.iteration > num_iter_) engine.terminate();
    if (record(engine.state.iteration, detail::loss_of(engine.output()))) engine.terminate();
  }
  template <class E>
  void on_completed(E&) {
    if (active_ && !diverged_ && detail::process_rank() == 0)
      std::fprintf(stderr, "Run completed without loss diverging, increase end_lr, decrease diverge_th or look at the "
                           "plot (FastaiLRFinder::save_plot)\n");
  }

  /// The learning rate recorded at each iteration (the first parameter group's), and the smoothed loss.
  const std::vector<double>& lrs() const noexcept { return lrs_.empty() ? no_lrs_ : lrs_.front(); }
  const std::vector<double>& losses() const noexcept { return losses_; }
  /// Each parameter group's learning rates.
  const std::vector<std::vector<double>>& group_lrs() const noexcept { return lrs_; }
  /// Ignite's lr_suggestion: the lowest loss found, the curve before it, the steepest central difference there;
  /// errors as Ignite's when the finder has not run or the curve is not U-shaped.
  double lr_suggestion() const { return lrs()[suggestion_index()]; }
  TRAINLOOP_DETAIL_API std::size_t suggestion_index() const;
  /// Sets each parameter group's learning rate to its suggestion.
  TRAINLOOP_DETAIL_API void apply_suggested_lr(torch::optim::Optimizer& optimizer) const;
  /// The curve with the suggestion (log axis in exp mode).
  TRAINLOOP_DETAIL_API void save_plot(const std::string& path) const;

 private:
  TRAINLOOP_DETAIL_API void start(torch::optim::Optimizer& optimizer, FastaiLRFinderOptions options);
  TRAINLOOP_DETAIL_API void begin_run(State& state);
  TRAINLOOP_DETAIL_API double scheduled(std::size_t group, std::uint64_t event) const;
  // Records iteration `iteration`'s learning rate and loss and sets the next rate; true when the loss diverged.
  TRAINLOOP_DETAIL_API bool record(std::uint64_t iteration, const torch::Tensor& loss);

  FastaiLRFinderOptions options_;
  torch::optim::Optimizer* optimizer_ = nullptr;
  std::vector<double> start_lrs_;
  std::uint64_t num_iter_ = 0;
  bool active_ = false, diverged_ = false, ran_ = false;
  double best_loss_ = 0;
  std::vector<std::vector<double>> lrs_;
  std::vector<double> losses_, no_lrs_;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API std::optional<std::size_t> lr_find_suggestion_index(const std::vector<double>& lrs,
                                                                         const std::vector<double>& losses,
                                                                         std::int64_t skip_begin, std::int64_t skip_end) {
  if (lrs.size() != losses.size())
    throw std::invalid_argument("trainloop: lr_find_suggestion: " + std::to_string(lrs.size()) + " learning rates but " +
                                std::to_string(losses.size()) + " losses");
  if (skip_begin < 0 || skip_end < 0)
    throw std::invalid_argument("trainloop: lr_find_suggestion: skip_begin and skip_end must not be negative");
  // Python's [skip_begin:-skip_end]: -0 is 0, so skip_end = 0 keeps nothing.
  const auto n = static_cast<std::int64_t>(losses.size());
  const std::int64_t begin = std::min(skip_begin, n), end = skip_end == 0 ? 0 : std::max<std::int64_t>(n - skip_end, 0);
  std::vector<float> kept_losses, kept_lrs;
  std::vector<std::size_t> index;
  for (std::int64_t i = begin; i < end; ++i) {
    // torch.tensor(list of Python floats) is float32: the rounding, and the finiteness test, happen there.
    const auto loss = static_cast<float>(losses[static_cast<std::size_t>(i)]);
    if (!std::isfinite(loss)) continue;
    kept_losses.push_back(loss);
    kept_lrs.push_back(static_cast<float>(lrs[static_cast<std::size_t>(i)]));
    index.push_back(static_cast<std::size_t>(i));
  }
  if (kept_losses.size() < 2) return std::nullopt;
  // torch.gradient(losses, spacing=[lrs]) in float32, by LibTorch's own kernel, so the arithmetic is PyTorch's.
  const torch::Tensor y = torch::tensor(kept_losses, torch::kFloat32), x = torch::tensor(kept_lrs, torch::kFloat32);
  const torch::Tensor gradient = torch::gradient(y, torch::TensorList{x})[0];
  return index[static_cast<std::size_t>(gradient.argmin().item<std::int64_t>())];
}
TRAINLOOP_DETAIL_API std::optional<double> lr_find_suggestion(const std::vector<double>& lrs, const std::vector<double>& losses,
                                                              std::int64_t skip_begin, std::int64_t skip_end) {
  const auto i = lr_find_suggestion_index(lrs, losses, skip_begin, skip_end);
  if (!i) return std::nullopt;
  return lrs[*i];
}

TRAINLOOP_DETAIL_API double LRFinderOptions::lr_at(std::int64_t step) const {
  if (step <= 0) return min_lr_;
  const double r = static_cast<double>(step + 1) / static_cast<double>(num_training_);
  return mode_ == "linear" ? min_lr_ + r * (max_lr_ - min_lr_) : min_lr_ * std::pow(max_lr_ / min_lr_, r);
}
TRAINLOOP_DETAIL_API void LRFinderOptions::validate() const {
  auto fail = [](const std::string& what) { return std::invalid_argument("trainloop: LRFinderOptions()." + what); };
  if (mode_ != "exponential" && mode_ != "linear") throw fail("mode(\"" + mode_ + "\"): not \"exponential\" or \"linear\"");
  if (!(min_lr_ > 0) || !(max_lr_ > min_lr_)) throw fail("min_lr/max_lr: need 0 < min_lr < max_lr");
  if (num_training_ < 1) throw fail("num_training(n): n must be at least 1");
  if (early_stop_threshold_ && !(*early_stop_threshold_ > 0)) throw fail("early_stop_threshold(t): t must be positive");
}
TRAINLOOP_DETAIL_API void BatchSizeFinderOptions::validate() const {
  auto fail = [](const std::string& what) { return std::invalid_argument("trainloop: BatchSizeFinderOptions()." + what); };
  if (mode_ != "power" && mode_ != "binsearch") throw fail("mode(\"" + mode_ + "\"): not \"power\" or \"binsearch\"");
  if (steps_per_trial_ < 1) throw fail("steps_per_trial(n): n must be at least 1");
  if (init_val_ < 1) throw fail("init_val(n): n must be at least 1");
  if (max_trials_ < 1) throw fail("max_trials(n): n must be at least 1");
  if (max_memory_bytes_ < 0) throw fail("max_memory_bytes(n): n must not be negative");
}

namespace detail {
TRAINLOOP_DETAIL_API TuningSnapshot::TuningSnapshot(torch::nn::Module& module)
    : module_(module), training_(module.is_training()), cpu_rng_(cpu_generator().get_state()) {
  for (std::size_t i = 0; i < cuda_generator_count(); ++i) cuda_rngs_.push_back(cuda_generator(i).get_state());
  torch::NoGradGuard no_grad;
  auto keep = [&](const torch::Tensor& t) {
    live_.push_back(t);
    values_.push_back(t.detach().clone());
    had_grad_.push_back(t.grad().defined());
    grads_.push_back(t.grad().defined() ? t.grad().detach().clone() : torch::Tensor());
  };
  for (const auto& p : module.parameters()) keep(p);
  for (const auto& b : module.buffers()) keep(b);
}
TRAINLOOP_DETAIL_API void TuningSnapshot::keep_optimizers(const Optimizers& optimizers) {
  if (!optimizers_.empty()) return;  // the first configuration is the one found
  for (const auto& config : optimizers) keep_optimizer(*config.optimizer(), config.optimizer());
}
TRAINLOOP_DETAIL_API void TuningSnapshot::keep_optimizer(torch::optim::Optimizer& optimizer,
                                                         std::shared_ptr<torch::optim::Optimizer> owner) {
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  std::ostringstream bytes;
  archive.save_to(bytes);
  KeptOptimizer kept{&optimizer, std::move(owner), bytes.str(), {}};
  for (auto& group : optimizer.param_groups()) kept.options.push_back(group.options().clone());
  optimizers_.push_back(std::move(kept));
}
TRAINLOOP_DETAIL_API void TuningSnapshot::restore() {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < live_.size(); ++i) {
    torch::Tensor& t = live_[i];
    t.copy_(values_[i]);
    if (had_grad_[i]) {
      if (t.grad().defined()) t.mutable_grad().copy_(grads_[i]);
      else t.mutable_grad() = grads_[i].to(t.device());
    } else if (t.grad().defined()) {
      t.mutable_grad() = torch::Tensor();
    }
  }
  module_.train(training_);
  cpu_generator().set_state(cpu_rng_);
  for (std::size_t i = 0; i < cuda_rngs_.size(); ++i) cuda_generator(i).set_state(cuda_rngs_[i]);
  for (auto& kept : optimizers_) {
    // Only an optimizer the module keeps outlives the search; restoring a discarded one costs a copy and harms none.
    if (kept.owner && kept.owner.use_count() <= 1) continue;
    torch::serialize::InputArchive archive;
    std::istringstream in(kept.state);
    archive.load_from(in);
    kept.optimizer->load(archive);
    auto& groups = kept.optimizer->param_groups();
    for (std::size_t i = 0; i < groups.size() && i < kept.options.size(); ++i) groups[i].set_options(std::move(kept.options[i]));
  }
  optimizers_.clear();
}

TRAINLOOP_DETAIL_API void LRFinderCallback::record(TrainerCore& trainer, std::optional<double> loss) {
  if (!loss) {  // Lightning's: a step without a loss records NaN, which the suggestion skips
    losses_.push_back(std::numeric_limits<double>::quiet_NaN());
    return;
  }
  constexpr double beta = 0.98;
  const std::int64_t current_step = trainer.global_step();
  // Lightning's smoothing and its bias correction, which counts from the step number after the step (current_step + 1).
  avg_loss_ = beta * avg_loss_ + (1 - beta) * *loss;
  const double smoothed = avg_loss_ / (1 - std::pow(beta, static_cast<double>(current_step + 1)));
  if (options_.early_stop_threshold() && current_step > 1 && smoothed > *options_.early_stop_threshold() * best_loss_)
    trainer.should_stop(true);
  if (smoothed < best_loss_ || current_step == 1) best_loss_ = smoothed;
  losses_.push_back(smoothed);
}

TRAINLOOP_DETAIL_API bool PeakMemory::start() {
#if defined(__linux__)
#if defined(__GLIBC__)
  malloc_trim(0);  // freed memory back to the system, so what the last trial left is not counted as free room
#endif
  std::ofstream clear("/proc/self/clear_refs");
  if (!(clear << "5" << std::flush)) return false;  // "5": reset the resident peak (VmHWM) to the current size
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) baseline_ = std::stoll(line.substr(6)) * 1024;
  return baseline_ > 0;
#else
  return false;
#endif
}
TRAINLOOP_DETAIL_API std::int64_t PeakMemory::growth() const {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024 - baseline_;
  return 0;
}
TRAINLOOP_DETAIL_API bool is_out_of_memory(const std::exception& error) {
  // Lightning's is_oom_error: CUDA's, cuDNN's and the CPU allocator's messages.
  const std::string what = error.what();
  for (const char* sign : {"CUDA out of memory.", "CUDA error: out of memory", "CUDNN_STATUS_NOT_SUPPORTED",
                           "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED", "DefaultCPUAllocator: can't allocate memory",
                           "DefaultCPUAllocator: not enough memory"})
    if (what.find(sign) != std::string::npos) return true;
  return false;
}
}  // namespace detail

TRAINLOOP_DETAIL_API TrainerOptions Tuner::search_options() const {
  if (trainer_.world_size() > 1 || trainer_.options().strategy() == "ddp" || trainer_.options().devices() > 1)
    throw std::invalid_argument("trainloop: the Tuner searches in one process: run it without strategy(\"ddp\") or "
                                "devices(n > 1), then train data-parallel with what it found");
  TrainerOptions search = trainer_.options();
  search.enable_progress_bar(false).enable_model_summary(false).profiler(false).num_sanity_val_steps(0);
  return search;
}
TRAINLOOP_DETAIL_API bool Tuner::skip_for_fast_dev_run(const char* what) const {
  if (trainer_.options().fast_dev_run() <= 0) return false;
  if (detail::process_rank() == 0) std::fprintf(stderr, "Skipping %s since `fast_dev_run` is enabled.\n", what);
  return true;
}
TRAINLOOP_DETAIL_API void Tuner::set_optimizers_lr(double lr) {
  for (const auto& config : trainer_.optimizers())
    for (auto& group : config.optimizer()->param_groups()) group.options().set_lr(lr);
}

TRAINLOOP_DETAIL_API void FastaiLRFinder::start(torch::optim::Optimizer& optimizer, FastaiLRFinderOptions options) {
  auto fail = [](const std::string& what) { return std::invalid_argument("trainloop: FastaiLRFinder::attach: " + what); };
  if (options.smooth_f() < 0 || options.smooth_f() >= 1) throw fail("smooth_f is outside the range [0, 1)");
  if (options.diverge_th() < 1) throw fail("diverge_th should be larger than 1");
  if (options.step_mode() != "exp" && options.step_mode() != "linear")
    throw fail("step_mode should be 'exp' or 'linear', but given " + options.step_mode());
  if (options.num_iter() && *options.num_iter() == 0) throw fail("if provided, num_iter should be positive");
  start_lrs_.clear();
  for (auto& group : optimizer.param_groups()) {
    start_lrs_.push_back(options.start_lr().value_or(group.options().get_lr()));
    if (start_lrs_.back() >= options.end_lr())
      throw fail("start_lr must be less than end_lr, start_lr=" + std::to_string(start_lrs_.back()) +
                 " vs end_lr=" + std::to_string(options.end_lr()));
  }
  options_ = std::move(options);
  optimizer_ = &optimizer;
  active_ = true;
}
TRAINLOOP_DETAIL_API void FastaiLRFinder::begin_run(State& state) {
  lrs_.assign(start_lrs_.size(), {});
  losses_.clear();
  diverged_ = false;
  ran_ = true;
  const std::uint64_t max_iter = state.epoch_length && state.max_epochs ? *state.epoch_length * *state.max_epochs : 0;
  num_iter_ = options_.num_iter().value_or(max_iter);
  if (num_iter_ == 0)
    throw std::invalid_argument("trainloop: FastaiLRFinder: the run's length is unknown (unsized data or max_iters); "
                                "give FastaiLRFinderOptions().num_iter(n)");
  if (state.epoch_length && max_iter < num_iter_)  // Ignite: enough epochs for num_iter
    state.max_epochs = (num_iter_ + *state.epoch_length - 1) / *state.epoch_length;
  // Ignite builds its schedule here: PyTorch's _ExponentialLR takes its first step at construction, from each group's
  // own rate; PiecewiseLinear sets nothing until the first iteration ends.
  if (options_.step_mode() == "exp") {
    auto& groups = optimizer_->param_groups();
    for (std::size_t g = 0; g < groups.size(); ++g) {
      const double base = groups[g].options().get_lr();
      groups[g].options().set_lr(base * std::pow(options_.end_lr() / base, 1.0 / static_cast<double>(num_iter_)));
    }
  }
}
TRAINLOOP_DETAIL_API double FastaiLRFinder::scheduled(std::size_t group, std::uint64_t event) const {
  const double start = start_lrs_[group], end = options_.end_lr(), n = static_cast<double>(num_iter_);
  if (options_.step_mode() == "exp")  // _ExponentialLR.get_lr at last_epoch = event: (event + 1) / num_iter
    return start * std::pow(end / start, static_cast<double>(event + 1) / n);
  if (event >= num_iter_) return end;  // PiecewiseLinear at event index `event`, flat after its last milestone
  return start + (end - start) * static_cast<double>(event) / n;
}
TRAINLOOP_DETAIL_API bool FastaiLRFinder::record(std::uint64_t iteration, const torch::Tensor& output) {
  if (output.numel() != 1)
    throw std::invalid_argument("trainloop: FastaiLRFinder: the step's loss must be one number, got shape " +
                                c10::str(output.sizes()));
  double loss = output.item<double>();
  // The scheduler's value now is what it sets for the next iteration; Ignite records it, then sets it.
  auto& groups = optimizer_->param_groups();
  for (std::size_t g = 0; g < groups.size(); ++g) lrs_[g].push_back(scheduled(g, iteration - 1));
  if (iteration == 1 || losses_.empty()) {
    best_loss_ = loss;
  } else {
    if (options_.smooth_f() > 0) loss = options_.smooth_f() * loss + (1 - options_.smooth_f()) * losses_.back();
    if (loss < best_loss_) best_loss_ = loss;
  }
  losses_.push_back(loss);
  for (std::size_t g = 0; g < groups.size(); ++g) groups[g].options().set_lr(lrs_[g].back());
  if (losses_.back() > options_.diverge_th() * best_loss_) diverged_ = true;
  return losses_.back() > options_.diverge_th() * best_loss_;
}
TRAINLOOP_DETAIL_API std::size_t FastaiLRFinder::suggestion_index() const {
  if (!ran_ || losses_.empty())
    throw std::runtime_error("trainloop: FastaiLRFinder: the learning rate finder didn't run yet so lr_suggestion can't "
                             "be returned");
  return fastai_lr_suggestion_index(losses_);
}
TRAINLOOP_DETAIL_API std::size_t fastai_lr_suggestion_index(const std::vector<double>& losses) {
  // Ignite's, in float32 as torch.tensor makes it: the first lowest loss (a NaN counts as lowest, as argmin has it).
  std::vector<float> loss(losses.begin(), losses.end());
  std::size_t lowest = 0;
  for (std::size_t i = 1; i < loss.size() && !std::isnan(loss[lowest]); ++i)
    if (std::isnan(loss[i]) || loss[i] < loss[lowest]) lowest = i;
  if (lowest + 1 < 3)
    throw std::runtime_error("trainloop: FastaiLRFinder got unexpected curve shape, the curve should be somehow "
                             "U-shaped, please decrease start_lr or increase end_lr to resolve this issue.");
  std::size_t steepest = 1;
  float steepest_grad = 0;
  for (std::size_t i = 1; i + 1 <= lowest; ++i) {
    const float grad = 0.5f * (loss[i + 1] - loss[i - 1]);
    if (i == 1 || grad < steepest_grad || (std::isnan(grad) && !std::isnan(steepest_grad))) steepest = i, steepest_grad = grad;
  }
  return steepest;
}
TRAINLOOP_DETAIL_API void FastaiLRFinder::apply_suggested_lr(torch::optim::Optimizer& optimizer) const {
  const std::size_t i = suggestion_index();
  auto& groups = optimizer.param_groups();
  if (groups.size() != lrs_.size())
    throw std::invalid_argument("trainloop: FastaiLRFinder::apply_suggested_lr: the number of parameter groups does not "
                                "match between given optimizer and the one used for estimating the learning rate: " +
                                std::to_string(lrs_.size()) + " vs " + std::to_string(groups.size()));
  for (std::size_t g = 0; g < groups.size(); ++g) groups[g].options().set_lr(lrs_[g][i]);
}
TRAINLOOP_DETAIL_API void FastaiLRFinder::save_plot(const std::string& path) const {
  detail::save_lr_finder_plot(path, lrs(), losses_, options_.step_mode() == "exp", suggestion_index(),
                              "FastaiLRFinder (" + options_.step_mode() + ")");
}

TRAINLOOP_DETAIL_API void LRFinderResult::save_csv(const std::string& path) const {
  std::string text = "lr,loss\n";
  for (std::size_t i = 0; i < lrs_.size(); ++i) text += detail::format_number(lrs_[i]) + "," + detail::format_number(losses_[i]) + "\n";
  detail::write_file_atomically(path, text, "LRFinderResult::save_csv");
}

TRAINLOOP_DETAIL_API void LRFinderResult::save_plot(const std::string& path, bool suggest) const {
  detail::save_lr_finder_plot(path, lrs_, losses_, mode_ == "exponential", suggest ? suggestion_index() : std::nullopt,
                              "Learning rate finder (" + mode_ + ")");
}

TRAINLOOP_DETAIL_API void detail::save_lr_finder_plot(const std::string& path, const std::vector<double>& lrs,
                                                      const std::vector<double>& losses, bool log_x,
                                                      std::optional<std::size_t> suggestion, const std::string& title) {
  std::vector<std::pair<double, double>> points;
  for (std::size_t i = 0; i < lrs.size(); ++i)
    if (std::isfinite(losses[i]) && lrs[i] > 0) points.emplace_back(log_x ? std::log10(lrs[i]) : lrs[i], losses[i]);
  const double width = 640, height = 420, left = 70, right = 20, top = 30, bottom = 50;
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (!points.empty()) {
    x0 = x1 = points[0].first;
    y0 = y1 = points[0].second;
    for (const auto& [x, y] : points) {
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  }
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad, y1 += pad;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * (width - left - right); };
  auto py = [&](double y) { return top + (y1 - y) / (y1 - y0) * (height - top - bottom); };
  auto num = [](double v) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.2f", v);
    return std::string(buffer);
  };
  auto label = [](double v) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.3g", v);
    return std::string(buffer);
  };
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(width) + "\" height=\"" + num(height) +
                    "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg += "<text x=\"" + num(width / 2) + "\" y=\"18\" text-anchor=\"middle\">" + title + "</text>\n";
  svg += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(width - left - right) + "\" height=\"" +
         num(height - top - bottom) + "\" fill=\"none\" stroke=\"black\"/>\n";
  // x ticks: decades on a log axis, five steps on a linear one; y ticks: five steps.
  std::vector<double> x_ticks;
  if (log_x) {
    for (double d = std::ceil(x0); d <= x1 + 1e-9; d += 1) x_ticks.push_back(d);
  } else {
    for (int i = 0; i <= 4; ++i) x_ticks.push_back(x0 + (x1 - x0) * i / 4);
  }
  for (double x : x_ticks) {
    svg += "<line x1=\"" + num(px(x)) + "\" y1=\"" + num(height - bottom) + "\" x2=\"" + num(px(x)) + "\" y2=\"" +
           num(height - bottom + 5) + "\" stroke=\"black\"/>\n";
    svg += "<text x=\"" + num(px(x)) + "\" y=\"" + num(height - bottom + 18) + "\" text-anchor=\"middle\">" +
           (log_x ? "1e" + std::to_string(static_cast<int>(std::lround(x))) : label(x)) + "</text>\n";
  }
  for (int i = 0; i <= 4; ++i) {
    const double y = y0 + (y1 - y0) * i / 4;
    svg += "<line x1=\"" + num(left - 5) + "\" y1=\"" + num(py(y)) + "\" x2=\"" + num(left) + "\" y2=\"" + num(py(y)) +
           "\" stroke=\"black\"/>\n<text x=\"" + num(left - 8) + "\" y=\"" + num(py(y) + 4) + "\" text-anchor=\"end\">" +
           label(y) + "</text>\n";
  }
  svg += "<text x=\"" + num(left + (width - left - right) / 2) + "\" y=\"" + num(height - 10) +
         "\" text-anchor=\"middle\">Learning rate</text>\n<text x=\"16\" y=\"" + num(top + (height - top - bottom) / 2) +
         "\" text-anchor=\"middle\" transform=\"rotate(-90 16 " + num(top + (height - top - bottom) / 2) + ")\">Loss</text>\n";
  if (!points.empty()) {
    svg += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"";
    for (const auto& [x, y] : points) svg += num(px(x)) + "," + num(py(y)) + " ";
    svg += "\"/>\n";
  }
  if (const auto i = suggestion) {
    const double x = log_x ? std::log10(lrs[*i]) : lrs[*i];
    svg += "<circle cx=\"" + num(px(x)) + "\" cy=\"" + num(py(losses[*i])) + "\" r=\"5\" fill=\"red\"><title>suggestion " +
           label(lrs[*i]) + "</title></circle>\n<text x=\"" + num(width - right - 5) + "\" y=\"" + num(top + 15) +
           "\" text-anchor=\"end\" fill=\"red\">suggested lr " + label(lrs[*i]) + "</text>\n";
  }
  svg += "</svg>\n";
  write_file_atomically(path, svg, "lr finder plot");
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
