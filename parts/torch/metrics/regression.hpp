// trainloop: regression and averaging metrics: MeanSquaredError, MeanAbsoluteError, RootMeanSquaredError, R2Score,
// Loss, Average, RunningAverage. States are float64 tensors on the inputs' device.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <functional>
#include <string>

#include "parts/torch/metrics/metric.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
// Sums of errors over all elements, and the element count, for the error metrics.
class ErrorSums {
 public:
  TRAINLOOP_DETAIL_API void reset();
  TRAINLOOP_DETAIL_API void update(const torch::Tensor& prediction, const torch::Tensor& target, const char* metric);
  TRAINLOOP_DETAIL_API torch::Tensor mean_squared(const char* metric) const;
  TRAINLOOP_DETAIL_API torch::Tensor mean_absolute(const char* metric) const;

 private:
  torch::Tensor sum_squared_, sum_absolute_;
  SeenCount seen_;
};
}  // namespace detail

class MeanSquaredError {
 public:
  void reset() { sums_.reset(); }
  void update(const torch::Tensor& prediction, const torch::Tensor& target) { sums_.update(prediction, target, "MeanSquaredError"); }
  torch::Tensor compute() { return sums_.mean_squared("MeanSquaredError"); }

 private:
  detail::ErrorSums sums_;
};

class MeanAbsoluteError {
 public:
  void reset() { sums_.reset(); }
  void update(const torch::Tensor& prediction, const torch::Tensor& target) { sums_.update(prediction, target, "MeanAbsoluteError"); }
  torch::Tensor compute() { return sums_.mean_absolute("MeanAbsoluteError"); }

 private:
  detail::ErrorSums sums_;
};

class RootMeanSquaredError {
 public:
  void reset() { sums_.reset(); }
  void update(const torch::Tensor& prediction, const torch::Tensor& target) { sums_.update(prediction, target, "RootMeanSquaredError"); }
  torch::Tensor compute() { return sums_.mean_squared("RootMeanSquaredError").sqrt(); }

 private:
  detail::ErrorSums sums_;
};

/// Coefficient of determination, 1 - SSE / SST, over all elements seen. SST is kept as a streaming mean and sum of
/// squared deviations in float64, each batch's (two-pass) merged by Chan's formula, so targets far from zero or
/// nearly constant lose no digits and R² never exceeds 1 for an imperfect prediction. Constant targets (SST = 0)
/// follow scikit-learn's default (force_finite): 1.0 for a perfect prediction, 0.0 otherwise.
class R2Score {
 public:
  TRAINLOOP_DETAIL_API void reset();
  TRAINLOOP_DETAIL_API void update(const torch::Tensor& prediction, const torch::Tensor& target);
  TRAINLOOP_DETAIL_API torch::Tensor compute();

 private:
  torch::Tensor sse_, mean_, m2_;
  detail::SeenCount seen_;
};

/// The mean of values: scalars count one each; a tensor's first dimension counts its examples (Ignite's Average).
class Average {
 public:
  TRAINLOOP_DETAIL_API void reset();
  TRAINLOOP_DETAIL_API void update(const torch::Tensor& value);
  void update(double value) { update(torch::tensor(value, torch::kFloat64)); }
  TRAINLOOP_DETAIL_API torch::Tensor compute();

 private:
  torch::Tensor sum_;
  detail::SeenCount seen_;
};

/// The mean of a loss function over examples: update(prediction, target) weighs each batch's loss by its size.
class Loss {
 public:
  using Function = std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>;
  explicit Loss(Function loss) : loss_(std::move(loss)) {
    if (!loss_) throw std::invalid_argument("trainloop: Loss: the loss function is empty");
  }
  TRAINLOOP_DETAIL_API void reset();
  /// An empty batch changes nothing (the mean loss of no examples is NaN and would poison the sum).
  TRAINLOOP_DETAIL_API void update(const torch::Tensor& prediction, const torch::Tensor& target);
  TRAINLOOP_DETAIL_API torch::Tensor compute();

 private:
  Function loss_;
  torch::Tensor sum_;
  detail::SeenCount seen_;
};

/// An exponential moving average: v = alpha * v + (1 - alpha) * x, starting at the first value (Ignite's
/// RunningAverage).
class RunningAverage {
 public:
  explicit RunningAverage(double alpha = 0.98) : alpha_(alpha) {
    if (!(alpha > 0.0 && alpha < 1.0)) throw std::invalid_argument("trainloop: RunningAverage: alpha must be in (0, 1)");
  }
  void reset() { value_ = torch::Tensor(); }
  /// The mean of `x` enters the average; an empty `x` changes nothing.
  TRAINLOOP_DETAIL_API void update(const torch::Tensor& x);
  void update(double x) { update(torch::tensor(x, torch::kFloat64)); }
  TRAINLOOP_DETAIL_API torch::Tensor compute();

 private:
  double alpha_;
  torch::Tensor value_;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
namespace detail {
TRAINLOOP_DETAIL_API void ErrorSums::reset() {
  sum_squared_ = sum_absolute_ = torch::Tensor();
  seen_.reset();
}
TRAINLOOP_DETAIL_API void ErrorSums::update(const torch::Tensor& prediction, const torch::Tensor& target,
                                            const char* metric) {
  require(prediction.defined() && target.defined(), metric, "update() got an undefined tensor");
  require(prediction.sizes() == target.sizes(), metric,
          "prediction shape " + shape_of(prediction) + " differs from target shape " + shape_of(target));
  require(prediction.is_floating_point(), metric, "predictions must be floating point");
  if (prediction.numel() == 0) return;  // an empty batch changes nothing
  const torch::Tensor error = (prediction.detach().to(torch::kFloat64) - target.detach().to(torch::kFloat64));
  if (!sum_squared_.defined()) {
    sum_squared_ = torch::zeros({}, error.options());
    sum_absolute_ = torch::zeros({}, error.options());
  }
  sum_squared_.add_(error.pow(2).sum());
  sum_absolute_.add_(error.abs().sum());
  seen_.add(error.numel());
}
TRAINLOOP_DETAIL_API torch::Tensor ErrorSums::mean_squared(const char* metric) const {
  seen_.require_some(metric);
  return synced(sum_squared_, SyncOp::sum) / seen_.total(sum_squared_);
}
TRAINLOOP_DETAIL_API torch::Tensor ErrorSums::mean_absolute(const char* metric) const {
  seen_.require_some(metric);
  return synced(sum_absolute_, SyncOp::sum) / seen_.total(sum_absolute_);
}
}  // namespace detail
TRAINLOOP_DETAIL_API void R2Score::reset() {
  sse_ = mean_ = m2_ = torch::Tensor();
  seen_.reset();
}
TRAINLOOP_DETAIL_API void R2Score::update(const torch::Tensor& prediction, const torch::Tensor& target) {
  detail::require(prediction.defined() && target.defined(), "R2Score", "update() got an undefined tensor");
  detail::require(prediction.sizes() == target.sizes(), "R2Score",
                  "prediction shape " + detail::shape_of(prediction) + " differs from target shape " +
                      detail::shape_of(target));
  if (target.numel() == 0) return;  // an empty batch changes nothing
  const torch::Tensor y = target.detach().to(torch::kFloat64).reshape({-1});
  const torch::Tensor p = prediction.detach().to(torch::kFloat64).reshape({-1});
  // The batch's mean exactly equal to its value when all targets are equal, so constant data keeps SST = 0.
  const torch::Tensor lo = y.min(), hi = y.max();
  const torch::Tensor batch_mean = torch::where(lo == hi, lo, y.mean());
  const torch::Tensor batch_m2 = (y - batch_mean).pow(2).sum();
  const double nb = static_cast<double>(y.numel()), na = static_cast<double>(seen_.value());
  if (!sse_.defined()) {
    sse_ = (p - y).pow(2).sum();
    mean_ = batch_mean;
    m2_ = batch_m2;
  } else {
    const torch::Tensor delta = batch_mean - mean_;
    sse_ = sse_ + (p - y).pow(2).sum();
    m2_ = m2_ + batch_m2 + delta.pow(2) * (na * nb / (na + nb));
    mean_ = mean_ + delta * (nb / (na + nb));
  }
  seen_.add(y.numel());
}
TRAINLOOP_DETAIL_API torch::Tensor R2Score::compute() {
  seen_.require_some("R2Score");
  const torch::Tensor sse = detail::synced(sse_, SyncOp::sum);
  torch::Tensor sst = m2_;
  if (metric_state_reducer()) {  // ranks' means and deviations merged in two stable rounds
    const torch::Tensor n = torch::full({}, static_cast<double>(seen_.value()), mean_.options());
    const torch::Tensor total = detail::synced(n, SyncOp::sum);
    const torch::Tensor global_mean = detail::synced(mean_ * n, SyncOp::sum) / total;
    sst = detail::synced(m2_ + n * (mean_ - global_mean).pow(2), SyncOp::sum);
  }
  const torch::Tensor ones = torch::ones_like(sse);
  return torch::where(sst > 0, 1 - sse / sst, torch::where(sse == 0, ones, torch::zeros_like(sse)));
}
TRAINLOOP_DETAIL_API void Average::reset() {
  sum_ = torch::Tensor();
  seen_.reset();
}
TRAINLOOP_DETAIL_API void Average::update(const torch::Tensor& value) {
  detail::require(value.defined(), "Average", "update() got an undefined tensor");
  const std::int64_t n = value.dim() == 0 ? 1 : value.size(0);
  if (n == 0) return;  // an empty batch changes nothing
  const torch::Tensor v = value.detach().to(torch::kFloat64);
  const torch::Tensor batch_sum = v.dim() == 0 ? v : v.sum(0);
  if (!sum_.defined()) {
    sum_ = batch_sum.clone();
  } else {
    detail::require(batch_sum.sizes() == sum_.sizes(), "Average",
                    "value shape " + detail::shape_of(value) + " does not match the earlier values");
    sum_.add_(batch_sum);
  }
  seen_.add(n);
}
TRAINLOOP_DETAIL_API torch::Tensor Average::compute() {
  seen_.require_some("Average");
  return detail::synced(sum_, SyncOp::sum) / seen_.total(sum_);
}
TRAINLOOP_DETAIL_API void Loss::reset() {
  sum_ = torch::Tensor();
  seen_.reset();
}
TRAINLOOP_DETAIL_API void Loss::update(const torch::Tensor& prediction, const torch::Tensor& target) {
  detail::require(prediction.defined() && target.defined(), "Loss", "update() got an undefined tensor");
  const std::int64_t n = prediction.dim() == 0 ? 1 : prediction.size(0);
  if (n == 0) return;
  const torch::Tensor value = loss_(prediction, target).detach().to(torch::kFloat64);
  detail::require(value.numel() == 1, "Loss",
                  "the loss function must reduce to one number, got shape " + detail::shape_of(value));
  const torch::Tensor weighted = value.reshape({}) * static_cast<double>(n);
  sum_ = sum_.defined() ? sum_ + weighted : weighted;
  seen_.add(n);
}
TRAINLOOP_DETAIL_API torch::Tensor Loss::compute() {
  seen_.require_some("Loss");
  return detail::synced(sum_, SyncOp::sum) / seen_.total(sum_);
}
TRAINLOOP_DETAIL_API void RunningAverage::update(const torch::Tensor& x) {
  detail::require(x.defined(), "RunningAverage", "update() got an undefined tensor");
  if (x.numel() == 0) return;
  const torch::Tensor v = x.detach().to(torch::kFloat64).mean();
  value_ = value_.defined() ? value_ * alpha_ + v * (1 - alpha_) : v;
}
TRAINLOOP_DETAIL_API torch::Tensor RunningAverage::compute() {
  if (!value_.defined()) throw detail::not_computable("RunningAverage");
  return value_;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
