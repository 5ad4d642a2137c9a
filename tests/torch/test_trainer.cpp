// The Trainer's behaviour: options, counters, logging, evaluation, optimisation modes, errors.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <cmath>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "fixtures.hpp"
#include "temp_dir.hpp"

using namespace trainloop;

namespace {
std::vector<Batch> linear_data(int batches, int batch_size = 8, std::uint64_t seed = 0) {
  torch::manual_seed(static_cast<std::int64_t>(seed));
  const torch::Tensor w = torch::tensor({{2.0f}, {-3.0f}});
  std::vector<Batch> data;
  for (int i = 0; i < batches; ++i) {
    torch::Tensor x = torch::randn({batch_size, 2});
    data.emplace_back(x, x.mm(w) + 0.5);
  }
  return data;
}


struct Regression : LightningModule<Regression> {
  torch::nn::Linear fc{nullptr};
  double lr = 0.05;
  int validation_batches = 0, test_batches = 0;
  bool saw_grad_mode_in_validation = false, saw_train_mode_in_validation = false;
  Regression() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  torch::Tensor forward(const torch::Tensor& x) { return fc(x); }
  torch::Tensor training_step(Batch& b, std::int64_t) {
    torch::Tensor loss = torch::mse_loss(forward(b.first), b.second);
    log("train_loss", loss, LogOptions().prog_bar(true).on_epoch(true));
    return loss;
  }
  void validation_step(Batch& b, std::int64_t) {
    ++validation_batches;
    saw_grad_mode_in_validation |= torch::GradMode::is_enabled();
    saw_train_mode_in_validation |= is_training();
    log("val_loss", torch::mse_loss(forward(b.first), b.second));
  }
  void test_step(Batch& b, std::int64_t) {
    ++test_batches;
    log("test_loss", torch::mse_loss(forward(b.first), b.second));
    log("test_max", torch::mse_loss(forward(b.first), b.second), LogOptions().reduce(Reduce::max));
  }
  torch::Tensor predict_step(Batch& b, std::int64_t) { return forward(b.first); }
  std::shared_ptr<torch::optim::SGD> configure_optimizers() {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(lr));
  }
};

std::vector<torch::Tensor> parameters_of(torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (auto& p : m.parameters()) out.push_back(p.detach().clone());
  return out;
}
}  // namespace

TEST_CASE("fit trains, validate/test return epoch metrics, predict returns outputs in order") {
  auto train = linear_data(16);
  auto val = linear_data(4, 8, 1);
  Regression net;
  Trainer trainer(quiet().max_epochs(4).seed(7));
  trainer.fit(net, train, val);
  CHECK(trainer.global_step() == 64);
  CHECK(trainer.current_epoch() == 4);
  CHECK(net.fc->weight[0][0].item<double>() == doctest::Approx(2.0).epsilon(0.02));
  CHECK_FALSE(net.saw_grad_mode_in_validation);   // validation runs under NoGradGuard ...
  CHECK_FALSE(net.saw_train_mode_in_validation);  // ... with the module in eval mode ...
  CHECK(net.is_training());                       // ... restored to train mode after
  CHECK(net.validation_batches == 2 + 4 * 4);     // sanity check (2), then 4 per epoch

  const auto validated = trainer.validate(net, val);
  CHECK(validated.at("val_loss") < 1e-3);
  const auto tested = trainer.test(net, val);
  CHECK(tested.at("test_loss") == doctest::Approx(validated.at("val_loss")));
  CHECK(tested.at("test_max") >= tested.at("test_loss"));
  CHECK(net.test_batches == 4);

  const std::vector<torch::Tensor> predictions = trainer.predict(net, val);
  REQUIRE(predictions.size() == 4);
  CHECK(torch::allclose(predictions[2], net.forward(val[2].first).detach()));
}

namespace {
// Validation data of another batch type than the training data's (a tuple instead of a pair).
using ValTuple = std::tuple<torch::Tensor, torch::Tensor>;
struct OtherValBatches : Regression {
  void validation_step(ValTuple& b, std::int64_t) {
    ++validation_batches;
    log("val_loss", torch::mse_loss(forward(std::get<0>(b)), std::get<1>(b)));
  }
};
}  // namespace

TEST_CASE("validation data of another batch type: fit validates on it; overfit_batches is refused before fit starts") {
  auto train = linear_data(2);
  std::vector<ValTuple> val;
  for (const auto& b : linear_data(2, 8, 1)) val.emplace_back(b.first, b.second);
  {
    OtherValBatches net;
    Trainer trainer(quiet().max_epochs(1).num_sanity_val_steps(0));
    trainer.fit(net, train, val);
    CHECK(net.validation_batches == 2);
  }
  OtherValBatches net;
  Trainer trainer(quiet().max_epochs(1).overfit_batches(1));
  CHECK_THROWS_WITH_AS(trainer.fit(net, train, val),
                       doctest::Contains("overfit_batches validates on the training batches, but"),
                       std::invalid_argument);
  CHECK(net.validation_batches == 0);
  CHECK(trainer.global_step() == 0);
}

// A callback for every Trainer type and module, without templates: it could be compiled once, in a .cpp of its own.
struct EpochRecorder {
  std::vector<std::int64_t> epochs, steps;
  void on_train_epoch_end(TrainerCore& trainer, torch::nn::Module& module) {
    CHECK(module.is_training());
    epochs.push_back(trainer.current_epoch());
    steps.push_back(trainer.global_step());
  }
};

TEST_CASE("a callback may take TrainerCore& and torch::nn::Module&: one non-template callback serves any Trainer") {
  Regression model;
  auto data = linear_data(4);
  Trainer trainer(quiet().max_epochs(3), EpochRecorder{});
  trainer.fit(model, data);
  const EpochRecorder& recorder = trainer.callback<EpochRecorder>();
  CHECK(recorder.epochs == std::vector<std::int64_t>{0, 1, 2});
  CHECK(recorder.steps == std::vector<std::int64_t>{4, 8, 12});
}

TEST_CASE("logging: step and epoch values, names, reductions, prog_bar, log_every_n_steps") {
  auto train = linear_data(6);
  auto val = linear_data(2, 8, 1);
  Regression net;
  Trainer trainer(quiet().max_epochs(1).log_every_n_steps(3).num_sanity_val_steps(0));
  trainer.fit(net, train, val);
  const auto& cm = trainer.callback_metrics();
  const auto& lm = trainer.logged_metrics();
  // train_loss is logged on_step and on_epoch: loggers get train_loss_step and train_loss_epoch; callbacks get
  // train_loss = the epoch mean after the epoch.
  REQUIRE(cm.count("train_loss"));
  REQUIRE(lm.count("train_loss_step"));
  REQUIRE(lm.count("train_loss_epoch"));
  CHECK(torch::equal(cm.at("train_loss"), lm.at("train_loss_epoch")));
  CHECK(lm.count("val_loss"));  // validation defaults to on_epoch only: no suffix
  CHECK_FALSE(lm.count("val_loss_step"));
  const auto bar = trainer.progress_bar_metrics();
  CHECK(bar.count("train_loss"));
  CHECK_FALSE(bar.count("val_loss"));  // not prog_bar

  MetricStore store;
  for (double v : {1.0, 5.0, 3.0}) store.log(Stage::train, "m", torch::tensor(v), LogOptions().on_epoch(true).reduce(Reduce::mean));
  for (double v : {1.0, 5.0, 3.0}) store.log(Stage::train, "s", torch::tensor(v), LogOptions().on_epoch(true).reduce(Reduce::sum));
  for (double v : {1.0, 5.0, 3.0}) store.log(Stage::train, "mx", torch::tensor(v), LogOptions().on_epoch(true).reduce(Reduce::max));
  for (double v : {1.0, 5.0, 3.0}) store.log(Stage::train, "mn", torch::tensor(v), LogOptions().on_epoch(true).reduce(Reduce::min));
  store.log(Stage::train, "w", torch::tensor(1.0), LogOptions().on_epoch(true).batch_size(3));
  store.log(Stage::train, "w", torch::tensor(5.0), LogOptions().on_epoch(true).batch_size(1));
  auto value = [&](const char* n) { return MetricStore::epoch_value(store.entries().at(n)).item<double>(); };
  CHECK(value("m") == 3.0);
  CHECK(value("s") == 9.0);
  CHECK(value("mx") == 5.0);
  CHECK(value("mn") == 1.0);
  CHECK(value("w") == 2.0);  // (1*3 + 5*1) / 4
  CHECK_THROWS_WITH_AS(store.log(Stage::train, "v", torch::ones({2}), LogOptions()),
                       "trainloop: log(\"v\"): the value must hold one number, got shape [2]", std::invalid_argument);
  for (const char* reserved : {"epoch", "step"})
    CHECK_THROWS_WITH_AS(store.log(Stage::train, reserved, torch::tensor(1.0), LogOptions()),
                         doctest::Contains((std::string("'") + reserved + "' is a column every logger record already has").c_str()),
                         std::invalid_argument);
  store.log(Stage::train, "epoch", torch::tensor(1.0), LogOptions().logger(false));  // not for the loggers: allowed
  Regression idle;
  CHECK_THROWS_WITH_AS(idle.log("x", 1.0), doctest::Contains("log() needs a running Trainer"), std::logic_error);
}

TEST_CASE("the Trainer's loggers take real names: train/loss nests in MLflow, params keep their float form") {
  struct Named : Regression {
    torch::Tensor training_step(Batch& b, std::int64_t) {
      torch::Tensor loss = torch::mse_loss(forward(b.first), b.second);
      log("train/loss", loss);
      log("acc@1", loss);
      return loss;
    }
    void validation_step(Batch& b, std::int64_t) { log("val/loss", torch::mse_loss(forward(b.first), b.second)); }
  };
  TempDir dir;
  MLFlowLogger::Options ml;
  ml.tracking_dir = dir.file("mlruns");
  VersionedLoggerOptions versioned;
  versioned.save_dir = dir.path.string();
  Named net;
  net.save_hyperparameters({{"lr", 3.0}, {"eps", 1e-8}});
  Trainer trainer(quiet().max_epochs(1).log_every_n_steps(1).num_sanity_val_steps(0), MLFlowLogger(ml), CSVLogger(versioned));
  trainer.fit(net, linear_data(3), linear_data(1, 8, 1));
  const auto run = trainer.callback<MLFlowLogger>().run_dir();
  const std::string train_loss = read_file((run / "metrics" / "train" / "loss").string());
  CHECK(std::count(train_loss.begin(), train_loss.end(), '\n') == 3);
  CHECK(std::filesystem::exists(run / "metrics" / "val" / "loss"));
  CHECK(std::filesystem::exists(run / "metrics" / "acc_1"));
  CHECK(read_file((run / "params" / "lr").string()) == "3.0");
  CHECK(read_file((run / "params" / "eps").string()) == "1e-08");
  CHECK(read_file((run / "meta.yaml").string()).find("\nstatus: 3\n") != std::string::npos);
  const std::string yaml = read_file((trainer.callback<CSVLogger>().log_dir() / "hparams.yaml").string());
  CHECK(yaml == "\"eps\": 1.0e-08\n\"lr\": 3.0\n");
}

TEST_CASE("counters: global_step counts optimizer steps, batches are counted separately; accumulation") {
  auto train = linear_data(5);
  Regression net;
  Trainer trainer(quiet().max_epochs(2).accumulate_grad_batches(2));
  trainer.fit(net, train);
  // 5 batches per epoch with windows of 2: steps after batches 2, 4 and 5 (the epoch's last batch closes a window).
  CHECK(trainer.global_step() == 6);
  CHECK(trainer.total_batches() == 10);

  // Accumulating 2 batches of 4 equals one batch of 8 (the loss is divided by the window length).
  auto halves = linear_data(2, 4, 3);
  std::vector<Batch> whole{{torch::cat({halves[0].first, halves[1].first}), torch::cat({halves[0].second, halves[1].second})}};
  torch::manual_seed(1);
  Regression a;
  torch::manual_seed(1);
  Regression b;
  Trainer(quiet().max_epochs(1).accumulate_grad_batches(2)).fit(a, halves);
  Trainer(quiet().max_epochs(1)).fit(b, whole);
  CHECK(torch::allclose(a.fc->weight, b.fc->weight, 1e-5, 1e-6));
}

TEST_CASE("limits: max_steps, limit_train_batches (count and fraction), fast_dev_run, overfit_batches") {
  auto train = linear_data(10);
  auto val = linear_data(4, 8, 1);
  {
    Regression net;
    Trainer trainer(quiet().max_steps(7));
    trainer.fit(net, train);
    CHECK(trainer.global_step() == 7);  // stops inside the 1st epoch of 10 batches... no: inside the 1st epoch
    CHECK(trainer.current_epoch() == 1);
  }
  {
    Regression net;
    Trainer trainer(quiet().max_epochs(3).limit_train_batches(4));
    trainer.fit(net, train);
    CHECK(trainer.total_batches() == 12);
    Trainer fraction(quiet().max_epochs(1).limit_train_batches(0.5).limit_val_batches(1).num_sanity_val_steps(0));
    fraction.fit(net, train, val);
    CHECK(fraction.total_batches() == 5);
    CHECK(fraction.num_val_batches() == 1);
  }
  {
    Regression net;
    Trainer trainer(quiet().fast_dev_run(2).max_epochs(10));
    trainer.fit(net, train, val);
    CHECK(trainer.total_batches() == 2);
    CHECK(net.validation_batches == 2);  // no sanity check, 2 validation batches
  }
  {
    Regression net;
    Trainer trainer(quiet().overfit_batches(3).max_epochs(2).num_sanity_val_steps(0));
    trainer.fit(net, train, val);
    CHECK(trainer.total_batches() == 6);
    CHECK(net.validation_batches == 6);  // validated on the same 3 training batches
  }
}

TEST_CASE("an evaluation ends at its data's end when the limit is larger, sized or not (Lightning's rule)") {
  const auto batches = linear_data(3, 8, 2);
  auto one_pass_generator = [&batches] {  // unsized: a generator, std::nullopt after the 3 batches
    return [&batches, next = std::size_t{0}]() mutable -> std::optional<Batch> {
      if (next == batches.size()) return std::nullopt;
      return batches[next++];
    };
  };
  Regression net;
  Trainer trainer(quiet().limit_val_batches(10).limit_test_batches(10).limit_predict_batches(10));
  trainer.validate(net, one_pass_generator());
  CHECK(net.validation_batches == 3);  // not 10: no second pass over the data
  const auto sized = trainer.test(net, batches);
  CHECK(net.test_batches == 3);
  CHECK(trainer.num_test_batches() == 3);
  CHECK(sized.count("test_loss") == 1);
  CHECK(trainer.predict(net, one_pass_generator()).size() == 3);
}

TEST_CASE("validation cadence: check_val_every_n_epoch, val_check_interval in steps, limit_val_batches(0)") {
  auto train = linear_data(4);
  auto val = linear_data(2, 8, 1);
  {
    Regression net;
    Trainer(quiet().max_epochs(4).check_val_every_n_epoch(2).num_sanity_val_steps(0)).fit(net, train, val);
    CHECK(net.validation_batches == 2 * 2);  // epochs 2 and 4
  }
  {
    Regression net;
    Trainer(quiet().max_epochs(2).val_check_interval(3).num_sanity_val_steps(0)).fit(net, train, val);
    CHECK(net.validation_batches == 2 * 2);  // steps 3 and 6 of 8, across the epoch boundary
  }
  {
    Regression net;
    Trainer(quiet().max_epochs(2).limit_val_batches(0)).fit(net, train, val);
    CHECK(net.validation_batches == 0);
  }
}

namespace {
struct StopAtEpoch {  // asks to stop at the end of every epoch, as early stopping would
  template <class T, class M>
  void on_train_epoch_end(T& trainer, M&) {
    trainer.should_stop(true);
  }
};
}  // namespace

TEST_CASE("should_stop is honoured once min_epochs is reached; max_time stops too") {
  auto train = linear_data(3);
  Regression net;
  Trainer trainer(quiet().max_epochs(10).min_epochs(3), StopAtEpoch{});
  trainer.fit(net, train);
  CHECK(trainer.current_epoch() == 3);

  Trainer timed(quiet().max_epochs(-1).max_time(std::chrono::milliseconds(50)));
  Regression slow;
  const auto start = std::chrono::steady_clock::now();
  timed.fit(slow, train);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(seconds >= 0.05);
  CHECK(seconds < 30);
}

TEST_CASE("gradient clipping by value and by norm happens on the device, before the step") {
  auto train = linear_data(1);
  train[0].second = train[0].second * 1000;  // huge gradients
  // With SGD at lr 1 the parameter change is the clipped gradient: each component within 0.5 (by value), or a
  // total norm of 0.5 (by norm).
  Regression by_value;
  by_value.lr = 1.0;
  const auto before = parameters_of(by_value);
  Trainer(quiet().max_epochs(1).gradient_clip_val(0.5).gradient_clip_algorithm(ClipAlgorithm::value)).fit(by_value, train);
  const auto after = parameters_of(by_value);
  for (std::size_t i = 0; i < before.size(); ++i) CHECK((before[i] - after[i]).abs().max().item<double>() <= 0.5 + 1e-6);

  Regression by_norm;
  by_norm.lr = 1.0;
  const auto before_norm = parameters_of(by_norm);
  Trainer(quiet().max_epochs(1).gradient_clip_val(0.5)).fit(by_norm, train);
  const auto after_norm = parameters_of(by_norm);
  double squared = 0;
  for (std::size_t i = 0; i < before_norm.size(); ++i) squared += (before_norm[i] - after_norm[i]).pow(2).sum().item<double>();
  CHECK(std::sqrt(squared) == doctest::Approx(0.5).epsilon(1e-3));
}

namespace {
struct Manual : LightningModule<Manual> {
  torch::nn::Linear a{nullptr}, b{nullptr};
  int steps_seen = 0;
  Manual() {
    a = register_module("a", torch::nn::Linear(2, 1));
    b = register_module("b", torch::nn::Linear(2, 1));
    automatic_optimization(false);
  }
  void training_step(Batch& batch, std::int64_t) {
    // Two optimizers stepped by hand, one after the other (a GAN's shape).
    auto& opts = optimizers();
    for (std::size_t i = 0; i < opts.size(); ++i) {
      optimizer_zero_grad(*opts[i]);
      torch::Tensor loss = torch::mse_loss((i == 0 ? a : b)(batch.first), batch.second);
      manual_backward(loss);
      optimizer_step(*opts[i]);
    }
  }
  Optimizers configure_optimizers() {
    return {std::make_shared<torch::optim::SGD>(a->parameters(), torch::optim::SGDOptions(0.05)),
            std::make_shared<torch::optim::SGD>(b->parameters(), torch::optim::SGDOptions(0.05))};
  }
};
struct CountSteps {
  int before_step = 0, before_backward = 0;
  template <class T, class M>
  void on_before_optimizer_step(T&, M&, torch::optim::Optimizer&) {
    ++before_step;
  }
  template <class T, class M>
  void on_before_backward(T&, M&, torch::Tensor&) {
    ++before_backward;
  }
};
}  // namespace

TEST_CASE("manual optimisation: several optimizers, hooks fire, global_step counts each step") {
  auto train = linear_data(4);
  Manual net;
  Trainer trainer(quiet().max_epochs(2), CountSteps{});
  trainer.fit(net, train);
  CHECK(trainer.global_step() == 16);
  CHECK(trainer.callback<CountSteps>().before_step == 16);
  CHECK(trainer.callback<CountSteps>().before_backward == 16);
  CHECK(net.a->weight[0][0].item<double>() == doctest::Approx(net.b->weight[0][0].item<double>()).epsilon(0.2));
}

namespace {
struct CountingScheduler {
  int steps = 0;
  void step() { ++steps; }
};
struct Scheduled : Regression {
  std::shared_ptr<CountingScheduler> counter = std::make_shared<CountingScheduler>();
  Interval interval = Interval::epoch;
  std::int64_t frequency = 1;
  OptimizerConfig configure_optimizers() {
    return OptimizerConfig(std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.05)))
        .scheduler(SchedulerConfig(counter).interval(interval).frequency(frequency));
  }
};
struct WithStepLR : Regression {
  std::shared_ptr<torch::optim::SGD> optimizer;
  OptimizerConfig configure_optimizers() {
    optimizer = std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(1.0));
    return OptimizerConfig(optimizer).scheduler(std::make_shared<torch::optim::StepLR>(*optimizer, 1, 0.5));
  }
};
struct Plateau {
  std::vector<double> seen;
  void step(double metric) { seen.push_back(metric); }
};
struct Monitored : Regression {
  std::shared_ptr<Plateau> plateau = std::make_shared<Plateau>();
  std::string monitor = "val_loss";
  OptimizerConfig configure_optimizers() {
    return OptimizerConfig(std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.05)))
        .scheduler(SchedulerConfig(plateau).monitor(monitor));
  }
};
double lr_of(torch::optim::Optimizer& o) { return o.param_groups()[0].options().get_lr(); }
}  // namespace

TEST_CASE("schedulers: per epoch, per step, on a monitored metric") {
  auto train = linear_data(3);
  auto val = linear_data(1, 8, 1);
  Scheduled per_epoch;
  Trainer(quiet().max_epochs(3)).fit(per_epoch, train);
  CHECK(per_epoch.counter->steps == 3);
  Scheduled per_step;
  per_step.interval = Interval::step;
  Trainer(quiet().max_epochs(2)).fit(per_step, train);
  CHECK(per_step.counter->steps == 6);
  Scheduled every_second_step;
  every_second_step.interval = Interval::step;
  every_second_step.frequency = 2;
  Trainer(quiet().max_epochs(2)).fit(every_second_step, train);
  CHECK(every_second_step.counter->steps == 3);
  // LibTorch's own StepLR works as is. (Its first step() only counts: Python's constructor makes that call, the C++
  // one does not, so 3 epochs halve the rate twice.)
  WithStepLR step_lr;
  Trainer(quiet().max_epochs(3)).fit(step_lr, train);
  CHECK(lr_of(*step_lr.optimizer) == doctest::Approx(0.25));
  Monitored monitored;
  Trainer(quiet().max_epochs(2).num_sanity_val_steps(0)).fit(monitored, train, val);
  REQUIRE(monitored.plateau->seen.size() == 2);
  CHECK(monitored.plateau->seen[1] < monitored.plateau->seen[0]);
  Monitored missing;
  missing.monitor = "nope";
  CHECK_THROWS_WITH_AS(Trainer(quiet().max_epochs(1)).fit(missing, train, val),
                       doctest::Contains("monitors 'nope', which was not logged (logged: train_loss, val_loss)"),
                       std::runtime_error);
}

namespace {
struct NoOptimizer : LightningModule<NoOptimizer> {
  torch::nn::Linear fc{nullptr};
  NoOptimizer() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  torch::Tensor training_step(Batch& b, std::int64_t) { return torch::mse_loss(fc(b.first), b.second); }
};
struct BadLoss : Regression {
  int mode = 0;
  torch::Tensor training_step(Batch& b, std::int64_t) {
    if (mode == 0) return {};
    if (mode == 1) return (forward(b.first) - b.second).pow(2);  // not reduced
    return torch::mse_loss(forward(b.first), b.second).detach();
  }
};
}  // namespace

TEST_CASE("misconfiguration gets errors that say what to change") {
  auto train = linear_data(2);
  NoOptimizer none;
  CHECK_THROWS_WITH_AS(Trainer(quiet()).fit(none, train),
                       doctest::Contains("has no optimizer: its configure_optimizers() must return one"),
                       std::invalid_argument);
  BadLoss bad;
  CHECK_THROWS_WITH_AS(Trainer(quiet()).fit(bad, train), doctest::Contains("returned an undefined loss tensor"),
                       std::runtime_error);
  bad.mode = 1;
  CHECK_THROWS_WITH_AS(Trainer(quiet()).fit(bad, train),
                       doctest::Contains("training_step at epoch 0, batch 0 returned a loss of shape [8, 1]"),
                       std::runtime_error);
  bad.mode = 2;
  CHECK_THROWS_WITH_AS(Trainer(quiet()).fit(bad, train), doctest::Contains("does not require grad"), std::runtime_error);
  CHECK_THROWS_WITH_AS(Trainer(TrainerOptions().max_epochs(2).min_epochs(3)),
                       "trainloop: TrainerOptions().min_epochs(3) exceeds max_epochs(2)", std::invalid_argument);
  CHECK_THROWS_WITH_AS(Trainer(TrainerOptions().val_check_interval(1.5)),
                       doctest::Contains("val_check_interval(f): a fraction must be in (0, 1]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Trainer(TrainerOptions().barebones(true).enable_progress_bar(true)),
                       doctest::Contains("barebones(true) turns the progress bar off"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Trainer(TrainerOptions().limit_train_batches(1.5)),
                       doctest::Contains("limit_train_batches(f): a fraction must be in [0, 1]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Trainer(quiet().accelerator("tpu")).fit(none, train),
                       doctest::Contains("accelerator(\"tpu\"): unknown accelerator"), std::invalid_argument);
  if (!torch::cuda::is_available())
    CHECK_THROWS_WITH_AS(Trainer(quiet().accelerator("cuda")).fit(none, train),
                         doctest::Contains("CUDA is not available"), std::invalid_argument);
}

namespace {
struct Throws : Regression {
  torch::Tensor training_step(Batch&, std::int64_t i) {
    if (i == 1) throw std::runtime_error("step failed");
    return torch::zeros({}, torch::requires_grad());
  }
};
struct SeesException {
  int calls = 0;
  template <class T, class M>
  void on_exception(T&, M&, std::exception_ptr error) {
    calls += error != nullptr;
  }
};
}  // namespace

TEST_CASE("an exception in fit reaches on_exception, then the caller; the module is detached") {
  auto train = linear_data(3);
  Throws net;
  Trainer trainer(quiet(), SeesException{});
  CHECK_THROWS_WITH_AS(trainer.fit(net, train), "step failed", std::runtime_error);
  CHECK(trainer.callback<SeesException>().calls == 1);
  CHECK_THROWS_AS(net.log("x", 1.0), std::logic_error);
}

namespace {
// Its sanity check fails: in on_validation_model_eval (before any batch) or in the second validation step.
struct FailsInSanityCheck : Regression {
  bool fail_in_mode_hook = true;
  void on_validation_model_eval() {
    if (fail_in_mode_hook) throw std::runtime_error("eval hook failed");
    eval();
  }
  void validation_step(Batch& b, std::int64_t batch_idx) {
    Regression::validation_step(b, batch_idx);
    if (batch_idx == 1) throw std::runtime_error("validation step failed");
  }
};
}  // namespace

TEST_CASE("a failing evaluation leaves the trainer as it was: stage, sanity check flag, callback_metrics, mode") {
  const auto train = linear_data(2), val = linear_data(3, 8, 1);
  for (const bool in_mode_hook : {true, false}) {
    CAPTURE(in_mode_hook);
    FailsInSanityCheck net;
    net.fail_in_mode_hook = in_mode_hook;
    Trainer trainer(quiet());
    CHECK_THROWS_WITH_AS(trainer.fit(net, train, val), in_mode_hook ? "eval hook failed" : "validation step failed",
                         std::runtime_error);
    CHECK(trainer.stage() == Stage::train);
    CHECK_FALSE(trainer.sanity_checking());
    CHECK(trainer.callback_metrics().empty());  // the first step's val_loss was the sanity check's, not a result
    CHECK(net.is_training());
    CHECK(net.validation_batches == (in_mode_hook ? 0 : 2));
  }
}

TEST_CASE("the progress bar writes plain lines when not on a terminal; the model summary counts parameters") {
  TempDir dir;
  const std::string path = dir.file("bar.txt");
  std::FILE* file = std::fopen(path.c_str(), "w");
  REQUIRE(file);
  ProgressBar::Options bar_options;
  bar_options.stream = file;
  auto train = linear_data(8);
  auto val = linear_data(2, 8, 1);
  Regression net;
  Trainer trainer(quiet().max_epochs(2).num_sanity_val_steps(0), ProgressBar(bar_options), ModelSummary(file));
  trainer.fit(net, train, val);
  std::fclose(file);
  const std::string text = read_file(path);
  CHECK(text.find("0 | fc   | Linear | 3") != std::string::npos);
  CHECK(text.find("3          Total params") != std::string::npos);
  CHECK(text.find("Epoch 1/2:  25% 2/8 [") != std::string::npos);
  CHECK(text.find("Epoch 2/2: 100% 8/8 [") != std::string::npos);
  CHECK(text.find("Validation: 100% 2/2 [") != std::string::npos);
  CHECK(text.find("train_loss=") != std::string::npos);
  CHECK(text.find("\r") == std::string::npos);  // no carriage returns in plain mode

  const auto summary = ModelSummary::summarize(net);
  CHECK(summary.trainable == 3);
  CHECK(summary.rows.at(0).type == "Linear");
  CHECK(ModelSummary::human(101770) == "101.8 K");
}

TEST_CASE("batches are moved with to_device whatever their shape; data by value is kept for the whole fit") {
  using Nested = std::tuple<torch::Tensor, std::vector<torch::Tensor>, std::map<std::string, torch::Tensor>, int>;
  Nested nested{torch::ones({1}), {torch::ones({1})}, {{"k", torch::ones({1})}}, 3};
  Nested moved = trainloop::detail::to_device(nested, torch::Device(torch::kCPU));
  CHECK(std::get<3>(moved) == 3);
  CHECK(std::get<0>(moved).is_same(std::get<0>(nested)));  // already there: the same tensor, no copy

  Regression net;
  Trainer trainer(quiet().max_epochs(2));
  trainer.fit(net, linear_data(3));  // an rvalue: the Trainer holds it across epochs
  CHECK(trainer.total_batches() == 6);
}

TEST_CASE("LibTorch's torch::data loaders feed fit and test, epoch after epoch") {
  auto examples = linear_data(1, 40);
  auto dataset = torch::data::datasets::TensorDataset(torch::cat({examples[0].first, examples[0].second}, 1))
                     .map(torch::data::transforms::Stack<torch::data::TensorExample>());
  auto loader = torch::data::make_data_loader<torch::data::samplers::RandomSampler>(
      std::move(dataset), torch::data::DataLoaderOptions().batch_size(8));
  struct FromLoader : LightningModule<FromLoader> {
    torch::nn::Linear fc{nullptr};
    FromLoader() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
    torch::Tensor loss(torch::data::TensorExample& b) {
      return torch::mse_loss(fc(b.data.slice(1, 0, 2)), b.data.slice(1, 2, 3));
    }
    torch::Tensor training_step(torch::data::TensorExample& b, std::int64_t) { return loss(b); }
    void test_step(torch::data::TensorExample& b, std::int64_t) { log("test_loss", loss(b)); }
    std::shared_ptr<torch::optim::SGD> configure_optimizers() {
      return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.05));
    }
  };
  FromLoader net;
  Trainer trainer(quiet().max_epochs(30));
  trainer.fit(net, *loader);
  CHECK(trainer.total_batches() == 30 * 5);
  CHECK(trainer.num_training_batches() == 5);  // learnt from the first pass: the loader has no size()
  CHECK(trainer.test(net, *loader).at("test_loss") < 0.1);
}

TEST_CASE("the progress bar on a terminal redraws one line in place, with a bar") {
  TempDir dir;
  const std::string path = dir.file("tty.txt");
  std::FILE* file = std::fopen(path.c_str(), "w");
  REQUIRE(file);
  ProgressBar::Options bar_options;
  bar_options.stream = file;
  bar_options.terminal = true;
  bar_options.refresh_seconds = 0;  // draw every batch
  Regression net;
  Trainer(quiet().max_epochs(1), ProgressBar(bar_options)).fit(net, linear_data(4), linear_data(2, 8, 1));
  std::fclose(file);
  const std::string text = read_file(path);
  CHECK(text.find("\r\033[KEpoch 1/1:  50%|") != std::string::npos);
  CHECK(text.find("\u2588") != std::string::npos);                  // the bar's full blocks
  CHECK(text.find("\r\033[K\033[1A") != std::string::npos);          // a finished validation bar is cleared
  CHECK(text.find("Epoch 1/1: 100%|") != std::string::npos);
  CHECK(text.back() == '\n');                                        // the epoch's final line stays
}
