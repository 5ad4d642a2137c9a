// EarlyStopping and TerminateOnNan, as Trainer callbacks and as Engine handlers.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <cmath>
#include <filesystem>
#include <vector>

#include "temp_dir.hpp"

using namespace trainloop;
using Batch = std::pair<torch::Tensor, torch::Tensor>;

namespace {
EarlyStopping::Options monitor(const std::string& name) {
  EarlyStopping::Options o;
  o.monitor = name;
  return o;
}
std::vector<Batch> some_batches(int n) {
  std::vector<Batch> data;
  for (int i = 0; i < n; ++i) data.emplace_back(torch::randn({4, 2}), torch::randn({4, 1}));
  return data;
}
TrainerOptions quiet() {
  return TrainerOptions().accelerator("cpu").enable_progress_bar(false).enable_model_summary(false).num_sanity_val_steps(0);
}

// Logs a val_loss that follows a script, one value per validation.
struct Scripted : LightningModule<Scripted> {
  torch::nn::Linear fc{nullptr};
  std::vector<double> script;
  std::size_t next = 0;
  int nan_at_batch = -1;
  Scripted() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  torch::Tensor training_step(Batch& b, std::int64_t i) {
    torch::Tensor loss = torch::mse_loss(fc(b.first), b.second);
    return i == nan_at_batch ? loss * std::numeric_limits<double>::quiet_NaN() : loss;
  }
  void validation_step(Batch&, std::int64_t i) {
    if (i == 0) log("val_loss", script.at(std::min(next++, script.size() - 1)));
  }
  std::shared_ptr<torch::optim::SGD> configure_optimizers() {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.01));
  }
};
}  // namespace

TEST_CASE("EarlyStopping: patience in checks, min_delta, thresholds, finiteness, state") {
  auto options = monitor("val_loss");
  options.patience = 2;
  options.min_delta = 0.1;
  EarlyStopping early(options);
  CHECK_FALSE(early.check(1.0));   // the first value is the best so far
  CHECK_FALSE(early.check(0.95));  // not better by more than 0.1: 1 check without improvement
  CHECK_FALSE(early.check(0.85));  // better than 1.0 - 0.1: best 0.85, count reset
  CHECK_FALSE(early.check(0.8));   // 1
  CHECK(early.check(0.79));        // 2 = patience: stop
  CHECK(early.reason() == "val_loss did not improve by more than 0.1 in 2 checks; best 0.85");
  const StateDict saved = early.state_dict();
  EarlyStopping restored(options);
  restored.load_state_dict(saved);
  CHECK(restored.wait_count() == 2);
  CHECK(*restored.best_score() == 0.85);

  auto thresholds = monitor("val_loss");
  thresholds.stopping_threshold = 0.5;
  thresholds.divergence_threshold = 10.0;
  EarlyStopping good_enough(thresholds), hopeless(thresholds), broken(thresholds);
  CHECK(good_enough.check(0.4));
  CHECK(good_enough.reason() == "val_loss = 0.4 reached the stopping threshold 0.5");
  CHECK(hopeless.check(11));
  CHECK(hopeless.reason() == "val_loss = 11 crossed the divergence threshold 10");
  CHECK(broken.check(std::nan("")));
  CHECK(broken.reason() == "monitored metric val_loss = nan is not finite");
  auto maximize = monitor("acc");
  maximize.mode = EarlyStopping::Mode::max;
  maximize.patience = 1;
  EarlyStopping rising(maximize);
  CHECK_FALSE(rising.check(0.5));
  CHECK_FALSE(rising.check(0.6));
  CHECK(rising.check(0.6));
}

TEST_CASE("EarlyStopping in the Trainer: stops after patience validations, not before min_epochs") {
  auto data = some_batches(2);
  auto options = monitor("val_loss");
  options.patience = 2;
  Scripted flat;
  flat.script = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0};
  Trainer trainer(quiet().max_epochs(10), EarlyStopping(options));
  trainer.fit(flat, data, data);
  CHECK(trainer.current_epoch() == 3);  // best at 1, no improvement at 2 and 3
  CHECK(trainer.callback<EarlyStopping>().stopped());

  Scripted held;
  held.script = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0};
  Trainer patient(quiet().max_epochs(10).min_epochs(5), EarlyStopping(options));
  patient.fit(held, data, data);
  CHECK(patient.current_epoch() == 5);

  Scripted unlogged;
  Trainer wrong(quiet().max_epochs(2), EarlyStopping(monitor("val_acc")));
  unlogged.script = {1.0};
  CHECK_THROWS_WITH_AS(wrong.fit(unlogged, data, data),
                       "trainloop: EarlyStopping monitors 'val_acc', which was not logged (logged: val_loss)",
                       std::runtime_error);
}

TEST_CASE("EarlyStopping as an Engine handler stops the trainer Engine from its evaluator") {
  std::vector<int> data{1, 2, 3};
  double score = 1.0;
  auto trainer = make_engine<int>([](int&) {});
  auto options = monitor("loss");
  options.patience = 2;
  auto evaluator = make_engine<int>([](int&) {}, on(Events::completed, [&](auto& e) { e.state.metrics["loss"] = score; }),
                                    EarlyStopping(options).stops(trainer));
  trainer.on(Events::epoch_completed, [&] { evaluator.run(data); });
  trainer.run(data, max_epochs(20));
  CHECK(trainer.state.epoch == 3);
  CHECK(trainer.state.fired(Event::terminate) == 1);
}

TEST_CASE("TerminateOnNan stops the Trainer at a NaN loss, and an Engine at a NaN output, naming the step") {
  auto data = some_batches(5);
  Scripted net;
  net.nan_at_batch = 2;
  Trainer trainer(quiet().max_epochs(3), TerminateOnNan{});
  trainer.fit(net, data);
  CHECK(trainer.callback<TerminateOnNan>().triggered());
  CHECK(trainer.callback<TerminateOnNan>().message() ==
        "trainloop: TerminateOnNan: the output of iteration 3 (epoch 1, its batch 3) is nan; stopping");
  CHECK(trainer.total_batches() == 3);  // the rest of the epoch and the later epochs did not run
  CHECK(trainer.global_step() == 3);

  std::vector<double> values{1.0, 2.0, std::numeric_limits<double>::infinity(), 4.0};
  auto engine = make_engine<double>([](double& v) { return torch::tensor({v, 0.0}); }, TerminateOnNan{});
  engine.run(values);
  CHECK(engine.state.iteration == 3);
  CHECK(engine.handler<TerminateOnNan>().message() ==
        "trainloop: TerminateOnNan: the output of iteration 3 (epoch 1, its batch 3) is inf; stopping");
}

namespace {
// Logs a scripted val_loss; the model itself trains normally.
ModelCheckpoint::Options checkpoints_in(const std::string& dir) {
  ModelCheckpoint::Options o;
  o.dirpath = dir;
  return o;
}
}  // namespace

TEST_CASE("ModelCheckpoint: filename template, top-k by a monitored metric, last, best, and resuming from them") {
  TempDir dir;
  auto data = some_batches(3);
  auto options = checkpoints_in(dir.file("ckpt"));
  options.monitor = "val_loss";
  options.save_top_k = 2;
  options.save_last = true;
  options.filename = "epoch={epoch}-val_loss={val_loss:.2f}";
  Scripted net;
  net.script = {0.5, 0.3, 0.4, 0.2, 0.6};
  Trainer trainer(quiet().max_epochs(5), ModelCheckpoint(options));
  trainer.fit(net, data, data);
  const auto& checkpoint = trainer.callback<ModelCheckpoint>();
  // The two lowest val_loss values were 0.2 (epoch 3) and 0.3 (epoch 1); the others were deleted.
  CHECK(std::filesystem::exists(dir.file("ckpt/epoch=3-val_loss=0.20.ckpt")));
  CHECK(std::filesystem::exists(dir.file("ckpt/epoch=1-val_loss=0.30.ckpt")));
  CHECK_FALSE(std::filesystem::exists(dir.file("ckpt/epoch=0-val_loss=0.50.ckpt")));
  CHECK_FALSE(std::filesystem::exists(dir.file("ckpt/epoch=2-val_loss=0.40.ckpt")));
  CHECK(checkpoint.kept().size() == 2);
  CHECK(checkpoint.best_model_path() == dir.file("ckpt/epoch=3-val_loss=0.20.ckpt"));
  CHECK(*checkpoint.best_model_score() == doctest::Approx(0.2));
  CHECK(checkpoint.last_model_path() == dir.file("ckpt/last.ckpt"));

  // "best" resumes from epoch 3's checkpoint: one more epoch to reach max_epochs 5.
  Scripted again;
  again.script = {0.1};
  Trainer more(quiet().max_epochs(5), ModelCheckpoint(options));
  more.callback<ModelCheckpoint>().load_state_dict(checkpoint.state_dict());
  more.fit(again, data, data, "best");
  CHECK(more.total_batches() == 5 * 3);  // 4 epochs restored, 1 run
  CHECK(more.global_step() == 15);

  CHECK_THROWS_WITH_AS(Trainer(quiet(), ModelCheckpoint(options)).fit(again, data, data, "last"),
                       doctest::Contains("no ModelCheckpoint in this Trainer has written a last checkpoint yet"),
                       std::invalid_argument);
  ModelCheckpoint blocked(checkpoints_in("/dev/null/ckpt"));
  CHECK_THROWS_WITH_AS(Trainer(quiet(), std::move(blocked)).fit(again, data),
                       doctest::Contains("ModelCheckpoint: cannot write checkpoints to '/dev/null/ckpt'"), std::runtime_error);
  Trainer idle(quiet());
  CHECK_THROWS_AS(idle.save_checkpoint(dir.file("x.ckpt")), std::logic_error);
  CHECK(ModelCheckpoint::format_filename("e{epoch}-{acc:.3f}", {{"epoch", 2}, {"acc", 0.91234}}) == "e2-0.912");
}

TEST_CASE("ModelCheckpoint without a monitor keeps the latest, by steps, weights only") {
  TempDir dir;
  auto options = checkpoints_in(dir.file("ckpt"));
  options.every_n_train_steps = 2;
  options.save_weights_only = true;
  Scripted net;
  Trainer trainer(quiet().max_epochs(2), ModelCheckpoint(options));
  trainer.fit(net, some_batches(3));
  const auto& kept = trainer.callback<ModelCheckpoint>().kept();
  REQUIRE(kept.size() == 1);
  CHECK(kept.front().first == dir.file("ckpt/epoch=1-step=6.ckpt"));
  struct Plain : torch::nn::Module {  // the same names as the LightningModule, nothing else
    torch::nn::Linear fc{nullptr};
    Plain() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  } plain;
  load_checkpoint(kept.front().first, plain);  // weights only: loads into a plain module
  CHECK(torch::equal(plain.fc->weight, net.fc->weight));
}
