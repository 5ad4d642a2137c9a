// The Tuner (lr_find, scale_batch_size) against Lightning's rules, and trainloop::cli (LightningCLI's way of running).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "fixtures.hpp"
#include "temp_dir.hpp"

using namespace trainloop;

namespace {
// tests/data, from the environment ctest sets, else beside this file.
std::filesystem::path test_data() {
  if (const char* dir = std::getenv("TRAINLOOP_TEST_DATA")) return dir;
  return std::filesystem::path(__FILE__).parent_path().parent_path() / "data";
}

struct Series {
  std::vector<double> lrs, losses;
};
Series read_series(const std::filesystem::path& path) {
  std::ifstream in(path);
  REQUIRE(in);
  std::string line;
  std::getline(in, line);
  REQUIRE(line == "lr,loss");
  Series s;
  while (std::getline(in, line)) {
    const auto comma = line.find(',');
    s.lrs.push_back(std::stod(line.substr(0, comma)));
    s.losses.push_back(std::stod(line.substr(comma + 1)));
  }
  return s;
}

using XY = TensorBatch<2>;

// y = x w + noise; the module records every raw loss, keeps its Adam across fits (configure_optimizers returns the
// same one), and has a BatchNorm (buffers) and a learning rate member for update_attr.
struct Regressor : LightningModule<Regressor> {
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
  std::shared_ptr<torch::optim::Adam> adam;
  double lr = 0.01;
  std::vector<double> raw_losses;
  Regressor() {
    torch::manual_seed(3);
    fc = register_module("fc", torch::nn::Linear(8, 1));
    norm = register_module("norm", torch::nn::BatchNorm1d(8));
    adam = std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(lr));
  }
  torch::Tensor training_step(XY& batch, std::int64_t) {
    torch::Tensor loss = torch::mse_loss(fc(norm(batch.first)), batch.second);
    raw_losses.push_back(loss.item<double>());
    return loss;
  }
  std::shared_ptr<torch::optim::Adam> configure_optimizers() { return adam; }
};

struct SgdRegressor : LightningModule<SgdRegressor> {
  torch::nn::Linear fc{nullptr};
  std::vector<double> raw_losses;
  SgdRegressor() {
    torch::manual_seed(4);
    fc = register_module("fc", torch::nn::Linear(8, 1));
    save_hyperparameters({{"learning_rate", 0.5}});
  }
  torch::Tensor training_step(XY& batch, std::int64_t) {
    torch::Tensor loss = torch::mse_loss(fc(batch.first), batch.second);
    raw_losses.push_back(loss.item<double>());
    return loss;
  }
  std::shared_ptr<torch::optim::SGD> configure_optimizers() {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
  }
};

TensorDataset<2> regression_data(std::int64_t n, std::uint64_t seed) {
  torch::manual_seed(static_cast<std::int64_t>(seed));
  torch::Tensor x = torch::randn({n, 8});
  torch::Tensor y = x.matmul(torch::linspace(-1, 1, 8).unsqueeze(1)) + 0.1 * torch::randn({n, 1});
  return TensorDataset<2>(x, y);
}

std::vector<torch::Tensor> state_of(torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.detach().clone());
  for (const auto& b : m.buffers()) out.push_back(b.clone());
  return out;
}
std::string optimizer_bytes(torch::optim::Optimizer& optimizer) {
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}
}  // namespace

TEST_CASE("lr_find_suggestion gives Lightning's index on recorded series") {
  const std::filesystem::path dir = test_data() / "lr_find";
  std::ifstream expected(dir / "expected.txt");
  REQUIRE(expected);
  std::string name, index;
  int checked = 0;
  while (expected >> name) {
    if (name[0] == '#') {
      std::getline(expected, name);
      continue;
    }
    expected >> index;
    CAPTURE(name);
    const Series s = read_series(dir / (name + ".csv"));
    const auto got = lr_find_suggestion_index(s.lrs, s.losses);
    if (index == "none") {
      CHECK_FALSE(got.has_value());
      CHECK_FALSE(lr_find_suggestion(s.lrs, s.losses).has_value());
    } else {
      REQUIRE(got.has_value());
      CHECK(*got == std::stoul(index));
      CHECK(*lr_find_suggestion(s.lrs, s.losses) == s.lrs[*got]);
    }
    ++checked;
  }
  CHECK(checked >= 5);
  // Python's slice rules: skip_end = 0 keeps nothing ([10:-0] is empty), as in Lightning.
  const Series mlp = read_series(dir / "fashion_mnist_mlp.csv");
  CHECK_FALSE(lr_find_suggestion_index(mlp.lrs, mlp.losses, 10, 0).has_value());
  CHECK(lr_find_suggestion_index(mlp.lrs, mlp.losses, 0, 1).has_value());
  CHECK_THROWS_WITH_AS(lr_find_suggestion_index({1e-3}, {1.0, 2.0}), contains("1 learning rates but 2 losses"),
                       std::invalid_argument);
}

TEST_CASE("Tuner::lr_find: Lightning's schedule and smoothing; model, kept optimizer, data position and RNG restored "
          "bitwise; nothing logged or checkpointed") {
  TempDir dir;
  Regressor net;
  DataLoader loader(regression_data(640, 1), DataLoaderOptions().batch_size(8).shuffle(true).seed(5));
  // A state worth restoring: one Adam step taken, the loader in the middle of an epoch, gradients present.
  auto it = loader.begin();
  for (int i = 0; i < 3; ++i) ++it;
  (void)*it;
  torch::Tensor loss = torch::mse_loss(net.fc(net.norm(torch::randn({8, 8}))), torch::randn({8, 1}));
  loss.backward();
  net.adam->step();
  net.eval();
  const auto weights = state_of(net);
  const std::string adam_before = optimizer_bytes(*net.adam);
  const StateDict position = loader.state_dict();
  const torch::Tensor rng = trainloop::detail::cpu_generator().get_state();
  const torch::Tensor grad = net.fc->weight.grad().clone();

  CSVLogger::Options csv;
  csv.save_dir = dir.file("logs");
  ModelCheckpoint::Options checkpoints;
  checkpoints.dirpath = dir.file("checkpoints");
  Trainer trainer(quiet().max_epochs(3).default_root_dir(dir.file("root")), CSVLogger(csv), ModelCheckpoint(checkpoints));
  const LRFinderOptions options = LRFinderOptions().num_training(60).early_stop_threshold(std::nullopt);
  const LRFinderResult found = Tuner(trainer).lr_find(net, loader, options);

  // Lightning's _ExponentialLR: min_lr first, then step k at (k + 1) / num_training of the way (log scale).
  REQUIRE(found.lrs().size() == 60);
  REQUIRE(found.losses().size() == 60);
  CHECK(found.lrs()[0] == 1e-8);
  for (std::int64_t k = 1; k < 60; ++k) CHECK(found.lrs()[k] == 1e-8 * std::pow(1.0 / 1e-8, (k + 1) / 60.0));
  CHECK(found.lrs().back() == doctest::Approx(1.0));
  // Lightning's smoothing with its bias correction beta^(global_step + 1), the global step counted after the step.
  REQUIRE(net.raw_losses.size() == 60);
  double avg = 0;
  for (std::size_t k = 0; k < 60; ++k) {
    avg = 0.98 * avg + (1 - 0.98) * net.raw_losses[k];  // Python computes (1 - beta), as written
    CHECK(found.losses()[k] == avg / (1 - std::pow(0.98, static_cast<double>(k + 2))));
  }
  CHECK(found.suggestion() == lr_find_suggestion(found.lrs(), found.losses()));
  REQUIRE(found.suggestion().has_value());

  // Everything as it was.
  CHECK(bitwise_equal(state_of(net), weights));
  CHECK(torch::equal(net.fc->weight.grad(), grad));
  CHECK_FALSE(net.is_training());
  CHECK(optimizer_bytes(*net.adam) == adam_before);
  CHECK(net.adam->param_groups()[0].options().get_lr() == 0.01);
  CHECK((loader.state_dict() == position));
  CHECK(torch::equal(trainloop::detail::cpu_generator().get_state(), rng));
  CHECK(trainer.global_step() == 0);
  CHECK_FALSE(std::filesystem::exists(dir.file("logs")));
  CHECK_FALSE(std::filesystem::exists(dir.file("checkpoints")));
  CHECK(net.lr == 0.01);  // update_attr was off

  // The plot: an SVG with the curve and the suggestion's dot; the series as CSV.
  found.save_plot(dir.file("lr.svg"));
  const std::string svg = read_file(dir.file("lr.svg"));
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("<polyline") != std::string::npos);
  CHECK(svg.find("fill=\"red\"") != std::string::npos);
  found.save_csv(dir.file("lr.csv"));
  const Series back = read_series(dir.file("lr.csv"));
  CHECK(back.lrs == found.lrs());
  CHECK(back.losses == found.losses());
}

TEST_CASE("Tuner::lr_find: early stop on divergence, update_attr, and Lightning's refusals") {
  SgdRegressor net;
  DataLoader loader(regression_data(400, 2), DataLoaderOptions().batch_size(4));
  Trainer trainer(quiet().max_epochs(-1));
  const LRFinderResult found =
      Tuner(trainer).lr_find(net, loader, LRFinderOptions().max_lr(100.0).update_attr(true));
  // SGD diverges long before lr 100: stopped at the first smoothed loss above 4x the best (after the second step).
  const auto& losses = found.losses();
  REQUIRE(losses.size() < 100);
  REQUIRE(losses.size() == found.lrs().size());
  double best = losses[0];
  for (std::size_t k = 1; k + 1 < losses.size(); ++k) {
    if (losses[k] > 4 * best) FAIL("it should have stopped at step " << k);
    best = std::min(best, losses[k]);
  }
  CHECK(losses.back() > 4 * best);
  // update_attr: no lr member, so the hyperparameter Lightning would look up.
  REQUIRE(found.suggestion().has_value());
  CHECK(std::get<double>(net.hparams().at("learning_rate")) == *found.suggestion());

  // A member and a named hyperparameter: both set (Lightning's lightning_setattr).
  Regressor with_member;
  with_member.save_hyperparameters({{"model.lr", 0.01}});
  DataLoader small(regression_data(160, 8), DataLoaderOptions().batch_size(8));
  const LRFinderResult member_found =
      Tuner(trainer).lr_find(with_member, small, LRFinderOptions().num_training(20).update_attr(true).attr_name("model.lr"));
  REQUIRE(member_found.suggestion().has_value());
  CHECK(with_member.lr == *member_found.suggestion());
  CHECK(std::get<double>(with_member.hparams().at("model.lr")) == *member_found.suggestion());
  CHECK_THROWS_WITH_AS(Tuner(trainer).lr_find(with_member, small, LRFinderOptions().update_attr(true).attr_name("nope")),
                       contains("has no hyperparameter 'nope'"), std::invalid_argument);

  Trainer two_optimizers(quiet().max_epochs(1));
  struct Two : LightningModule<Two> {
    torch::nn::Linear a{nullptr}, b{nullptr};
    Two() {
      a = register_module("a", torch::nn::Linear(8, 1));
      b = register_module("b", torch::nn::Linear(8, 1));
    }
    torch::Tensor training_step(XY& batch, std::int64_t) { return torch::mse_loss(a(batch.first) + b(batch.first), batch.second); }
    Optimizers configure_optimizers() {
      return {std::make_shared<torch::optim::SGD>(a->parameters(), torch::optim::SGDOptions(0.1)),
              std::make_shared<torch::optim::SGD>(b->parameters(), torch::optim::SGDOptions(0.1))};
    }
  } two;
  const auto before = state_of(two);
  CHECK_THROWS_WITH_AS(Tuner(two_optimizers).lr_find(two, loader), contains("returned 2 optimizers"), std::invalid_argument);
  CHECK(bitwise_equal(state_of(two), before));  // restored after a failed search too
  CHECK_THROWS_WITH_AS(Tuner(two_optimizers).lr_find(two, loader, LRFinderOptions().update_attr(true)),
                       contains("no `lr` or `learning_rate` member or hyperparameter"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Tuner(two_optimizers).lr_find(net, loader, LRFinderOptions().mode("cosine")),
                       contains("mode(\"cosine\")"), std::invalid_argument);
  // fast_dev_run: skipped, as Lightning does.
  Trainer smoke(quiet().fast_dev_run(2));
  CHECK(Tuner(smoke).lr_find(net, loader).lrs().empty());
}

namespace {
// Fails its step as a CUDA allocator would beyond `limit` examples per batch.
struct MemoryBound : LightningModule<MemoryBound> {
  torch::nn::Linear fc{nullptr};
  std::int64_t limit;
  std::vector<std::int64_t> sizes;
  explicit MemoryBound(std::int64_t l) : limit(l) {
    fc = register_module("fc", torch::nn::Linear(8, 1));
    save_hyperparameters({{"batch_size", std::int64_t{2}}});
  }
  torch::Tensor training_step(XY& batch, std::int64_t) {
    sizes.push_back(batch.first.size(0));
    if (batch.first.size(0) > limit)
      throw std::runtime_error("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 1 GiB total capacity)");
    return torch::mse_loss(fc(batch.first), batch.second);
  }
  std::shared_ptr<torch::optim::SGD> configure_optimizers() {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
  }
};
std::vector<std::int64_t> tried(const Tuner& tuner) {
  std::vector<std::int64_t> out;
  for (const auto& t : tuner.trials()) out.push_back(t.fits ? t.batch_size : -t.batch_size);
  return out;
}
}  // namespace

TEST_CASE("Tuner::scale_batch_size: Lightning's power and binsearch rules; the loader and the module set, the rest "
          "restored") {
  MemoryBound net(100);
  const auto weights = state_of(net);
  DataLoader loader(regression_data(4000, 3), DataLoaderOptions().batch_size(16).shuffle(true).seed(1));
  Trainer trainer(quiet());
  Tuner tuner(trainer);
  CHECK(tuner.scale_batch_size(net, loader) == 64);
  CHECK(tried(tuner) == std::vector<std::int64_t>{2, 4, 8, 16, 32, 64, -128});
  CHECK(loader.options().batch_size() == 64);
  CHECK(std::get<std::int64_t>(net.hparams().at("batch_size")) == 64);
  CHECK(bitwise_equal(state_of(net), weights));
  CHECK(net.sizes.size() == 6 * 3 + 1);  // steps_per_trial 3, the failing trial's first step

  // binsearch: doubles to the failure, then halves the interval down to the largest size that fits.
  CHECK(tuner.scale_batch_size(net, loader, BatchSizeFinderOptions().mode("binsearch").steps_per_trial(1)) == 100);
  CHECK(tried(tuner) == std::vector<std::int64_t>{2, 4, 8, 16, 32, 64, -128, 96, -112, -104, 100, -102, -101});
  CHECK(loader.options().batch_size() == 100);

  // A callable making the data; the first trial failing: power halves and goes on (Lightning's any_success rule).
  MemoryBound tiny(3);
  auto make = [](std::int64_t b) { return DataLoader(regression_data(64, 4), DataLoaderOptions().batch_size(b)); };
  CHECK(tuner.scale_batch_size(tiny, make, BatchSizeFinderOptions().init_val(8).steps_per_trial(1)) == 2);
  CHECK(tried(tuner) == std::vector<std::int64_t>{-8, -4, 2, -4});
  // One batch holding the whole dataset: no larger size is tried.
  MemoryBound roomy(1 << 20);
  auto small = [](std::int64_t b) { return DataLoader(regression_data(40, 5), DataLoaderOptions().batch_size(b)); };
  CHECK(tuner.scale_batch_size(roomy, small, BatchSizeFinderOptions().steps_per_trial(1)) == 64);
  CHECK(tried(tuner) == std::vector<std::int64_t>{2, 4, 8, 16, 32, 64});
  // Another error is not a memory error: it propagates, and the model is restored.
  struct Failing : LightningModule<Failing> {
    torch::nn::Linear fc{nullptr};
    Failing() { fc = register_module("fc", torch::nn::Linear(8, 1)); }
    torch::Tensor training_step(XY& batch, std::int64_t) {
      if (batch.first.size(0) > 4) throw std::runtime_error("a bug in training_step");
      return torch::mse_loss(fc(batch.first), batch.second);
    }
    std::shared_ptr<torch::optim::SGD> configure_optimizers() {
      return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
    }
  } failing;
  const auto failing_weights = state_of(failing);
  CHECK_THROWS_WITH_AS(tuner.scale_batch_size(failing, small), contains("a bug in training_step"), std::runtime_error);
  CHECK(bitwise_equal(state_of(failing), failing_weights));
  const StateDict loader_before = loader.state_dict();
  CHECK_THROWS_WITH_AS(tuner.scale_batch_size(failing, loader), contains("a bug in training_step"), std::runtime_error);
  CHECK((loader.state_dict() == loader_before));  // its batch size (100) and position, as they were
  CHECK_THROWS_WITH_AS(tuner.scale_batch_size(net, loader, BatchSizeFinderOptions().mode("linear")),
                       contains("mode(\"linear\")"), std::invalid_argument);
}

TEST_CASE("Tuner::scale_batch_size on the CPU with a memory budget: the peak resident growth decides") {
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer keeps freed memory in quarantine and adds shadow memory: the process's resident growth is then
  // the sanitizer's, not the model's (the search's logic is checked under it by the case above).
  MESSAGE("skipped under AddressSanitizer: resident memory is the sanitizer's");
  return;
#endif
  // 4096 hidden floats per example: a batch's activations and their gradients are about 64 KiB an example.
  struct Wide : LightningModule<Wide> {
    torch::nn::Linear up{nullptr}, down{nullptr};
    Wide() {
      up = register_module("up", torch::nn::Linear(8, 4096));
      down = register_module("down", torch::nn::Linear(4096, 1));
    }
    torch::Tensor training_step(XY& batch, std::int64_t) { return torch::mse_loss(down(torch::relu(up(batch.first))), batch.second); }
    std::shared_ptr<torch::optim::SGD> configure_optimizers() {
      return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.01));
    }
  } net;
  const auto weights = state_of(net);
  auto make = [](std::int64_t b) { return DataLoader(regression_data(8192, 6), DataLoaderOptions().batch_size(b)); };
  Trainer trainer(quiet());
  Tuner tuner(trainer);
  const std::int64_t budget = 48 << 20;
  const std::int64_t power = tuner.scale_batch_size(net, make, BatchSizeFinderOptions().max_memory_bytes(budget).steps_per_trial(2));
  const auto power_trials = tuner.trials();
  REQUIRE(power_trials.size() >= 2);
  // The chosen size fitted the budget, the next one of the search did not: the largest within one step.
  CHECK(power_trials.back().batch_size == 2 * power);
  CHECK_FALSE(power_trials.back().fits);
  CHECK(power_trials.back().peak_bytes > budget);
  for (std::size_t i = 0; i + 1 < power_trials.size(); ++i) CHECK(power_trials[i].fits);
  CHECK(power >= 64);    // 64 examples are about 6 MiB: far inside 48 MiB
  CHECK(power <= 1024);  // 2048 are about 180 MiB: far outside
  const std::int64_t binary = tuner.scale_batch_size(
      net, make, BatchSizeFinderOptions().mode("binsearch").max_memory_bytes(budget).steps_per_trial(2));
  // Binsearch ends between a size that fitted and the next one up, which did not. (The peak growth is a measurement:
  // glibc's arenas make it vary by some 15% from trial to trial, so the two modes may disagree near the boundary.)
  bool fitted = false, next_failed = false;
  for (const auto& t : tuner.trials()) {
    fitted = fitted || (t.batch_size == binary && t.fits && t.peak_bytes <= budget);
    next_failed = next_failed || (t.batch_size == binary + 1 && !t.fits && t.peak_bytes > budget);
  }
  CHECK(fitted);
  CHECK(next_failed);
  CHECK(binary >= power / 2);
  CHECK(binary <= 4 * power);
  CHECK(bitwise_equal(state_of(net), weights));
}

TEST_CASE("FastaiLRFinder: Ignite's range test on the Engine; model, optimizer and Engine state restored") {
  torch::manual_seed(9);
  torch::nn::Linear model(10, 1);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(1e-4));
  std::vector<Batch> data;
  for (int i = 0; i < 100; ++i) data.emplace_back(torch::rand({4, 10}), torch::rand({4, 1}));
  FastaiLRFinder finder;
  auto engine = make_engine(
      [&](EngineCore&, Batch& b) {
        optimizer.zero_grad();
        torch::Tensor loss = torch::mse_loss(model(b.first), b.second);
        loss.backward();
        optimizer.step();
        return loss.detach();
      },
      std::ref(finder));
  const auto weights = state_of(*model);
  const StateDict engine_state = engine.state.state_dict();
  CHECK_THROWS_WITH_AS(finder.lr_suggestion(), contains("didn't run yet"), std::runtime_error);
  {
    auto scope = finder.attach(engine, *model, optimizer,
                               FastaiLRFinderOptions().num_iter(50).diverge_th(std::numeric_limits<double>::infinity()));
    engine.run(data);
    CHECK(engine.state.iteration == 51);  // Ignite terminates once the iteration passes num_iter
  }
  REQUIRE(finder.lrs().size() == 51);
  REQUIRE(finder.losses().size() == 51);
  // Ignite's history: the rate its scheduler sets for the next iteration, start * (end / start)^(i / num_iter).
  for (std::size_t i = 0; i < 51; ++i) CHECK(finder.lrs()[i] == 1e-4 * std::pow(10 / 1e-4, (i + 1) / 50.0));
  CHECK(bitwise_equal(state_of(*model), weights));
  CHECK(optimizer.param_groups()[0].options().get_lr() == 1e-4);
  CHECK((engine.state.state_dict() == engine_state));
  const double suggestion = finder.lr_suggestion();
  CHECK(suggestion == finder.lrs()[fastai_lr_suggestion_index(finder.losses())]);
  finder.apply_suggested_lr(optimizer);
  CHECK(optimizer.param_groups()[0].options().get_lr() == suggestion);
  optimizer.param_groups()[0].options().set_lr(1e-4);

  // Ignite's test_start_lr: the first recorded rate is one step up the schedule (exp), the start itself (linear).
  {
    auto scope = finder.attach(engine, *model, optimizer,
                               FastaiLRFinderOptions().start_lr(0.01).end_lr(10).num_iter(5).diverge_th(1));
    engine.run(data);
  }
  CHECK(finder.lrs()[0] == 0.01 * std::pow(1000.0, 1 / 5.0));
  {
    auto scope = finder.attach(engine, *model, optimizer,
                               FastaiLRFinderOptions().start_lr(0.01).end_lr(10).num_iter(5).step_mode("linear").diverge_th(1));
    engine.run(data);
  }
  CHECK(finder.lrs()[0] == 0.01);
  // Divergence stops the run; the Engine runs normally afterwards (Ignite's test_detach_terminates).
  {
    auto scope = finder.attach(engine, *model, optimizer, FastaiLRFinderOptions().end_lr(100).diverge_th(2));
    engine.run(data);
    CHECK(engine.state.iteration < 100);
  }
  CHECK(finder.losses().back() > 2 * *std::min_element(finder.losses().begin(), finder.losses().end() - 1));
  engine.run(data, max_epochs(3));
  CHECK(engine.state.epoch == 3);

  // Ignite's test_lr_suggestion_single_param_group: (linspace(-5, 5, 100))^2 + 0.05 against linspace(0.01, 10, 100).
  std::vector<double> losses;
  for (int i = 0; i < 100; ++i) losses.push_back(std::pow(-5.0 + 10.0 * i / 99, 2) + 0.05);
  CHECK(fastai_lr_suggestion_index(losses) == 1);  // lr 0.110909..., Ignite's expected value
  CHECK_THROWS_WITH_AS(fastai_lr_suggestion_index({0.0, 1.0, 2.0}), contains("U-shaped"), std::runtime_error);
  auto attach_fails = [&](FastaiLRFinderOptions options, const std::string& message) {
    CAPTURE(message);
    CHECK_THROWS_WITH_AS((void)finder.attach(engine, *model, optimizer, options), contains(message), std::invalid_argument);
  };
  attach_fails(FastaiLRFinderOptions().smooth_f(234), "smooth_f is outside the range [0, 1)");
  attach_fails(FastaiLRFinderOptions().diverge_th(0), "diverge_th should be larger than 1");
  attach_fails(FastaiLRFinderOptions().step_mode("abc"), "step_mode should be 'exp' or 'linear'");
  attach_fails(FastaiLRFinderOptions().start_lr(10).end_lr(1), "start_lr must be less than end_lr");
  attach_fails(FastaiLRFinderOptions().num_iter(0), "num_iter should be positive");
}

// --- the command line ------------------------------------------------------------------------------------------------

namespace {
struct ModelArgs {
  std::string arch = "cnn";
  double lr = 1e-3;
  std::vector<std::int64_t> layers{64, 32};
  std::optional<double> weight_decay;
  bool dropout = false;
  template <class F>
  void fields(F& f) {
    f("arch", arch, "cnn or mlp");
    f("lr", lr, "learning rate");
    f("layers", layers, "hidden sizes");
    f("weight_decay", weight_decay, "L2 penalty");
    f("dropout", dropout, "use dropout");
  }
};
struct Cli {
  ModelArgs model;
  cli::Parser parser{"train", "Trains."};
  Cli() {
    parser.trainer_defaults().max_epochs(6);
    parser.output(nullptr);
    parser.section("model", model).alias("--epochs", "trainer.max_epochs").alias("--smoke", "trainer.fast_dev_run", "5");
  }
  cli::Run parse(const std::vector<std::string>& args) { return parser.parse(args); }
};
void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}
}  // namespace

TEST_CASE("cli: defaults < config files < command line; subcommands, aliases, flags, lists") {
  TempDir dir;
  write_text(dir.file("a.yaml"), "# a run\ntrainer:\n  max_epochs: 3\n  precision: bf16-mixed\n  limit_val_batches: 0.25\n"
                                 "model:\n  lr: 1e-2   # a comment\n  layers:\n    - 8\n    - 4\n  weight_decay: ~\nseed_everything: 7\n");
  write_text(dir.file("b.yaml"), "---\nmodel:\n  arch: 'mlp'\n  lr: 0.5\n");
  {
    Cli c;
    const cli::Run run = c.parse({});
    CHECK(run.subcommand == "fit");
    CHECK(run.trainer.max_epochs() == 6);
    CHECK(c.model.lr == 1e-3);
    CHECK_FALSE(run.exit_code);
  }
  Cli c;
  // The command line wins even when it comes before --config; later config files win over earlier ones.
  const cli::Run run = c.parse({"test", "--model.lr=3e-4", "--config", dir.file("a.yaml"), "--config=" + dir.file("b.yaml"),
                                "--epochs", "2", "--model.dropout", "--trainer.deterministic", "true", "--smoke",
                                "--ckpt_path", "last"});
  CHECK(run.subcommand == "test");
  CHECK(c.model.lr == 3e-4);
  CHECK(c.model.arch == "mlp");
  CHECK(c.model.layers == std::vector<std::int64_t>{8, 4});
  CHECK_FALSE(c.model.weight_decay);
  CHECK(c.model.dropout);
  CHECK(run.trainer.max_epochs() == 2);
  CHECK(run.trainer.precision() == "bf16-mixed");
  CHECK(*run.trainer.limit_val_batches().fraction() == 0.25);
  CHECK(run.trainer.deterministic());
  CHECK(run.trainer.fast_dev_run() == 5);
  CHECK(run.trainer.seed() == std::optional<std::uint64_t>(7));
  CHECK(run.ckpt_path == "last");
  // Every option as a flat hyperparameter, typed.
  CHECK(std::get<double>(run.hyperparameters.at("model.lr")) == 3e-4);
  CHECK(std::get<std::int64_t>(run.hyperparameters.at("trainer.max_epochs")) == 2);
  CHECK(std::get<std::string>(run.hyperparameters.at("model.layers")) == "[8, 4]");
  CHECK(std::get<std::string>(run.hyperparameters.at("trainer.precision")) == "bf16-mixed");

  Cli lists;
  lists.parse({"--model.layers", "[1, 2, 3]", "--model.weight_decay", "0.01", "--trainer.val_check_interval", "100",
               "--trainer.check_val_every_n_epoch", "null"});
  CHECK(lists.model.layers == std::vector<std::int64_t>{1, 2, 3});
  CHECK(lists.model.weight_decay == std::optional<double>(0.01));
}

TEST_CASE("cli: --print_config round-trips through --config, and --help lists every option") {
  TempDir dir;
  Cli c;
  const cli::Run printed = c.parse({"validate", "--model.layers", "[5]", "--model.arch", "a \"quoted\" name: #1",
                                    "--trainer.limit_test_batches", "10", "--trainer.overfit_batches", "0.1",
                                    "--trainer.max_time", "90.5", "--print_config"});
  REQUIRE(printed.exit_code == std::optional<int>(0));
  write_text(dir.file("run.yaml"), printed.config_yaml);
  Cli again;
  const cli::Run back = again.parse({"validate", "--config", dir.file("run.yaml")});
  CHECK(back.config_yaml == printed.config_yaml);
  CHECK(again.model.arch == "a \"quoted\" name: #1");
  CHECK(again.model.layers == std::vector<std::int64_t>{5});
  CHECK(*back.trainer.limit_test_batches().count() == 10);
  CHECK(*back.trainer.overfit_batches().fraction() == 0.1);
  CHECK(back.trainer.max_time().count() == 90.5);
  CHECK(printed.config_yaml.find("trainer:\n  accelerator: \"auto\"\n") != std::string::npos);

  const std::string help = c.parser.help();
  for (const auto& field : c.parser.fields()) CHECK(help.find("--" + field.name + " " + field.type) != std::string::npos);
  CHECK(help.find("--model.lr float") != std::string::npos);
  CHECK(help.find("(default: 0.001)") != std::string::npos);
  CHECK(help.find("--trainer.max_epochs int|null") != std::string::npos);
  CHECK(help.find("--smoke = --trainer.fast_dev_run 5") != std::string::npos);
}

TEST_CASE("cli: unknown options, bad values and bad files are errors naming them and the closest valid name") {
  TempDir dir;
  auto fails = [](std::vector<std::string> args, const std::string& message) {
    Cli c;
    CAPTURE(message);
    CHECK_THROWS_WITH_AS(c.parse(args), contains(message), cli::Error);
  };
  fails({"--trainer.max_epoch", "3"}, "unknown option '--trainer.max_epoch'; did you mean '--trainer.max_epochs'?");
  fails({"--max_epochs", "3"}, "did you mean '--trainer.max_epochs'?");
  fails({"--model.lr", "fast"}, "option '--model.lr' (the command line): 'fast' is not a number");
  fails({"--trainer.max_steps", "1.5"}, "option '--trainer.max_steps' (the command line): '1.5' is not an integer");
  fails({"--model.dropout", "maybe"}, "'maybe' is not true or false");
  fails({"--model.layers", "3"}, "is not a list");
  fails({"--trainer.devices", "99999999999"}, "is out of range");
  fails({"tset"}, "unknown subcommand 'tset'; did you mean 'test'?");
  fails({"--model.lr"}, "option '--model.lr' needs a value (float)");
  fails({"--smoke=3"}, "--smoke takes no value");
  fails({"--trainer.accumulate_grad_batches", "0"}, "accumulate_grad_batches(n): n must be at least 1");
  fails({"--trainer.gradient_clip_algorithm", "clip"}, "'clip' is not \"norm\" or \"value\"");
  fails({"--config", dir.file("missing.yaml")}, "no such file");
  write_text(dir.file("typo.yaml"), "trainer:\n  max_epochs: 3\n  precison: 32\n");
  fails({"--config", dir.file("typo.yaml")}, "typo.yaml:3: unknown key 'trainer.precison'; did you mean 'trainer.precision'?");
  write_text(dir.file("value.yaml"), "model:\n  lr: [1, 2]\n");
  fails({"--config", dir.file("value.yaml")}, "option '--model.lr' (" + dir.file("value.yaml") + ":2): a collection is not a number");
  write_text(dir.file("tab.yaml"), "model:\n\tlr: 1\n");
  fails({"--config", dir.file("tab.yaml")}, "tab.yaml:2: a tab in the indentation");
  write_text(dir.file("anchor.yaml"), "model:\n  lr: &x 1\n");
  fails({"--config", dir.file("anchor.yaml")}, "anchor.yaml:2: '&' (anchors, aliases, tags and block scalars)");
  write_text(dir.file("quote.yaml"), "model:\n  arch: \"cnn\n");
  fails({"--config", dir.file("quote.yaml")}, "quote.yaml:2: a quoted string is not closed");
  write_text(dir.file("twice.yaml"), "model:\n  lr: 1\n  lr: 2\n");
  fails({"--config", dir.file("twice.yaml")}, "twice.yaml:3: the key 'lr' appears twice");
  write_text(dir.file("indent.yaml"), "model:\n  lr: 1\n    arch: cnn\n");
  fails({"--config", dir.file("indent.yaml")}, "indent.yaml:3: unexpected indentation");
}

TEST_CASE("cli: the YAML subset reads what PyYAML reads") {
  const cli::Node root = cli::parse_yaml(
      "a: 'it''s'\nb: \"tab\\there \\u00e9\"\nc:\n  d: [1, 'two', \"three, four\", null]\n  e: {}\n  f: ~\n"
      "g:\n- x\n- 'y # not a comment'\n\"quoted key\": plain text # comment\nh:\n", "inline");
  REQUIRE(root.kind == cli::Node::Kind::map);
  REQUIRE(root.entries.size() == 6);
  CHECK(root.entries[0].second.text == "it's");
  CHECK(root.entries[1].second.text == "tab\there \xc3\xa9");
  const cli::Node& c = root.entries[2].second;
  REQUIRE(c.entries.size() == 3);
  REQUIRE(c.entries[0].second.items.size() == 4);
  CHECK(c.entries[0].second.items[2].text == "three, four");
  CHECK(c.entries[0].second.items[3].is_null());
  CHECK(c.entries[1].second.kind == cli::Node::Kind::map);
  CHECK(c.entries[2].second.is_null());
  REQUIRE(root.entries[3].second.items.size() == 2);
  CHECK(root.entries[3].second.items[1].text == "y # not a comment");
  CHECK(root.entries[4].first == "quoted key");
  CHECK(root.entries[4].second.text == "plain text");
  CHECK(root.entries[5].second.is_null());
  CHECK(cli::parse_yaml("{}\n", "empty").entries.empty());
  CHECK(cli::closest_name("max_epochs", {"trainer.max_epochs", "trainer.min_epochs"}) == "trainer.max_epochs");
  CHECK(cli::closest_name("zzzzzzzz", {"trainer.max_epochs"}).empty());
}

TEST_CASE("cli: config.yaml is saved in the run's log folder, once per configuration") {
  TempDir dir;
  Cli c;
  const cli::Run run = c.parse({"--epochs", "1", "--model.lr", "0.1"});
  CSVLogger::Options csv;
  csv.save_dir = dir.file("logs");
  Trainer trainer(quiet().max_epochs(1), CSVLogger(csv), cli::SaveConfigCallback(run));
  SgdRegressor net;
  DataLoader loader(regression_data(16, 7), DataLoaderOptions().batch_size(8));
  trainer.fit(net, loader);
  const std::string saved = trainer.callback<CSVLogger>().log_dir().string() + "/config.yaml";
  CHECK(read_file(saved) == run.config_yaml);
  run.save_config(trainer.callback<CSVLogger>().log_dir().string());  // the same configuration: nothing to do
  Cli other;
  const cli::Run changed = other.parse({"--epochs", "2"});
  CHECK_THROWS_WITH_AS(changed.save_config(trainer.callback<CSVLogger>().log_dir().string()),
                       contains("exists with another configuration"), std::runtime_error);
  changed.save_config(trainer.callback<CSVLogger>().log_dir().string(), /*overwrite=*/true);
  CHECK(read_file(saved) == changed.config_yaml);
}
