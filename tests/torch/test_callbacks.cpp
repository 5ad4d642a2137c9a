// EarlyStopping and TerminateOnNan, as Trainer callbacks and as Engine handlers.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <cmath>
#include <cstring>

#include <zlib.h>
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

// ---- histograms, images and text for the loggers (parts/torch/media.hpp, callbacks/histograms.hpp) ----

namespace {
std::uint32_t be32(const std::string& s, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = v << 8 | static_cast<unsigned char>(s[at + i]);
  return v;
}
// A PNG's pixels [H, W, C], read by its documented layout (chunks with CRCs, zlib, filter bytes of 0).
torch::Tensor png_pixels(const std::string& png) {
  REQUIRE(png.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
  std::size_t at = 8;
  std::uint32_t width = 0, height = 0;
  int channels = 0;
  std::string idat;
  while (at < png.size()) {
    const std::uint32_t length = be32(png, at);
    const std::string type = png.substr(at + 4, 4), data = png.substr(at + 8, length);
    CHECK(be32(png, at + 8 + length) ==
          crc32(0L, reinterpret_cast<const Bytef*>(png.data() + at + 4), static_cast<uInt>(length + 4)));
    if (type == "IHDR") {
      width = be32(data, 0), height = be32(data, 4);
      CHECK(data[8] == 8);
      channels = data[9] == 6 ? 4 : data[9] == 2 ? 3 : 0;
    } else if (type == "IDAT") {
      idat += data;
    }
    at += 12 + length;
  }
  REQUIRE(channels > 0);
  std::string raw(static_cast<std::size_t>(height) * (1 + width * channels), '\0');
  uLongf size = raw.size();
  REQUIRE(uncompress(reinterpret_cast<Bytef*>(&raw[0]), &size, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) == Z_OK);
  REQUIRE(size == raw.size());
  torch::Tensor pixels = torch::empty({height, width, channels}, torch::kUInt8);
  for (std::uint32_t y = 0; y < height; ++y) {
    const std::size_t row = y * (1 + width * channels);
    CHECK(raw[row] == 0);
    std::memcpy(pixels[y].data_ptr<std::uint8_t>(), raw.data() + row + 1, width * channels);
  }
  return pixels;
}
std::size_t occurrences(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}
}  // namespace

namespace {
// The two ways histogram_of counts (a host pass with a logarithm's estimate, or tensor operations: bucketize, or the
// same estimate as tensors) and a plain binary search over the edges, on the same values: the same histogram.
void check_histogram_paths(const torch::Tensor& values, const std::vector<double>& edges) {
  const torch::Tensor v64 = values.to(torch::kFloat64).contiguous();
  const double* v = v64.data_ptr<double>();
  std::vector<double> counts(edges.size() - 1, 0.0);
  for (std::int64_t i = 0; i < v64.numel(); ++i)
    if (v[i] >= edges.front() && v[i] <= edges.back())
      counts[std::min<std::size_t>(std::upper_bound(edges.begin(), edges.end(), v[i]) - edges.begin() - 1, counts.size() - 1)] += 1;
  const Histogram reference = trimmed_histogram(edges, counts, static_cast<double>(v64.numel()), 0, 0, 0, 0, "reference");
  const Histogram host = histogram_of(values, edges);
  const Histogram device = trainloop::detail::histogram_on_device(values, edges, "device");
  CHECK(host.bucket_limits == reference.bucket_limits);
  CHECK(host.bucket_counts == reference.bucket_counts);
  CHECK(device.bucket_limits == reference.bucket_limits);
  CHECK(device.bucket_counts == reference.bucket_counts);
  CHECK(host.num == device.num);
  CHECK(host.min == device.min);
  CHECK(host.max == device.max);
  // Sums in another order: equal to the rounding of the magnitudes summed (or both NaN, or the same infinity).
  const auto close = [](double a, double b, double tolerance) {
    return (std::isnan(a) && std::isnan(b)) || a == b || std::abs(a - b) <= tolerance;
  };
  CHECK(close(host.sum, device.sum, 1e-12 * v64.abs().sum().item<double>()));
  CHECK(close(host.sum_squares, device.sum_squares, 1e-12 * host.sum_squares));
}
}  // namespace

TEST_CASE("histogram of a tensor: the host pass and the device operations count as a binary search does, edges included") {
  torch::manual_seed(3);
  const torch::Tensor w = torch::cat({torch::randn({1000}) * 0.1, torch::zeros({7}), torch::tensor({1e-12f, -1e-12f, 0.5f})});
  check_histogram_paths(w, tensorflow_bucket_edges());
  check_histogram_paths(w, {-0.1, 0.0, 0.1});
  CHECK(histogram_of(w).num == 1010);
  // Every TensorFlow edge itself, its negative, and the points between them: exact comparisons at each edge.
  const torch::Tensor on_edges = torch::tensor(tensorflow_bucket_edges(), torch::kFloat64);
  const torch::Tensor between = torch::cat({on_edges, -on_edges, (on_edges.narrow(0, 0, 1548) + on_edges.narrow(0, 1, 1548)) / 2});
  check_histogram_paths(between, tensorflow_bucket_edges());
  // The last bin: its left edge and the last edge (each from the edges and the negated negative ones), a midpoint.
  CHECK(histogram_of(between).bucket_counts.back() == 5);
  // Values far beyond the edges (float64), tiny ones, infinities: in no bin, or the bins around 0.
  const double inf = std::numeric_limits<double>::infinity();
  check_histogram_paths(torch::tensor({1e30, -1e30, 1e-300, -1e-300, 5e-13, -5e-13, 1e-12 * 1.1, inf, -inf, 0.0, -0.0}),
                        tensorflow_bucket_edges());
  // Chosen edges: a value on an inner edge goes right, on the last edge into the last bin; outside and NaN nowhere.
  const torch::Tensor chosen_values = torch::tensor({0.0, 1.0, 2.0, 3.0, 3.5, -1.0, std::nan("")});
  const Histogram chosen = histogram_of(chosen_values, {0, 1, 2, 3}, "c");
  CHECK((chosen.bucket_limits == std::vector<double>{0, 1, 2, 3}));
  CHECK((chosen.bucket_counts == std::vector<double>{0, 1, 1, 2}));
  CHECK(chosen.num == 7);
  CHECK(std::isnan(chosen.sum));
  CHECK(std::isnan(chosen.min));
  const Histogram chosen_device = trainloop::detail::histogram_on_device(chosen_values, {0, 1, 2, 3}, "c");
  CHECK(chosen_device.bucket_counts == chosen.bucket_counts);
  CHECK(std::isnan(chosen_device.min));
  CHECK_THROWS_WITH_AS(histogram_of(torch::zeros({0}), tensorflow_bucket_edges(), "layer"), contains("histogram 'layer': the tensor has no element"),
                       std::invalid_argument);
}

TEST_CASE("encode_png: add_image's scaling, grey as RGB, RGBA kept; make_grid's layout; errors naming the shape") {
  const torch::Tensor gray = torch::tensor({0.0f, 0.5f, 1.0f, 2.0f, -1.0f, 0.999f}).reshape({2, 3});
  const EncodedImage g = encode_png(gray);
  CHECK(g.height == 2);
  CHECK(g.width == 3);
  CHECK(g.channels == 3);
  const torch::Tensor p = png_pixels(g.png);
  // float * 255, clipped, truncated: 0, 127, 255, 255, 0, 254; one channel repeated thrice.
  CHECK(torch::equal(p.select(2, 0), torch::tensor({0, 127, 255, 255, 0, 254}, torch::kUInt8).reshape({2, 3})));
  CHECK(torch::equal(p.select(2, 0), p.select(2, 2)));
  const torch::Tensor rgba = torch::randint(0, 256, {4, 5, 6}, torch::kUInt8);
  const EncodedImage c = encode_png(rgba);
  CHECK(c.channels == 4);
  CHECK(torch::equal(png_pixels(c.png), rgba.permute({1, 2, 0})));
  CHECK_THROWS_WITH_AS(encode_png(torch::zeros({2, 4, 4})), contains("got [2, 4, 4]"), std::invalid_argument);

  // make_grid: 5 one-channel 4x4 images, 3 per row, padding 2 -> [3, 2*6+2, 3*6+2], the pad value around them.
  const torch::Tensor images = torch::arange(80, torch::kFloat32).reshape({5, 1, 4, 4});
  GridOptions o;
  o.nrow = 3;
  o.pad_value = -1;
  const torch::Tensor grid = make_grid(images, o);
  CHECK(grid.sizes() == torch::IntArrayRef({3, 14, 20}));
  CHECK(torch::equal(grid[1].narrow(0, 8, 4).narrow(1, 8, 4), images[4][0]));  // the fifth: second row, second column
  CHECK(grid[0][0][0].item<float>() == -1);
  CHECK(grid[2][9][15].item<float>() == -1);  // the empty sixth place
  o.normalize = true;
  const torch::Tensor normalized = make_grid(images, o);
  CHECK(normalized.max().item<float>() == 1.0f);
  CHECK(normalized[0].narrow(0, 2, 4).narrow(1, 2, 4).min().item<float>() == 0.0f);  // the first image's 0
  CHECK(normalized[0][0][0].item<float>() == -1);  // padding comes after normalizing, as in torchvision
}

TEST_CASE("confusion_matrix_image: one cell per count, darker by the row's share, the count written in it") {
  const torch::Tensor m = torch::tensor({50, 0, 3, 47}, torch::kInt64).reshape({2, 2});
  const torch::Tensor img = confusion_matrix_image(m);
  REQUIRE(img.sizes() == torch::IntArrayRef({3, 49, 49}));  // 24-pixel cells with grid lines
  CHECK(img.dtype() == torch::kUInt8);
  const auto a = img.accessor<std::uint8_t, 3>();
  CHECK(a[2][2][2] == 107);   // [0][0]: all of row 0: dark blue
  CHECK(a[0][2][26] == 255);  // [0][1]: none: white
  CHECK(a[0][26][2] > 200);   // [1][0]: 3/50: light
  // The digits: white pixels on the dark cell (50), black ones on the white cell (0).
  CHECK(img.narrow(1, 1, 23).narrow(2, 1, 23).select(0, 0).eq(255).any().item<bool>());
  CHECK(img.narrow(1, 1, 23).narrow(2, 25, 23).select(0, 0).eq(0).any().item<bool>());
  CHECK_THROWS_AS(confusion_matrix_image(torch::zeros({2, 3})), std::invalid_argument);
}

TEST_CASE("ParameterHistograms and log_model: histograms every n steps to TensorBoard, none to CSV; checkpoints as MLflow artifacts") {
  TempDir dir;
  auto data = batches(3, 4);
  VersionedLoggerOptions tb_options;
  tb_options.save_dir = dir.file("tb");
  VersionedLoggerOptions csv_options;
  csv_options.save_dir = dir.file("csv");
  MLFlowLogger::Options ml;
  ml.tracking_dir = dir.file("mlruns");
  ml.log_model = MLFlowLogger::LogModel::at_end;
  ParameterHistograms::Options every_two;
  every_two.every_n_steps = 2;
  auto checkpoint = checkpoints_in(dir.file("ckpt"));
  checkpoint.save_last = true;
  Scripted net;
  net.script = {0.5};
  Trainer trainer(fit_options().max_epochs(2), TensorBoardLogger(tb_options), CSVLogger(csv_options), MLFlowLogger(ml),
                  ParameterHistograms(every_two), ModelCheckpoint(checkpoint));
  trainer.fit(net, data, data);
  log_text(trainer, "summary", "done", trainer.global_step());
  log_image(trainer, "matrix", confusion_matrix_image(torch::eye(2) * 3), trainer.global_step());
  trainer.callback<TensorBoardLogger>().flush();
  // 6 steps: histograms at global steps 0, 2 and 4, of fc.weight and fc.bias, weights and gradients.
  const std::string events = read_file(trainer.callback<TensorBoardLogger>().event_file().string());
  for (const char* tag : {"weights/fc/weight", "weights/fc/bias", "grads/fc/weight", "grads/fc/bias"}) {
    CAPTURE(tag);
    CHECK(occurrences(events, tag) == 3);
  }
  CHECK(occurrences(events, "summary/text_summary") == 1);
  const std::string csv = read_file((trainer.callback<CSVLogger>().log_dir() / "metrics.csv").string());
  CHECK(csv.find("weights") == std::string::npos);
  // MLflow: the checkpoints kept at the end (epoch=1-step=6.ckpt and last.ckpt) with their metadata and aliases.
  const auto artifacts = trainer.callback<MLFlowLogger>().run_dir() / "artifacts";
  const auto folder = artifacts / "model" / "checkpoints";
  CHECK(read_file((folder / "epoch=1-step=6" / "epoch=1-step=6.ckpt").string()) == read_file(dir.file("ckpt/epoch=1-step=6.ckpt")));
  CHECK(read_file((folder / "epoch=1-step=6" / "aliases.txt").string()) == "['latest', 'best']");
  CHECK(read_file((folder / "last" / "aliases.txt").string()) == "['latest']");
  CHECK(read_file((folder / "last" / "metadata.yaml").string()).find("original_filename: \"last.ckpt\"\nscore: null\n") !=
        std::string::npos);
  CHECK(std::filesystem::exists(artifacts / "text" / "summary" / "step_6.txt"));
  CHECK_FALSE(std::filesystem::exists(folder / "epoch=0-step=3"));  // dropped by top-1 before the end
}

TEST_CASE("WeightsHistHandler and GradsHistHandler on an Engine: Ignite's tags, the iteration or the epoch as step") {
  TempDir dir;
  VersionedLoggerOptions options;
  options.save_dir = dir.path.string();
  TensorBoardLogger tb(options);
  torch::nn::Linear model(3, 2);
  torch::optim::SGD sgd(model->parameters(), 0.1);
  HistHandlerOptions tagged;
  tagged.tag = "model";
  tagged.whitelist = {"weight"};
  HistHandlerOptions by_epoch;
  by_epoch.epoch_step = true;
  auto engine = make_engine<torch::Tensor>(
      [&](torch::Tensor& x) {
        sgd.zero_grad();
        model(x).sum().backward();
        sgd.step();
      },
      on(Events::iteration_completed | every(2), WeightsHistHandler(tb, *model, tagged)),
      on(Events::epoch_completed, GradsHistHandler(tb, *model, by_epoch)));
  std::vector<torch::Tensor> data(4, torch::ones({1, 3}));
  engine.run(data, max_epochs(2));
  tb.flush();
  const std::string events = read_file(tb.event_file().string());
  CHECK(occurrences(events, "model/weights/weight") == 4);  // iterations 2, 4, 6, 8
  CHECK(occurrences(events, "bias") == 2);                   // grads/bias at epochs 1 and 2; weights/bias not whitelisted
  CHECK(occurrences(events, "grads/weight") == 2);
}

TEST_CASE("ModelCheckpoint monitoring a value no validation has logged yet: no checkpoint and a warning, as Lightning") {
  TempDir dir;
  auto data = batches(3, 5);
  auto options = checkpoints_in(dir.file("ckpt"));
  options.monitor = "val_loss";
  Scripted net;
  net.script = {0.5};
  // No validation at all: nothing to rank by, nothing saved, the fit goes on.
  Trainer no_validation(fit_options().max_epochs(2).limit_val_batches(0), ModelCheckpoint(options));
  no_validation.fit(net, data, data);
  CHECK(no_validation.global_step() == 6);
  CHECK(no_validation.callback<ModelCheckpoint>().kept().empty());
  // Once a validation ran, a monitored name that was never logged is an error.
  options.monitor = "val_los";
  Trainer misspelt(fit_options().max_epochs(2), ModelCheckpoint(options));
  CHECK_THROWS_WITH_AS(misspelt.fit(net, data, data), contains("ModelCheckpoint monitors 'val_los', which was not logged"),
                       std::runtime_error);
}
