// trainloop: regression and averaging metrics: MeanSquaredError, MeanAbsoluteError, RootMeanSquaredError, R2Score,
// Loss, Average, RunningAverage. States are float64 tensors on the inputs' device.
#pragma once
#include <functional>
#include <string>

TRAINLOOP_DETAIL_BEGIN

namespace detail {
// Sums of errors over all elements, and the element count, for the error metrics.
class ErrorSums {
 public:
  void reset() { sum_squared_ = sum_absolute_ = count_ = torch::Tensor(); }
  void update(const torch::Tensor& prediction, const torch::Tensor& target, const char* metric) {
    require(prediction.defined() && target.defined(), metric, "update() got an undefined tensor");
    require(prediction.sizes() == target.sizes(), metric,
            "prediction shape " + shape_of(prediction) + " differs from target shape " + shape_of(target));
    require(prediction.is_floating_point(), metric, "predictions must be floating point");
    const torch::Tensor error = (prediction.detach().to(torch::kFloat64) - target.detach().to(torch::kFloat64));
    if (!count_.defined()) {
      const auto options = error.options();
      sum_squared_ = torch::zeros({}, options);
      sum_absolute_ = torch::zeros({}, options);
      count_ = torch::zeros({}, options);
    }
    sum_squared_.add_(error.pow(2).sum());
    sum_absolute_.add_(error.abs().sum());
    count_.add_(static_cast<double>(error.numel()));
  }
  torch::Tensor mean_squared(const char* metric) const {
    ready(metric);
    return synced(sum_squared_, SyncOp::sum) / synced(count_, SyncOp::sum);
  }
  torch::Tensor mean_absolute(const char* metric) const {
    ready(metric);
    return synced(sum_absolute_, SyncOp::sum) / synced(count_, SyncOp::sum);
  }

 private:
  void ready(const char* metric) const { require(count_.defined(), metric, "compute() before any update()"); }
  torch::Tensor sum_squared_, sum_absolute_, count_;
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

/// Coefficient of determination, 1 - SSE / SST, over all elements seen.
class R2Score {
 public:
  void reset() { sse_ = sum_ = sum_sq_ = count_ = torch::Tensor(); }
  void update(const torch::Tensor& prediction, const torch::Tensor& target) {
    detail::require(prediction.sizes() == target.sizes(), "R2Score",
                    "prediction shape " + detail::shape_of(prediction) + " differs from target shape " +
                        detail::shape_of(target));
    const torch::Tensor y = target.detach().to(torch::kFloat64);
    const torch::Tensor p = prediction.detach().to(torch::kFloat64);
    auto add = [](torch::Tensor& acc, const torch::Tensor& v) { acc = acc.defined() ? acc + v : v.clone(); };
    add(sse_, (p - y).pow(2).sum());
    add(sum_, y.sum());
    add(sum_sq_, y.pow(2).sum());
    add(count_, torch::full({}, static_cast<double>(y.numel()), y.options()));
  }
  torch::Tensor compute() {
    detail::require(count_.defined(), "R2Score", "compute() before any update()");
    using detail::synced;
    const torch::Tensor sse = synced(sse_, SyncOp::sum), sum = synced(sum_, SyncOp::sum);
    const torch::Tensor sum_sq = synced(sum_sq_, SyncOp::sum), count = synced(count_, SyncOp::sum);
    return 1 - sse / (sum_sq - sum.pow(2) / count);
  }

 private:
  torch::Tensor sse_, sum_, sum_sq_, count_;
};

/// The mean of values: scalars count one each; a tensor's first dimension counts its examples (Ignite's Average).
class Average {
 public:
  void reset() { sum_ = count_ = torch::Tensor(); }
  void update(const torch::Tensor& value) {
    detail::require(value.defined(), "Average", "update() got an undefined tensor");
    const torch::Tensor v = value.detach().to(torch::kFloat64);
    const torch::Tensor batch_sum = v.dim() == 0 ? v : v.sum(0);
    const double n = v.dim() == 0 ? 1.0 : static_cast<double>(v.size(0));
    if (!sum_.defined()) {
      sum_ = batch_sum.clone();
      count_ = torch::full({}, n, v.options());
    } else {
      detail::require(batch_sum.sizes() == sum_.sizes(), "Average",
                      "value shape " + detail::shape_of(value) + " does not match the earlier values");
      sum_.add_(batch_sum);
      count_.add_(n);
    }
  }
  void update(double value) { update(torch::tensor(value, torch::kFloat64)); }
  torch::Tensor compute() {
    detail::require(sum_.defined(), "Average", "compute() before any update()");
    return detail::synced(sum_, SyncOp::sum) / detail::synced(count_, SyncOp::sum);
  }

 private:
  torch::Tensor sum_, count_;
};

/// The mean of a loss function over examples: update(prediction, target) weighs each batch's loss by its size.
class Loss {
 public:
  using Function = std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>;
  explicit Loss(Function loss) : loss_(std::move(loss)) {
    if (!loss_) throw std::invalid_argument("trainloop: Loss: the loss function is empty");
  }
  void reset() { sum_ = count_ = torch::Tensor(); }
  void update(const torch::Tensor& prediction, const torch::Tensor& target) {
    const torch::Tensor value = loss_(prediction, target).detach().to(torch::kFloat64);
    detail::require(value.numel() == 1, "Loss",
                    "the loss function must reduce to one number, got shape " + detail::shape_of(value));
    const double n = prediction.dim() == 0 ? 1.0 : static_cast<double>(prediction.size(0));
    sum_ = sum_.defined() ? sum_ + value.reshape({}) * n : value.reshape({}) * n;
    count_ = count_.defined() ? count_ + n : torch::full({}, n, value.options());
  }
  torch::Tensor compute() {
    detail::require(sum_.defined(), "Loss", "compute() before any update()");
    return detail::synced(sum_, SyncOp::sum) / detail::synced(count_, SyncOp::sum);
  }

 private:
  Function loss_;
  torch::Tensor sum_, count_;
};

/// An exponential moving average: v = alpha * v + (1 - alpha) * x, starting at the first value (Ignite's
/// RunningAverage).
class RunningAverage {
 public:
  explicit RunningAverage(double alpha = 0.98) : alpha_(alpha) {
    if (!(alpha > 0.0 && alpha < 1.0)) throw std::invalid_argument("trainloop: RunningAverage: alpha must be in (0, 1)");
  }
  void reset() { value_ = torch::Tensor(); }
  void update(const torch::Tensor& x) {
    const torch::Tensor v = x.detach().to(torch::kFloat64).mean();
    value_ = value_.defined() ? value_ * alpha_ + v * (1 - alpha_) : v;
  }
  void update(double x) { update(torch::tensor(x, torch::kFloat64)); }
  torch::Tensor compute() {
    detail::require(value_.defined(), "RunningAverage", "compute() before any update()");
    return value_;
  }

 private:
  double alpha_;
  torch::Tensor value_;
};

TRAINLOOP_DETAIL_END
