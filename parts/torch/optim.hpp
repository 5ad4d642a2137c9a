// trainloop: what configure_optimizers returns (one or several optimizers, each optionally with an LR scheduler
// stepped every N steps or epochs, or on a monitored metric), and the optimizer and closure Lightning's
// optimizer_step hook gets.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "parts/core/function.hpp"
#include "parts/core/hooks.hpp"
#include "parts/core/state.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
// One training batch's forward and backward as the optimizers' closures share it: evaluated once for all of them,
// again whenever an optimizer re-evaluates (LBFGS, line searches).
struct ClosureBatch {
  explicit ClosureBatch(FunctionRef<torch::Tensor()> evaluate_batch) : evaluate(evaluate_batch) {}
  // Already evaluated: `last_loss` is what the first call of each closure returns.
  ClosureBatch(FunctionRef<torch::Tensor()> evaluate_batch, torch::Tensor last_loss)
      : evaluate(evaluate_batch), loss(std::move(last_loss)), evaluated(true) {}
  FunctionRef<torch::Tensor()> evaluate;  // training_step, zero_grad at a window's start, backward; returns the loss
  torch::Tensor loss;                     // the last evaluation's
  bool evaluated = false;
  torch::Tensor run() {
    loss = evaluate();
    evaluated = true;
    return loss;
  }
};
}  // namespace detail

/// Lightning's optimizer_closure: what the optimizer_step hook gets besides the optimizer. Calling it runs the batch's
/// training_step, the zero_grad that opens an accumulation window, and the backward with its hooks, and returns the
/// loss, divided by accumulate_grad_batches as Lightning's (its graph already spent by the backward; Lightning returns
/// a detached copy, which costs a dispatched op per call here). An optimizer that re-evaluates the loss
/// (torch::optim::LBFGS) calls it several times per step; each call runs the batch again. With several optimizers,
/// the first call of a later optimizer's closure returns the loss the earlier one computed (one backward fills every
/// parameter's gradient). Not copyable: hand it to a raw LibTorch optimizer as `[&] { return closure(); }`.
class OptimizerClosure {
 public:
  explicit OptimizerClosure(detail::ClosureBatch& batch) noexcept : batch_(&batch) {}
  OptimizerClosure(const OptimizerClosure&) = delete;
  OptimizerClosure& operator=(const OptimizerClosure&) = delete;
  torch::Tensor operator()() {
    if (calls_++ == 0 && batch_->evaluated) return batch_->loss;
    return batch_->run();
  }
  /// Whether the batch's training_step ran (Lightning's "the closure hasn't been executed" when it did not).
  bool executed() const noexcept { return batch_->evaluated; }

 private:
  detail::ClosureBatch* batch_;
  int calls_ = 0;
};

/// The optimizer as the optimizer_step hook gets it (Lightning's LightningOptimizer): `step(closure)` goes through the
/// Trainer, so the gradients are synchronised across ranks and unscaled, on_before_optimizer_step and clipping run
/// after the closure, and the loss scaler may skip the step. Everything else is the LibTorch optimizer's:
/// `optimizer()`, `param_groups()` (a learning-rate warm-up writes there).
class LightningOptimizer {
 public:
  LightningOptimizer(torch::optim::Optimizer& optimizer, detail::FunctionRef<torch::Tensor(OptimizerClosure&)> step)
      : optimizer_(&optimizer), step_(step) {}
  /// Lightning's optimizer.step(closure=optimizer_closure); returns the closure's loss.
  torch::Tensor step(OptimizerClosure& closure) { return step_(closure); }
  torch::optim::Optimizer& optimizer() const noexcept { return *optimizer_; }
  std::vector<torch::optim::OptimizerParamGroup>& param_groups() { return optimizer_->param_groups(); }

 private:
  torch::optim::Optimizer* optimizer_;
  detail::FunctionRef<torch::Tensor(OptimizerClosure&)> step_;
};

/// When a scheduler steps: after optimizer steps, or at epoch ends.
enum class Interval { step, epoch };

namespace detail {
template <class S>
using plain_step_t = decltype(std::declval<S&>().step());
template <class S>
using metric_step_t = decltype(std::declval<S&>().step(std::declval<double>()));
template <class S>
using state_dict_t = decltype(std::declval<const S&>().state_dict());
template <class S>
using load_state_dict_t = decltype(std::declval<S&>().load_state_dict(std::declval<const StateDict&>()));
}  // namespace detail

/// An LR scheduler as the Trainer drives it: any shared_ptr<S> whose S has `step()` (LibTorch's StepLR, trainloop's
/// schedulers) or, for `monitor`, `step(double metric)` (reduce-on-plateau).
class SchedulerConfig {
 public:
  template <class S>
  explicit SchedulerConfig(std::shared_ptr<S> scheduler) {
    static_assert(detail::is_detected_v<detail::plain_step_t, S> || detail::is_detected_v<detail::metric_step_t, S>,
                  "trainloop: SchedulerConfig(scheduler): the scheduler needs step() or step(double metric)");
    if (!scheduler) throw std::invalid_argument("trainloop: SchedulerConfig(scheduler): the scheduler is null");
    if constexpr (detail::is_detected_v<detail::plain_step_t, S>) step_ = [scheduler] { scheduler->step(); };
    if constexpr (detail::is_detected_v<detail::metric_step_t, S>)
      step_on_metric_ = [scheduler](double metric) { scheduler->step(metric); };
    // trainloop's schedulers have a StateDict state, which checkpoints carry; LibTorch's do not.
    if constexpr (detail::is_detected_v<detail::state_dict_t, S> && detail::is_detected_v<detail::load_state_dict_t, S>) {
      if constexpr (std::is_same_v<detail::state_dict_t<S>, StateDict>) {
        save_ = [scheduler] { return scheduler->state_dict(); };
        load_ = [scheduler](const StateDict& state) { scheduler->load_state_dict(state); };
      }
    }
  }
  SchedulerConfig& interval(Interval v) { return interval_ = v, *this; }
  TRAINLOOP_DETAIL_API SchedulerConfig& frequency(std::int64_t v);
  /// Steps with the value of this metric (from callback_metrics) instead of plainly.
  SchedulerConfig& monitor(std::string metric) { return monitor_ = std::move(metric), *this; }

  Interval interval() const { return interval_; }
  std::int64_t frequency() const { return frequency_; }
  const std::string& monitor() const { return monitor_; }
  void step() const { step_(); }
  void step(double metric) const { step_on_metric_(metric); }
  bool can_step_plainly() const { return static_cast<bool>(step_); }
  bool can_step_on_metric() const { return static_cast<bool>(step_on_metric_); }
  /// The scheduler's state, when it has one (empty otherwise).
  std::optional<StateDict> state_dict() const { return save_ ? std::optional<StateDict>(save_()) : std::nullopt; }
  TRAINLOOP_DETAIL_API void load_state_dict(const StateDict& state) const;

 private:
  std::function<void()> step_;
  std::function<void(double)> step_on_metric_;
  std::function<StateDict()> save_;
  std::function<void(const StateDict&)> load_;
  Interval interval_ = Interval::epoch;
  std::int64_t frequency_ = 1;
  std::string monitor_;
};

/// One optimizer and, optionally, its scheduler.
class OptimizerConfig {
 public:
  template <class O, class = std::enable_if_t<std::is_base_of_v<torch::optim::Optimizer, O>>>
  OptimizerConfig(std::shared_ptr<O> optimizer) : optimizer_(std::move(optimizer)) {}  // NOLINT: implicit on purpose
  OptimizerConfig& scheduler(SchedulerConfig s) { return scheduler_ = std::move(s), *this; }
  template <class S>
  OptimizerConfig& scheduler(std::shared_ptr<S> s) {
    return scheduler(SchedulerConfig(std::move(s)));
  }
  const std::shared_ptr<torch::optim::Optimizer>& optimizer() const { return optimizer_; }
  const std::optional<SchedulerConfig>& scheduler() const { return scheduler_; }

 private:
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  std::optional<SchedulerConfig> scheduler_;
};

/// Several optimizers: what configure_optimizers returns when one is not enough.
using Optimizers = std::vector<OptimizerConfig>;

namespace detail {
// Normalises every accepted configure_optimizers() result to Optimizers.
template <class R>
Optimizers to_optimizers(R&& result) {
  using T = std::decay_t<R>;
  if constexpr (std::is_same_v<T, Optimizers>) {
    return std::forward<R>(result);
  } else if constexpr (std::is_same_v<T, OptimizerConfig>) {
    return Optimizers{std::forward<R>(result)};
  } else if constexpr (std::is_constructible_v<OptimizerConfig, T>) {
    return Optimizers{OptimizerConfig(std::forward<R>(result))};
  } else {
    static_assert(std::is_constructible_v<OptimizerConfig, T>,
                  "trainloop: configure_optimizers() must return a std::shared_ptr to a torch::optim optimizer, a "
                  "trainloop::OptimizerConfig, or trainloop::Optimizers");
    return {};
  }
}
// The optimizers alone, in order (checkpoints and the module's optimizers() want them so).
TRAINLOOP_DETAIL_API std::vector<std::shared_ptr<torch::optim::Optimizer>> optimizer_pointers(const Optimizers& optimizers);
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API SchedulerConfig& SchedulerConfig::frequency(std::int64_t v) {
  if (v < 1) throw std::invalid_argument("trainloop: SchedulerConfig().frequency(n): n must be at least 1");
  return frequency_ = v, *this;
}
TRAINLOOP_DETAIL_API void SchedulerConfig::load_state_dict(const StateDict& state) const {
  if (load_) load_(state);
}
TRAINLOOP_DETAIL_API std::vector<std::shared_ptr<torch::optim::Optimizer>> detail::optimizer_pointers(
    const Optimizers& optimizers) {
  std::vector<std::shared_ptr<torch::optim::Optimizer>> pointers;
  for (const auto& config : optimizers) pointers.push_back(config.optimizer());
  return pointers;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
