// Parameter schedulers against values computed by hand from their formulas (shown in the comments), applied to
// optimizer options, saved and restored, and driven by the Trainer.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <cmath>
#include <vector>

using namespace trainloop;

namespace {
std::vector<double> first(const Schedule& s, int n) {
  std::vector<double> out;
  for (int t = 0; t < n; ++t) out.push_back(s(t));
  return out;
}
void check_close(const std::vector<double>& got, const std::vector<double>& expected) {
  REQUIRE(got.size() == expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("t = " << i);
    CHECK(got[i] == doctest::Approx(expected[i]).epsilon(1e-12));
  }
}
const double kCos45 = std::sqrt(0.5);
}  // namespace

TEST_CASE("cosine annealing: start + (end - start)/2 (1 - cos(pi t / T)), with warm restarts") {
  // T = 4 from 1 to 0: 1, 1 - (1 - cos45)/2, 0.5, 1 - (1 + cos45)/2, then restart at 1.
  check_close(first(cosine_annealing(1.0, 0.0, 4), 5), {1.0, 1 - (1 - kCos45) / 2, 0.5, 1 - (1 + kCos45) / 2, 1.0});
  // cycle_mult 2: the second cycle lasts 8 events (t = 4..11); its middle, t = 8, is 0.5; t = 12 restarts.
  const Schedule warm = cosine_annealing(1.0, 0.0, 4, 2.0);
  CHECK(warm(8) == doctest::Approx(0.5));
  CHECK(warm(12) == doctest::Approx(1.0));
}

TEST_CASE("linear cyclical, piecewise linear, step, multi-step, exponential") {
  check_close(first(linear_cyclical(0.0, 1.0, 4), 5), {0.0, 0.5, 1.0, 0.5, 0.0});  // a triangle of period 4
  const Schedule pw = piecewise_linear({{0, 0.0}, {10, 1.0}, {20, 0.5}});
  CHECK(pw(5) == 0.5);
  CHECK(pw(10) == 1.0);
  CHECK(pw(15) == 0.75);
  CHECK(pw(30) == 0.5);  // the last value holds
  check_close(first(step_decay(1.0, 0.5, 3), 7), {1, 1, 1, 0.5, 0.5, 0.5, 0.25});
  check_close(first(multi_step(1.0, 0.1, {2, 5}), 6), {1, 1, 0.1, 0.1, 0.1, 0.01});
  CHECK(exponential(2.0, 0.5)(3) == 0.25);
  CHECK_THROWS_WITH_AS(piecewise_linear({{5, 1.0}, {5, 2.0}}),
                       "trainloop: piecewise_linear: milestone events must increase strictly", std::invalid_argument);
}

TEST_CASE("concatenation and warmup hand over with each schedule's own t from 0") {
  const Schedule both = concatenate({exponential(1.0, 0.5), step_decay(0.1, 0.1, 2)}, {3});
  check_close(first(both, 6), {1.0, 0.5, 0.25, 0.1, 0.1, 0.01});
  // Warmup 0 -> 1 over 4 events, then the cosine from its start.
  check_close(first(with_warmup(cosine_annealing(1.0, 0.0, 4), 0.0, 4), 7), {0.0, 0.25, 0.5, 0.75, 1.0, 1 - (1 - kCos45) / 2, 0.5});
  CHECK_THROWS_AS(concatenate({exponential(1, 1)}, {3}), std::invalid_argument);
}

TEST_CASE("ParamScheduler drives lr, momentum (Adam: beta1) and weight decay; its state restores the value") {
  torch::nn::Linear model(2, 1);
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  ParamScheduler lr(sgd, step_decay(1.0, 0.5, 1));
  auto lr_of = [](torch::optim::Optimizer& o) { return o.param_groups()[0].options().get_lr(); };
  CHECK(lr_of(sgd) == 1.0);  // t = 0 applied at construction
  lr.step();
  lr.step();
  CHECK(lr_of(sgd) == 0.25);
  ParamScheduler momentum(sgd, linear_cyclical(0.8, 0.9, 2), Param::momentum);
  CHECK(static_cast<torch::optim::SGDOptions&>(sgd.param_groups()[0].options()).momentum() == 0.8);

  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(1e-3));
  ParamScheduler beta1(adam, exponential(0.9, 1.0), Param::momentum);
  ParamScheduler decay(adam, exponential(0.01, 0.5), Param::weight_decay);
  decay.step();
  auto& adam_options = static_cast<torch::optim::AdamOptions&>(adam.param_groups()[0].options());
  CHECK(std::get<0>(adam_options.betas()) == 0.9);
  CHECK(adam_options.weight_decay() == 0.005);

  torch::optim::Adagrad adagrad(model->parameters());
  CHECK_THROWS_WITH_AS(ParamScheduler(adagrad, exponential(0.9, 1.0), Param::momentum),
                       doctest::Contains("(torch::optim::AdagradOptions) have no momentum"), std::invalid_argument);

  const StateDict saved = lr.state_dict();
  torch::optim::SGD fresh(model->parameters(), torch::optim::SGDOptions(0.1));
  ParamScheduler restored(fresh, step_decay(1.0, 0.5, 1));
  restored.load_state_dict(saved);
  CHECK(lr_of(fresh) == 0.25);
  CHECK(restored.event_count() == 2);
}

TEST_CASE("ReduceLROnPlateau: patience counted in checks, factor, cooldown, min_lr, state") {
  torch::nn::Linear model(2, 1);
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(1.0));
  ReduceLROnPlateau::Options options;
  options.patience = 1;
  options.factor = 0.5;
  options.cooldown = 1;
  options.min_lr = 0.2;
  ReduceLROnPlateau plateau(sgd, options);
  auto lr = [&] { return sgd.param_groups()[0].options().get_lr(); };
  plateau.step(1.0);  // best
  plateau.step(1.0);  // 1 bad check: within patience
  CHECK(lr() == 1.0);
  plateau.step(1.0);  // 2 bad checks > patience 1: halve, start the cooldown
  CHECK(lr() == 0.5);
  plateau.step(1.0);  // cooldown: bad checks do not count
  plateau.step(1.0);  // 1 bad check
  CHECK(lr() == 0.5);
  plateau.step(1.0);  // 2: halve again, but not below min_lr 0.2 -> 0.25
  CHECK(lr() == 0.25);
  plateau.step(0.5);  // an improvement resets the count
  plateau.step(0.5);
  CHECK(lr() == 0.25);
  CHECK(plateau.reductions() == 2);
  const StateDict saved = plateau.state_dict();
  ReduceLROnPlateau copy(sgd, options);
  copy.load_state_dict(saved);
  CHECK((copy.state_dict() == saved));
}

namespace {
using Batch = std::pair<torch::Tensor, torch::Tensor>;
struct Warmed : LightningModule<Warmed> {
  torch::nn::Linear fc{nullptr};
  std::shared_ptr<torch::optim::SGD> optimizer;
  std::shared_ptr<ParamScheduler> scheduler;
  Warmed() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  torch::Tensor training_step(Batch& b, std::int64_t) { return torch::mse_loss(fc(b.first), b.second); }
  OptimizerConfig configure_optimizers() {
    optimizer = std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
    scheduler = std::make_shared<ParamScheduler>(*optimizer, with_warmup(exponential(0.1, 0.5), 0.0, 4));
    return OptimizerConfig(optimizer).scheduler(SchedulerConfig(scheduler).interval(Interval::step));
  }
};
}  // namespace

TEST_CASE("the Trainer steps a ParamScheduler after every optimizer step") {
  std::vector<Batch> data;
  for (int i = 0; i < 6; ++i) data.emplace_back(torch::randn({4, 2}), torch::randn({4, 1}));
  Warmed net;
  Trainer(TrainerOptions().accelerator("cpu").max_epochs(1).enable_progress_bar(false).enable_model_summary(false))
      .fit(net, data);
  CHECK(net.scheduler->event_count() == 6);
  CHECK(net.optimizer->param_groups()[0].options().get_lr() == doctest::Approx(0.1 * 0.25));  // warmup 4, then t = 2
}
