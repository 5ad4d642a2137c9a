// What a Lightning user expects and trainloop once did differently: checkpoint hooks, the resume order, the
// validation interval's counting, empty callback states, movable loaders and the module's data hooks, plain data
// resumed mid-epoch.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "fixtures.hpp"
#include "temp_dir.hpp"

using namespace trainloop;

namespace {

std::vector<std::string>* g_events = nullptr;
void record(const std::string& what) {
  if (g_events) g_events->push_back(what);
}

struct Net : LightningModule<Net> {
  torch::nn::Linear fc{nullptr};
  int validation_batches = 0;
  std::int64_t step_seen_at_fit_start = -1;
  std::int64_t restored_counter = -1;
  torch::Tensor restored_tensor;
  Net() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  torch::Tensor training_step(Batch& b, std::int64_t) {
    torch::Tensor loss = torch::mse_loss(fc(b.first), b.second);
    log("loss", loss);
    return loss;
  }
  void validation_step(Batch& b, std::int64_t) {
    ++validation_batches;
    log("val_loss", torch::mse_loss(fc(b.first), b.second));
  }
  std::shared_ptr<torch::optim::SGD> configure_optimizers() {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  }
  void on_fit_start() { step_seen_at_fit_start = global_step(); }
  void on_save_checkpoint(StateDict& checkpoint) {
    record("on_save_checkpoint");
    checkpoint["net/counter"] = std::int64_t{41};
  }
  void on_save_checkpoint(TensorDict& tensors) { tensors["net/scale"] = torch::full({2}, 1.5); }
  void on_load_checkpoint(const StateDict& checkpoint) {
    record("on_load_checkpoint");
    restored_counter = std::get<std::int64_t>(checkpoint.at("net/counter"));
  }
  void on_load_checkpoint(const TensorDict& tensors) { restored_tensor = tensors.at("net/scale"); }
};

// A callback with a state that is empty until it sees a batch, and checkpoint hooks.
struct Counting {
  std::int64_t seen = 0;
  int loads = 0;
  std::string saw_entry;
  template <class T, class M>
  void on_train_batch_end(T&, M&, const torch::Tensor&, Batch&, std::int64_t) {
    ++seen;
  }
  StateDict state_dict() const { return seen ? StateDict{{"seen", seen}} : StateDict{}; }
  void load_state_dict(const StateDict& state) {
    record("Callback.load_state_dict");
    ++loads;
    seen = std::get<std::int64_t>(state.at("seen"));
  }
  template <class T, class M>
  void on_save_checkpoint(T&, M&, StateDict& checkpoint) {
    record("Callback.on_save_checkpoint");
    checkpoint["counting/seen"] = seen;
  }
  template <class T, class M>
  void on_load_checkpoint(T&, M&, const StateDict& checkpoint) {
    record("Callback.on_load_checkpoint");
    saw_entry = std::to_string(std::get<std::int64_t>(checkpoint.at("counting/seen")));
  }
};

// Counts the sanity checks it sees, and whether the trainer says it is sanity checking at their start and end.
struct SanityCounter {
  int sanity_checks = 0;
  bool flagged_at_start = false, flagged_at_end = false;
  template <class T, class M>
  void on_sanity_check_start(T& trainer, M&) {
    ++sanity_checks;
    flagged_at_start = trainer.sanity_checking();
  }
  template <class T, class M>
  void on_sanity_check_end(T& trainer, M&) {
    flagged_at_end = trainer.sanity_checking();
  }
};
}  // namespace

TEST_CASE("checkpoint hooks: entries and tensors saved by module and callbacks come back, in Lightning's order") {
  TempDir dir;
  auto train = batches(4, 0);
  const std::string path = dir.file("a.ckpt");
  std::vector<std::string> events;
  g_events = &events;
  {
    Net net;
    Trainer trainer(quiet().max_epochs(1), Counting{});
    trainer.fit(net, train);
    trainer.save_checkpoint(path);
  }
  CHECK((events == std::vector<std::string>{"Callback.on_save_checkpoint", "on_save_checkpoint"}));
  const auto states = read_checkpoint_states(path);
  REQUIRE(states.count("checkpoint"));
  CHECK(std::get<std::int64_t>(states.at("checkpoint").at("global_step")) == 4);
  CHECK(std::get<std::int64_t>(states.at("checkpoint").at("net/counter")) == 41);

  events.clear();
  Net resumed;
  Trainer trainer(quiet().max_epochs(2), Counting{});
  trainer.fit(resumed, train, {}, path);
  g_events = nullptr;
  // Lightning: the module's on_load_checkpoint, the callbacks', then the callbacks' states; on_fit_start sees the
  // counters before they are restored (0), as Lightning restores its loops after it.
  REQUIRE(events.size() >= 3);
  CHECK((std::vector<std::string>(events.begin(), events.begin() + 3) ==
         std::vector<std::string>{"on_load_checkpoint", "Callback.on_load_checkpoint", "Callback.load_state_dict"}));
  CHECK(resumed.restored_counter == 41);
  REQUIRE(resumed.restored_tensor.defined());
  CHECK(torch::equal(resumed.restored_tensor, torch::full({2}, 1.5)));
  CHECK(trainer.callback<Counting>().saw_entry == "4");
  CHECK(trainer.callback<Counting>().seen == 8);
  CHECK(resumed.step_seen_at_fit_start == 0);
  CHECK(trainer.global_step() == 8);
}

namespace {
// A callback whose state is empty until it is told something.
struct Notes {
  StateDict notes;
  int loads = 0;
  StateDict state_dict() const { return notes; }
  void load_state_dict(const StateDict& state) {
    ++loads;
    notes = state;
  }
};
}  // namespace

TEST_CASE("a callback whose saved state is empty is not asked to load it") {
  TempDir dir;
  auto train = batches(2, 0);
  const std::string empty = dir.file("empty.ckpt"), full = dir.file("full.ckpt");
  Net net;
  Trainer trainer(quiet().max_epochs(1), Notes{});
  trainer.fit(net, train);
  trainer.save_checkpoint(empty);
  trainer.callback<Notes>().notes["seen"] = std::int64_t{1};
  trainer.save_checkpoint(full);
  for (const auto& [path, loads] : {std::pair{empty, 0}, std::pair{full, 1}}) {
    Net resumed;
    Trainer again(quiet().max_epochs(2), Notes{});
    again.fit(resumed, train, {}, path);
    CHECK(again.callback<Notes>().loads == loads);
  }
}

TEST_CASE("a resumed fit runs the sanity check, drawing nothing from the fit's random stream") {
  TempDir dir;
  auto train = batches(6, 0), val = batches(2, 1);
  const std::string path = dir.file("mid.ckpt");
  auto options = [] { return quiet().max_epochs(2).seed(3).num_sanity_val_steps(2); };
  // The uninterrupted fit, with dropout-like randomness in the step so the RNG stream matters.
  struct Noisy : Net {
    torch::Tensor training_step(Batch& b, std::int64_t i) {
      Batch noisy{b.first + 0.01 * torch::randn_like(b.first), b.second};  // the data itself stays as it is
      return Net::training_step(noisy, i);
    }
    void validation_step(Batch& b, std::int64_t i) {
      (void)torch::rand({1});  // validation draws too: the sanity check must not shift the fit's stream
      Net::validation_step(b, i);
    }
  };
  torch::manual_seed(5);  // the same initial weights for each model
  Noisy full;
  Trainer(options()).fit(full, batches(6, 0), val);
  // Stopped after epoch 1, resumed in a fresh Trainer.
  {
    torch::manual_seed(5);
    Noisy first;
    Trainer trainer(options().max_epochs(1));
    trainer.fit(first, batches(6, 0), val);
    trainer.save_checkpoint(path);
  }
  Noisy second;
  Trainer trainer(options(), SanityCounter{});
  trainer.fit(second, batches(6, 0), val, path);
  CHECK(trainer.callback<SanityCounter>().sanity_checks == 1);
  CHECK(trainer.callback<SanityCounter>().flagged_at_start);  // Lightning's trainer.sanity_checking, both hooks
  CHECK(trainer.callback<SanityCounter>().flagged_at_end);
  CHECK_FALSE(trainer.sanity_checking());
  CHECK(torch::equal(second.fc->weight, full.fc->weight));
  CHECK(torch::equal(second.fc->bias, full.fc->bias));
}

namespace {
// Saves a checkpoint after the at-th batch of the fit and stops there.
struct SaveAt {
  std::string path;
  std::int64_t at;
  template <class T, class M>
  void on_train_batch_end(T& trainer, M&, const torch::Tensor&, Batch&, std::int64_t) {
    if (trainer.total_batches() == at) {
      trainer.save_checkpoint(path);
      trainer.terminate();
    }
  }
};
}  // namespace

TEST_CASE("plain data resumes mid-epoch at the batch the checkpoint was written after") {
  TempDir dir;
  auto train = batches(6, 0);
  const std::string path = dir.file("mid.ckpt");
  torch::manual_seed(5);  // the same initial weights for each model
  Net full;
  Trainer(quiet().max_epochs(2).seed(11)).fit(full, train);
  torch::manual_seed(5);
  Net first;
  Trainer(quiet().max_epochs(2).seed(11), SaveAt{path, 8}).fit(first, train);  // epoch 2, after its 2nd batch
  Net second;
  Trainer trainer(quiet().max_epochs(2).seed(11));
  trainer.fit(second, train, {}, path);
  CHECK(trainer.total_batches() == 12);
  CHECK(torch::equal(second.fc->weight, full.fc->weight));
}

TEST_CASE("val_check_interval(n) counts training batches within the epoch (across epochs without "
          "check_val_every_n_epoch), as Lightning; val_every_n_optimizer_steps(n) counts optimizer steps") {
  auto train = batches(4, 0), val = batches(1, 1);
  auto validations = [&](TrainerOptions options) {
    Net net;
    Trainer(options.max_epochs(2).num_sanity_val_steps(0)).fit(net, train, val);
    return net.validation_batches;
  };
  // accumulate 2: batches and optimizer steps disagree
  CHECK(validations(quiet().accumulate_grad_batches(2).val_check_interval(2)) == 4);           // batches 2, 4 of each epoch
  CHECK(validations(quiet().accumulate_grad_batches(2).val_every_n_optimizer_steps(2)) == 2);  // steps 2, 4
  CHECK(validations(quiet().val_check_interval(3)) == 2);                                       // batch 3 of each epoch
  CHECK(validations(quiet().val_check_interval(3).check_val_every_n_epoch(std::nullopt)) == 2);  // batches 3, 6
  CHECK(validations(quiet().val_check_interval(5).check_val_every_n_epoch(std::nullopt)) == 1);  // batch 5
  CHECK(validations(quiet().val_check_interval(0.5)) == 4);   // batches 2, 4 of each epoch
  CHECK(validations(quiet().val_check_interval(0.75)) == 2);  // floor(3): batch 3 only, not at the epoch's end
  // longer than an epoch, counted within it: it would never validate, so it is refused
  CHECK_THROWS_WITH_AS(validations(quiet().val_check_interval(5)),
                       doctest::Contains("val_check_interval(5) must not exceed the number of training batches (4)"),
                       std::invalid_argument);
  CHECK_THROWS_AS(Trainer(quiet().check_val_every_n_epoch(std::nullopt)), std::invalid_argument);
}

namespace {
// A module that provides its own data, as most Lightning modules do.
struct SelfFed : Net {
  std::vector<Batch> data = batches(3, 0);
  int test_batches = 0;
  std::vector<Batch>& train_dataloader() { return data; }
  DataLoader<TensorDataset<2>> val_dataloader() {  // by value: the Trainer owns it for the stage
    return DataLoader(TensorDataset<2>(torch::randn({8, 2}), torch::randn({8, 1})), DataLoaderOptions().batch_size(4));
  }
  std::vector<Batch> test_dataloader() { return batches(2, 5); }
  void test_step(Batch& b, std::int64_t) {
    ++test_batches;
    log("test_loss", torch::mse_loss(fc(b.first), b.second));
  }
  torch::Tensor predict_step(Batch& b, std::int64_t) { return fc(b.first); }
  std::vector<Batch> predict_dataloader() { return batches(3, 6); }
};
}  // namespace

TEST_CASE("fit(module), validate(module), test(module), predict(module) take the data from the module's hooks") {
  SelfFed net;
  Trainer trainer(quiet().max_epochs(1).num_sanity_val_steps(0));
  trainer.fit(net);
  CHECK(trainer.global_step() == 3);
  CHECK(net.validation_batches == 2);
  CHECK(trainer.validate(net).count("val_loss") == 1);
  CHECK(trainer.test(net).count("test_loss") == 1);
  CHECK(net.test_batches == 2);
  CHECK(trainer.predict(net).size() == 3);
  // an rvalue loader is moved into the stage
  trainer.test(net, DataLoader(TensorDataset<2>(torch::randn({12, 2}), torch::randn({12, 1})),
                                  DataLoaderOptions().batch_size(4).workers(1).prefetch_factor(1)));
  CHECK(net.test_batches == 2 + 3);
}

namespace {
// Steps its scheduler itself (Lightning's lr_scheduler_step), halving the rate per optimizer step.
struct OwnSchedule : Net {
  int scheduler_steps = 0;
  bool saw_metric = false;
  std::shared_ptr<torch::optim::SGD> sgd;
  OptimizerConfig configure_optimizers() {
    sgd = std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
    auto halving = std::make_shared<torch::optim::StepLR>(*sgd, 1, 0.5);
    return OptimizerConfig(sgd).scheduler(SchedulerConfig(halving).interval(Interval::step));
  }
  void lr_scheduler_step(const SchedulerConfig& scheduler, std::optional<double> metric) {
    ++scheduler_steps;
    saw_metric |= metric.has_value();
    scheduler.step();
  }
};
}  // namespace

TEST_CASE("lr_scheduler_step replaces the scheduler's step") {
  auto train = batches(4, 0);
  OwnSchedule net;
  Trainer(quiet().max_epochs(1)).fit(net, train);
  CHECK(net.scheduler_steps == 4);
  CHECK_FALSE(net.saw_metric);
  // LibTorch's StepLR counts its first step() as step 0, so 4 steps halve the rate 3 times
  CHECK(net.sgd->param_groups()[0].options().get_lr() == doctest::Approx(0.1 / 8));
}

TEST_CASE("DataLoader is movable, mid-epoch and prefetching included; an rvalue loader is owned by the stage") {
  TensorDataset<2> dataset(torch::arange(40, torch::kFloat32).reshape({20, 2}), torch::arange(20, torch::kFloat32));
  DataLoader loader(dataset, DataLoaderOptions().batch_size(4).shuffle(true).seed(9).workers(1).prefetch_factor(2));
  std::vector<torch::Tensor> expected;
  {
    DataLoader same(dataset, DataLoaderOptions().batch_size(4).shuffle(true).seed(9));
    for (auto batch : same) expected.push_back(batch.second);
  }
  std::vector<torch::Tensor> got;
  auto it = loader.begin();
  got.push_back((*it).second);
  ++it;
  got.push_back((*it).second);
  DataLoader moved(std::move(loader));  // mid-epoch, with the prefetch thread running
  const StateDict position = moved.state_dict();
  CHECK(std::get<std::int64_t>(position.at("next_batch")) == 2);
  DataLoader assigned(dataset, DataLoaderOptions().batch_size(4).shuffle(true).seed(9).workers(1).prefetch_factor(1));
  assigned = std::move(moved);
  assigned.load_state_dict(position);
  for (auto batch : assigned) got.push_back(batch.second);
  REQUIRE(got.size() == expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(torch::equal(got[i], expected[i]));

  Net net;
  Trainer trainer(quiet());
  const auto metrics =
      trainer.validate(net, DataLoader(TensorDataset<2>(torch::randn({8, 2}), torch::randn({8, 1})),
                                          DataLoaderOptions().batch_size(4).workers(1).prefetch_factor(1)));
  CHECK(metrics.count("val_loss") == 1);
  CHECK(net.validation_batches == 2);
}

namespace {
// A callback whose own helper would be flagged as a misspelled hook, opting out of the name check.
struct OwnHelpers {
  static constexpr bool trainloop_skip_hook_name_check = true;
  int ends = 0;
  void on_train_epoch_ends() { ++ends; }  // not a hook: the user's own helper
  template <class T, class M>
  void on_train_epoch_end(T&, M&) {
    on_train_epoch_ends();
  }
};
}  // namespace

TEST_CASE("a type opts out of the misspelled-hook check for its own on_* helpers") {
  auto train = batches(2, 0);
  Net net;
  Trainer trainer(quiet().max_epochs(2), OwnHelpers{});
  trainer.fit(net, train);
  CHECK(trainer.callback<OwnHelpers>().ends == 2);
}

// --- Lightning's optimizer_step with its closure ----------------------------------------------------------------------

namespace {
// A regression whose optimizer is chosen per test; it counts training_step calls (an optimizer's closure runs them).
struct ClosureNet : LightningModule<ClosureNet> {
  torch::nn::Linear fc{nullptr};
  enum class Kind { lbfgs, sgd } kind = Kind::lbfgs;
  int training_steps = 0;
  explicit ClosureNet(Kind k = Kind::lbfgs) : kind(k) {
    torch::manual_seed(3);
    fc = register_module("fc", torch::nn::Linear(2, 1));
  }
  torch::Tensor training_step(Batch& b, std::int64_t) {
    ++training_steps;
    return torch::mse_loss(fc(b.first), b.second);
  }
  OptimizerConfig configure_optimizers() { return make_optimizer(parameters(), kind); }
  static std::shared_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::Tensor> params, Kind kind) {
    if (kind == Kind::lbfgs) return std::make_shared<torch::optim::LBFGS>(params, torch::optim::LBFGSOptions(0.5).max_iter(5));
    return std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.1));
  }
};
bool same_parameters(torch::nn::Module& a, torch::nn::Module& b) { return bitwise_equal(a.parameters(), b.parameters()); }
// The textbook LibTorch LBFGS loop, what the Trainer's runs are compared with.
void train_lbfgs_by_hand(ClosureNet& net, const std::vector<Batch>& data, int epochs) {
  torch::optim::LBFGS optimizer(net.parameters(), torch::optim::LBFGSOptions(0.5).max_iter(5));
  for (int epoch = 0; epoch < epochs; ++epoch)
    for (Batch batch : data)
      optimizer.step([&] {
        optimizer.zero_grad();
        torch::Tensor loss = net.training_step(batch, 0);
        loss.backward();
        return loss;
      });
}
// Data of unknown length: a generator giving `data` once, then std::nullopt.
auto one_pass(const std::vector<Batch>& data) {
  return [&data, next = std::size_t{0}]() mutable -> std::optional<Batch> {
    if (next == data.size()) return std::nullopt;
    return data[next++];
  };
}
}  // namespace

TEST_CASE("LBFGS in automatic optimisation: the Trainer hands it the batch's closure; it trains as a hand-written loop") {
  const auto data = batches(3, 5);
  ClosureNet net;
  Trainer trainer(quiet().max_epochs(2));
  trainer.fit(net, data);

  ClosureNet hand;  // the same start (seed 3), trained by the textbook LibTorch loop
  train_lbfgs_by_hand(hand, data, 2);
  CHECK(same_parameters(net, hand));  // bitwise
  CHECK(net.training_steps == hand.training_steps);
  CHECK(net.training_steps > 6);      // LBFGS re-evaluated inside its steps
  CHECK(trainer.global_step() == 6);  // one optimizer step per batch, however many evaluations
}

namespace {
// Lightning's documented override: a learning-rate warm-up, then optimizer.step(closure).
struct WarmUp : ClosureNet {
  std::vector<std::string> order;
  std::vector<double> lrs;
  bool skip_step = false;
  WarmUp() : ClosureNet(Kind::sgd) {}
  torch::Tensor training_step(Batch& b, std::int64_t i) {
    order.push_back("training_step");
    return ClosureNet::training_step(b, i);
  }
  void on_before_optimizer_step(torch::optim::Optimizer&) { order.push_back("on_before_optimizer_step"); }
  void optimizer_step(std::int64_t, std::int64_t, LightningOptimizer& optimizer, OptimizerClosure& closure) {
    order.push_back("optimizer_step");
    if (skip_step) return;
    const double scale = std::min(1.0, static_cast<double>(global_step() + 1) / 3.0);
    for (auto& group : optimizer.param_groups()) group.options().set_lr(0.1 * scale);
    lrs.push_back(0.1 * scale);
    const torch::Tensor loss = optimizer.step(closure);
    CHECK(closure.executed());
    CHECK(loss.numel() == 1);  // the closure's loss
  }
};
}  // namespace

TEST_CASE("optimizer_step(epoch, batch_idx, optimizer, closure): training_step runs inside it; a warm-up works; "
          "an override that never runs the closure is an error") {
  const auto data = batches(4, 6);
  WarmUp net;
  Trainer trainer(quiet().max_epochs(1).accumulate_grad_batches(2));
  trainer.fit(net, data);
  // Accumulation: the window's first batch runs its closure at once; the last one inside optimizer_step.
  const std::vector<std::string> window = {"training_step", "optimizer_step", "training_step", "on_before_optimizer_step"};
  std::vector<std::string> expected = window;
  expected.insert(expected.end(), window.begin(), window.end());
  CHECK(net.order == expected);
  CHECK((net.lrs == std::vector<double>{0.1 * (1 / 3.0), 0.1 * (2 / 3.0)}));

  // The same warm-up by hand: the gradients of a window summed over its batches, each loss divided by 2.
  ClosureNet hand(ClosureNet::Kind::sgd);
  torch::optim::SGD optimizer(hand.parameters(), torch::optim::SGDOptions(0.1));
  for (int step = 0; step < 2; ++step) {
    optimizer.zero_grad();
    for (int i = 0; i < 2; ++i) {
      Batch batch = data[static_cast<std::size_t>(2 * step + i)];
      (hand.training_step(batch, 0) / 2.0).backward();
    }
    optimizer.param_groups()[0].options().set_lr(0.1 * ((step + 1) / 3.0));
    optimizer.step();
  }
  CHECK(same_parameters(net, hand));

  WarmUp skipping;
  skipping.skip_step = true;
  CHECK_THROWS_WITH_AS(Trainer<>(quiet().max_epochs(1)).fit(skipping, data),
                       contains("WarmUp::optimizer_step did not run the closure"), std::logic_error);
}

namespace {
// Two optimizers in automatic optimisation: one training_step and one backward per batch, then both step.
struct TwoOptimizers : ClosureNet {
  torch::nn::Linear head{nullptr};
  TwoOptimizers() : ClosureNet(Kind::sgd) { head = register_module("head", torch::nn::Linear(1, 1)); }
  torch::Tensor training_step(Batch& b, std::int64_t) {
    ++training_steps;
    return torch::mse_loss(head(fc(b.first)), b.second);
  }
  Optimizers configure_optimizers() {
    return {OptimizerConfig(make_optimizer(fc->parameters(), Kind::sgd)),
            OptimizerConfig(std::make_shared<torch::optim::Adam>(head->parameters()))};
  }
};
}  // namespace

TEST_CASE("several optimizers in automatic optimisation share the batch's one evaluation") {
  const auto data = batches(3, 7);
  TwoOptimizers net;
  Trainer trainer(quiet().max_epochs(1));
  trainer.fit(net, data);
  CHECK(net.training_steps == 3);
  CHECK(trainer.global_step() == 3);

  TwoOptimizers hand;
  torch::optim::SGD sgd(hand.fc->parameters(), torch::optim::SGDOptions(0.1));
  torch::optim::Adam adam(hand.head->parameters());
  for (Batch batch : data) {
    sgd.zero_grad();
    adam.zero_grad();
    hand.training_step(batch, 0).backward();
    sgd.step();
    adam.step();
  }
  CHECK(same_parameters(net, hand));
}

namespace {
// Manual optimisation with LBFGS: Lightning's opt.step(closure=closure).
struct ManualLbfgs : ClosureNet {
  ManualLbfgs() { automatic_optimization(false); }
  torch::Tensor training_step(Batch& b, std::int64_t i) {
    torch::optim::Optimizer& optimizer = *optimizers()[0];
    return optimizer_step(optimizer, [&] {
      optimizer_zero_grad(optimizer);
      torch::Tensor loss = ClosureNet::training_step(b, i);
      manual_backward(loss);
      return loss;
    });
  }
};
}  // namespace

TEST_CASE("manual optimisation steps LBFGS with its own closure, as a hand-written loop") {
  const auto data = batches(3, 8);
  ManualLbfgs net;
  Trainer trainer(quiet().max_epochs(1));
  trainer.fit(net, data);
  ClosureNet hand;
  train_lbfgs_by_hand(hand, data, 1);
  CHECK(same_parameters(net, hand));
  CHECK(net.training_steps == hand.training_steps);
  CHECK(trainer.global_step() == 3);
}

TEST_CASE("an epoch of unknown length ending inside an accumulation window: its step has no batch to re-evaluate") {
  const auto data = batches(3, 9);
  ClosureNet sgd(ClosureNet::Kind::sgd);  // steps after batches 2 and 3 (the epoch's end closes the window)
  Trainer sgd_trainer(quiet().max_epochs(1).accumulate_grad_batches(2));
  sgd_trainer.fit(sgd, one_pass(data));
  CHECK(sgd_trainer.global_step() == 2);
  CHECK(sgd.training_steps == 3);

  ClosureNet lbfgs;
  CHECK_THROWS_WITH_AS(Trainer<>(quiet().max_epochs(1).accumulate_grad_batches(2)).fit(lbfgs, one_pass(data)),
                       contains("no batch is left to evaluate"), std::logic_error);
}

// --- configure_callbacks -------------------------------------------------------------------------------------------

namespace {
std::vector<std::string> g_epoch_ends;  // who saw on_train_epoch_end, in order
template <int Id>
struct Tagged {
  std::string name;
  std::int64_t epochs = 0;
  template <class T, class M>
  void on_train_epoch_end(T&, M&) {
    ++epochs;
    g_epoch_ends.push_back(name);
  }
  StateDict state_dict() const { return {{"epochs", epochs}}; }
  void load_state_dict(const StateDict& state) { epochs = std::get<std::int64_t>(state.at("epochs")); }
};
// Its callbacks are its members, returned by reference (std::tie): they outlive the fit, and the test reads them.
struct WithCallbacks : Net {
  ModelCheckpoint checkpoint;
  Tagged<1> replacing{"module's Tagged<1>"};
  Tagged<2> added{"module's Tagged<2>"};
  int configured = 0;
  explicit WithCallbacks(const std::string& dir) : checkpoint(options(dir)) {}
  static ModelCheckpoint::Options options(const std::string& dir) {
    ModelCheckpoint::Options o;
    o.dirpath = dir;
    o.save_last = true;
    return o;
  }
  auto configure_callbacks() {
    ++configured;
    return std::tie(checkpoint, replacing, added);
  }
  void on_train_epoch_end() { g_epoch_ends.push_back("module"); }
};
// By value: a single callback, kept by the Trainer until its next stage.
struct WithOneCallback : Net {
  Tagged<2> configure_callbacks() { return Tagged<2>{"by value", 0}; }
};
}  // namespace

TEST_CASE("configure_callbacks: the module's callbacks join the Trainer's, replace those of their type, and run in "
          "Lightning's order; their states are checkpointed") {
  TempDir dir;
  const auto data = batches(2, 10);
  g_epoch_ends.clear();
  WithCallbacks net(dir.file("module_ckpt"));
  ModelCheckpoint::Options trainer_options = WithCallbacks::options(dir.file("trainer_ckpt"));
  Trainer trainer(quiet().max_epochs(2), Tagged<1>{"trainer's Tagged<1>", 0}, Tagged<3>{"trainer's Tagged<3>", 0},
                  ModelCheckpoint(trainer_options));
  trainer.fit(net, data);
  CHECK(net.configured == 1);
  // The Trainer's plain callbacks (less the replaced one), the module's, the module's hook, then checkpointing.
  const std::vector<std::string> epoch = {"trainer's Tagged<3>", "module's Tagged<1>", "module's Tagged<2>", "module"};
  std::vector<std::string> two_epochs = epoch;
  two_epochs.insert(two_epochs.end(), epoch.begin(), epoch.end());
  CHECK(g_epoch_ends == two_epochs);
  CHECK(trainer.callback<Tagged<1>>().epochs == 0);  // replaced: never called
  CHECK(net.replacing.epochs == 2);
  CHECK(std::filesystem::exists(dir.file("module_ckpt/last.ckpt")));
  CHECK_FALSE(std::filesystem::exists(dir.file("trainer_ckpt")));  // the Trainer's ModelCheckpoint was replaced

  // save_checkpoint after fit holds the module's callbacks' states; a resume from "last" finds the module's
  // ModelCheckpoint and restores them.
  trainer.save_checkpoint(dir.file("after.ckpt"));
  WithCallbacks resumed(dir.file("module_ckpt"));
  Trainer again(quiet().max_epochs(3), Tagged<1>{"trainer's Tagged<1>", 0}, Tagged<3>{"trainer's Tagged<3>", 0},
                ModelCheckpoint(trainer_options));
  again.fit(resumed, data, "last");
  CHECK(resumed.replacing.epochs == 3);  // 2 restored, 1 more
  CHECK(resumed.added.epochs == 3);
  CHECK(again.global_step() == 6);

  // A single callback by value: the Trainer holds it for the stage and after (its state in save_checkpoint).
  WithOneCallback one;
  Trainer<> plain(quiet().max_epochs(1));
  plain.fit(one, data);
  plain.save_checkpoint(dir.file("one.ckpt"));
  WithOneCallback restored;
  Trainer<> more(quiet().max_epochs(2));
  more.fit(restored, data, dir.file("one.ckpt"));
  CHECK(more.global_step() == 4);
}
