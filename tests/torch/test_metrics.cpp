// Metrics against values worked out by hand (the comments show the arithmetic), properties that must hold, edge
// cases, input validation, composition, and attachment to an Engine and the Trainer.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <cmath>
#include <vector>

using namespace trainloop;

namespace {
double value(torch::Tensor t) { return t.item<double>(); }
std::vector<double> values(const torch::Tensor& t) {
  torch::Tensor d = t.to(torch::kFloat64).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}
torch::Tensor one_hot_scores(std::vector<std::int64_t> labels, std::int64_t classes) {
  return torch::one_hot(torch::tensor(labels, torch::kLong), classes).to(torch::kFloat32);
}
// 3 classes; targets 0 1 2 2 1 0, predictions 0 2 2 2 0 0. Confusion matrix (rows true, columns predicted):
//   [[2,0,0],[1,0,1],[0,0,2]]  ->  tp = [2,0,2], fp = [1,0,1], fn = [0,2,0]; class 1 is never predicted.
const std::vector<std::int64_t> kTargets{0, 1, 2, 2, 1, 0}, kPredicted{0, 2, 2, 2, 0, 0};
ClassificationOptions three(Averaging average) {
  return ClassificationOptions().task(Task::multiclass).num_classes(3).average(average);
}
template <class M>
M fed(M metric) {
  metric.update(one_hot_scores(kPredicted, 3), torch::tensor(kTargets, torch::kLong));
  return metric;
}
}  // namespace

TEST_CASE("multiclass accuracy, precision, recall, F1 by hand") {
  CHECK(value(fed(Accuracy(three(Averaging::macro))).compute()) == doctest::Approx(4.0 / 6));
  CHECK(values(fed(Precision(three(Averaging::none))).compute()) == std::vector<double>{2.0 / 3, 0.0, 2.0 / 3});
  CHECK(value(fed(Precision(three(Averaging::macro))).compute()) == doctest::Approx(4.0 / 9));
  CHECK(value(fed(Precision(three(Averaging::micro))).compute()) == doctest::Approx(4.0 / 6));  // 4 / (4 + 2)
  CHECK(values(fed(Recall(three(Averaging::none))).compute()) == std::vector<double>{1.0, 0.0, 1.0});
  CHECK(value(fed(Recall(three(Averaging::macro))).compute()) == doctest::Approx(2.0 / 3));
  // F1 per class: 2 * (2/3) * 1 / (2/3 + 1) = 0.8 for classes 0 and 2, 0 for class 1.
  const auto f1 = values(fed(F1(three(Averaging::none))).compute());
  CHECK(f1[0] == doctest::Approx(0.8));
  CHECK(f1[1] == 0.0);
  CHECK(value(fed(F1(three(Averaging::macro))).compute()) == doctest::Approx(1.6 / 3));
  // F2 weighs recall: (1+4) * tp / ((1+4) tp + 4 fn + fp) = 10 / 11 for class 0.
  CHECK(values(fed(FBeta(2.0, three(Averaging::none))).compute())[0] == doctest::Approx(10.0 / 11));
}

TEST_CASE("properties: micro-F1 equals accuracy for single-label multiclass; weighted uses support") {
  torch::manual_seed(3);
  const torch::Tensor scores = torch::randn({200, 5});
  const torch::Tensor labels = torch::randint(5, {200}, torch::kLong);
  Accuracy accuracy(ClassificationOptions().num_classes(5));
  FBeta micro_f1(1.0, ClassificationOptions().num_classes(5).average(Averaging::micro));
  accuracy.update(scores, labels);
  micro_f1.update(scores, labels);
  CHECK(value(micro_f1.compute()) == doctest::Approx(value(accuracy.compute())));
  // targets 0 0 0 1, predicted 0 0 1 1: precision [1, 0.5], support [3, 1]: weighted 3.5/4, macro 0.75.
  Precision weighted(ClassificationOptions().num_classes(2).average(Averaging::weighted));
  Precision macro(ClassificationOptions().num_classes(2).average(Averaging::macro));
  for (auto* p : {&weighted, &macro}) p->update(torch::tensor({0, 0, 1, 1}), torch::tensor({0, 0, 0, 1}));
  CHECK(value(weighted.compute()) == doctest::Approx(0.875));
  CHECK(value(macro.compute()) == doctest::Approx(0.75));
}

TEST_CASE("binary, multilabel and top-k accuracy; binary precision and recall") {
  Accuracy binary(ClassificationOptions().task(Task::binary));
  binary.update(torch::tensor({0.2, 0.7, 0.5, 0.4}), torch::tensor({0, 1, 0, 1}));  // predicted 0 1 1 0: 2 of 4
  CHECK(value(binary.compute()) == 0.5);
  Accuracy strict(ClassificationOptions().task(Task::binary).threshold(0.6));
  strict.update(torch::tensor({0.2, 0.7, 0.5, 0.4}), torch::tensor({0, 1, 0, 1}));  // predicted 0 1 0 0: 3 of 4
  CHECK(value(strict.compute()) == 0.75);
  Accuracy multilabel(ClassificationOptions().task(Task::multilabel).num_classes(2));
  multilabel.update(torch::tensor({{0.9, 0.2}, {0.6, 0.7}}), torch::tensor({{1, 0}, {1, 0}}));  // rows exact: 1, 0
  CHECK(value(multilabel.compute()) == 0.5);
  // top-2: row 0 {1,2} holds 2; row 1 {0,1} misses 3; row 2 {3,2} misses 0. top-1 gets none.
  const torch::Tensor scores = torch::tensor({{0.1, 0.5, 0.3, 0.1}, {0.6, 0.2, 0.15, 0.05}, {0.1, 0.2, 0.3, 0.4}});
  const torch::Tensor labels = torch::tensor({2, 3, 0});
  Accuracy top2(ClassificationOptions().num_classes(4).top_k(2)), top1(ClassificationOptions().num_classes(4));
  top2.update(scores, labels);
  top1.update(scores, labels);
  CHECK(value(top2.compute()) == doctest::Approx(1.0 / 3));
  CHECK(value(top1.compute()) == 0.0);
  // Binary: predicted 1 1 0 0 1, targets 1 0 1 0 1: tp 2, fp 1, fn 1.
  Precision p(ClassificationOptions().task(Task::binary));
  Recall r(ClassificationOptions().task(Task::binary));
  p.update(torch::tensor({1, 1, 0, 0, 1}), torch::tensor({1, 0, 1, 0, 1}));
  r.update(torch::tensor({1, 1, 0, 0, 1}), torch::tensor({1, 0, 1, 0, 1}));
  CHECK(value(p.compute()) == doctest::Approx(2.0 / 3));
  CHECK(value(r.compute()) == doctest::Approx(2.0 / 3));
}

TEST_CASE("confusion matrix, its normalisations, IoU and mean IoU") {
  ConfusionMatrix counts = fed(ConfusionMatrix(3));
  CHECK(values(counts.compute()) == std::vector<double>{2, 0, 0, 1, 0, 1, 0, 0, 2});
  CHECK(values(fed(ConfusionMatrix(3, ConfusionMatrix::Normalize::true_rows)).compute()) ==
        std::vector<double>{1, 0, 0, 0.5, 0, 0.5, 0, 0, 1});
  CHECK(values(fed(ConfusionMatrix(3, ConfusionMatrix::Normalize::predicted_columns)).compute()) ==
        std::vector<double>{2.0 / 3, 0, 0, 1.0 / 3, 0, 1.0 / 3, 0, 0, 2.0 / 3});
  // IoU = tp / (tp + fp + fn): [2/3, 0, 2/3]; mean 4/9; without class 0: mean of [0, 2/3].
  CHECK(values(iou(counts).compute()) == std::vector<double>{2.0 / 3, 0.0, 2.0 / 3});
  CHECK(value(mean_iou(counts).compute()) == doctest::Approx(4.0 / 9));
  CHECK(value(mean_iou(counts, 0).compute()) == doctest::Approx(1.0 / 3));
}

TEST_CASE("ROC-AUC, exact, with ties counted one half") {
  auto auc = [](std::vector<double> scores, std::vector<std::int64_t> targets) {
    RocAuc m;
    m.update(torch::tensor(scores), torch::tensor(targets, torch::kLong));
    return value(m.compute());
  };
  CHECK(auc({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1}) == doctest::Approx(0.75));  // 3 of 4 pairs ordered
  CHECK(auc({0.5, 0.5, 0.5, 0.5}, {0, 1, 0, 1}) == doctest::Approx(0.5));    // all equal: every pair a tie
  CHECK(auc({0.2, 0.2, 0.6, 0.6}, {0, 1, 0, 1}) == doctest::Approx(0.5));    // 0.5 + 0 + 1 + 0.5 over 4
  CHECK(auc({0.3, 0.3, 0.9}, {0, 1, 1}) == doctest::Approx(0.75));           // 0.5 + 1 over 2
  CHECK(auc({0.9, 0.8, 0.1}, {1, 1, 0}) == doctest::Approx(1.0));
  RocAuc split;  // accumulates across updates
  split.update(torch::tensor({0.1, 0.4}), torch::tensor({0, 0}));
  split.update(torch::tensor({0.35, 0.8}), torch::tensor({1, 1}));
  CHECK(value(split.compute()) == doctest::Approx(0.75));
  CHECK_THROWS_WITH_AS(auc({0.1, 0.2}, {1, 1}),
                       "trainloop: RocAuc: not computable: only one class among the targets (no negatives)",
                       NotComputableError);
}

TEST_CASE("regression metrics, Loss, Average, RunningAverage by hand") {
  // predictions 1 2 3 4, targets 1 3 2 6 (two updates): errors 0 -1 1 -2.
  MeanSquaredError mse;
  MeanAbsoluteError mae;
  RootMeanSquaredError rmse;
  R2Score r2;
  for (auto [p, t] : {std::pair{std::vector<double>{1, 2}, std::vector<double>{1, 3}},
                      std::pair{std::vector<double>{3, 4}, std::vector<double>{2, 6}}}) {
    mse.update(torch::tensor(p), torch::tensor(t));
    mae.update(torch::tensor(p), torch::tensor(t));
    rmse.update(torch::tensor(p), torch::tensor(t));
    r2.update(torch::tensor(p), torch::tensor(t));
  }
  CHECK(value(mse.compute()) == doctest::Approx(1.5));  // (0 + 1 + 1 + 4) / 4
  CHECK(value(mae.compute()) == doctest::Approx(1.0));
  CHECK(value(rmse.compute()) == doctest::Approx(std::sqrt(1.5)));
  CHECK(value(r2.compute()) == doctest::Approx(1 - 6.0 / 14));  // SST: mean 3 -> 4 + 0 + 1 + 9

  Loss loss([](const torch::Tensor& p, const torch::Tensor& t) { return torch::mse_loss(p, t); });
  loss.update(torch::tensor({0.0, 0.0}), torch::tensor({1.0, 1.0}));  // 1, two examples
  loss.update(torch::tensor({0.0}), torch::tensor({3.0}));            // 9, one example
  CHECK(value(loss.compute()) == doctest::Approx(11.0 / 3));

  Average scalars;
  for (double v : {1.0, 2.0, 6.0}) scalars.update(v);
  CHECK(value(scalars.compute()) == 3.0);
  Average rows;
  rows.update(torch::tensor({{1.0, 2.0}, {3.0, 4.0}}));
  CHECK(values(rows.compute()) == std::vector<double>{2.0, 3.0});

  RunningAverage running(0.5);
  for (double v : {4.0, 2.0, 8.0}) running.update(v);  // 4, then 0.5*4 + 0.5*2 = 3, then 0.5*3 + 0.5*8 = 5.5
  CHECK(value(running.compute()) == 5.5);
}

TEST_CASE("edge cases: empty updates change nothing; reset; compute before update") {
  Accuracy accuracy(ClassificationOptions().num_classes(3));
  accuracy.update(torch::zeros({0, 3}), torch::zeros({0}, torch::kLong));
  accuracy.update(one_hot_scores(kPredicted, 3), torch::tensor(kTargets, torch::kLong));
  CHECK(value(accuracy.compute()) == doctest::Approx(4.0 / 6));
  accuracy.reset();
  CHECK_THROWS_WITH_AS(accuracy.compute(),
                       "trainloop: Accuracy: not computable: it has seen no examples (compute() before any update(), "
                       "or only empty batches)",
                       NotComputableError);
}

TEST_CASE("every metric: an empty batch changes nothing, and with no data compute() says so, naming the metric") {
  const auto empty = torch::zeros({0});
  const auto empty_labels = torch::zeros({0}, torch::kLong);
  const auto scores = one_hot_scores(kPredicted, 3);
  const auto labels = torch::tensor(kTargets, torch::kLong);
  auto loss_fn = [](const torch::Tensor& p, const torch::Tensor& t) { return torch::mse_loss(p, t); };
  // Each metric: fed an empty batch only (not computable), then real data around an empty batch (the same value as
  // without it).
  auto check = [&](auto make, const char* name, auto&& feed, auto&& feed_empty) {
    CAPTURE(name);
    auto metric = make();
    feed_empty(metric);
    CHECK_THROWS_WITH_AS(metric.compute(), doctest::Contains((std::string("trainloop: ") + name + ": not computable").c_str()),
                         NotComputableError);
    auto plain = make();
    feed(plain);
    feed_empty(metric);
    feed(metric);
    feed_empty(metric);
    CHECK(values(metric.compute()) == values(plain.compute()));
  };
  auto classes = [&](auto& m) { m.update(scores, labels); };
  auto no_classes = [&](auto& m) { m.update(torch::zeros({0, 3}), empty_labels); };
  check([] { return Accuracy(three(Averaging::macro)); }, "Accuracy", classes, no_classes);
  check([] { return Precision(three(Averaging::macro)); }, "Precision", classes, no_classes);
  check([] { return Recall(three(Averaging::none)); }, "Recall", classes, no_classes);
  check([] { return F1(three(Averaging::weighted)); }, "FBeta", classes, no_classes);
  check([] { return ConfusionMatrix(3); }, "ConfusionMatrix", classes, no_classes);
  auto binary = [&](auto& m) { m.update(torch::tensor({0.2, 0.9, 0.6}), torch::tensor({0, 1, 0})); };
  auto no_binary = [&](auto& m) { m.update(empty, empty_labels); };
  check([] { return Accuracy(ClassificationOptions().task(Task::binary)); }, "Accuracy", binary, no_binary);
  check([] { return RocAuc(); }, "RocAuc", binary, no_binary);
  auto regress = [&](auto& m) { m.update(torch::tensor({1.0, 2.0, 4.0}), torch::tensor({1.5, 2.0, 3.0})); };
  auto no_regress = [&](auto& m) { m.update(empty, empty); };
  check([] { return MeanSquaredError(); }, "MeanSquaredError", regress, no_regress);
  check([] { return MeanAbsoluteError(); }, "MeanAbsoluteError", regress, no_regress);
  check([] { return RootMeanSquaredError(); }, "RootMeanSquaredError", regress, no_regress);
  check([] { return R2Score(); }, "R2Score", regress, no_regress);
  check([&] { return Loss(loss_fn); }, "Loss", regress, no_regress);  // the mean of an empty batch is NaN: kept out
  check([] { return Average(); }, "Average", [](auto& m) { m.update(torch::tensor({1.0, 5.0})); },
        [&](auto& m) { m.update(empty); });
  check([] { return RunningAverage(0.5); }, "RunningAverage", [](auto& m) { m.update(torch::tensor({1.0, 5.0})); },
        [&](auto& m) { m.update(empty); });
}

TEST_CASE("R2Score: stable in float64 far from zero and for nearly constant targets; constant targets as scikit-learn") {
  // Targets around 1e6 with small spread: the textbook sum-of-squares form loses the digits; Chan's merge does not.
  auto r2_of = [](const std::vector<double>& p, const std::vector<double>& t, int batches) {
    R2Score r2;
    const auto n = static_cast<std::int64_t>(t.size());
    for (int b = 0; b < batches; ++b) {
      const std::int64_t lo = n * b / batches, hi = n * (b + 1) / batches;
      r2.update(torch::tensor(p, torch::kFloat64).slice(0, lo, hi), torch::tensor(t, torch::kFloat64).slice(0, lo, hi));
    }
    return value(r2.compute());
  };
  std::vector<double> t, p;
  for (int i = 0; i < 1000; ++i) {
    t.push_back(1e6 + 0.001 * (i % 10));
    p.push_back(1e6 + 0.001 * (i % 10) + ((i % 3) - 1) * 0.0005);
  }
  // Exact: SST = 1000 * var(0..9) * 1e-6 = 1000 * 8.25e-6; SSE = (667 values of 2.5e-7)
  double sse = 0, mean = 0, sst = 0;
  for (double v : t) mean += v / 1000;
  for (std::size_t i = 0; i < t.size(); ++i) sse += (p[i] - t[i]) * (p[i] - t[i]), sst += (t[i] - mean) * (t[i] - mean);
  for (int batches : {1, 7, 1000}) {
    CAPTURE(batches);
    CHECK(r2_of(p, t, batches) == doctest::Approx(1 - sse / sst).epsilon(1e-6));
  }
  // Constant targets: 1.0 for a perfect prediction, 0.0 otherwise (never -1.7e16 or above 1).
  for (double c : {0.1, 0.3, 1e6}) {
    CAPTURE(c);
    const std::vector<double> constant(9, c);
    CHECK(r2_of(constant, constant, 3) == 1.0);
    CHECK(r2_of(std::vector<double>(9, c + 0.5), constant, 3) == 0.0);
    CHECK(r2_of({c, c, c, c, c, c, c, c, c + 1e-3}, constant, 3) == 0.0);
  }
  // Never above 1 for an imperfect prediction, however the data is split.
  CHECK(r2_of({0.31, 0.29, 0.3, 0.3}, {0.3, 0.3, 0.3, 0.30000000000000004}, 2) <= 1.0);
}

TEST_CASE("binary and multilabel: logits(true), the threshold on probabilities, p == threshold is positive") {
  Accuracy probabilities(ClassificationOptions().task(Task::binary));
  probabilities.update(torch::tensor({0.5, 0.49}), torch::tensor({1, 0}));  // 0.5 >= 0.5: positive
  CHECK(value(probabilities.compute()) == 1.0);
  // Raw outputs are refused without logits(true), rather than thresholded at 0.5.
  Accuracy raw(ClassificationOptions().task(Task::binary));
  CHECK_THROWS_WITH_AS(raw.update(torch::tensor({-2.0, 3.0}), torch::tensor({0, 1})),
                       "trainloop: Accuracy: predictions must be probabilities in [0, 1], found -2.0; for raw model "
                       "outputs pass ClassificationOptions().logits(true)",
                       std::invalid_argument);
  Accuracy logits(ClassificationOptions().task(Task::binary).logits(true));
  logits.update(torch::tensor({-2.0, 3.0, 0.0, 0.2}), torch::tensor({0, 1, 1, 0}));  // sigmoid: .12 .95 .5 .55
  CHECK(value(logits.compute()) == 0.75);
  Precision strict(ClassificationOptions().task(Task::multilabel).num_classes(2).logits(true).threshold(0.9));
  strict.update(torch::tensor({{3.0, 1.0}, {2.0, -1.0}}), torch::tensor({{1, 1}, {1, 0}}));  // .95 .73 / .88 .27
  CHECK(values(strict.compute()) == std::vector<double>{0.5});                                // class 0: 1/1; class 1: 0
}

TEST_CASE("bad values are clear errors on the CPU: targets not 0/1, NaN scores, labels out of range") {
  Accuracy binary(ClassificationOptions().task(Task::binary));
  CHECK_THROWS_WITH_AS(binary.update(torch::tensor({0.2, 0.9}), torch::tensor({0, 2})),
                       "trainloop: Accuracy: targets must be 0 or 1, found 2", std::invalid_argument);
  CHECK_THROWS_WITH_AS(binary.update(torch::tensor({0.2, std::nan("")}), torch::tensor({0, 1})),
                       "trainloop: Accuracy: scores must not be NaN", std::invalid_argument);
  FBeta f1 = F1(ClassificationOptions().task(Task::multilabel).num_classes(2));
  CHECK_THROWS_WITH_AS(f1.update(torch::tensor({{1, 0}, {0, 3}}), torch::tensor({{1, 0}, {0, 1}})),
                       "trainloop: FBeta: predicted labels must be 0 or 1, found 3", std::invalid_argument);
  RocAuc auc;
  CHECK_THROWS_WITH_AS(auc.update(torch::tensor({0.2, std::nan("")}), torch::tensor({0, 1})), "trainloop: RocAuc: scores must not be NaN",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(auc.update(torch::tensor({0.2, 0.3}), torch::tensor({0, -1})),
                       "trainloop: RocAuc: targets must be 0 or 1, found -1", std::invalid_argument);
  ConfusionMatrix matrix(3);
  CHECK_THROWS_WITH_AS(matrix.update(torch::tensor({0, 3}), torch::tensor({0, 1})),
                       "trainloop: ConfusionMatrix: predicted labels must be in [0, 3), found 3", std::invalid_argument);
  CHECK_THROWS_WITH_AS(matrix.update(torch::tensor({{0.2, std::nan(""), 0.1}}), torch::tensor({1})),
                       "trainloop: ConfusionMatrix: scores must not be NaN", std::invalid_argument);
  // Nothing was counted by the refused updates.
  auc.update(torch::tensor({0.2, 0.3}), torch::tensor({0, 1}));
  CHECK(value(auc.compute()) == 1.0);
}

TEST_CASE("per-class metrics attached to an Engine publish name/0, name/1, ... (name/i/j for a matrix)") {
  using Batch = std::pair<torch::Tensor, torch::Tensor>;
  std::vector<Batch> data{{one_hot_scores(kPredicted, 3), torch::tensor(kTargets, torch::kLong)}};
  Recall recall(three(Averaging::none));
  ConfusionMatrix matrix(3), for_iou(3);  // iou() updates its matrix itself
  auto per_class_iou = iou(for_iou);
  auto evaluator = make_engine([](Batch& b) { return b; }, attach("recall", recall), attach("cm", matrix),
                               attach("iou", per_class_iou));
  evaluator.run(data);
  const auto& m = evaluator.state.metrics;
  CHECK(m.at("recall/0") == 1.0);
  CHECK(m.at("recall/1") == 0.0);
  CHECK(m.at("recall/2") == 1.0);
  CHECK(m.at("cm/1/0") == 1.0);  // row: true class, column: predicted
  CHECK(m.at("cm/1/2") == 1.0);
  CHECK(m.at("cm/2/2") == 2.0);
  CHECK(m.at("iou/0") == doctest::Approx(2.0 / 3));  // tp 2 / (tp 2 + fp 1 + fn 0)
  CHECK(m.count("recall") == 0);
  CHECK(m.size() == 3 + 9 + 3);
}

TEST_CASE("input validation names the metric and the problem") {
  Accuracy accuracy(ClassificationOptions().num_classes(3));
  CHECK_THROWS_WITH_AS(accuracy.update(torch::zeros({4, 5}), torch::zeros({4}, torch::kLong)),
                       "trainloop: Accuracy: scores must be [N, 3] for labels [N], got [4, 5] and [4]",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(accuracy.update(torch::zeros({2, 3}), torch::tensor({0.0, 1.0})),
                       "trainloop: Accuracy: labels must be integers, got Float", std::invalid_argument);
  CHECK_THROWS_WITH_AS(accuracy.update(torch::zeros({2, 3}), torch::tensor({0, 5})),
                       "trainloop: Accuracy: labels must be in [0, 3), found 5", std::invalid_argument);
  Accuracy unsized;
  CHECK_THROWS_WITH_AS(unsized.update(torch::zeros({2, 3}), torch::tensor({0, 1})),
                       doctest::Contains("multiclass needs num_classes"), std::invalid_argument);
  MeanSquaredError mse;
  CHECK_THROWS_WITH_AS(mse.update(torch::zeros({3}), torch::zeros({4})),
                       "trainloop: MeanSquaredError: prediction shape [3] differs from target shape [4]",
                       std::invalid_argument);
}

TEST_CASE("composition: 2 * p * r / (p + r) is a metric; each operand is updated once") {
  Precision p(three(Averaging::micro));
  Recall r(three(Averaging::micro));
  auto f1 = 2 * p * r / (p + r);
  f1.update(one_hot_scores(kPredicted, 3), torch::tensor(kTargets, torch::kLong));
  CHECK(value(p.compute()) == doctest::Approx(4.0 / 6));  // updated once, not twice
  CHECK(value(f1.compute()) == doctest::Approx(4.0 / 6));
  f1.reset();
  CHECK_THROWS_AS(p.compute(), NotComputableError);  // reset reached the operands
  auto difference = metric_lambda([](const torch::Tensor& a, const torch::Tensor& b) { return a - b; }, p, r);
  difference.update(one_hot_scores(kPredicted, 3), torch::tensor(kTargets, torch::kLong));
  CHECK(value(difference.compute()) == doctest::Approx(0.0));
}

TEST_CASE("metrics attached to an Engine publish at epoch end; a module logs a Metric to the Trainer") {
  using Batch = std::pair<torch::Tensor, torch::Tensor>;
  std::vector<Batch> data{{one_hot_scores(kPredicted, 3), torch::tensor(kTargets, torch::kLong)},
                          {one_hot_scores({1, 1}, 3), torch::tensor({1, 0}, torch::kLong)}};
  Accuracy accuracy(ClassificationOptions().num_classes(3));
  RunningAverage running(0.5);
  auto evaluator = make_engine([](Batch& b) { return b; }, attach("accuracy", accuracy),
                               attach("running", running, MetricUsage::running,
                                      [](const Batch& b) { return b.second.to(torch::kFloat64).mean(); }));
  evaluator.run(data);
  CHECK(evaluator.state.metrics.at("accuracy") == doctest::Approx(5.0 / 8));  // 4 of 6, then 1 of 2
  CHECK(evaluator.state.metrics.at("running") == doctest::Approx(0.5 * 1.0 + 0.5 * 0.5));

  struct Classifier : LightningModule<Classifier> {
    torch::nn::Linear fc{nullptr};
    Accuracy val_accuracy{ClassificationOptions().num_classes(3)};
    Classifier() { fc = register_module("fc", torch::nn::Linear(3, 3)); }
    torch::Tensor training_step(Batch& b, std::int64_t) { return torch::nn::functional::cross_entropy(fc(b.first), b.second); }
    void validation_step(Batch& b, std::int64_t) {
      val_accuracy.update(b.first, b.second);  // the scores themselves: accuracy 5/8 whatever the model
      log("val_acc", val_accuracy);
    }
    std::shared_ptr<torch::optim::SGD> configure_optimizers() {
      return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
    }
  };
  Classifier net;
  Trainer trainer(TrainerOptions().accelerator("cpu").max_epochs(2).enable_progress_bar(false).enable_model_summary(false));
  trainer.fit(net, data, data);
  CHECK(value(trainer.callback_metrics().at("val_acc")) == doctest::Approx(5.0 / 8));  // reset between epochs
  CHECK(trainer.validate(net, data).at("val_acc") == doctest::Approx(5.0 / 8));
}

TEST_CASE("the distributed seam: states are reduced (copies) once per compute, never per update") {
  int reductions = 0;
  // Pretend a second rank saw exactly the same data: a sum all-reduce doubles every count.
  metric_state_reducer() = [&reductions](torch::Tensor& state, SyncOp op) {
    ++reductions;
    if (op == SyncOp::sum) state.mul_(2);
  };
  struct Restore {
    ~Restore() { metric_state_reducer() = nullptr; }
  } restore;
  ConfusionMatrix matrix(3);
  matrix.update(one_hot_scores(kPredicted, 3), torch::tensor(kTargets, torch::kLong));
  matrix.update(one_hot_scores(kPredicted, 3), torch::tensor(kTargets, torch::kLong));
  CHECK(reductions == 0);
  CHECK(values(matrix.compute()) == std::vector<double>{8, 0, 0, 4, 0, 4, 0, 0, 8});  // 2 updates x 2 ranks
  CHECK(reductions == 1);
  CHECK(values(matrix.compute()) == std::vector<double>{8, 0, 0, 4, 0, 4, 0, 0, 8});  // computing again: the same
  Accuracy accuracy(ClassificationOptions().num_classes(3));
  accuracy.update(one_hot_scores(kPredicted, 3), torch::tensor(kTargets, torch::kLong));
  CHECK(value(accuracy.compute()) == doctest::Approx(4.0 / 6));  // a ratio of doubled counts
}
