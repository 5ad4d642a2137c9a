// Mixed precision (TRAINLOOP_WITH_AMP): the autocast guard, the GradScaler against values worked out by hand, and the
// Trainer's "bf16-mixed"/"16-mixed" with the scaler's interplay (clipping, accumulation, several optimizers, manual
// optimisation, skipped steps). All on CPU: the scaler runs forced on under bf16 where fp16 autocast needs CUDA. The
// single-header flavour of the suite is built without the macro and checks the error that says so.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fixtures.hpp"
#include "temp_dir.hpp"

using namespace trainloop;


TEST_CASE("precision names: Lightning's, checked when the options are") {
  CHECK_NOTHROW(Trainer<>(quiet().precision("32")));
  CHECK_NOTHROW(Trainer<>(quiet().precision("32-true")));
  CHECK_THROWS_WITH_AS(Trainer<>(quiet().precision("fp16")), contains("precision(\"fp16\"): unknown precision"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(Trainer<>(quiet().precision("16-true")), contains("fp32 weights"), std::invalid_argument);
#if !TRAINLOOP_WITH_AMP
  for (const char* mixed : {"16-mixed", "bf16-mixed", "16", "bf16"})
    CHECK_THROWS_WITH_AS(Trainer<>(quiet().precision(mixed)), contains("define TRAINLOOP_WITH_AMP=1"),
                         std::invalid_argument);
#endif
}

#if TRAINLOOP_WITH_AMP
namespace {
std::vector<Batch> class_data(int batches, std::uint64_t seed = 0) {
  torch::manual_seed(static_cast<std::int64_t>(seed));
  std::vector<Batch> data;
  for (int i = 0; i < batches; ++i) {
    torch::Tensor x = torch::randn({16, 4});
    data.emplace_back(x, (x.sum(1) > 0).to(torch::kLong) + (x.select(1, 0) > 1).to(torch::kLong));
  }
  return data;
}
bool cpu_autocast() { return trainloop::detail::autocast_enabled(torch::kCPU); }

struct Classifier : LightningModule<Classifier> {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  bool two_optimizers = false, manual = false, twice = false, adam = false;
  std::set<std::int64_t> inf_batches;  // batches whose loss becomes inf (their gradients are inf/NaN)
  bool autocast_in_step = false, autocast_in_validation = false, autocast_in_optimizer_hook = true;
  at::ScalarType logits_dtype = at::kFloat;
  std::vector<double> grad_norms;  // seen by on_before_optimizer_step, every step
  std::vector<double> lrs;         // the first optimizer's learning rate at each step taken
  explicit Classifier(std::uint64_t seed = 1) {
    torch::manual_seed(static_cast<std::int64_t>(seed));
    fc1 = register_module("fc1", torch::nn::Linear(4, 16));
    fc2 = register_module("fc2", torch::nn::Linear(16, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  torch::Tensor loss_of(Batch& b, std::int64_t batch_idx) {
    torch::Tensor logits = forward(b.first);
    logits_dtype = logits.scalar_type();
    torch::Tensor loss = torch::nn::functional::cross_entropy(logits.to(torch::kFloat32), b.second);
    if (inf_batches.count(batch_idx)) loss = loss * std::numeric_limits<double>::infinity();
    return loss;
  }
  torch::Tensor training_step(Batch& b, std::int64_t batch_idx) {
    autocast_in_step = cpu_autocast();
    torch::Tensor loss = loss_of(b, batch_idx);
    if (manual && twice) {  // two backward/step rounds per batch, one on each half of it
      for (const torch::Tensor& half : {loss, loss_of(b, batch_idx) * 0.5}) {
        for (const auto& optimizer : optimizers()) optimizer_zero_grad(*optimizer);
        manual_backward(half);
        for (const auto& optimizer : optimizers()) optimizer_step(*optimizer);
      }
    } else if (manual) {
      for (const auto& optimizer : optimizers()) optimizer_zero_grad(*optimizer);
      manual_backward(loss);
      for (const auto& optimizer : optimizers()) optimizer_step(*optimizer);
    }
    return loss;
  }
  void validation_step(Batch& b, std::int64_t batch_idx) {
    autocast_in_validation = cpu_autocast();
    log("val_loss", loss_of(b, batch_idx));
  }
  void on_before_optimizer_step(torch::optim::Optimizer& optimizer) {
    autocast_in_optimizer_hook = cpu_autocast();
    double squares = 0;
    for (auto& group : optimizer.param_groups())
      for (auto& p : group.params())
        if (p.grad().defined()) squares += p.grad().pow(2).sum().item<double>();
    grad_norms.push_back(std::sqrt(squares));
  }
  torch::Tensor predict_step(Batch& b, std::int64_t) {
    torch::Tensor logits = forward(b.first);
    logits_dtype = logits.scalar_type();
    return logits;
  }
  Optimizers configure_optimizers() {
    auto make = [&](std::vector<torch::Tensor> params) -> std::shared_ptr<torch::optim::Optimizer> {
      if (adam) return std::make_shared<torch::optim::Adam>(params, torch::optim::AdamOptions(0.01));
      return std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.1).momentum(0.9));
    };
    Optimizers configs;
    if (two_optimizers) {
      configs.emplace_back(make(fc1->parameters()));
      configs.emplace_back(make(fc2->parameters()));
    } else {
      configs.emplace_back(make(parameters()));
    }
    auto schedule = std::make_shared<ParamScheduler>(*configs.front().optimizer(), linear_cyclical(0.01, 0.1, 10));
    configs.front().scheduler(SchedulerConfig(schedule).interval(Interval::step));
    return configs;
  }
};

std::vector<torch::Tensor> parameters_of(Classifier& net) {
  std::vector<torch::Tensor> copies;
  for (const auto& p : net.parameters()) copies.push_back(p.detach().clone());
  return copies;
}
}  // namespace

TEST_CASE("Autocast: bf16 matmuls, fp32 weights and gradients, nesting, restore on exception, per thread") {
  REQUIRE_FALSE(cpu_autocast());
  const at::ScalarType dtype_before = trainloop::detail::autocast_dtype(torch::kCPU);
  torch::manual_seed(0);
  torch::nn::Linear linear(4, 3);
  const torch::Tensor x = torch::randn({2, 4});
  {
    amp::Autocast outer(torch::kCPU, torch::kBFloat16);
    CHECK(cpu_autocast());
    torch::Tensor y = linear(x);
    CHECK((y.scalar_type() == torch::kBFloat16));
    y.to(torch::kFloat32).sum().backward();
    CHECK((linear->weight.grad().scalar_type() == torch::kFloat32));
    CHECK((linear->weight.scalar_type() == torch::kFloat32));
    {
      amp::Autocast inner(torch::kCPU, torch::kBFloat16, /*enabled=*/false);  // a full-precision island
      CHECK_FALSE(cpu_autocast());
      CHECK((linear(x).scalar_type() == torch::kFloat32));
    }
    CHECK(cpu_autocast());  // the outer guard's state is back
    std::thread([&] {
      CHECK_FALSE(cpu_autocast());  // autocast state is per thread
      CHECK((linear(x).scalar_type() == torch::kFloat32));
    }).join();
  }
  CHECK_FALSE(cpu_autocast());
  CHECK((trainloop::detail::autocast_dtype(torch::kCPU) == dtype_before));
  CHECK((linear(x).scalar_type() == torch::kFloat32));

  try {
    amp::Autocast guard(torch::kCPU);
    CHECK(cpu_autocast());
    throw std::runtime_error("inside the guard");
  } catch (const std::runtime_error&) {
  }
  CHECK_FALSE(cpu_autocast());

  CHECK_THROWS_WITH_AS(amp::Autocast(torch::kCPU, torch::kFloat32), contains("not a lower-precision float"),
                       std::invalid_argument);
#if !TRAINLOOP_DETAIL_AUTOCAST_BY_DEVICE
  CHECK_THROWS_WITH_AS(amp::Autocast(torch::kCPU, torch::kHalf), contains("supports only at::kBFloat16"),
                       std::invalid_argument);
  CHECK_FALSE(cpu_autocast());  // a refused guard changed nothing
#endif
}

TEST_CASE("GradScaler: scale, unscale, skip on inf/NaN, back-off, growth, state round trip, by hand") {
  torch::Tensor w = torch::tensor({1.0f, 2.0f}).requires_grad_(true);
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(0.5));
  amp::GradScaler scaler(amp::GradScalerOptions().init_scale(1024).growth_interval(3));
  auto backward = [&](float g0, float g1) {
    sgd.zero_grad();
    torch::Tensor loss = (w * torch::tensor({g0, g1})).sum();  // d loss / d w = (g0, g1)
    torch::Tensor scaled = scaler.scale(loss);
    if (std::isfinite(loss.item<double>())) CHECK(scaled.item<double>() == loss.item<double>() * scaler.get_scale());
    scaled.backward();
  };

  backward(3, -4);
  CHECK(torch::equal(w.grad(), torch::tensor({3.0f * 1024, -4.0f * 1024})));
  scaler.unscale_(sgd);
  CHECK(torch::equal(w.grad(), torch::tensor({3.0f, -4.0f})));
  CHECK_THROWS_WITH_AS(scaler.unscale_(sgd), contains("already called"), std::logic_error);
  CHECK(scaler.step(sgd));
  CHECK(torch::equal(w.detach(), torch::tensor({1.0f - 1.5f, 2.0f + 2.0f})));
  CHECK_THROWS_WITH_AS(scaler.step(sgd), contains("already called"), std::logic_error);
  CHECK_THROWS_WITH_AS(scaler.unscale_(sgd), contains("after step"), std::logic_error);
  scaler.update();  // one clean step: tracker 1
  CHECK(std::get<std::int64_t>(scaler.state_dict().at("_growth_tracker")) == 1);
  CHECK(scaler.get_scale() == 1024);

  // An inf gradient: the step is skipped (the weights keep their values), the scale halves, the tracker restarts.
  const torch::Tensor before = w.detach().clone();
  backward(std::numeric_limits<float>::infinity(), 1);
  CHECK_FALSE(scaler.step(sgd));
  CHECK(torch::equal(w.detach(), before));
  scaler.update();
  CHECK(scaler.get_scale() == 512);
  CHECK(std::get<std::int64_t>(scaler.state_dict().at("_growth_tracker")) == 0);
  backward(std::nanf(""), 1);  // NaN too
  CHECK_FALSE(scaler.step(sgd));
  scaler.update();
  CHECK(scaler.get_scale() == 256);

  // growth_interval (3) clean steps in a row: the scale doubles on the third, and the count starts again.
  for (int i = 1; i <= 3; ++i) {
    backward(1, 1);
    CHECK(scaler.step(sgd));
    scaler.update();
    CHECK(scaler.get_scale() == (i < 3 ? 256 : 512));
  }
  CHECK(std::get<std::int64_t>(scaler.state_dict().at("_growth_tracker")) == 0);
  backward(1, 1);
  scaler.step(sgd);
  scaler.update();

  // The state round trip: a new scaler continues exactly (the scale, the tracker, the options).
  const StateDict state = scaler.state_dict();
  CHECK(std::get<double>(state.at("scale")) == 512);
  CHECK(std::get<std::int64_t>(state.at("_growth_tracker")) == 1);
  CHECK(std::get<std::int64_t>(state.at("growth_interval")) == 3);
  amp::GradScaler resumed;
  resumed.load_state_dict(state);
  CHECK(resumed.get_scale() == 512);
  CHECK(resumed.options().growth_interval() == 3);
  for (amp::GradScaler* s : {&scaler, &resumed}) {
    for (int i = 0; i < 2; ++i) {
      sgd.zero_grad();
      s->scale((w * 1.0).sum()).backward();
      s->step(sgd);
      s->update();
    }
  }
  CHECK(resumed.get_scale() == scaler.get_scale());
  CHECK(resumed.get_scale() == 1024);  // grown after the third clean update of both
  const bool same_state = resumed.state_dict() == scaler.state_dict();
  CHECK(same_state);
  StateDict missing = state;
  missing.erase("_growth_tracker");
  CHECK_THROWS_WITH_AS(resumed.load_state_dict(missing), contains("'_growth_tracker' is missing"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(resumed.load_state_dict({}), contains("empty"), std::invalid_argument);
}

TEST_CASE("GradScaler: misuse, fp16 gradients, a grown scale that would overflow, disabled") {
  torch::Tensor w = torch::ones({2}, torch::requires_grad());
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(0.1));
  amp::GradScaler fresh;
  CHECK_THROWS_WITH_AS(fresh.update(), contains("no loss was scaled"), std::logic_error);
  fresh.scale(w.sum()).backward();
  CHECK_THROWS_WITH_AS(fresh.update(), contains("no optimizer was unscaled"), std::logic_error);
  CHECK_THROWS_AS(amp::GradScaler(amp::GradScalerOptions().backoff_factor(1.5)), std::invalid_argument);
  CHECK_THROWS_AS(amp::GradScaler(amp::GradScalerOptions().growth_interval(0)), std::invalid_argument);

  torch::Tensor half = torch::ones({2}, torch::TensorOptions().dtype(torch::kHalf).requires_grad(true));
  torch::optim::SGD half_sgd({half}, torch::optim::SGDOptions(0.1));
  half.mutable_grad() = torch::ones({2}, torch::kHalf);
  CHECK_THROWS_WITH_AS(fresh.unscale_(half_sgd), contains("fp16 gradient"), std::invalid_argument);

  // Growth that would overflow float keeps the scale (as the fused kernel does).
  amp::GradScaler big(amp::GradScalerOptions().init_scale(3e38).growth_interval(1));
  w.mutable_grad() = torch::zeros({2});
  big.scale(torch::zeros({1}));
  big.step(sgd);
  big.update();
  CHECK(big.get_scale() == static_cast<double>(3e38f));

  amp::GradScaler off(amp::GradScalerOptions().enabled(false));
  const torch::Tensor loss = w.sum();
  CHECK(off.scale(loss).is_same(loss));
  w.mutable_grad() = torch::full({2}, std::numeric_limits<float>::infinity());
  CHECK(off.step(sgd));  // disabled: steps whatever the gradients
  off.update();
  CHECK(off.state_dict().empty());
  CHECK(off.get_scale() == 1.0);
}

TEST_CASE("GradScaler: a skipped first Adam step leaves no state behind; the fallback matches the fused kernels") {
  torch::manual_seed(3);
  const torch::Tensor start = torch::randn({5});
  torch::Tensor a = start.clone().requires_grad_(true), b = start.clone().requires_grad_(true);
  torch::optim::Adam skipped({a}, torch::optim::AdamOptions(0.1)), plain({b}, torch::optim::AdamOptions(0.1));
  amp::GradScaler scaler(amp::GradScalerOptions().init_scale(8));
  a.mutable_grad() = torch::full({5}, std::numeric_limits<float>::infinity());
  scaler.scale(torch::ones({1}));
  CHECK_FALSE(scaler.step(skipped));
  scaler.update();
  CHECK(skipped.state().empty());  // Adam never ran: its host-side step count is still to come
  const torch::Tensor grad = torch::randn({5});
  a.mutable_grad() = grad * scaler.get_scale();
  CHECK(scaler.step(skipped));
  scaler.update();
  b.mutable_grad() = grad.clone();
  plain.step();
  CHECK(torch::equal(a.detach(), b.detach()));

  // The ordinary-op fallback against hand values, and against the fused kernels where this LibTorch has them on CPU.
  std::vector<torch::Tensor> grads{torch::tensor({2.0f, -4.0f}), torch::tensor({8.0f}, torch::kFloat64)};
  torch::Tensor found = torch::zeros({1});
  trainloop::detail::amp_unscale_fallback(grads, found, torch::full({1}, 0.25f));
  CHECK(torch::equal(grads[0], torch::tensor({0.5f, -1.0f})));
  CHECK(torch::equal(grads[1], torch::tensor({2.0}, torch::kFloat64)));
  CHECK(found.item<float>() == 0);
  for (float bad_value : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(), std::nanf("")}) {
    CAPTURE(bad_value);
    std::vector<torch::Tensor> bad{torch::empty({0}), torch::tensor({1.0f, bad_value, -2.0f}), torch::ones({3})};
    found.zero_();
    trainloop::detail::amp_unscale_fallback(bad, found, torch::full({1}, 0.5f));
    CHECK(found.item<float>() == 1);
    CHECK(bad[2].sum().item<float>() == 1.5f);  // scaled all the same
  }
  std::vector<torch::Tensor> huge{torch::tensor({3e38f, -3e38f})};  // finite, whatever their spread
  found.zero_();
  trainloop::detail::amp_unscale_fallback(huge, found, torch::full({1}, 1.0f));
  CHECK(found.item<float>() == 0);
  auto update = [](torch::Tensor scale, std::int32_t tracker, float inf, bool fused) {
    torch::Tensor s = torch::full({1}, scale.item<float>()), t = torch::full({1}, tracker, torch::kInt32);
    const torch::Tensor f = torch::full({1}, inf);
    if (fused) {
#if TRAINLOOP_DETAIL_AMP_CPU_KERNELS
      at::_amp_update_scale_(s, t, f, 2.0, 0.5, 3);
#endif
    } else {
      trainloop::detail::amp_update_scale_fallback(s, t, f, 2.0, 0.5, 3);
    }
    return std::make_pair(s.item<float>(), t.item<std::int32_t>());
  };
  auto same = [](std::pair<float, std::int32_t> a, std::pair<float, std::int32_t> b) { return a == b; };
  CHECK(same(update(torch::full({1}, 100.0f), 0, 1, false), std::make_pair(50.0f, 0)));
  CHECK(same(update(torch::full({1}, 100.0f), 1, 0, false), std::make_pair(100.0f, 2)));
  CHECK(same(update(torch::full({1}, 100.0f), 2, 0, false), std::make_pair(200.0f, 0)));
  CHECK(same(update(torch::full({1}, 3e38f), 2, 0, false), std::make_pair(3e38f, 0)));
  CHECK(same(update(torch::full({1}, 3.0f), 0, 1, false), std::make_pair(1.5f, 0)));
#if TRAINLOOP_DETAIL_AMP_CPU_KERNELS
  for (float scale : {100.0f, 3e38f, 3.0f, 1e-30f})
    for (std::int32_t tracker : {0, 1, 2})
      for (float inf : {0.0f, 1.0f}) CHECK(same(update(torch::full({1}, scale), tracker, inf, true), update(torch::full({1}, scale), tracker, inf, false)));
  std::vector<torch::Tensor> fused_grads{torch::randn({7}) * 1e3, torch::tensor({1.0f, std::nanf("")})};
  std::vector<torch::Tensor> fallback_grads{fused_grads[0].clone(), fused_grads[1].clone()};
  torch::Tensor fused_found = torch::zeros({1}), fallback_found = torch::zeros({1});
  at::_amp_foreach_non_finite_check_and_unscale_(fused_grads, fused_found, torch::full({1}, 1.0f / 3));
  trainloop::detail::amp_unscale_fallback(fallback_grads, fallback_found, torch::full({1}, 1.0f / 3));
  CHECK(torch::equal(fused_grads[0], fallback_grads[0]));
  CHECK(torch::equal(fused_found, fallback_found));
#endif
}

TEST_CASE("bf16-mixed: the steps run under autocast, backward and the optimizer step outside, weights stay fp32") {
  Classifier net;
  EMA::Options ema_options;
  ema_options.copy_to_model_at_end = false;
  Trainer trainer(quiet().max_epochs(1).precision("bf16-mixed"), EMA(ema_options));
  const auto data = class_data(4);
  trainer.fit(net, data, data);
  CHECK(net.autocast_in_step);
  CHECK(net.autocast_in_validation);
  CHECK_FALSE(net.autocast_in_optimizer_hook);
  CHECK((net.logits_dtype == torch::kBFloat16));
  CHECK_FALSE(cpu_autocast());  // nothing leaks out of fit
  CHECK_FALSE(trainer.grad_scaler());  // bf16 needs no loss scaling
  for (const auto& p : net.parameters()) CHECK((p.scalar_type() == torch::kFloat32));
  for (const auto& [name, average] : trainer.callback<EMA>().tensor_state()) {
    CAPTURE(name);
    CHECK((average.scalar_type() == torch::kFloat32));
  }
  auto predictions = trainer.predict(net, data);
  CHECK((net.logits_dtype == torch::kBFloat16));
  const auto metrics = trainer.validate(net, data);
  CHECK(std::isfinite(metrics.at("val_loss")));

  CHECK_THROWS_WITH_AS(Trainer<>(quiet().precision("32").grad_scaler(amp::GradScalerOptions())).fit(net, data),
                       contains("needs mixed precision"), std::invalid_argument);

  // LBFGS re-evaluates the loss inside its step, which a loss scaler cannot skip (Lightning and PyTorch refuse it);
  // bf16-mixed without a scaler trains it, the closure's forward under autocast.
  struct Lbfgs : Classifier {
    std::shared_ptr<torch::optim::LBFGS> configure_optimizers() {
      return std::make_shared<torch::optim::LBFGS>(parameters(), torch::optim::LBFGSOptions(0.1).max_iter(3));
    }
  };
  Lbfgs lbfgs;
  CHECK_THROWS_WITH_AS(
      Trainer<>(quiet().max_epochs(1).precision("bf16-mixed").grad_scaler(amp::GradScalerOptions())).fit(lbfgs, data),
      contains("returned torch::optim::LBFGS (entry 0), which the loss scaler"), std::invalid_argument);
  Trainer<> bf16_lbfgs(quiet().max_epochs(1).precision("bf16-mixed"));
  bf16_lbfgs.fit(lbfgs, data);
  CHECK(lbfgs.autocast_in_step);
  CHECK_FALSE(lbfgs.autocast_in_optimizer_hook);
  CHECK(bf16_lbfgs.global_step() == static_cast<std::int64_t>(data.size()));
#if !TRAINLOOP_DETAIL_AUTOCAST_BY_DEVICE
  CHECK_THROWS_WITH_AS(Trainer<>(quiet().max_epochs(1).precision("16-mixed")).fit(net, data),
                       contains("use precision(\"bf16-mixed\")"), std::invalid_argument);
#endif
}

TEST_CASE("the loss scaler in the Trainer: clipping and hooks see unscaled gradients, accumulation, several optimizers "
          "and manual optimisation give the unscaled run's weights bit for bit") {
  // A power-of-two scale changes only exponents, so a scaled run must end bitwise where the unscaled one does: any
  // step that saw scaled gradients (clipping, the hook, a missing unscale) would break that.
  struct Setup {
    const char* name;
    bool two_optimizers, manual, twice, adam;
    std::int64_t accumulate;
  };
  for (const Setup& setup : {Setup{"one SGD, accumulate 2", false, false, false, false, 2},
                             Setup{"two optimizers (SGD)", true, false, false, false, 1},
                             Setup{"Adam, accumulate 3", false, false, false, true, 3},
                             Setup{"manual optimisation, two Adams", true, true, false, true, 1},
                             Setup{"manual, backward and step twice a batch", false, true, true, false, 1}}) {
    CAPTURE(setup.name);
    auto run = [&](bool scaled) {
      Classifier net;
      net.two_optimizers = setup.two_optimizers;
      net.manual = setup.manual;
      net.twice = setup.twice;
      net.adam = setup.adam;
      net.automatic_optimization(!setup.manual);
      TrainerOptions options = quiet().max_epochs(2).precision("bf16-mixed").gradient_clip_val(0.5);
      if (!setup.manual) options.accumulate_grad_batches(setup.accumulate);
      if (scaled) options.grad_scaler(amp::GradScalerOptions().init_scale(1024).growth_interval(2));
      Trainer<> trainer(options);
      trainer.fit(net, class_data(6));
      if (scaled) {
        REQUIRE(trainer.grad_scaler() != nullptr);
        CHECK(trainer.grad_scaler()->get_scale() > 1024);  // it grew, and stayed exact
      }
      CHECK(trainer.skipped_steps() == 0);
      return std::make_pair(parameters_of(net), net.grad_norms);
    };
    const auto plain = run(false), scaled = run(true);
    CHECK(bitwise_equal(plain.first, scaled.first));
    CHECK(plain.second == scaled.second);  // on_before_optimizer_step saw the same (unscaled) gradients
  }
}

TEST_CASE("a step the scaler skips does not count: global_step, the per-step scheduler and the weights stay") {
  Classifier net, reference;
  net.inf_batches = {2, 3};
  const auto data = class_data(6);
  TempDir dir;
  VersionedLoggerOptions logs;
  logs.save_dir = dir.path.string();
  Trainer trainer(quiet().max_epochs(1).precision("bf16-mixed").log_every_n_steps(1).grad_scaler(
                      amp::GradScalerOptions().init_scale(64)),
                  CSVLogger(logs));
  trainer.fit(net, data);
  CHECK(trainer.skipped_steps() == 2);
  CHECK(trainer.global_step() == 4);
  CHECK_FALSE(trainer.last_step_skipped());
  CHECK(trainer.grad_scaler()->get_scale() == 16);  // backed off twice

  // The same run without the two bad batches: the same weights, and the same learning rate (the scheduler stepped
  // four times, not six).
  std::vector<Batch> clean{data[0], data[1], data[4], data[5]};
  Trainer<> plain(quiet().max_epochs(1).precision("bf16-mixed"));
  plain.fit(reference, clean);
  CHECK(bitwise_equal(parameters_of(net), parameters_of(reference)));
  auto lr = [](const Optimizers& o) { return o.front().optimizer()->param_groups()[0].options().get_lr(); };
  CHECK(lr(plain.optimizers()) == lr(trainer.optimizers()));

  // skipped_steps reaches the logs on logging steps, and the progress bar.
  const std::string csv = [&] {
    std::ifstream in(trainer.callback<CSVLogger>().log_dir() / "metrics.csv");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  CHECK(csv.find("skipped_steps") != std::string::npos);
}
#endif
