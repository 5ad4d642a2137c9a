// trainloop: classification metrics: Accuracy (binary, multiclass with top-k, multilabel), ConfusionMatrix,
// Precision, Recall, FBeta / F1 (per class, macro, micro, weighted), IoU and mean IoU, RocAuc (exact, ties averaged).
// Counts are int64 / float64 tensors on the inputs' device; update() checks shapes and dtypes without a sync, and
// label ranges when the labels are on the CPU (where checking costs no device sync).
#pragma once
#include <optional>
#include <string>
#include <vector>

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
  /// Binary and multilabel: a floating-point prediction p counts as positive when p >= threshold.
  ClassificationOptions& threshold(double v) { return threshold_ = v, *this; }
  ClassificationOptions& average(Averaging v) { return average_ = v, *this; }
  /// Multiclass accuracy: correct when the label is among the k highest scores.
  ClassificationOptions& top_k(std::int64_t v) { return top_k_ = v, *this; }
  Task task() const { return task_; }
  std::int64_t num_classes() const { return num_classes_; }
  double threshold() const { return threshold_; }
  Averaging average() const { return average_; }
  std::int64_t top_k() const { return top_k_; }

 private:
  Task task_ = Task::multiclass;
  std::int64_t num_classes_ = 0;
  double threshold_ = 0.5;
  Averaging average_ = Averaging::macro;
  std::int64_t top_k_ = 1;
};

namespace detail {
inline void check_labels(const torch::Tensor& labels, std::int64_t num_classes, const char* metric) {
  require(!labels.is_floating_point() && !labels.is_complex(), metric,
          "labels must be integers, got " + std::string(c10::toString(labels.scalar_type())));
  if (can_check_values(labels) && labels.numel() > 0) {
    const std::int64_t lo = labels.min().item<std::int64_t>(), hi = labels.max().item<std::int64_t>();
    require(lo >= 0 && hi < num_classes, metric,
            "labels must be in [0, " + std::to_string(num_classes) + "), found " +
                (lo < 0 ? std::to_string(lo) : std::to_string(hi)));
  }
}
// Predicted labels from scores [N, C] (argmax) or labels [N].
inline torch::Tensor predicted_labels(const torch::Tensor& prediction, const torch::Tensor& target,
                                      std::int64_t num_classes, const char* metric) {
  require(num_classes > 0, metric, "multiclass needs num_classes (ClassificationOptions().num_classes(C))");
  require(target.dim() == 1, metric, "multiclass labels must be [N], got " + shape_of(target));
  if (prediction.dim() == 2) {
    require(prediction.size(0) == target.size(0) && prediction.size(1) == num_classes, metric,
            "scores must be [N, " + std::to_string(num_classes) + "] for labels [N], got " + shape_of(prediction) +
                " and " + shape_of(target));
    return prediction.argmax(1);
  }
  require(prediction.sizes() == target.sizes(), metric,
          "predicted labels " + shape_of(prediction) + " and labels " + shape_of(target) + " differ in shape");
  check_labels(prediction, num_classes, metric);
  return prediction;
}
inline torch::Tensor positives(const torch::Tensor& prediction, double threshold) {
  return prediction.is_floating_point() ? prediction.ge(threshold) : prediction.ne(0);
}

/// Per-class true positives, false positives and false negatives: what Precision, Recall and FBeta compute from.
class ClassCounts {
 public:
  ClassCounts(ClassificationOptions options, const char* metric) : options_(options), metric_(metric) {
    if (options_.task() == Task::multilabel)
      require(options_.num_classes() > 0, metric_, "multilabel needs num_classes (the number of labels)");
  }
  void reset() { tp_ = fp_ = fn_ = torch::Tensor(); }
  void update(const torch::Tensor& prediction, const torch::Tensor& target) {
    require(prediction.defined() && target.defined(), metric_, "update() got an undefined tensor");
    torch::Tensor tp, fp, fn;
    if (options_.task() == Task::multiclass) {
      check_labels(target, options_.num_classes(), metric_);
      const torch::Tensor predicted = predicted_labels(prediction.detach(), target, options_.num_classes(), metric_);
      const std::int64_t c = options_.num_classes();
      const torch::Tensor cm = torch::zeros({c * c}, target.options().dtype(torch::kLong))
                                   .index_add_(0, target.to(torch::kLong) * c + predicted.to(torch::kLong),
                                               torch::ones({target.size(0)}, target.options().dtype(torch::kLong)))
                                   .view({c, c});
      tp = cm.diagonal();
      fp = cm.sum(0) - tp;
      fn = cm.sum(1) - tp;
    } else {
      require(prediction.sizes() == target.sizes(), metric_,
              "predictions " + shape_of(prediction) + " and targets " + shape_of(target) + " differ in shape");
      if (options_.task() == Task::multilabel)
        require(target.dim() == 2 && target.size(1) == options_.num_classes(), metric_,
                "multilabel targets must be [N, " + std::to_string(options_.num_classes()) + "], got " + shape_of(target));
      const torch::Tensor p = positives(prediction.detach(), options_.threshold());
      const torch::Tensor t = target.ne(0);
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
  }
  // The per-class ratio numerator / denominator (0 where the denominator is 0), combined by the averaging mode.
  template <class PerClass>
  torch::Tensor compute(PerClass per_class) {
    require(tp_.defined(), metric_, "compute() before any update()");
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
};
inline torch::Tensor safe_ratio(const torch::Tensor& num, const torch::Tensor& den) {
  return torch::where(den > 0, num / den.clamp_min(1e-300), torch::zeros_like(num));
}
}  // namespace detail

/// Accuracy: binary (thresholded), multiclass (argmax or top-k), multilabel (a sample counts when all its labels
/// match, as in Ignite).
class Accuracy {
 public:
  explicit Accuracy(ClassificationOptions options = {}) : options_(options) {
    if (options_.top_k() < 1) throw std::invalid_argument("trainloop: Accuracy: top_k must be at least 1");
  }
  void reset() { correct_ = total_ = torch::Tensor(); }
  void update(const torch::Tensor& prediction, const torch::Tensor& target) {
    using detail::require;
    using detail::shape_of;
    require(prediction.defined() && target.defined(), "Accuracy", "update() got an undefined tensor");
    torch::Tensor correct;
    std::int64_t count = 0;
    if (options_.task() == Task::multiclass) {
      require(options_.num_classes() > 0, "Accuracy", "multiclass needs num_classes (ClassificationOptions().num_classes(C))");
      detail::check_labels(target, options_.num_classes(), "Accuracy");
      if (options_.top_k() > 1) {
        require(prediction.dim() == 2 && prediction.size(1) == options_.num_classes() && prediction.size(0) == target.size(0),
                "Accuracy", "top-k needs scores [N, " + std::to_string(options_.num_classes()) + "], got " + shape_of(prediction));
        require(options_.top_k() <= options_.num_classes(), "Accuracy", "top_k exceeds num_classes");
        const torch::Tensor top = std::get<1>(prediction.detach().topk(options_.top_k(), 1));
        correct = top.eq(target.unsqueeze(1)).any(1).sum();
      } else {
        correct = detail::predicted_labels(prediction.detach(), target, options_.num_classes(), "Accuracy").eq(target).sum();
      }
      count = target.size(0);
    } else {
      require(prediction.sizes() == target.sizes(), "Accuracy",
              "predictions " + shape_of(prediction) + " and targets " + shape_of(target) + " differ in shape");
      const torch::Tensor p = detail::positives(prediction.detach(), options_.threshold());
      const torch::Tensor t = target.ne(0);
      if (options_.task() == Task::binary) {
        correct = p.eq(t).sum();
        count = target.numel();
      } else {
        require(target.dim() == 2, "Accuracy", "multilabel targets must be [N, labels], got " + shape_of(target));
        correct = p.eq(t).all(1).sum();
        count = target.size(0);
      }
    }
    if (!correct_.defined()) {
      correct_ = correct.to(torch::kLong);
      total_ = torch::full({}, count, correct_.options());
    } else {
      correct_.add_(correct);
      total_.add_(count);
    }
  }
  torch::Tensor compute() {
    detail::require(total_.defined(), "Accuracy", "compute() before any update()");
    return detail::synced(correct_, SyncOp::sum).to(torch::kFloat64) /
           detail::synced(total_, SyncOp::sum).to(torch::kFloat64);
  }

 private:
  ClassificationOptions options_;
  torch::Tensor correct_, total_;
};

/// Precision: tp / (tp + fp) per class (0 for a class never predicted), averaged as the options say.
class Precision {
 public:
  explicit Precision(ClassificationOptions options = {}) : counts_(options, "Precision") {}
  void reset() { counts_.reset(); }
  void update(const torch::Tensor& prediction, const torch::Tensor& target) { counts_.update(prediction, target); }
  torch::Tensor compute() {
    return counts_.compute([](const auto& tp, const auto& fp, const auto&) { return detail::safe_ratio(tp, tp + fp); });
  }

 private:
  detail::ClassCounts counts_;
};

/// Recall: tp / (tp + fn) per class (0 for a class absent from the targets), averaged as the options say.
class Recall {
 public:
  explicit Recall(ClassificationOptions options = {}) : counts_(options, "Recall") {}
  void reset() { counts_.reset(); }
  void update(const torch::Tensor& prediction, const torch::Tensor& target) { counts_.update(prediction, target); }
  torch::Tensor compute() {
    return counts_.compute([](const auto& tp, const auto&, const auto& fn) { return detail::safe_ratio(tp, tp + fn); });
  }

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
  torch::Tensor compute() {
    const double b2 = beta_ * beta_;
    return counts_.compute(
        [b2](const auto& tp, const auto& fp, const auto& fn) { return detail::safe_ratio((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp); });
  }

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
  void reset() { matrix_ = torch::Tensor(); }
  void update(const torch::Tensor& prediction, const torch::Tensor& target) {
    detail::check_labels(target, num_classes_, "ConfusionMatrix");
    const torch::Tensor predicted = detail::predicted_labels(prediction.detach(), target, num_classes_, "ConfusionMatrix");
    const std::int64_t c = num_classes_;
    if (!matrix_.defined()) matrix_ = torch::zeros({c * c}, target.options().dtype(torch::kLong));
    matrix_.index_add_(0, target.to(torch::kLong) * c + predicted.to(torch::kLong),
                       torch::ones({target.size(0)}, matrix_.options()));
  }
  /// Counts (int64) when not normalised; float64 fractions otherwise (a row or column with no examples is 0).
  torch::Tensor compute() {
    detail::require(matrix_.defined(), "ConfusionMatrix", "compute() before any update()");
    const torch::Tensor m = detail::synced(matrix_, SyncOp::sum).view({num_classes_, num_classes_});
    const torch::Tensor f = m.to(torch::kFloat64);
    switch (normalize_) {
      case Normalize::none: return m;
      case Normalize::true_rows: return detail::safe_ratio(f, f.sum(1, true).expand_as(f));
      case Normalize::predicted_columns: return detail::safe_ratio(f, f.sum(0, true).expand_as(f));
      default: return f / f.sum().clamp_min(1e-300);
    }
  }
  std::int64_t num_classes() const { return num_classes_; }

 private:
  std::int64_t num_classes_;
  Normalize normalize_;
  torch::Tensor matrix_;
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
/// average rank (so a tie between a positive and a negative counts one half). Keeps every score until compute().
class RocAuc {
 public:
  void reset() {
    scores_.clear();
    targets_.clear();
  }
  void update(const torch::Tensor& scores, const torch::Tensor& targets) {
    detail::require(scores.sizes() == targets.sizes() && scores.dim() <= 1, "RocAuc",
                    "scores and targets must be [N] of the same length, got " + detail::shape_of(scores) + " and " +
                        detail::shape_of(targets));
    if (detail::can_check_values(targets) && targets.numel() > 0)
      detail::require(targets.eq(0).logical_or(targets.eq(1)).all().item<bool>(), "RocAuc", "targets must be 0 or 1");
    scores_.push_back(scores.detach().reshape({-1}).to(torch::kFloat64));
    targets_.push_back(targets.detach().reshape({-1}).ne(0));
  }
  torch::Tensor compute() {
    detail::require(!scores_.empty(), "RocAuc", "compute() before any update()");
    const torch::Tensor scores = torch::cat(scores_), positive = torch::cat(targets_);
    const torch::Tensor n_pos = positive.sum().to(torch::kFloat64);
    const torch::Tensor n_neg = static_cast<double>(positive.numel()) - n_pos;
    if (detail::can_check_values(positive))
      detail::require(n_pos.item<double>() > 0 && n_neg.item<double>() > 0, "RocAuc",
                      "undefined with only one class among the targets");
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

 private:
  std::vector<torch::Tensor> scores_, targets_;
};

TRAINLOOP_DETAIL_END
