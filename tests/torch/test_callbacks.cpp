// EarlyStopping and TerminateOnNan, as Trainer callbacks and as Engine handlers.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <cmath>
#include <algorithm>
#include <filesystem>
#include <vector>

#include "fixtures.hpp"
#include "temp_dir.hpp"

using namespace trainloop;

namespace {
// No sanity check: these tests count validations.
TrainerOptions fit_options() { return quiet().num_sanity_val_steps(0); }
EarlyStopping::Options monitor(const std::string& name) {
  EarlyStopping::Options o;
  o.monitor = name;
  return o;
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
  auto data = batches(2, 2);
  auto options = monitor("val_loss");
  options.patience = 2;
  Scripted flat;
  flat.script = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0};
  Trainer trainer(fit_options().max_epochs(10), EarlyStopping(options));
  trainer.fit(flat, data, data);
  CHECK(trainer.current_epoch() == 3);  // best at 1, no improvement at 2 and 3
  CHECK(trainer.callback<EarlyStopping>().stopped());

  Scripted held;
  held.script = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0};
  Trainer patient(fit_options().max_epochs(10).min_epochs(5), EarlyStopping(options));
  patient.fit(held, data, data);
  CHECK(patient.current_epoch() == 5);

  Scripted unlogged;
  Trainer wrong(fit_options().max_epochs(2), EarlyStopping(monitor("val_acc")));
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
  auto data = batches(5, 2);
  Scripted net;
  net.nan_at_batch = 2;
  Trainer trainer(fit_options().max_epochs(3), TerminateOnNan{});
  trainer.fit(net, data);
  CHECK(trainer.callback<TerminateOnNan>().triggered());
  CHECK(trainer.callback<TerminateOnNan>().message() ==
        "trainloop: TerminateOnNan: the loss of epoch 0, batch 2 (global step 3) is nan; stopping");
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

TEST_CASE("ModelCheckpoint: the top k by a monitored metric under a filename template, then \"best\" and \"last\" resumed") {
  TempDir dir;
  auto data = batches(3, 2);
  auto options = checkpoints_in(dir.file("ckpt"));
  options.monitor = "val_loss";
  options.save_top_k = 2;
  options.save_last = true;
  options.filename = "epoch={epoch}-val_loss={val_loss:.2f}";
  Scripted net;
  net.script = {0.5, 0.3, 0.4, 0.2, 0.6};
  Trainer trainer(fit_options().max_epochs(5), ModelCheckpoint(options));
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

  SUBCASE("\"best\" from the callback's state resumes from epoch 3's checkpoint: one epoch more to reach 5") {
    Scripted again;
    again.script = {0.1};
    Trainer more(fit_options().max_epochs(5), ModelCheckpoint(options));
    more.callback<ModelCheckpoint>().load_state_dict(checkpoint.state_dict());
    more.fit(again, data, data, "best");
    CHECK(more.total_batches() == 5 * 3);  // 4 epochs restored, 1 run
    CHECK(more.global_step() == 15);
  }
  SUBCASE("a fresh process finds \"best\" and \"last\" in the folder, as after a crash") {
    Trainer fresh(fit_options().max_epochs(6), ModelCheckpoint(options));
    Scripted third;
    third.script = {0.05};
    fresh.fit(third, data, data, "best");  // the best last.ckpt records (epoch 3, val_loss 0.2): epochs 4 and 5 run
    CHECK(fresh.total_batches() == 6 * 3);
    Trainer fresh_last(fit_options().max_epochs(7), ModelCheckpoint(options));
    fresh_last.fit(third, data, data, "last");  // the previous fit's last.ckpt (6 epochs): one more
    CHECK(fresh_last.total_batches() == 7 * 3);
  }
}

TEST_CASE("ModelCheckpoint: \"last\" with nothing to resume, an unwritable folder, a save before fit: errors saying why") {
  TempDir dir;
  auto data = batches(3, 2);
  Scripted net;
  auto empty = checkpoints_in(dir.file("empty"));
  CHECK_THROWS_WITH_AS(Trainer(fit_options(), ModelCheckpoint(empty)).fit(net, data, data, "last"),
                       contains("no last checkpoint in '" + dir.file("empty") + "'"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Trainer(fit_options()).fit(net, data, data, "last"),
                       doctest::Contains("there is no ModelCheckpoint in this Trainer"), std::invalid_argument);
  ModelCheckpoint blocked(checkpoints_in("/dev/null/ckpt"));
  CHECK_THROWS_WITH_AS(Trainer(fit_options(), std::move(blocked)).fit(net, data),
                       doctest::Contains("ModelCheckpoint: cannot write checkpoints to '/dev/null/ckpt'"), std::runtime_error);
  Trainer idle(fit_options());
  CHECK_THROWS_AS(idle.save_checkpoint(dir.file("x.ckpt")), std::logic_error);
}

TEST_CASE("ModelCheckpoint::format_filename fills the template's fields, with their formats") {
  CHECK(ModelCheckpoint::format_filename("e{epoch}-{acc:.3f}", {{"epoch", 2}, {"acc", 0.91234}}) == "e2-0.912");
}

TEST_CASE("ModelCheckpoint without a monitor keeps the latest, by steps, weights only") {
  TempDir dir;
  auto options = checkpoints_in(dir.file("ckpt"));
  options.every_n_train_steps = 2;
  options.save_weights_only = true;
  Scripted net;
  Trainer trainer(fit_options().max_epochs(2), ModelCheckpoint(options));
  trainer.fit(net, batches(3, 2));
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

namespace {
// Saves a checkpoint in on_train_end and on_fit_end, when the training Engine is already gone.
struct SaveAtEnd {
  std::string dir;
  template <class T, class M>
  void on_train_end(T& trainer, M&) {
    trainer.save_checkpoint(dir + "/train_end.ckpt");
  }
  template <class T, class M>
  void on_fit_end(T& trainer, M&) {
    trainer.save_checkpoint(dir + "/fit_end.ckpt");
  }
};
}  // namespace

TEST_CASE("checkpoints written at on_train_end, on_fit_end and after fit hold the finished loop") {
  TempDir dir;
  auto data = batches(3, 2);
  Scripted net;
  Trainer trainer(fit_options().max_epochs(2), SaveAtEnd{dir.path.string()});
  trainer.fit(net, data);
  trainer.save_checkpoint(dir.file("after.ckpt"));
  for (const char* name : {"train_end.ckpt", "fit_end.ckpt", "after.ckpt"}) {
    CAPTURE(name);
    const auto states = read_checkpoint_states(dir.file(name));
    CHECK(std::get<std::int64_t>(states.at("loop").at("epoch")) == 2);
    CHECK(std::get<std::int64_t>(states.at("loop").at("in_epoch")) == 0);
    CHECK(std::get<std::int64_t>(states.at("trainer").at("global_step")) == 6);
  }
  // Resuming the finished fit with a larger max_epochs continues it: 2 more epochs.
  Scripted more;
  Trainer longer(fit_options().max_epochs(4));
  longer.fit(more, data, dir.file("after.ckpt"));
  CHECK(longer.global_step() == 12);
  CHECK(longer.current_epoch() == 4);
}

TEST_CASE("a NaN loss never replaces the last finite checkpoint") {
  TempDir dir;
  auto data = batches(5, 2);
  auto options = checkpoints_in(dir.file("ckpt"));
  options.every_n_train_steps = 1;
  options.save_top_k = 0;
  options.save_last = true;
  const std::string last = dir.file("ckpt/last.ckpt");
  auto last_weight = [&] {
    Scripted probe;
    load_checkpoint(last, probe, {std::make_shared<torch::optim::SGD>(probe.parameters(), torch::optim::SGDOptions(0.01))});
    return probe.fc->weight.clone();
  };

  SUBCASE("with TerminateOnNan: the fit stops cleanly, last.ckpt holds step 2") {
    Scripted net;
    net.nan_at_batch = 2;
    Trainer trainer(fit_options().max_epochs(3), TerminateOnNan{}, ModelCheckpoint(options));
    trainer.fit(net, data);
    CHECK(trainer.callback<TerminateOnNan>().triggered());
    CHECK(std::get<std::int64_t>(read_checkpoint_states(last).at("trainer").at("global_step")) == 2);
    CHECK(torch::isfinite(last_weight()).all().item<bool>());
  }
  SUBCASE("without it: the fit fails naming the NaN, and last.ckpt still holds step 2") {
    Scripted net;
    net.nan_at_batch = 2;
    Trainer trainer(fit_options().max_epochs(3), ModelCheckpoint(options));
    CHECK_THROWS_WITH_AS(trainer.fit(net, data), contains("'" + last + "': not written: 'model/fc.bias' holds NaN"),
                         NonFiniteStateError);
    CHECK(std::get<std::int64_t>(read_checkpoint_states(last).at("trainer").at("global_step")) == 2);
    CHECK(torch::isfinite(last_weight()).all().item<bool>());
  }
}

namespace {
struct StepLogger : LightningModule<StepLogger> {
  torch::nn::Linear fc{nullptr};
  StepLogger() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  torch::Tensor training_step(Batch& b, std::int64_t) {
    auto loss = torch::mse_loss(fc(b.first), b.second);
    log("train_loss", loss);
    return loss;
  }
  std::shared_ptr<torch::optim::SGD> configure_optimizers() {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.01));
  }
};
// Records, at each on_train_batch_end, the train_loss callbacks see.
struct SeenLoss {
  std::vector<double> seen;
  template <class T, class M, class O, class B>
  void on_train_batch_end(T& trainer, M&, const O& loss, B&, std::int64_t) {
    CHECK(trainer.callback_metrics().at("train_loss").template item<double>() == loss.template item<double>());
    seen.push_back(loss.template item<double>());
  }
};
}  // namespace

TEST_CASE("ModelCheckpoint monitoring a per-step training value ranks each step by its own value, from step 1") {
  TempDir dir;
  auto options = checkpoints_in(dir.file("ckpt"));
  options.monitor = "train_loss";
  options.every_n_train_steps = 1;
  options.save_top_k = 1;
  options.filename = "step={step}";
  StepLogger net;
  Trainer trainer(fit_options().max_epochs(2), SeenLoss{}, ModelCheckpoint(options));
  trainer.fit(net, batches(4, 2));
  const auto& seen = trainer.callback<SeenLoss>().seen;
  REQUIRE(seen.size() == 8);
  const auto best = std::min_element(seen.begin(), seen.end()) - seen.begin();
  CHECK(trainer.callback<ModelCheckpoint>().best_model_path() == dir.file("ckpt/step=" + std::to_string(best + 1) + ".ckpt"));
  CHECK(*trainer.callback<ModelCheckpoint>().best_model_score() == doctest::Approx(seen[static_cast<std::size_t>(best)]));
}

TEST_CASE("a checkpoint whose loader state lacks a key is an error naming the file and the key") {
  TempDir dir;
  torch::manual_seed(0);
  DataLoader loader(TensorDataset(torch::randn({12, 2}), torch::randn({12, 1})), DataLoaderOptions().batch_size(4));
  auto options = checkpoints_in(dir.file("ckpt"));
  options.save_last = true;
  Scripted net;
  Trainer trainer(fit_options().max_epochs(1), ModelCheckpoint(options));
  trainer.fit(net, loader);
  auto states = read_checkpoint_states(dir.file("ckpt/last.ckpt"));
  REQUIRE(states.count("train_data"));
  states["train_data"].erase("next_batch");
  const std::string damaged = dir.file("damaged.ckpt");
  auto optimizer = std::make_shared<torch::optim::SGD>(net.parameters(), torch::optim::SGDOptions(0.01));
  save_checkpoint(damaged, net, {optimizer}, states);
  Trainer resumed(fit_options().max_epochs(2));
  CHECK_THROWS_WITH_AS(resumed.fit(net, loader, damaged),
                       contains("checkpoint '" + damaged + "': key 'train_data': "), CheckpointError);
}
