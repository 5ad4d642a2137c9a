// The golden trace of a full fit: every module hook and callback hook, in order, for a run with a sanity check,
// 2 epochs of 4 batches, validation in the middle and at the end of each epoch, gradient accumulation over 2
// batches, the data from the module's data hooks and every optimisation and mode hook overridden. It pins the order the README's hook table documents (Lightning's).
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <string>
#include <tuple>
#include <vector>

using namespace trainloop;
using Batch = std::pair<torch::Tensor, torch::Tensor>;

namespace {
std::vector<std::string>* g_trace = nullptr;
void trace(const std::string& line) { g_trace->push_back(line); }

#define MODULE_HOOK(name)                                                                                              \
  void name() { trace(#name); }
#define MODULE_BATCH_HOOK(name)                                                                                        \
  void name(Batch&, std::int64_t i) { trace(#name "(" + std::to_string(i) + ")"); }
#define MODULE_BATCH_END_HOOK(name)                                                                                    \
  template <class O>                                                                                                   \
  void name(const O&, Batch&, std::int64_t i) {                                                                        \
    trace(#name "(" + std::to_string(i) + ")");                                                                        \
  }

struct TracedNet : LightningModule<TracedNet> {
  torch::nn::Linear fc{nullptr};
  std::vector<Batch> train_batches, val_batches;  // handed out by train_dataloader() / val_dataloader()
  TracedNet() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  std::vector<Batch>& train_dataloader() { return trace("train_dataloader"), train_batches; }
  std::vector<Batch>& val_dataloader() { return trace("val_dataloader"), val_batches; }
  MODULE_HOOK(prepare_data)
  MODULE_HOOK(configure_model)
  MODULE_HOOK(on_validation_model_zero_grad)
  void on_validation_model_eval() { trace("on_validation_model_eval"), eval(); }
  void on_validation_model_train() { trace("on_validation_model_train"), train(); }
  void backward(torch::Tensor& loss) { trace("backward"), loss.backward(); }
  void optimizer_zero_grad(std::int64_t epoch, std::int64_t i, torch::optim::Optimizer& optimizer) {
    trace("optimizer_zero_grad(" + std::to_string(epoch) + "," + std::to_string(i) + ")");
    optimizer.zero_grad();
  }
  void configure_gradient_clipping(torch::optim::Optimizer& optimizer, double value, ClipAlgorithm algorithm) {
    trace("configure_gradient_clipping");
    clip_gradients(optimizer, value, algorithm);
  }
  // Lightning's form: the closure runs training_step and the backward hooks inside the step.
  void optimizer_step(std::int64_t epoch, std::int64_t i, LightningOptimizer& optimizer, OptimizerClosure& closure) {
    trace("optimizer_step(" + std::to_string(epoch) + "," + std::to_string(i) + ")");
    optimizer.step(closure);
  }
  std::tuple<> configure_callbacks() { return trace("configure_callbacks"), std::tuple<>(); }
  torch::Tensor training_step(Batch& b, std::int64_t i) {
    trace("training_step(" + std::to_string(i) + ")");
    return torch::mse_loss(fc(b.first), b.second);
  }
  void validation_step(Batch&, std::int64_t i) { trace("validation_step(" + std::to_string(i) + ")"); }
  std::shared_ptr<torch::optim::SGD> configure_optimizers() {
    trace("configure_optimizers");
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.01));
  }
  void setup(const std::string& stage) { trace("setup(" + stage + ")"); }
  void teardown(const std::string& stage) { trace("teardown(" + stage + ")"); }
  Batch on_before_batch_transfer(Batch b, int) { return trace("on_before_batch_transfer"), b; }
  Batch transfer_batch_to_device(Batch b, torch::Device, int) { return trace("transfer_batch_to_device"), b; }
  Batch on_after_batch_transfer(Batch b, int) { return trace("on_after_batch_transfer"), b; }
  MODULE_HOOK(on_fit_start)
  MODULE_HOOK(on_fit_end)
  MODULE_HOOK(on_train_start)
  MODULE_HOOK(on_train_end)
  MODULE_HOOK(on_train_epoch_start)
  MODULE_HOOK(on_train_epoch_end)
  MODULE_HOOK(on_validation_start)
  MODULE_HOOK(on_validation_end)
  MODULE_HOOK(on_validation_epoch_start)
  MODULE_HOOK(on_validation_epoch_end)
  MODULE_HOOK(on_after_backward)
  MODULE_BATCH_HOOK(on_train_batch_start)
  MODULE_BATCH_END_HOOK(on_train_batch_end)
  MODULE_BATCH_HOOK(on_validation_batch_start)
  MODULE_BATCH_END_HOOK(on_validation_batch_end)
  void on_before_backward(torch::Tensor&) { trace("on_before_backward"); }
  void on_before_optimizer_step(torch::optim::Optimizer&) { trace("on_before_optimizer_step"); }
  void on_before_zero_grad(torch::optim::Optimizer&) { trace("on_before_zero_grad"); }
};

#define CALLBACK_HOOK(name)                                                                                            \
  template <class T, class M>                                                                                          \
  void name(T&, M&) {                                                                                                  \
    trace("Callback." #name);                                                                                          \
  }
#define CALLBACK_BATCH_HOOK(name)                                                                                      \
  template <class T, class M>                                                                                          \
  void name(T&, M&, Batch&, std::int64_t i) {                                                                          \
    trace("Callback." #name "(" + std::to_string(i) + ")");                                                            \
  }
#define CALLBACK_BATCH_END_HOOK(name)                                                                                  \
  template <class T, class M, class O>                                                                                 \
  void name(T&, M&, const O&, Batch&, std::int64_t i) {                                                                \
    trace("Callback." #name "(" + std::to_string(i) + ")");                                                            \
  }

// A callback with Lightning hooks and Engine hooks: it sees the training Engine's events too.
struct TracingCallback {
  template <class T, class M>
  void setup(T&, M&, const std::string& stage) {
    trace("Callback.setup(" + stage + ")");
  }
  template <class T, class M>
  void teardown(T&, M&, const std::string& stage) {
    trace("Callback.teardown(" + stage + ")");
  }
  CALLBACK_HOOK(on_fit_start)
  CALLBACK_HOOK(on_fit_end)
  CALLBACK_HOOK(on_sanity_check_start)
  CALLBACK_HOOK(on_sanity_check_end)
  CALLBACK_HOOK(on_train_start)
  CALLBACK_HOOK(on_train_end)
  CALLBACK_HOOK(on_train_epoch_start)
  CALLBACK_HOOK(on_train_epoch_end)
  CALLBACK_HOOK(on_validation_start)
  CALLBACK_HOOK(on_validation_end)
  CALLBACK_HOOK(on_validation_epoch_start)
  CALLBACK_HOOK(on_validation_epoch_end)
  CALLBACK_HOOK(on_after_backward)
  CALLBACK_BATCH_HOOK(on_train_batch_start)
  CALLBACK_BATCH_END_HOOK(on_train_batch_end)
  CALLBACK_BATCH_HOOK(on_validation_batch_start)
  CALLBACK_BATCH_END_HOOK(on_validation_batch_end)
  template <class T, class M>
  void on_before_backward(T&, M&, torch::Tensor&) {
    trace("Callback.on_before_backward");
  }
  template <class T, class M>
  void on_before_optimizer_step(T&, M&, torch::optim::Optimizer&) {
    trace("Callback.on_before_optimizer_step");
  }
  template <class T, class M>
  void on_before_zero_grad(T&, M&, torch::optim::Optimizer&) {
    trace("Callback.on_before_zero_grad");
  }
  template <class E>
  void on_epoch_started(E& engine) {
    trace("Engine.epoch_started(" + std::to_string(engine.state.epoch) + ")");
  }
  template <class E>
  void on_iteration_completed(E& engine) {
    trace("Engine.iteration_completed(" + std::to_string(engine.state.iteration) + ")");
  }
  template <class E>
  void on_epoch_completed(E& engine) {
    trace("Engine.epoch_completed(" + std::to_string(engine.state.epoch) + ")");
  }
};

using Lines = std::vector<std::string>;
void append(Lines& out, const Lines& more) { out.insert(out.end(), more.begin(), more.end()); }
Lines transfer() { return {"on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer"}; }
Lines both(const std::string& hook) { return {"Callback." + hook, hook}; }

Lines validation_block(int batches, bool in_fit = true) {
  Lines out;
  if (in_fit) out.push_back("on_validation_model_zero_grad");  // not before the sanity check, as in Lightning
  out.push_back("on_validation_model_eval");
  append(out, both("on_validation_start"));
  append(out, both("on_validation_epoch_start"));
  for (int i = 0; i < batches; ++i) {
    const std::string n = "(" + std::to_string(i) + ")";
    append(out, transfer());
    append(out, {"Callback.on_validation_batch_start" + n, "on_validation_batch_start" + n, "validation_step" + n,
                 "Callback.on_validation_batch_end" + n, "on_validation_batch_end" + n});
  }
  append(out, both("on_validation_epoch_end"));
  append(out, both("on_validation_end"));
  out.push_back("on_validation_model_train");
  return out;
}

// One training batch with accumulation over 2: zero_grad opens a window, the optimizer steps at its end, running the
// batch's closure (training_step, backward) inside its step, as Lightning's optimizer_step does.
Lines train_batch(int epoch, int i, int iteration) {
  const std::string n = "(" + std::to_string(i) + ")", at = "(" + std::to_string(epoch) + "," + std::to_string(i) + ")";
  Lines out = transfer();
  append(out, {"Callback.on_train_batch_start" + n, "on_train_batch_start" + n});
  if (i % 2 == 1) out.push_back("optimizer_step" + at);
  out.push_back("training_step" + n);
  if (i % 2 == 0) append(out, {"Callback.on_before_zero_grad", "on_before_zero_grad", "optimizer_zero_grad" + at});
  append(out, both("on_before_backward"));
  out.push_back("backward");
  append(out, both("on_after_backward"));
  if (i % 2 == 1) append(out, {"Callback.on_before_optimizer_step", "on_before_optimizer_step", "configure_gradient_clipping"});
  append(out, {"Callback.on_train_batch_end" + n, "on_train_batch_end" + n,
               "Engine.iteration_completed(" + std::to_string(iteration) + ")"});
  return out;
}
}  // namespace

TEST_CASE("golden trace of a full fit: sanity check, 2 epochs, mid-epoch validation, accumulation 2") {
  std::vector<std::string> recorded;
  g_trace = &recorded;
  std::vector<Batch> train, val;
  for (int i = 0; i < 4; ++i) train.emplace_back(torch::randn({3, 2}), torch::randn({3, 1}));
  for (int i = 0; i < 2; ++i) val.emplace_back(torch::randn({3, 2}), torch::randn({3, 1}));
  TracedNet net;
  net.train_batches = train;
  net.val_batches = val;
  Trainer trainer(TrainerOptions()
                      .accelerator("cpu")
                      .max_epochs(2)
                      .val_check_interval(0.5)
                      .accumulate_grad_batches(2)
                      .enable_progress_bar(false)
                      .enable_model_summary(false),
                  TracingCallback{});
  trainer.fit(net);  // the data from the module's train_dataloader() and val_dataloader()
  g_trace = nullptr;

  Lines expected = {"configure_callbacks", "prepare_data",   "Callback.setup(fit)", "setup(fit)",
                    "configure_model",     "train_dataloader", "val_dataloader",      "configure_optimizers"};
  append(expected, both("on_fit_start"));
  expected.push_back("Callback.on_sanity_check_start");
  append(expected, validation_block(2, false));
  expected.push_back("Callback.on_sanity_check_end");
  append(expected, both("on_train_start"));
  int iteration = 0;
  for (int epoch = 1; epoch <= 2; ++epoch) {
    expected.push_back("Engine.epoch_started(" + std::to_string(epoch) + ")");
    append(expected, both("on_train_epoch_start"));
    for (int i = 0; i < 4; ++i) {
      append(expected, train_batch(epoch - 1, i, ++iteration));
      // val_check_interval 0.5: after batches 2 and 4 of 4, at the batch's end (Lightning's rule: the last one is
      // the epoch's validation, before the epoch ends)
      if (i == 1 || i == 3) append(expected, validation_block(2));
    }
    expected.push_back("Engine.epoch_completed(" + std::to_string(epoch) + ")");
    append(expected, both("on_train_epoch_end"));
  }
  append(expected, both("on_train_end"));
  append(expected, both("on_fit_end"));
  append(expected, {"Callback.teardown(fit)", "teardown(fit)"});

  // Compare line by line first, so a failure names the first line that differs.
  for (std::size_t i = 0; i < std::min(recorded.size(), expected.size()); ++i) {
    INFO("line " << i);
    REQUIRE(recorded[i] == expected[i]);
  }
  CHECK(recorded.size() == expected.size());
  CHECK(trainer.global_step() == 4);    // 8 batches, one optimizer step per 2
  CHECK(trainer.total_batches() == 8);  // batches are counted separately from steps
  CHECK(trainer.current_epoch() == 2);
}
