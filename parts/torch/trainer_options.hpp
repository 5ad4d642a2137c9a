// trainloop: TrainerOptions, the Trainer's settings as chainable setters (LibTorch style), checked in one place.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "parts/torch/precision.hpp"
#if TRAINLOOP_WITH_DISTRIBUTED  // the process group's and DistributedDataParallel's options
#include "parts/torch/distributed/ddp.hpp"
#endif

TRAINLOOP_DETAIL_BEGIN

/// A number of batches, or a fraction of them (limit_*_batches, overfit_batches): an integer counts batches, a
/// floating-point value is a fraction, as in Lightning (10 = ten batches, 0.25 = a quarter, 1.0 = all).
class BatchLimit {
 public:
  BatchLimit() = default;
  BatchLimit(std::int64_t batches) : count_(batches) {}  // NOLINT: implicit on purpose
  BatchLimit(int batches) : count_(batches) {}           // NOLINT
  BatchLimit(double fraction) : fraction_(fraction) {}   // NOLINT
  bool is_set() const { return count_ || fraction_; }
  const std::optional<std::int64_t>& count() const { return count_; }
  const std::optional<double>& fraction() const { return fraction_; }
  /// The number of batches out of `available` (unknown for unsized data: then only counts and 1.0 are allowed).
  TRAINLOOP_DETAIL_API std::optional<std::int64_t> apply(std::optional<std::int64_t> available,
                                                         const char* option) const;

 private:
  std::optional<std::int64_t> count_;
  std::optional<double> fraction_;
};

enum class ClipAlgorithm { norm, value };

#define TRAINLOOP_DETAIL_OPTION(type, name, default_value)                                                             \
 public:                                                                                                               \
  TrainerOptions& name(type value) {                                                                                   \
    name##_ = std::move(value);                                                                                        \
    return *this;                                                                                                      \
  }                                                                                                                    \
  const type& name() const { return name##_; }                                                                         \
                                                                                                                       \
 private:                                                                                                              \
  type name##_ = default_value;

/// The Trainer's options. Defaults follow Lightning's.
class TrainerOptions {
  /// "auto" (CUDA when available), "cpu", "cuda", "cuda:N", "mps".
  TRAINLOOP_DETAIL_OPTION(std::string, accelerator, "auto")
  /// -1: unlimited (the default, 1000, applies when max_steps is unset too).
  TRAINLOOP_DETAIL_OPTION(std::int64_t, max_epochs, -2)
  TRAINLOOP_DETAIL_OPTION(std::int64_t, min_epochs, 0)
  /// Optimizer steps; -1: unlimited.
  TRAINLOOP_DETAIL_OPTION(std::int64_t, max_steps, -1)
  TRAINLOOP_DETAIL_OPTION(std::int64_t, min_steps, 0)
  /// Wall-clock limit of fit, checked after each batch; zero: none.
  TRAINLOOP_DETAIL_OPTION(std::chrono::duration<double>, max_time, std::chrono::duration<double>::zero())
  TRAINLOOP_DETAIL_OPTION(BatchLimit, limit_train_batches, {})
  TRAINLOOP_DETAIL_OPTION(BatchLimit, limit_val_batches, {})
  TRAINLOOP_DETAIL_OPTION(BatchLimit, limit_test_batches, {})
  TRAINLOOP_DETAIL_OPTION(BatchLimit, limit_predict_batches, {})
  /// Train (and validate) on the same first batches every epoch, to check the model can overfit them.
  TRAINLOOP_DETAIL_OPTION(BatchLimit, overfit_batches, {})
  /// Runs n batches of train, validation and test, one epoch, no sanity check, to smoke-test the code; 0: off.
  TRAINLOOP_DETAIL_OPTION(std::int64_t, fast_dev_run, 0)
  /// Validate every n epochs; std::nullopt: validation follows val_check_interval(n) across epochs (Lightning's None).
  TRAINLOOP_DETAIL_OPTION(std::optional<std::int64_t>, check_val_every_n_epoch, 1)
  /// Validation steps run before training to catch bugs in validation_step early; -1: the whole set.
  TRAINLOOP_DETAIL_OPTION(std::int64_t, num_sanity_val_steps, 2)
  TRAINLOOP_DETAIL_OPTION(std::int64_t, accumulate_grad_batches, 1)
  /// 0: no clipping.
  TRAINLOOP_DETAIL_OPTION(double, gradient_clip_val, 0.0)
  TRAINLOOP_DETAIL_OPTION(ClipAlgorithm, gradient_clip_algorithm, ClipAlgorithm::norm)
  TRAINLOOP_DETAIL_OPTION(std::int64_t, log_every_n_steps, 50)
  /// Deterministic algorithms (at::globalContext().setDeterministicAlgorithms, cuDNN deterministic, no benchmark).
  TRAINLOOP_DETAIL_OPTION(bool, deterministic, false)
  /// Seeds torch's CPU and CUDA generators at the start of fit.
  TRAINLOOP_DETAIL_OPTION(std::optional<std::uint64_t>, seed, std::nullopt)
  TRAINLOOP_DETAIL_OPTION(std::string, default_root_dir, ".")
  /// Times every hook, step, backward, optimizer step and batch fetch, and prints where the time went when a stage
  /// ends (Lightning's SimpleProfiler); off by default (it reads the clock twice per hook).
  TRAINLOOP_DETAIL_OPTION(bool, profiler, false)
  /// With profiler(true): append the report to this file instead of printing it to stderr.
  TRAINLOOP_DETAIL_OPTION(std::string, profiler_path, "")
  /// Pins glibc's malloc thresholds (see allocator.hpp); process-wide.
  TRAINLOOP_DETAIL_OPTION(bool, tune_malloc, true)
  /// "32" (or "32-true"), "16-mixed" (or "16": fp16 autocast and loss scaling), "bf16-mixed" (or "bf16": bf16
  /// autocast). The mixed ones need TRAINLOOP_WITH_AMP=1; see docs/precision.md.
  TRAINLOOP_DETAIL_OPTION(std::string, precision, "32")
#if TRAINLOOP_WITH_AMP
  /// The loss scaler's settings; with enabled(true) it also scales under "bf16-mixed" (bf16 rarely needs it: tests,
  /// or models that underflow even there). Unset: a default scaler for "16-mixed" only.
  TRAINLOOP_DETAIL_OPTION(std::optional<amp::GradScalerOptions>, grad_scaler, std::nullopt)
#endif
  /// "auto" (data-parallel when devices(n > 1) or a launcher started several ranks), "ddp" (data-parallel, also with
  /// one rank) or "single" (one process, whatever the environment). Data-parallel needs TRAINLOOP_WITH_DISTRIBUTED=1;
  /// see docs/distributed.md.
  TRAINLOOP_DETAIL_OPTION(std::string, strategy, "auto")
  /// Processes on this machine; 0: what a launcher started (torchrun, srun, mpirun), else 1. Without a launcher,
  /// n > 1 runs this program n times (this process is rank 0).
  TRAINLOOP_DETAIL_OPTION(int, devices, 0)
  /// Shard trainloop DataLoaders across ranks (training and evaluation), as Lightning's distributed sampler does.
  TRAINLOOP_DETAIL_OPTION(bool, use_distributed_sampler, true)
#if TRAINLOOP_WITH_DISTRIBUTED
  /// Gradient synchronisation: bucket size, find_unused_parameters, broadcast_buffers.
  TRAINLOOP_DETAIL_OPTION(distributed::DDPOptions, ddp, {})
  /// The process group: backend, collective timeout (60 s), rendezvous timeout (300 s).
  TRAINLOOP_DETAIL_OPTION(distributed::InitOptions, process_group, {})
#endif

 public:
  /// Validation every `fraction` of an epoch's training batches (0 < f <= 1: after each floor(f * batches)-th batch,
  /// as in Lightning; with data of unknown size, at the epoch's end)...
  TrainerOptions& val_check_interval(double fraction) {
    val_check_fraction_ = fraction;
    val_check_batches_.reset();
    val_every_n_optimizer_steps_.reset();
    return *this;
  }
  /// ...or every `n` training batches, counted within each epoch, or across epochs when check_val_every_n_epoch is
  /// std::nullopt (Lightning's int val_check_interval). More than an epoch's batches is refused unless counted across.
  TrainerOptions& val_check_interval(std::int64_t n) {
    val_check_batches_ = n;
    val_check_fraction_ = 1.0;
    val_every_n_optimizer_steps_.reset();
    return *this;
  }
  TrainerOptions& val_check_interval(int n) { return val_check_interval(static_cast<std::int64_t>(n)); }
  /// trainloop's own cadence: every n optimizer steps counted across epochs (with accumulate_grad_batches(k), every
  /// n*k batches), never at epoch ends.
  TrainerOptions& val_every_n_optimizer_steps(std::int64_t n) {
    val_every_n_optimizer_steps_ = n;
    val_check_batches_.reset();
    val_check_fraction_ = 1.0;
    return *this;
  }
  double val_check_fraction() const { return val_check_fraction_; }
  const std::optional<std::int64_t>& val_check_batches() const { return val_check_batches_; }
  const std::optional<std::int64_t>& val_every_n_optimizer_steps() const { return val_every_n_optimizer_steps_; }

  TrainerOptions& enable_progress_bar(bool v) { return enable_progress_bar_ = v, *this; }
  TrainerOptions& enable_model_summary(bool v) { return enable_model_summary_ = v, *this; }
  /// The zero-cost configuration: no progress bar, no model summary, no host reads of logged values.
  TrainerOptions& barebones(bool v) { return barebones_ = v, *this; }
  bool barebones() const { return barebones_; }
  bool enable_progress_bar() const { return !barebones_ && enable_progress_bar_.value_or(true); }
  bool enable_model_summary() const { return !barebones_ && enable_model_summary_.value_or(true); }

  /// max_epochs as the loop uses it: Lightning's defaults (1000 epochs, or unlimited with max_steps).
  std::optional<std::int64_t> effective_max_epochs() const {
    if (fast_dev_run_ > 0) return 1;
    if (max_epochs_ == -2) return max_steps_ == -1 ? std::optional<std::int64_t>(1000) : std::nullopt;
    if (max_epochs_ == -1) return std::nullopt;
    return max_epochs_;
  }

  /// Rejects contradictory or out-of-range settings, naming the option.
  TRAINLOOP_DETAIL_API void validate() const;

  // Out of line: constructing, copying and destroying thirty-odd members is a lot of code for every TU.
  TRAINLOOP_DETAIL_API TrainerOptions();
  TRAINLOOP_DETAIL_API TrainerOptions(const TrainerOptions& other);
  TRAINLOOP_DETAIL_API TrainerOptions(TrainerOptions&& other) noexcept;
  TRAINLOOP_DETAIL_API TrainerOptions& operator=(const TrainerOptions& other);
  TRAINLOOP_DETAIL_API TrainerOptions& operator=(TrainerOptions&& other) noexcept;
  TRAINLOOP_DETAIL_API ~TrainerOptions();

 private:
  double val_check_fraction_ = 1.0;
  std::optional<std::int64_t> val_check_batches_, val_every_n_optimizer_steps_;
  std::optional<bool> enable_progress_bar_, enable_model_summary_;
  bool barebones_ = false;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API std::optional<std::int64_t> BatchLimit::apply(std::optional<std::int64_t> available,
                                                                const char* option) const {
  if (count_) return available ? std::min(*count_, *available) : *count_;
  if (!fraction_ || *fraction_ == 1.0) return available;
  if (!available)
    throw std::invalid_argument(std::string("trainloop: TrainerOptions().") + option +
                                "(fraction): the data has no size, so a fraction of it is unknown; give a count");
  return static_cast<std::int64_t>(static_cast<double>(*available) * *fraction_);
}

TRAINLOOP_DETAIL_API TrainerOptions::TrainerOptions() = default;
TRAINLOOP_DETAIL_API TrainerOptions::TrainerOptions(const TrainerOptions& other) = default;
TRAINLOOP_DETAIL_API TrainerOptions::TrainerOptions(TrainerOptions&& other) noexcept = default;
TRAINLOOP_DETAIL_API TrainerOptions& TrainerOptions::operator=(const TrainerOptions& other) = default;
TRAINLOOP_DETAIL_API TrainerOptions& TrainerOptions::operator=(TrainerOptions&& other) noexcept = default;
TRAINLOOP_DETAIL_API TrainerOptions::~TrainerOptions() = default;

TRAINLOOP_DETAIL_API void TrainerOptions::validate() const {
  auto fail = [](const std::string& what) { return std::invalid_argument("trainloop: TrainerOptions()." + what); };
  if (max_epochs_ < -2 || max_epochs_ == 0) throw fail("max_epochs(n): n must be positive, or -1 for unlimited");
  if (min_epochs_ < 0) throw fail("min_epochs(n): n must not be negative");
  if (max_epochs_ > 0 && min_epochs_ > max_epochs_)
    throw fail("min_epochs(" + std::to_string(min_epochs_) + ") exceeds max_epochs(" + std::to_string(max_epochs_) + ")");
  if (max_steps_ < -1 || max_steps_ == 0) throw fail("max_steps(n): n must be positive, or -1 for unlimited");
  if (min_steps_ < 0) throw fail("min_steps(n): n must not be negative");
  if (max_steps_ > 0 && min_steps_ > max_steps_)
    throw fail("min_steps(" + std::to_string(min_steps_) + ") exceeds max_steps(" + std::to_string(max_steps_) + ")");
  if (max_time_.count() < 0) throw fail("max_time(t): t must not be negative");
  const std::pair<const char*, const BatchLimit*> limits[] = {
      {"limit_train_batches", &limit_train_batches_}, {"limit_val_batches", &limit_val_batches_},
      {"limit_test_batches", &limit_test_batches_},   {"limit_predict_batches", &limit_predict_batches_},
      {"overfit_batches", &overfit_batches_}};
  for (const auto& [name, limit] : limits) {
    if (limit->count() && *limit->count() < 0) throw fail(std::string(name) + "(n): n must not be negative");
    if (limit->fraction() && (*limit->fraction() < 0.0 || *limit->fraction() > 1.0))
      throw fail(std::string(name) + "(f): a fraction must be in [0, 1]; give an integer to count batches");
  }
  if (overfit_batches_.is_set() && (limit_train_batches_.is_set() || limit_val_batches_.is_set()))
    throw fail("overfit_batches cannot be combined with limit_train_batches or limit_val_batches");
  if (fast_dev_run_ < 0) throw fail("fast_dev_run(n): n must not be negative");
  if (val_check_fraction_ <= 0.0 || val_check_fraction_ > 1.0)
    throw fail("val_check_interval(f): a fraction must be in (0, 1]; give an integer for a number of steps");
  if (val_check_batches_ && *val_check_batches_ < 1) throw fail("val_check_interval(n): n must be at least 1");
  if (val_every_n_optimizer_steps_ && *val_every_n_optimizer_steps_ < 1)
    throw fail("val_every_n_optimizer_steps(n): n must be at least 1");
  if (check_val_every_n_epoch_ && *check_val_every_n_epoch_ < 1)
    throw fail("check_val_every_n_epoch(n): n must be at least 1 (std::nullopt: count val_check_interval across epochs)");
  if (!check_val_every_n_epoch_ && !val_check_batches_)
    throw fail("check_val_every_n_epoch(std::nullopt) needs an integer val_check_interval(n) to validate by");
  if (num_sanity_val_steps_ < -1) throw fail("num_sanity_val_steps(n): n must be -1 (all) or more");
  if (accumulate_grad_batches_ < 1) throw fail("accumulate_grad_batches(n): n must be at least 1");
  if (gradient_clip_val_ < 0) throw fail("gradient_clip_val(v): v must not be negative");
  if (log_every_n_steps_ < 1) throw fail("log_every_n_steps(n): n must be at least 1");
  parse_precision(precision_);
  if (strategy_ != "auto" && strategy_ != "ddp" && strategy_ != "single")
    throw fail("strategy(\"" + strategy_ + "\"): not one of \"auto\", \"ddp\", \"single\"");
  if (devices_ < 0) throw fail("devices(n): n must not be negative (0: what the launcher started)");
  if (strategy_ == "single" && devices_ > 1) throw fail("strategy(\"single\") runs one process; drop devices(n > 1)");
  if (!with_distributed && (strategy_ == "ddp" || devices_ > 1))
    throw fail(std::string(strategy_ == "ddp" ? "strategy(\"ddp\")" : "devices(" + std::to_string(devices_) + ")") +
               " needs data-parallel training: define TRAINLOOP_WITH_DISTRIBUTED=1 (CMake: "
               "-DTRAINLOOP_WITH_DISTRIBUTED=ON) and link c10d's Gloo (LibTorch's Torch target does)");
#if TRAINLOOP_WITH_AMP
  if (grad_scaler_) grad_scaler_->validate();
#endif
  if (barebones_ && enable_progress_bar_.value_or(false))
    throw fail("barebones(true) turns the progress bar off; drop enable_progress_bar(true)");
  if (barebones_ && enable_model_summary_.value_or(false))
    throw fail("barebones(true) turns the model summary off; drop enable_model_summary(true)");
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

#undef TRAINLOOP_DETAIL_OPTION

TRAINLOOP_DETAIL_END
