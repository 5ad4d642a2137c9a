// trainloop: the Metric concept, its attachment to an Engine, the distributed-sync seam, and arithmetic composition.
//
// A metric is any type with `reset()`, `update(...)` and `compute()`. Its state lives in tensors on the metric's
// device, so `update` never waits for the device; `compute()` returns a device tensor, and the host reads it only
// when something consumes it (an Engine's state.metrics at epoch end, a log, a test).
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "parts/core/hooks.hpp"
#include "parts/torch/device.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
template <class M>
using reset_t = decltype(std::declval<M&>().reset());
template <class M>
using compute_t = decltype(std::declval<M&>().compute());
template <class M>
inline constexpr bool is_metric_v = is_detected_v<reset_t, M> && is_detected_v<compute_t, M>;
}  // namespace detail

/// How a metric's states are combined across ranks.
enum class SyncOp { sum, max, min };

/// The distributed seam: a function that reduces one state tensor in place across ranks. Single process: none
/// (metrics compute from their local state). The distributed build installs the process group's all-reduce here;
/// every metric reduces copies of its states once per compute(), never per update.
TRAINLOOP_DETAIL_API std::function<void(torch::Tensor&, SyncOp)>& metric_state_reducer();
namespace detail {
// The state as all ranks together see it: a reduced copy (so computing twice never reduces twice), or the state
// itself in a single process.
TRAINLOOP_DETAIL_API torch::Tensor synced(const torch::Tensor& state, SyncOp op);
// Checks that cost no device sync: shapes and dtypes.
TRAINLOOP_DETAIL_API void require(bool ok, const std::string& metric, const std::string& what);
inline std::string shape_of(const torch::Tensor& t) { return t.defined() ? c10::str(t.sizes()) : "undefined"; }
// Value checks (labels within range) need the values; on the CPU that costs no device sync, so they run there.
inline bool can_check_values(const torch::Tensor& t) { return t.device().is_cpu(); }
}  // namespace detail

/// What every metric's compute() throws when it has nothing to compute from (no update, or only empty batches;
/// RocAuc also with a single class among the targets), naming the metric (Ignite's NotComputableError).
class NotComputableError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
TRAINLOOP_DETAIL_API NotComputableError not_computable(const char* metric);
/// How many examples a metric has seen, counted on the host from shapes (no device sync), so compute() can tell
/// "nothing seen" from a value. (Per process: in a distributed run each rank counts its own.)
class SeenCount {
 public:
  void reset() noexcept { n_ = 0; }
  void add(std::int64_t n) noexcept { n_ += n; }
  std::int64_t value() const noexcept { return n_; }
  /// The count over all ranks, as a float64 tensor on the device of `like` (the denominator of a mean).
  TRAINLOOP_DETAIL_API torch::Tensor total(const torch::Tensor& like) const;
  TRAINLOOP_DETAIL_API void require_some(const char* metric) const;

 private:
  std::int64_t n_ = 0;
};

/// Values a metric refuses (labels out of range, targets other than 0/1, NaN scores). On the CPU the check costs no
/// device sync, so update() throws at once with what it found. On other devices the bad entries are counted there
/// (and kept out of index operations, so no device-side assert kills a CUDA context), and compute() raises,
/// reading that one counter.
class InvalidValues {
 public:
  TRAINLOOP_DETAIL_API void reset();
  /// `invalid`: a bool mask of the bad entries; `what`: the rule they break (with what was found, on the CPU).
  template <class Describe>
  void check(const torch::Tensor& invalid, const char* metric, Describe&& describe) {
    if (invalid.numel() == 0) return;
    if (can_check_values(invalid)) {
      if (invalid.any().item<bool>()) throw std::invalid_argument(std::string("trainloop: ") + metric + ": " + describe());
      return;
    }
    const torch::Tensor n = invalid.sum();
    count_ = count_.defined() ? count_ + n : n;
    if (what_.empty()) what_ = describe();
  }
  TRAINLOOP_DETAIL_API void raise_if_any(const char* metric) const;

 private:
  torch::Tensor count_;
  std::string what_;
};
struct identity_transform {
  template <class T>
  const T& operator()(const T& output) const {
    return output;
  }
};
}  // namespace detail

/// When an attached metric resets and computes (Ignite's usages).
enum class MetricUsage {
  epoch,    ///< reset at epoch start, updated every iteration, computed at epoch end
  running,  ///< reset at run start, computed after every iteration (on the device) and published at epoch end
  batch     ///< reset at every iteration start, computed at its end (on the device), published at epoch end
};

/// A compile-time Engine handler feeding a metric from the step's output: `transform(engine.output())` gives the
/// update's arguments (a pair or tuple is spread over them, anything else is passed as one). The computed value is published to engine.state.metrics[name] at
/// epoch end (the one host read); `value()` holds the last computed device tensor.
template <class M, class Transform>
class MetricHandler {
 public:
  MetricHandler(std::string name, M& metric, MetricUsage usage, Transform transform)
      : name_(std::move(name)), metric_(&metric), usage_(usage), transform_(std::move(transform)) {}

  template <class E>
  void on_started(E&) {
    if (usage_ == MetricUsage::running) metric_->reset();
  }
  template <class E>
  void on_epoch_started(E&) {
    if (usage_ == MetricUsage::epoch) metric_->reset();
  }
  template <class E>
  void on_iteration_started(E&) {
    if (usage_ == MetricUsage::batch) metric_->reset();
  }
  template <class E>
  void on_iteration_completed(E& engine) {
    auto args = transform_(engine.output());
    using Args = std::decay_t<decltype(args)>;
    if constexpr (detail::is_tuple<Args>::value || detail::is_pair<Args>::value)
      std::apply([&](auto&&... a) { metric_->update(a...); }, args);
    else
      metric_->update(args);
    if (usage_ != MetricUsage::epoch) {
      try {
        value_ = metric_->compute();
      } catch (const NotComputableError&) {  // an empty batch: the last value stands
      }
    }
  }
  /// One number is published as `name`; a metric with several (per class: Averaging::none, iou(), a confusion
  /// matrix, an [N, D] Average) as `name/0`, `name/1`, ... (`name/i/j` for a matrix), read with one transfer.
  template <class E>
  void on_epoch_completed(E& engine) {
    if (usage_ == MetricUsage::epoch) value_ = metric_->compute();
    if (!value_.defined()) return;
    if (value_.numel() == 1) {
      engine.state.metrics[name_] = value_.template item<double>();
      return;
    }
    const torch::Tensor host = value_.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    const double* data = host.template data_ptr<double>();
    const auto sizes = host.sizes();
    for (std::int64_t flat = 0; flat < host.numel(); ++flat) {
      std::string key = name_;
      std::int64_t rest = flat, stride = host.numel();
      for (const std::int64_t size : sizes) {
        stride /= size;
        key += "/" + std::to_string(rest / stride);
        rest %= stride;
      }
      engine.state.metrics[key] = data[flat];
    }
  }
  const torch::Tensor& value() const { return value_; }

 private:
  std::string name_;
  M* metric_;
  MetricUsage usage_;
  Transform transform_;
  torch::Tensor value_;
};

/// Attaches `metric` (kept by reference) to an Engine's pack: `make_engine(step, attach("acc", accuracy))`. By
/// default the step's output is passed to update as is (a tuple is spread over update's parameters).
template <class M, class Transform = detail::identity_transform>
MetricHandler<M, Transform> attach(std::string name, M& metric, MetricUsage usage = MetricUsage::epoch,
                                   Transform transform = Transform{}) {
  static_assert(detail::is_metric_v<M>, "trainloop: attach(name, metric): the metric needs reset() and compute()");
  return MetricHandler<M, Transform>(std::move(name), metric, usage, std::move(transform));
}

// ---- composition ------------------------------------------------------------------------------------------------

/// A metric computed from other metrics' values: `MetricLambda(f, precision, recall)` computes
/// f(precision.compute(), recall.compute()). reset() and update() reach every distinct underlying metric once (so
/// `2 * p * r / (p + r)` updates p and r once each). Operands that are metrics are referenced; composed operands and
/// numbers are held by value.
template <class F, class... Operands>
class MetricLambda {
 public:
  using trainloop_metric_lambda = void;
  explicit MetricLambda(F f, Operands... operands) : f_(std::move(f)), operands_(std::move(operands)...) {}

  void reset() {
    std::vector<const void*> seen;
    visit([](auto& m) { m.reset(); }, seen);
  }
  template <class... Args>
  void update(const Args&... args) {
    std::vector<const void*> seen;
    visit([&](auto& m) { m.update(args...); }, seen);
  }
  torch::Tensor compute() {
    return std::apply([&](auto&... op) { return to_tensor(f_(value_of(op)...)); }, operands_);
  }

  template <class V>
  void visit(V&& visitor, std::vector<const void*>& seen) {
    std::apply([&](auto&... op) { (visit_operand(op, visitor, seen), ...); }, operands_);
  }

 private:
  template <class Op, class V>
  static void visit_operand(Op& op, V& visitor, std::vector<const void*>& seen) {
    if constexpr (std::is_pointer_v<Op>) {
      const void* address = op;
      for (const void* s : seen)
        if (s == address) return;
      seen.push_back(address);
      visitor(*op);
    } else if constexpr (detail::is_detected_v<lambda_marker_t, Op>) {
      op.visit(visitor, seen);
    }
  }
  template <class Op>
  static decltype(auto) value_of(Op& op) {
    if constexpr (std::is_pointer_v<Op>) return op->compute();
    else if constexpr (detail::is_detected_v<lambda_marker_t, Op>) return op.compute();
    else return op;  // a number
  }
  template <class T>
  static torch::Tensor to_tensor(T&& v) {
    if constexpr (std::is_same_v<std::decay_t<T>, torch::Tensor>) return std::forward<T>(v);
    else return torch::tensor(static_cast<double>(v), torch::kFloat64);
  }
  template <class T>
  using lambda_marker_t = typename T::trainloop_metric_lambda;

  F f_;
  std::tuple<Operands...> operands_;
};

namespace detail {
template <class T>
using metric_lambda_marker_t = typename T::trainloop_metric_lambda;
template <class T>
inline constexpr bool is_metric_lambda_v = is_detected_v<metric_lambda_marker_t, std::decay_t<T>>;
template <class T>
inline constexpr bool is_plain_metric_v = is_metric_v<std::decay_t<T>> && !is_metric_lambda_v<T>;
template <class T>
inline constexpr bool is_metric_operand_v =
    is_metric_v<std::decay_t<T>> || std::is_arithmetic_v<std::decay_t<T>>;
// How a composed metric keeps an operand: a plain metric by address (its state is the user's), a composition and a
// number by value.
template <class T>
auto keep_operand(T&& op) {
  if constexpr (is_plain_metric_v<T>) {
    static_assert(std::is_lvalue_reference_v<T>,
                  "trainloop: compose named metrics (a temporary metric would be gone before compute())");
    return &op;
  } else {
    return std::decay_t<T>(std::forward<T>(op));
  }
}
template <class A, class B>
inline constexpr bool composable_v = is_metric_operand_v<A> && is_metric_operand_v<B> &&
                                     (is_metric_v<std::decay_t<A>> || is_metric_v<std::decay_t<B>>);
}  // namespace detail

template <class F, class... Ms>
auto metric_lambda(F f, Ms&&... metrics) {
  return MetricLambda<F, decltype(detail::keep_operand(std::forward<Ms>(metrics)))...>(
      std::move(f), detail::keep_operand(std::forward<Ms>(metrics))...);
}

#define TRAINLOOP_DETAIL_METRIC_OPERATOR(op)                                                                           \
  template <class A, class B, class = std::enable_if_t<detail::composable_v<A, B>>>                                    \
  auto operator op(A&& a, B&& b) {                                                                                     \
    return metric_lambda([](const auto& x, const auto& y) { return x op y; }, std::forward<A>(a), std::forward<B>(b)); \
  }
TRAINLOOP_DETAIL_METRIC_OPERATOR(+)
TRAINLOOP_DETAIL_METRIC_OPERATOR(-)
TRAINLOOP_DETAIL_METRIC_OPERATOR(*)
TRAINLOOP_DETAIL_METRIC_OPERATOR(/)
#undef TRAINLOOP_DETAIL_METRIC_OPERATOR

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API std::function<void(torch::Tensor&, SyncOp)>& metric_state_reducer() {
  static std::function<void(torch::Tensor&, SyncOp)> reducer;
  return reducer;
}
namespace detail {
TRAINLOOP_DETAIL_API torch::Tensor synced(const torch::Tensor& state, SyncOp op) {
  auto& reduce = metric_state_reducer();
  if (!reduce) return state;
  torch::Tensor copy = state.clone();
  reduce(copy, op);
  return copy;
}
TRAINLOOP_DETAIL_API void require(bool ok, const std::string& metric, const std::string& what) {
  if (!ok) throw std::invalid_argument("trainloop: " + metric + ": " + what);
}
TRAINLOOP_DETAIL_API NotComputableError not_computable(const char* metric) {
  return NotComputableError(std::string("trainloop: ") + metric + ": not computable: it has seen no examples "
                            "(compute() before any update(), or only empty batches)");
}
TRAINLOOP_DETAIL_API torch::Tensor SeenCount::total(const torch::Tensor& like) const {
  return synced(torch::full({}, static_cast<double>(n_), like.options().dtype(torch::kFloat64)), SyncOp::sum);
}
TRAINLOOP_DETAIL_API void SeenCount::require_some(const char* metric) const {
  if (n_ == 0) throw not_computable(metric);
}
TRAINLOOP_DETAIL_API void InvalidValues::reset() {
  count_ = torch::Tensor();
  what_.clear();
}
TRAINLOOP_DETAIL_API void InvalidValues::raise_if_any(const char* metric) const {
  if (!count_.defined()) return;
  const std::int64_t n = count_.item<std::int64_t>();
  if (n > 0)
    throw std::invalid_argument(std::string("trainloop: ") + metric + ": " + std::to_string(n) +
                                " invalid entries were passed to update(): " + what_);
}
}  // namespace detail
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
