// trainloop: classification metrics: Accuracy (binary, multiclass with top-k, multilabel), ConfusionMatrix,
// Precision, Recall, FBeta / F1 (per class, macro, micro, weighted), IoU and mean IoU, RocAuc (exact, ties averaged).
// Counts are int64 / float64 tensors on the inputs' device; update() checks shapes and dtypes without a sync, and
// values (label ranges, 0/1 targets, NaN scores) at once on the CPU, or counted on the device and raised at compute().
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "parts/core/loggers/common.hpp"
#include "parts/torch/metrics/metric.hpp"

TRAINLOOP_DETAIL_BEGIN

enum class Task { binary, multiclass, multilabel };
/// How per-class values combine: per class (none), over all counts (micro), the mean of classes (macro), or the
/// mean weighted by each class's support (weighted).
enum class Averaging { none, micro, macro, weighted };

class ClassificationOptions {
 public:
  ClassificationOptions& task(Task v) { return task_ = v, *this; }
  /// Required for multiclass (checked against predictions [N, C] and labels) and multilabel.
  ClassificationOptions& num_classes(std::int64_t v) { return num_classes_ = v, *this; }
  /// Binary and multilabel: a probability p counts as positive when p >= threshold (p == threshold is positive).
  ClassificationOptions& threshold(double v) { return threshold_ = v, *this; }
  /// Binary and multilabel: the predictions are logits (raw model outputs), turned into probabilities by a sigmoid
  /// before the threshold (which stays a probability). Without it, floating-point predictions must be probabilities
  /// in [0, 1]: raw outputs are refused rather than thresholded at 0.5 by mistake.
  ClassificationOptions& logits(bool v) { return logits_ = v, *this; }
  ClassificationOptions& average(Averaging v) { return average_ = v, *this; }
  /// Multiclass accuracy: correct when the label is among the k highest scores.
  ClassificationOptions& top_k(std::int64_t v) { return top_k_ = v, *this; }
  Task task() const { return task_; }
  std::int64_t num_classes() const { return num_classes_; }
  double threshold() const { return threshold_; }
  bool logits() const { return logits_; }
  Averaging average() const { return average_; }
  std::int64_t top_k() const { return top_k_; }

 private:
  Task task_ = Task::multiclass;
  std::int64_t num_classes_ = 0;
  double threshold_ = 0.5;
  bool logits_ = false;
  Averaging average_ = Averaging::macro;
  std::int64_t top_k_ = 1;
};

namespace detail {
// "found <the first offending value>" on the CPU; nothing elsewhere (reading it would sync the device).
TRAINLOOP_DETAIL_API std::string found_in(const torch::Tensor& values, const torch::Tensor& invalid);
// Multiclass labels: integers in [0, C). Returns the mask of valid ones (all, on the CPU, where a bad one throws).
TRAINLOOP_DETAIL_API torch::Tensor valid_labels(const torch::Tensor& labels, std::int64_t num_classes,
                                                const char* metric, InvalidValues& invalid,
                                                const char* what = "labels");
TRAINLOOP_DETAIL_API void check_no_nan(const torch::Tensor& scores, const char* metric, InvalidValues& invalid);
// Predicted labels from scores [N, C] (argmax) or labels [N], with the mask of usable ones.
TRAINLOOP_DETAIL_API std::pair<torch::Tensor, torch::Tensor> predicted_labels(const torch::Tensor& prediction,
                                                                              const torch::Tensor& target,
                                                                              std::int64_t num_classes,
                                                                              const char* metric,
                                                                              InvalidValues& invalid);
// Binary and multilabel decisions: predicted positives (probabilities or logits against the threshold, or 0/1
// labels) and true positives (targets 0/1 or bool). Bad values: targets other than 0/1, NaN scores, probabilities
// outside [0, 1] without logits(true), predicted labels other than 0/1.
TRAINLOOP_DETAIL_API std::pair<torch::Tensor, torch::Tensor> binary_decisions(const torch::Tensor& prediction,
                                                                              const torch::Tensor& target,
                                                                              const ClassificationOptions& options,
                                                                              const char* metric,
                                                                              InvalidValues& invalid);

// Multiclass: adds each (label, predicted label) pair of the batch to `counts`, a flat [C * C] int64 confusion matrix
// (rows: true labels), created on the labels' device when undefined. Pairs with an invalid value are counted by
// `invalid` and left out. Returns the batch's examples (0: nothing was touched).
TRAINLOOP_DETAIL_API std::int64_t add_to_confusion(torch::Tensor& counts, const torch::Tensor& prediction,
                                                   const torch::Tensor& target, std::int64_t num_classes,
                                                   const char* metric, InvalidValues& invalid);

/// Per-class true positives, false positives and false negatives: what Precision, Recall and FBeta compute from.
class ClassCounts {
 public:
  TRAINLOOP_DETAIL_API ClassCounts(ClassificationOptions options, const char* metric);
  TRAINLOOP_DETAIL_API void reset();
  TRAINLOOP_DETAIL_API void update(const torch::Tensor& prediction, const torch::Tensor& target);
  // The per-class ratio numerator / denominator (0 where the denominator is 0), combined by the averaging mode.
  template <class PerClass>
  torch::Tensor compute(PerClass per_class) {
    invalid_.raise_if_any(metric_);
    seen_.require_some(metric_);
    const torch::Tensor tp = synced(tp_, SyncOp::sum).to(torch::kFloat64);
    const torch::Tensor fp = synced(fp_, SyncOp::sum).to(torch::kFloat64);
    const torch::Tensor fn = synced(fn_, SyncOp::sum).to(torch::kFloat64);
    switch (options_.average()) {
      case Averaging::none: return per_class(tp, fp, fn);
      case Averaging::micro: return per_class(tp.sum(), fp.sum(), fn.sum());
      case Averaging::macro: return per_class(tp, fp, fn).mean();
      default: {
        const torch::Tensor support = tp + fn;
        return (per_class(tp, fp, fn) * support).sum() / support.sum().clamp_min(1e-300);
      }
    }
  }

 private:
  ClassificationOptions options_;
  const char* metric_;
  torch::Tensor tp_, fp_, fn_;
  SeenCount seen_;
  InvalidValues invalid_;
};
TRAINLOOP_DETAIL_API torch::Tensor safe_ratio(const torch::Tensor& num, const torch::Tensor& den);
}  // namespace detail

/// Accuracy: binary (thresholded), multiclass (argmax or top-k), multilabel (a sample counts when all its labels
/// match, as in Ignite).
class Accuracy {
 public:
  explicit Accuracy(ClassificationOptions options = {}) : options_(options) {
    if (options_.top_k() < 1) throw std::invalid_argument("trainloop: Accuracy: top_k must be at least 1");
  }
  TRAINLOOP_DETAIL_API void reset();
  TRAINLOOP_DETAIL_API void update(const torch::Tensor& prediction, const torch::Tensor& target);
  TRAINLOOP_DETAIL_API torch::Tensor compute();

 private:
  ClassificationOptions options_;
  torch::Tensor correct_;
  detail::SeenCount seen_;
  detail::InvalidValues invalid_;
};

/// Precision: tp / (tp + fp) per class (0 for a class never predicted), averaged as the options say.
class Precision {
 public:
  explicit Precision(ClassificationOptions options = {}) : counts_(options, "Precision") {}
  void reset() { counts_.reset(); }
  void update(const torch::Tensor& prediction, const torch::Tensor& target) { counts_.update(prediction, target); }
  TRAINLOOP_DETAIL_API torch::Tensor compute();

 private:
  detail::ClassCounts counts_;
};

/// Recall: tp / (tp + fn) per class (0 for a class absent from the targets), averaged as the options say.
class Recall {
 public:
  explicit Recall(ClassificationOptions options = {}) : counts_(options, "Recall") {}
  void reset() { counts_.reset(); }
  void update(const torch::Tensor& prediction, const torch::Tensor& target) { counts_.update(prediction, target); }
  TRAINLOOP_DETAIL_API torch::Tensor compute();

 private:
  detail::ClassCounts counts_;
};

/// F-beta: (1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp) per class, averaged as the options say (micro averages the
/// counts first). FBeta(1, ...) is F1.
class FBeta {
 public:
  FBeta(double beta, ClassificationOptions options = {}) : beta_(beta), counts_(options, "FBeta") {
    if (!(beta > 0)) throw std::invalid_argument("trainloop: FBeta: beta must be positive");
  }
  void reset() { counts_.reset(); }
  void update(const torch::Tensor& prediction, const torch::Tensor& target) { counts_.update(prediction, target); }
  TRAINLOOP_DETAIL_API torch::Tensor compute();

 private:
  double beta_;
  detail::ClassCounts counts_;
};
inline FBeta F1(ClassificationOptions options = {}) { return FBeta(1.0, options); }

/// Multiclass confusion matrix: rows are true classes, columns predicted ones.
class ConfusionMatrix {
 public:
  enum class Normalize { none, true_rows, predicted_columns, all };
  explicit ConfusionMatrix(std::int64_t num_classes, Normalize normalize = Normalize::none)
      : num_classes_(num_classes), normalize_(normalize) {
    if (num_classes < 1) throw std::invalid_argument("trainloop: ConfusionMatrix: num_classes must be at least 1");
  }
  TRAINLOOP_DETAIL_API void reset();
  TRAINLOOP_DETAIL_API void update(const torch::Tensor& prediction, const torch::Tensor& target);
  /// Counts (int64) when not normalised; float64 fractions otherwise (a row or column with no examples is 0).
  TRAINLOOP_DETAIL_API torch::Tensor compute();
  std::int64_t num_classes() const { return num_classes_; }

 private:
  std::int64_t num_classes_;
  Normalize normalize_;
  torch::Tensor matrix_;
  detail::SeenCount seen_;
  detail::InvalidValues invalid_;
};

/// Intersection over union per class from a confusion matrix (Ignite's IoU): tp / (tp + fp + fn); a class absent
/// from both predictions and targets gets 0. `ignore_index` drops one class (a background) from the result.
inline auto iou(ConfusionMatrix& matrix, std::optional<std::int64_t> ignore_index = std::nullopt) {
  return metric_lambda(
      [ignore_index](const torch::Tensor& m) {
        const torch::Tensor f = m.to(torch::kFloat64);
        const torch::Tensor tp = f.diagonal();
        torch::Tensor per_class = detail::safe_ratio(tp, f.sum(0) + f.sum(1) - tp);
        if (ignore_index) {
          std::vector<std::int64_t> keep;
          for (std::int64_t c = 0; c < per_class.size(0); ++c)
            if (c != *ignore_index) keep.push_back(c);
          per_class = per_class.index_select(0, torch::tensor(keep, torch::kLong).to(per_class.device()));
        }
        return per_class;
      },
      matrix);
}
/// The mean of iou() over classes.
inline auto mean_iou(ConfusionMatrix& matrix, std::optional<std::int64_t> ignore_index = std::nullopt) {
  return metric_lambda([](const torch::Tensor& per_class) { return per_class.mean(); }, iou(matrix, ignore_index));
}

/// Area under the ROC curve for binary targets, exact: the Mann-Whitney statistic with tied scores given their
/// average rank (so a tie between a positive and a negative counts one half). Scores may be probabilities or logits
/// (the ranking is the same); targets must be 0/1, scores not NaN. Cost: it keeps every score until reset() and each
/// compute() sorts them all (O(N log N)) and reads the class counts to the host (a device sync, to refuse a single
/// class): compute it at epoch ends (MetricUsage::epoch), not per iteration (`running`/`batch` usages recompute it
/// over everything each iteration).
class RocAuc {
 public:
  TRAINLOOP_DETAIL_API void reset();
  TRAINLOOP_DETAIL_API void update(const torch::Tensor& scores, const torch::Tensor& targets);
  TRAINLOOP_DETAIL_API torch::Tensor compute();

 private:
  std::vector<torch::Tensor> scores_, targets_;
  detail::SeenCount seen_;
  detail::InvalidValues invalid_;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
namespace detail {
TRAINLOOP_DETAIL_API std::string found_in(const torch::Tensor& values, const torch::Tensor& invalid) {
  if (!can_check_values(values)) return "";
  const torch::Tensor bad = values.masked_select(invalid);
  if (bad.numel() == 0) return "";
  return ", found " + (values.is_floating_point() ? format_number(bad[0].item<double>()) : std::to_string(bad[0].item<std::int64_t>()));
}
TRAINLOOP_DETAIL_API torch::Tensor valid_labels(const torch::Tensor& labels, std::int64_t num_classes,
                                                const char* metric, InvalidValues& invalid, const char* what) {
  require(!labels.is_floating_point() && !labels.is_complex(), metric,
          std::string(what) + " must be integers, got " + std::string(c10::toString(labels.scalar_type())));
  const torch::Tensor valid = labels.ge(0).logical_and(labels.lt(num_classes));
  const torch::Tensor bad = valid.logical_not();
  invalid.check(bad, metric, [&] {
    return std::string(what) + " must be in [0, " + std::to_string(num_classes) + ")" + found_in(labels, bad);
  });
  return valid;
}
TRAINLOOP_DETAIL_API void check_no_nan(const torch::Tensor& scores, const char* metric, InvalidValues& invalid) {
  if (!scores.is_floating_point()) return;
  const torch::Tensor bad = scores.isnan();
  invalid.check(bad, metric, [] { return std::string("scores must not be NaN"); });
}
TRAINLOOP_DETAIL_API std::pair<torch::Tensor, torch::Tensor> predicted_labels(const torch::Tensor& prediction,
                                                                              const torch::Tensor& target,
                                                                              std::int64_t num_classes,
                                                                              const char* metric,
                                                                              InvalidValues& invalid) {
  require(num_classes > 0, metric, "multiclass needs num_classes (ClassificationOptions().num_classes(C))");
  require(target.dim() == 1, metric, "multiclass labels must be [N], got " + shape_of(target));
  if (prediction.dim() == 2) {
    require(prediction.size(0) == target.size(0) && prediction.size(1) == num_classes, metric,
            "scores must be [N, " + std::to_string(num_classes) + "] for labels [N], got " + shape_of(prediction) +
                " and " + shape_of(target));
    check_no_nan(prediction, metric, invalid);
    return {prediction.argmax(1), torch::ones({target.size(0)}, target.options().dtype(torch::kBool))};
  }
  require(prediction.sizes() == target.sizes(), metric,
          "predicted labels " + shape_of(prediction) + " and labels " + shape_of(target) + " differ in shape");
  return {prediction, valid_labels(prediction, num_classes, metric, invalid, "predicted labels")};
}
TRAINLOOP_DETAIL_API std::pair<torch::Tensor, torch::Tensor> binary_decisions(const torch::Tensor& prediction,
                                                                              const torch::Tensor& target,
                                                                              const ClassificationOptions& options,
                                                                              const char* metric,
                                                                              InvalidValues& invalid) {
  auto zero_or_one = [&](const torch::Tensor& values, const char* what) {
    if (values.scalar_type() == torch::kBool) return;
    const torch::Tensor bad = values.ne(0).logical_and(values.ne(1));
    invalid.check(bad, metric, [&] { return std::string(what) + " must be 0 or 1" + found_in(values, bad); });
  };
  zero_or_one(target, "targets");
  torch::Tensor positive;
  if (prediction.is_floating_point()) {
    check_no_nan(prediction, metric, invalid);
    if (options.logits()) {
      positive = prediction.sigmoid().ge(options.threshold());
    } else {
      const torch::Tensor bad = prediction.lt(0).logical_or(prediction.gt(1));
      invalid.check(bad, metric, [&] {
        return "predictions must be probabilities in [0, 1]" + found_in(prediction, bad) +
               "; for raw model outputs pass ClassificationOptions().logits(true)";
      });
      positive = prediction.ge(options.threshold());
    }
  } else {
    zero_or_one(prediction, "predicted labels");
    positive = prediction.ne(0);
  }
  return {positive, target.ne(0)};
}
TRAINLOOP_DETAIL_API std::int64_t add_to_confusion(torch::Tensor& counts, const torch::Tensor& prediction,
                                                   const torch::Tensor& target, std::int64_t num_classes,
                                                   const char* metric, InvalidValues& invalid) {
  const std::int64_t c = num_classes;
  const torch::Tensor target_valid = valid_labels(target, c, metric, invalid);
  auto [predicted, predicted_valid] = predicted_labels(prediction.detach(), target, c, metric, invalid);
  if (target.size(0) == 0) return 0;  // an empty batch changes nothing
  const torch::Tensor usable = target_valid.logical_and(predicted_valid);
  if (!counts.defined()) counts = torch::zeros({c * c}, target.options().dtype(torch::kLong));
  const torch::Tensor cells =
      torch::where(usable, target.to(torch::kLong) * c + predicted.to(torch::kLong), torch::zeros({}, counts.options()));
  counts.index_add_(0, cells, usable.to(torch::kLong));
  return target.size(0);
}
TRAINLOOP_DETAIL_API ClassCounts::ClassCounts(ClassificationOptions options, const char* metric)
    : options_(options), metric_(metric) {
  if (options_.task() == Task::multilabel)
    require(options_.num_classes() > 0, metric_, "multilabel needs num_classes (the number of labels)");
}
TRAINLOOP_DETAIL_API void ClassCounts::reset() {
  tp_ = fp_ = fn_ = torch::Tensor();
  seen_.reset();
  invalid_.reset();
}
TRAINLOOP_DETAIL_API void ClassCounts::update(const torch::Tensor& prediction, const torch::Tensor& target) {
  require(prediction.defined() && target.defined(), metric_, "update() got an undefined tensor");
  torch::Tensor tp, fp, fn;
  std::int64_t examples = 0;
  if (options_.task() == Task::multiclass) {
    const std::int64_t c = options_.num_classes();
    torch::Tensor counts;
    examples = add_to_confusion(counts, prediction, target, c, metric_, invalid_);
    if (examples == 0) return;
    const torch::Tensor cm = counts.view({c, c});
    tp = cm.diagonal();
    fp = cm.sum(0) - tp;
    fn = cm.sum(1) - tp;
  } else {
    require(prediction.sizes() == target.sizes(), metric_,
            "predictions " + shape_of(prediction) + " and targets " + shape_of(target) + " differ in shape");
    if (options_.task() == Task::multilabel)
      require(target.dim() == 2 && target.size(1) == options_.num_classes(), metric_,
              "multilabel targets must be [N, " + std::to_string(options_.num_classes()) + "], got " + shape_of(target));
    examples = options_.task() == Task::binary ? target.numel() : target.size(0);
    if (examples == 0) return;
    auto [p, t] = binary_decisions(prediction.detach(), target, options_, metric_, invalid_);
    const torch::Tensor flat_p = options_.task() == Task::binary ? p.reshape({-1, 1}) : p;
    const torch::Tensor flat_t = options_.task() == Task::binary ? t.reshape({-1, 1}) : t;
    tp = (flat_p & flat_t).sum(0);
    fp = (flat_p & ~flat_t).sum(0);
    fn = (~flat_p & flat_t).sum(0);
  }
  if (!tp_.defined()) {
    tp_ = tp.to(torch::kLong);
    fp_ = fp.to(torch::kLong);
    fn_ = fn.to(torch::kLong);
  } else {
    tp_.add_(tp);
    fp_.add_(fp);
    fn_.add_(fn);
  }
  seen_.add(examples);
}
TRAINLOOP_DETAIL_API torch::Tensor safe_ratio(const torch::Tensor& num, const torch::Tensor& den) {
  return torch::where(den > 0, num / den.clamp_min(1e-300), torch::zeros_like(num));
}
}  // namespace detail
TRAINLOOP_DETAIL_API void Accuracy::reset() {
  correct_ = torch::Tensor();
  seen_.reset();
  invalid_.reset();
}
TRAINLOOP_DETAIL_API void Accuracy::update(const torch::Tensor& prediction, const torch::Tensor& target) {
  using detail::require;
  using detail::shape_of;
  require(prediction.defined() && target.defined(), "Accuracy", "update() got an undefined tensor");
  torch::Tensor correct;
  std::int64_t count = 0;
  if (options_.task() == Task::multiclass) {
    require(options_.num_classes() > 0, "Accuracy", "multiclass needs num_classes (ClassificationOptions().num_classes(C))");
    const torch::Tensor target_valid = detail::valid_labels(target, options_.num_classes(), "Accuracy", invalid_);
    if (options_.top_k() > 1) {
      require(prediction.dim() == 2 && prediction.size(1) == options_.num_classes() && prediction.size(0) == target.size(0),
              "Accuracy", "top-k needs scores [N, " + std::to_string(options_.num_classes()) + "], got " + shape_of(prediction));
      require(options_.top_k() <= options_.num_classes(), "Accuracy", "top_k exceeds num_classes");
      detail::check_no_nan(prediction, "Accuracy", invalid_);
      if (target.size(0) == 0) return;  // an empty batch changes nothing
      const torch::Tensor top = std::get<1>(prediction.detach().topk(options_.top_k(), 1));
      correct = top.eq(target.unsqueeze(1)).any(1).logical_and(target_valid).sum();
    } else {
      auto [predicted, predicted_valid] =
          detail::predicted_labels(prediction.detach(), target, options_.num_classes(), "Accuracy", invalid_);
      if (target.size(0) == 0) return;
      correct = predicted.eq(target).logical_and(target_valid).sum();
    }
    count = target.size(0);
  } else {
    require(prediction.sizes() == target.sizes(), "Accuracy",
            "predictions " + shape_of(prediction) + " and targets " + shape_of(target) + " differ in shape");
    if (options_.task() == Task::multilabel)
      require(target.dim() == 2, "Accuracy", "multilabel targets must be [N, labels], got " + shape_of(target));
    count = options_.task() == Task::binary ? target.numel() : target.size(0);
    if (count == 0) return;
    auto [p, t] = detail::binary_decisions(prediction.detach(), target, options_, "Accuracy", invalid_);
    correct = options_.task() == Task::binary ? p.eq(t).sum() : p.eq(t).all(1).sum();
  }
  if (!correct_.defined()) correct_ = correct.to(torch::kLong);
  else correct_.add_(correct);
  seen_.add(count);
}
TRAINLOOP_DETAIL_API torch::Tensor Accuracy::compute() {
  invalid_.raise_if_any("Accuracy");
  seen_.require_some("Accuracy");
  return detail::synced(correct_, SyncOp::sum).to(torch::kFloat64) / seen_.total(correct_);
}
TRAINLOOP_DETAIL_API torch::Tensor Precision::compute() {
  return counts_.compute([](const auto& tp, const auto& fp, const auto&) { return detail::safe_ratio(tp, tp + fp); });
}
TRAINLOOP_DETAIL_API torch::Tensor Recall::compute() {
  return counts_.compute([](const auto& tp, const auto&, const auto& fn) { return detail::safe_ratio(tp, tp + fn); });
}
TRAINLOOP_DETAIL_API torch::Tensor FBeta::compute() {
  const double b2 = beta_ * beta_;
  return counts_.compute(
      [b2](const auto& tp, const auto& fp, const auto& fn) { return detail::safe_ratio((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp); });
}
TRAINLOOP_DETAIL_API void ConfusionMatrix::reset() {
  matrix_ = torch::Tensor();
  seen_.reset();
  invalid_.reset();
}
TRAINLOOP_DETAIL_API void ConfusionMatrix::update(const torch::Tensor& prediction, const torch::Tensor& target) {
  detail::require(prediction.defined() && target.defined(), "ConfusionMatrix", "update() got an undefined tensor");
  seen_.add(detail::add_to_confusion(matrix_, prediction, target, num_classes_, "ConfusionMatrix", invalid_));
}
TRAINLOOP_DETAIL_API torch::Tensor ConfusionMatrix::compute() {
  invalid_.raise_if_any("ConfusionMatrix");
  seen_.require_some("ConfusionMatrix");
  const torch::Tensor m = detail::synced(matrix_, SyncOp::sum).view({num_classes_, num_classes_});
  const torch::Tensor f = m.to(torch::kFloat64);
  switch (normalize_) {
    case Normalize::none: return m;
    case Normalize::true_rows: return detail::safe_ratio(f, f.sum(1, true).expand_as(f));
    case Normalize::predicted_columns: return detail::safe_ratio(f, f.sum(0, true).expand_as(f));
    default: return f / f.sum().clamp_min(1e-300);
  }
}
TRAINLOOP_DETAIL_API void RocAuc::reset() {
  scores_.clear();
  targets_.clear();
  seen_.reset();
  invalid_.reset();
}
TRAINLOOP_DETAIL_API void RocAuc::update(const torch::Tensor& scores, const torch::Tensor& targets) {
  detail::require(scores.defined() && targets.defined(), "RocAuc", "update() got an undefined tensor");
  detail::require(scores.sizes() == targets.sizes() && scores.dim() <= 1, "RocAuc",
                  "scores and targets must be [N] of the same length, got " + detail::shape_of(scores) + " and " +
                      detail::shape_of(targets));
  if (scores.numel() == 0) return;  // an empty batch changes nothing
  detail::check_no_nan(scores, "RocAuc", invalid_);
  if (targets.scalar_type() != torch::kBool) {
    const torch::Tensor bad = targets.ne(0).logical_and(targets.ne(1));
    invalid_.check(bad, "RocAuc", [&] { return "targets must be 0 or 1" + detail::found_in(targets, bad); });
  }
  scores_.push_back(scores.detach().reshape({-1}).to(torch::kFloat64));
  targets_.push_back(targets.detach().reshape({-1}).ne(0));
  seen_.add(scores.numel());
}
TRAINLOOP_DETAIL_API torch::Tensor RocAuc::compute() {
  invalid_.raise_if_any("RocAuc");
  seen_.require_some("RocAuc");
  const torch::Tensor scores = torch::cat(scores_), positive = torch::cat(targets_);
  const torch::Tensor n_pos = positive.sum().to(torch::kFloat64);
  const torch::Tensor n_neg = static_cast<double>(positive.numel()) - n_pos;
  const double positives = n_pos.item<double>();
  if (positives == 0 || positives == static_cast<double>(positive.numel()))
    throw NotComputableError("trainloop: RocAuc: not computable: only one class among the targets (" +
                             std::string(positives == 0 ? "no positives" : "no negatives") + ")");
  // Average ranks (1-based) of the sorted scores, ties sharing the mean of their positions.
  auto [sorted, order] = scores.sort();
  auto [values, inverse, counts] = torch::unique_consecutive(sorted, /*return_inverse=*/true, /*return_counts=*/true);
  const torch::Tensor ends = counts.cumsum(0).to(torch::kFloat64);
  const torch::Tensor group_rank = ends - (counts.to(torch::kFloat64) - 1) / 2;  // mean of start+1 .. end
  const torch::Tensor ranks = group_rank.index_select(0, inverse);
  const torch::Tensor positive_sorted = positive.index_select(0, order).to(torch::kFloat64);
  const torch::Tensor rank_sum = (ranks * positive_sorted).sum();
  return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg);
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
