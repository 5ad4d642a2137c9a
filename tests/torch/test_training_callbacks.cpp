// LearningRateMonitor, EMA, GradientAccumulationScheduler, the profiler, the loggers' plumbing, hyperparameters.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "fixtures.hpp"
#include "temp_dir.hpp"

using namespace trainloop;

namespace {
// No sanity check: these tests count validations.
TrainerOptions fit_options() { return quiet().num_sanity_val_steps(0); }

// SGD over two parameter groups (weight, bias), the rate halved per step by a ParamScheduler.
struct TwoGroups : LightningModule<TwoGroups> {
  torch::nn::Linear fc{nullptr};
  std::shared_ptr<torch::optim::SGD> optimizer;
  std::shared_ptr<ParamScheduler> scheduler;
  TwoGroups() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  torch::Tensor training_step(Batch& b, std::int64_t) {
    torch::Tensor loss = torch::mse_loss(fc(b.first), b.second);
    log("loss", loss, LogOptions().on_epoch(true));
    return loss;
  }
  void validation_step(Batch& b, std::int64_t) { log("val_loss", torch::mse_loss(fc(b.first), b.second)); }
  OptimizerConfig configure_optimizers() {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(std::vector<torch::Tensor>{fc->weight}, std::make_unique<torch::optim::SGDOptions>(0.8));
    groups.emplace_back(std::vector<torch::Tensor>{fc->bias},
                        std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(0.4).momentum(0.9)));
    optimizer = std::make_shared<torch::optim::SGD>(groups, torch::optim::SGDOptions(0.1));
    scheduler = std::make_shared<ParamScheduler>(*optimizer, exponential(1.0, 0.5));  // every group: 0.5^t
    return OptimizerConfig(optimizer).scheduler(SchedulerConfig(scheduler).interval(Interval::step));
  }
};

// A logger that keeps what it is given.
struct RecordingLogger {
  std::vector<std::pair<std::int64_t, std::map<std::string, double>>> records;
  std::vector<StateDict> hparams;
  std::vector<std::string> outcomes;
  std::vector<std::string> setups;
  template <class T, class M>
  void setup(T&, M&, const std::string& stage) {
    setups.push_back(stage);
  }
  void log_metrics(std::int64_t step, const std::map<std::string, double>& metrics) { records.emplace_back(step, metrics); }
  void log_hyperparams(const StateDict& params) { hparams.push_back(params); }
  void finalize(const std::string& status) { outcomes.push_back(status); }
};

// Writes a checkpoint at the end of the first epoch and stops there.
struct SaveAtEpochEnd {
  std::string path;
  template <class T, class M>
  void on_train_epoch_end(T& trainer, M&) {
    if (trainer.current_epoch() == 0) {
      trainer.save_checkpoint(path);
      trainer.should_stop(true);
    }
  }
};
struct StepsPerEpoch {
  std::vector<std::int64_t> steps, factors;
  template <class T, class M>
  void on_train_epoch_end(T& trainer, M&) {
    steps.push_back(trainer.global_step());
    factors.push_back(trainer.accumulate_grad_batches());
  }
};
}  // namespace

TEST_CASE("loggers receive records at the logging interval, with the epoch, hyperparameters and the outcome") {
  auto data = batches(4, 1);
  TwoGroups net;
  net.save_hyperparameters({{"lr", 0.8}, {"layers", std::int64_t{1}}, {"name", std::string("two-groups")}});
  Trainer trainer(fit_options().max_epochs(2).log_every_n_steps(2), RecordingLogger{});
  trainer.fit(net, data, data);
  const auto& logger = trainer.callback<RecordingLogger>();
  CHECK(logger.setups == std::vector<std::string>{"fit"});
  REQUIRE(logger.hparams.size() == 1);
  CHECK((logger.hparams[0] == net.hparams()));
  CHECK(logger.outcomes == std::vector<std::string>{"success"});
  // Per epoch: steps 2 and 4 (6 and 8) carry loss_step; the validation end carries val_loss, then the epoch end
  // loss_epoch, each at the step reached.
  std::vector<std::pair<std::int64_t, std::vector<std::string>>> shape;
  for (const auto& [step, metrics] : logger.records) {
    std::vector<std::string> names;
    for (const auto& entry : metrics) names.push_back(entry.first);
    shape.emplace_back(step, names);
  }
  using Row = std::pair<std::int64_t, std::vector<std::string>>;
  CHECK(shape == std::vector<Row>{{2, {"epoch", "loss_step"}},
                                  {4, {"epoch", "loss_step"}},
                                  {4, {"epoch", "val_loss"}},
                                  {4, {"epoch", "loss_epoch"}},
                                  {6, {"epoch", "loss_step"}},
                                  {8, {"epoch", "loss_step"}},
                                  {8, {"epoch", "val_loss"}},
                                  {8, {"epoch", "loss_epoch"}}});
  CHECK(logger.records[0].second.at("epoch") == 0);
  CHECK(logger.records[7].second.at("epoch") == 1);
  // The values are the ones the Trainer exposes.
  CHECK(logger.records[7].second.at("loss_epoch") == doctest::Approx(trainer.logged_metrics().at("loss_epoch").item<double>()));
  CHECK(logger.records[6].second.at("val_loss") == doctest::Approx(trainer.logged_metrics().at("val_loss").item<double>()));

  // A failing fit: finalize("failed"), and the error still reaches the caller.
  struct Failing : LightningModule<Failing> {
    torch::nn::Linear fc{nullptr};
    Failing() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
    torch::Tensor training_step(Batch&, std::int64_t i) {
      if (i == 1) throw std::runtime_error("boom");
      return fc(torch::ones({1, 2})).sum();
    }
    std::shared_ptr<torch::optim::SGD> configure_optimizers() {
      return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
    }
  } failing;
  Trainer failing_trainer(fit_options().max_epochs(1), RecordingLogger{});
  CHECK_THROWS_WITH(failing_trainer.fit(failing, data), "boom");
  CHECK(failing_trainer.callback<RecordingLogger>().outcomes == std::vector<std::string>{"failed"});
}

TEST_CASE("LearningRateMonitor: Lightning's names, per parameter group, at logging steps, with momentum") {
  auto data = batches(4, 1);
  TwoGroups net;
  LearningRateMonitor::Options options;
  options.log_momentum = true;
  Trainer trainer(fit_options().max_epochs(1).log_every_n_steps(2), LearningRateMonitor(options), RecordingLogger{});
  trainer.fit(net, data);
  const auto& lrs = trainer.callback<LearningRateMonitor>().lrs();
  // The scheduler sets every group's rate to 1.0 * 0.5^t after t steps; the monitor reads the rate the step uses,
  // on the steps that end on a logging step (2 and 4): t = 1 and t = 3.
  CHECK(lrs.at("lr-SGD/pg1") == std::vector<double>{0.5, 0.125});
  CHECK(lrs.at("lr-SGD/pg2") == std::vector<double>{0.5, 0.125});
  CHECK(lrs.at("lr-SGD/pg1-momentum") == std::vector<double>{0.0, 0.0});
  CHECK(lrs.at("lr-SGD/pg2-momentum") == std::vector<double>{0.9, 0.9});
  // Its values join the loss in the same record.
  const auto& records = trainer.callback<RecordingLogger>().records;
  REQUIRE(records.size() >= 2);
  CHECK(records[0].first == 2);
  CHECK(records[0].second.at("lr-SGD/pg1") == 0.5);
  CHECK(records[0].second.count("loss_step") == 1);
  CHECK(records[1].second.at("lr-SGD/pg2") == 0.125);

  // Epoch interval: one value per epoch start. Two optimizers of one type: "lr-Adam", "lr-Adam-1".
  struct TwoAdams : LightningModule<TwoAdams> {
    torch::nn::Linear a{nullptr}, b{nullptr};
    TwoAdams() {
      a = register_module("a", torch::nn::Linear(2, 1));
      b = register_module("b", torch::nn::Linear(2, 1));
    }
    torch::Tensor training_step(Batch& batch, std::int64_t) { return torch::mse_loss(a(batch.first) + b(batch.first), batch.second); }
    Optimizers configure_optimizers() {
      return {OptimizerConfig(std::make_shared<torch::optim::Adam>(a->parameters(), torch::optim::AdamOptions(0.01))),
              OptimizerConfig(std::make_shared<torch::optim::Adam>(b->parameters(), torch::optim::AdamOptions(0.02)))};
    }
  } adams;
  LearningRateMonitor::Options per_epoch;
  per_epoch.logging_interval = Interval::epoch;
  per_epoch.log_weight_decay = true;
  Trainer epochs(fit_options().max_epochs(3), LearningRateMonitor(per_epoch));
  epochs.fit(adams, data);
  const auto& adam_lrs = epochs.callback<LearningRateMonitor>().lrs();
  CHECK(adam_lrs.at("lr-Adam") == std::vector<double>{0.01, 0.01, 0.01});
  CHECK(adam_lrs.at("lr-Adam-1") == std::vector<double>{0.02, 0.02, 0.02});
  CHECK(adam_lrs.at("lr-Adam-weight_decay") == std::vector<double>{0.0, 0.0, 0.0});

  // As an Engine handler: watches an optimizer, publishes into state.metrics.
  torch::nn::Linear plain(2, 1);
  torch::optim::SGD sgd(plain->parameters(), torch::optim::SGDOptions(0.3));
  auto engine = make_engine<int>([&](EngineCore&, int) { sgd.param_groups()[0].options().set_lr(sgd.param_groups()[0].options().get_lr() / 2); },
                                 LearningRateMonitor().watch(sgd));
  engine.run(std::vector<int>{1, 2, 3}, RunOptions().max_epochs(1));
  CHECK(engine.state.metrics.at("lr-SGD") == doctest::Approx(0.075));  // read before the third step halves it
}

namespace {
// Records the weight after each step and what validation sees.
struct OneWeight : LightningModule<OneWeight> {
  torch::nn::Linear fc{nullptr};
  std::vector<double> after_step, seen_by_validation;
  OneWeight() {
    fc = register_module("fc", torch::nn::Linear(torch::nn::LinearOptions(1, 1).bias(false)));
    torch::NoGradGuard no_grad;
    fc->weight.fill_(0.0);
  }
  torch::Tensor training_step(Batch& b, std::int64_t) { return torch::mse_loss(fc(b.first), b.second); }
  void on_train_batch_end(const torch::Tensor&, Batch&, std::int64_t) { after_step.push_back(fc->weight.item<double>()); }
  void validation_step(Batch&, std::int64_t i) {
    if (i == 0) seen_by_validation.push_back(fc->weight.item<double>());
  }
  std::shared_ptr<torch::optim::SGD> configure_optimizers() {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
  }
};
std::vector<Batch> ones_to_twos(int n) {
  std::vector<Batch> data;
  for (int i = 0; i < n; ++i) data.emplace_back(torch::ones({1, 1}), torch::full({1, 1}, 2.0));
  return data;
}
}  // namespace

TEST_CASE("EMA: the average by hand, warmup, swapped in for validation, copied at the end") {
  auto data = ones_to_twos(5);
  OneWeight net;
  EMA::Options options;
  options.decay = 0.9;
  options.copy_to_model_at_end = false;
  Trainer trainer(fit_options().max_epochs(2), EMA(options));
  trainer.fit(net, data, ones_to_twos(1));
  // ema_0 = w_0 = 0; after update n (0-based): ema = d_n * ema + (1 - d_n) * w, d_n = min(0.9, (1 + n) / (10 + n)).
  double ema = 0;
  std::vector<double> expected_seen;
  for (std::size_t n = 0; n < net.after_step.size(); ++n) {
    const double d = std::min(0.9, (1.0 + n) / (10.0 + n));
    ema = d * ema + (1 - d) * net.after_step[n];
    if (n == 4 || n == 9) expected_seen.push_back(ema);  // validation at each epoch end sees the average
  }
  const EMA& averaged = trainer.callback<EMA>();
  CHECK(averaged.updates() == 10);
  CHECK(averaged.averaged().at("fc.weight").item<double>() == doctest::Approx(ema).epsilon(1e-6));
  REQUIRE(net.seen_by_validation.size() == 2);
  CHECK(net.seen_by_validation[0] == doctest::Approx(expected_seen[0]).epsilon(1e-6));
  CHECK(net.seen_by_validation[1] == doctest::Approx(expected_seen[1]).epsilon(1e-6));
  CHECK(net.fc->weight.item<double>() == doctest::Approx(net.after_step.back()));  // the trained weight came back

  OneWeight copied;
  Trainer copying(fit_options().max_epochs(1), EMA());
  copying.fit(copied, data);
  CHECK(copied.fc->weight.item<double>() == doctest::Approx(copying.callback<EMA>().averaged().at("fc.weight").item<double>()));
  EMA::Options bad;
  bad.decay = 1.5;
  CHECK_THROWS_WITH_AS(EMA{bad}, "trainloop: EMA: decay must be in (0, 1)", std::invalid_argument);
}

TEST_CASE("EMA: its average is in the checkpoint, and a resumed fit continues it bitwise") {
  TempDir dir;
  auto data = batches(6, 7);
  EMA::Options options;
  options.decay = 0.8;
  options.copy_to_model_at_end = false;
  auto fresh = [] {
    torch::manual_seed(3);
    return std::make_shared<TwoGroups>();
  };
  auto whole = fresh();
  Trainer straight(fit_options().max_epochs(2), EMA(options));
  straight.fit(*whole, data);

  // Stop after the first epoch with a checkpoint, then resume in a new Trainer.
  auto first = fresh();
  Trainer first_half(fit_options().max_epochs(2), EMA(options), SaveAtEpochEnd{dir.file("half.ckpt")});
  first_half.fit(*first, data);
  auto second = fresh();
  Trainer resumed(fit_options().max_epochs(2), EMA(options));
  resumed.fit(*second, data, dir.file("half.ckpt"));
  CHECK(resumed.callback<EMA>().updates() == straight.callback<EMA>().updates());
  for (const auto& [name, tensor] : straight.callback<EMA>().averaged())
    CHECK_MESSAGE(torch::equal(tensor, resumed.callback<EMA>().averaged().at(name)), name);
  CHECK(torch::equal(whole->fc->weight, second->fc->weight));

  // A checkpoint written without the EMA cannot silently restart the average.
  auto plain = fresh();
  Trainer without(fit_options().max_epochs(1), SaveAtEpochEnd{dir.file("plain.ckpt")});
  without.fit(*plain, data);
  auto again = fresh();
  Trainer with_ema(fit_options().max_epochs(2), EMA(options));
  CHECK_THROWS_WITH_AS(with_ema.fit(*again, data, dir.file("plain.ckpt")),
                       contains("key 'callback/trainloop::EMA' (tensors) is missing"), std::runtime_error);
}

TEST_CASE("EMA as an Engine handler tracks a model; swap_into restores the weights") {
  torch::nn::Linear model(torch::nn::LinearOptions(1, 1).bias(false));
  {
    torch::NoGradGuard no_grad;
    model->weight.fill_(1.0);
  }
  EMA::Options options;
  options.decay = 0.5;
  options.warmup = false;
  auto engine = make_engine<int>([&](EngineCore&, int) {
    torch::NoGradGuard no_grad;
    model->weight.add_(1.0);  // 2, 3, 4
  }, EMA(options).track(*model));
  engine.run(std::vector<int>{0, 1, 2}, RunOptions().max_epochs(1));
  EMA& ema = std::get<0>(engine.handlers());
  // 1 -> 0.5*1 + 0.5*2 = 1.5 -> 0.5*1.5 + 0.5*3 = 2.25 -> 0.5*2.25 + 0.5*4 = 3.125
  CHECK(ema.averaged().at("weight").item<double>() == 3.125);
  {
    auto swapped = ema.swap_into(*model);
    CHECK(model->weight.item<double>() == 3.125);
  }
  CHECK(model->weight.item<double>() == 4.0);
}

TEST_CASE("GradientAccumulationScheduler changes the accumulation by epoch") {
  auto data = batches(4, 1);
  TwoGroups net;
  Trainer trainer(fit_options().max_epochs(4), GradientAccumulationScheduler({{1, 4}, {2, 2}, {3, 3}}), StepsPerEpoch{});
  trainer.fit(net, data);
  // Epoch 0: 1 per step (4 steps); epoch 1: 4 (1 step); epoch 2: 2 (2 steps); epoch 3: 3 (one after 3 batches, one
  // for the last batch, as an epoch never carries gradients over).
  CHECK(trainer.callback<StepsPerEpoch>().steps == std::vector<std::int64_t>{4, 5, 7, 9});
  CHECK(trainer.callback<StepsPerEpoch>().factors == std::vector<std::int64_t>{1, 4, 2, 3});

  GradientAccumulationScheduler schedule({{2, 8}});
  CHECK(schedule.factor_for(0) == 1);
  CHECK(schedule.factor_for(2) == 8);
  CHECK(schedule.factor_for(100) == 8);
  CHECK_THROWS_WITH_AS(GradientAccumulationScheduler({{0, 0}}),
                       "trainloop: GradientAccumulationScheduler: the factor at epoch 0 is 0; it must be at least 1",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(GradientAccumulationScheduler({{-1, 2}}), contains("epoch -1 is negative"), std::invalid_argument);
  Trainer both(fit_options().max_epochs(1).accumulate_grad_batches(2), GradientAccumulationScheduler({{0, 4}}));
  CHECK_THROWS_WITH_AS(both.fit(net, data), contains("both set the accumulation"), std::invalid_argument);
}

TEST_CASE("the profiler times hooks, steps and batch fetches, and writes its report") {
  TempDir dir;
  auto data = batches(5, 1);
  TwoGroups net;
  Trainer quiet_trainer(fit_options().max_epochs(1));
  quiet_trainer.fit(net, data);
  CHECK(quiet_trainer.profiler().actions().empty());  // off by default

  Trainer trainer(fit_options().max_epochs(2).profiler(true).profiler_path(dir.file("profile.txt")), EMA());
  trainer.fit(net, data, data);
  const auto& actions = trainer.profiler().actions();
  CHECK(actions.at("[LightningModule](anonymous namespace)::TwoGroups.training_step").calls == 10);
  CHECK(actions.at("[LightningModule](anonymous namespace)::TwoGroups.validation_step").calls == 10);
  CHECK(actions.at("backward").calls == 10);
  CHECK(actions.at("optimizer_step").calls == 10);
  CHECK(actions.at("run_training_batch").calls == 10);
  CHECK(actions.at("get_train_batch").calls >= 10);
  CHECK(actions.at("run_validation").calls == 2);
  CHECK(actions.at("[Callback]trainloop::EMA.on_train_batch_end").calls == 10);
  CHECK(actions.at("[Callback]trainloop::EMA.on_validation_epoch_start").calls == 2);
  const auto& step = actions.at("run_training_batch");
  CHECK(step.total_s > 0);
  CHECK(step.min_s <= step.max_s);
  const std::string report = read_file(dir.file("profile.txt"));
  CHECK(report.find("fit profiler report") == 0);
  CHECK(report.find("[LightningModule](anonymous namespace)::TwoGroups.training_step") != std::string::npos);
  CHECK(report.find("| 10 ") != std::string::npos);
}

namespace {
// The profiler times a hook that throws too (Lightning's profile() context manager records on the way out).
struct ThrowOnThirdBatch {
  int calls = 0;
  template <class T, class M, class O, class B>
  void on_train_batch_end(T&, M&, const O&, B&, std::int64_t) {
    if (++calls == 3) throw std::runtime_error("third batch");
  }
};
}  // namespace

TEST_CASE("the profiler records a hook that throws, and the fit's error is the hook's") {
  auto data = batches(5, 1);
  TwoGroups net;
  Trainer trainer(fit_options().max_epochs(1).profiler(true), ThrowOnThirdBatch{});
  CHECK_THROWS_WITH_AS(trainer.fit(net, data), "third batch", std::runtime_error);
  const auto& actions = trainer.profiler().actions();
  CHECK(actions.at("[Callback](anonymous namespace)::ThrowOnThirdBatch.on_train_batch_end").calls == 3);
  CHECK(actions.at("[LightningModule](anonymous namespace)::TwoGroups.training_step").calls == 3);
  CHECK(actions.at("run_training_batch").calls == 3);  // the batch the hook failed in is timed too
}

TEST_CASE("hyperparameters are written into the Trainer's checkpoints") {
  TempDir dir;
  auto data = batches(2, 1);
  TwoGroups net;
  net.save_hyperparameters({{"lr", 0.8}, {"name", std::string("two-groups")}});
  Trainer(fit_options().max_epochs(2), SaveAtEpochEnd{dir.file("h.ckpt")}).fit(net, data);
  TwoGroups other;
  other.configure_optimizers();
  const auto states = load_checkpoint(dir.file("h.ckpt"), other, {other.optimizer}, std::nullopt, false);
  CHECK((states.at("hparams") == net.hparams()));
}

TEST_CASE("the Trainer with real loggers: files written, and a bad log folder fails before any training") {
  TempDir dir;
  auto data = batches(4, 1);
  TwoGroups net;
  net.save_hyperparameters({{"lr", 0.8}});
  CSVLogger::Options csv;
  csv.save_dir = dir.path.string();
  JSONLinesLogger::Options jsonl;
  jsonl.save_dir = dir.path.string();
  jsonl.name = "jsonl";
  MLFlowLogger::Options mlflow;
  mlflow.tracking_dir = dir.file("mlruns");
  Trainer trainer(fit_options().max_epochs(2).log_every_n_steps(2), CSVLogger(csv), JSONLinesLogger(jsonl), MLFlowLogger(mlflow));
  trainer.fit(net, data, data);
  const std::string metrics = read_file(dir.file("lightning_logs/version_0/metrics.csv"));
  CHECK(metrics.rfind("epoch,step,loss_step,val_loss,loss_epoch\n0,2,", 0) == 0);
  CHECK(read_file(dir.file("jsonl/version_0/metrics.jsonl")).find("\"loss_epoch\": ") != std::string::npos);
  const auto& run = trainer.callback<MLFlowLogger>().run_dir();
  CHECK(read_file((run / "params" / "lr").string()) == "0.8");
  CHECK(read_file((run / "meta.yaml").string()).find("\nstatus: 3\n") != std::string::npos);

  {
    std::ofstream blocker(dir.file("blocker"));
  }
  struct CountsSteps : LightningModule<CountsSteps> {
    torch::nn::Linear fc{nullptr};
    int steps = 0;
    CountsSteps() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
    torch::Tensor training_step(Batch& b, std::int64_t) {
      ++steps;
      return torch::mse_loss(fc(b.first), b.second);
    }
    std::shared_ptr<torch::optim::SGD> configure_optimizers() {
      return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
    }
  } counted;
  CSVLogger::Options bad;
  bad.save_dir = dir.file("blocker");
  Trainer blocked(fit_options().max_epochs(1), CSVLogger(bad));
  CHECK_THROWS_WITH_AS(blocked.fit(counted, data), contains("CSVLogger: cannot write logs in '" + dir.file("blocker")),
                       std::runtime_error);
  CHECK(counted.steps == 0);
}
