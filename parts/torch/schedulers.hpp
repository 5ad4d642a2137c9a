// trainloop: parameter schedulers. A Schedule is a value as a function of the event count t = 0, 1, 2, ...
// (linear warmup, cosine annealing with warm restarts, linear cyclical, piecewise linear, step, multi-step,
// exponential, and their concatenation); a ParamScheduler applies one to an optimizer option (lr, momentum,
// weight decay) of every parameter group. ReduceLROnPlateau scales the rate from a monitored metric. All of them
// have a state_dict for checkpoints, and step() / step(metric) as the Trainer's SchedulerConfig expects.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <typeinfo>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "parts/core/state.hpp"
#include "parts/core/type_name.hpp"
#include "parts/torch/logging.hpp"

TRAINLOOP_DETAIL_BEGIN

/// A value as a function of the event count t (t = 0 is the value before the first step).
class Schedule {
 public:
  Schedule(std::function<double(std::int64_t)> value_at, std::string description)
      : value_at_(std::move(value_at)), description_(std::move(description)) {}
  double operator()(std::int64_t t) const { return value_at_(t); }
  const std::string& description() const { return description_; }

 private:
  std::function<double(std::int64_t)> value_at_;
  std::string description_;
};

namespace detail {
TRAINLOOP_DETAIL_API void require_schedule(bool ok, const std::string& what);
}  // namespace detail

/// From `start` down (or up) to `end` along half a cosine over `cycle_size` events, then again from `start`
/// (warm restarts), each cycle `cycle_mult` times longer than the last.
TRAINLOOP_DETAIL_API Schedule cosine_annealing(double start, double end, std::int64_t cycle_size,
                                               double cycle_mult = 1.0);

/// A triangle: from `start` to `end` at mid-cycle and back to `start`, every `cycle_size` events.
TRAINLOOP_DETAIL_API Schedule linear_cyclical(double start, double end, std::int64_t cycle_size);

/// Straight lines between (event, value) milestones: the first value before the first milestone, the last after the
/// last one.
TRAINLOOP_DETAIL_API Schedule piecewise_linear(std::vector<std::pair<std::int64_t, double>> milestones);

/// initial * gamma^floor(t / step_size).
TRAINLOOP_DETAIL_API Schedule step_decay(double initial, double gamma, std::int64_t step_size);

/// initial * gamma^(number of milestones reached, t >= milestone).
TRAINLOOP_DETAIL_API Schedule multi_step(double initial, double gamma, std::vector<std::int64_t> milestones);

/// initial * gamma^t.
TRAINLOOP_DETAIL_API Schedule exponential(double initial, double gamma);

/// One schedule after another: schedules[i] runs for durations[i] events (its own t from 0), the last one forever.
TRAINLOOP_DETAIL_API Schedule concatenate(std::vector<Schedule> schedules, std::vector<std::int64_t> durations);

/// A linear warmup from `warmup_start` to where `schedule` begins, over `warmup_duration` events, then `schedule`.
TRAINLOOP_DETAIL_API Schedule with_warmup(Schedule schedule, double warmup_start, std::int64_t warmup_duration);

/// The optimizer option a scheduler drives.
enum class Param { lr, momentum, weight_decay };

namespace detail {
// Reads or writes `param` of a parameter group's options, whatever the optimizer (LibTorch's options types are not
// polymorphic beyond lr); nullopt when the optimizer has no such option.
TRAINLOOP_DETAIL_API std::optional<double> try_access_param(torch::optim::OptimizerOptions& options, Param param,
                                                            const double* set);
// The same, as an error naming the optimizer's options type and the option when it is absent.
TRAINLOOP_DETAIL_API double access_param(torch::optim::OptimizerOptions& options, Param param, const double* set);
}  // namespace detail

/// Drives one option of every parameter group of an optimizer along a Schedule: the value for t = 0 is applied at
/// construction, and each step() moves to the next t. Its state (t) goes in checkpoints.
class ParamScheduler {
 public:
  ParamScheduler(torch::optim::Optimizer& optimizer, Schedule schedule, Param param = Param::lr)
      : optimizer_(&optimizer), schedule_(std::move(schedule)), param_(param) {
    apply();
  }
  TRAINLOOP_DETAIL_API void step();
  double value() const { return schedule_(t_); }
  std::int64_t event_count() const { return t_; }
  StateDict state_dict() const { return {{"t", t_}}; }
  TRAINLOOP_DETAIL_API void load_state_dict(const StateDict& state);

 private:
  TRAINLOOP_DETAIL_API void apply();
  torch::optim::Optimizer* optimizer_;
  Schedule schedule_;
  Param param_;
  std::int64_t t_ = 0;
};

/// Reduce-on-plateau (PyTorch's algorithm): when the monitored metric has not improved by more than `threshold`
/// (relative) for more than `patience` checks, multiply the learning rate by `factor` (not below `min_lr`), then
/// wait `cooldown` checks. Step it with the metric: `step(val_loss)`, or give it to the Trainer with
/// SchedulerConfig(...).monitor("val_loss").
class ReduceLROnPlateau {
 public:
  using Mode = MonitorMode;
  struct Options {
    Mode mode = Mode::min;
    double factor = 0.1;
    std::int64_t patience = 10;
    double threshold = 1e-4;
    std::int64_t cooldown = 0;
    double min_lr = 0.0;
  };
  TRAINLOOP_DETAIL_API ReduceLROnPlateau(torch::optim::Optimizer& optimizer, Options options);
  explicit ReduceLROnPlateau(torch::optim::Optimizer& optimizer) : ReduceLROnPlateau(optimizer, Options{}) {}

  TRAINLOOP_DETAIL_API void step(double metric);
  std::int64_t reductions() const { return reductions_; }
  TRAINLOOP_DETAIL_API StateDict state_dict() const;
  TRAINLOOP_DETAIL_API void load_state_dict(const StateDict& state);

 private:
  torch::optim::Optimizer* optimizer_;
  Options options_;
  double best_;
  std::int64_t bad_checks_ = 0, cooldown_left_ = 0, reductions_ = 0;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API ReduceLROnPlateau::ReduceLROnPlateau(torch::optim::Optimizer& optimizer, Options options)
    : optimizer_(&optimizer), options_(options) {
  if (!(options_.factor > 0 && options_.factor < 1))
    throw std::invalid_argument("trainloop: ReduceLROnPlateau: factor must be in (0, 1)");
  if (options_.patience < 0 || options_.cooldown < 0)
    throw std::invalid_argument("trainloop: ReduceLROnPlateau: patience and cooldown must not be negative");
  best_ = options_.mode == Mode::min ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
}

namespace detail {
TRAINLOOP_DETAIL_API void require_schedule(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("trainloop: " + what);
}
}  // namespace detail
TRAINLOOP_DETAIL_API Schedule cosine_annealing(double start, double end, std::int64_t cycle_size, double cycle_mult) {
  detail::require_schedule(cycle_size >= 2, "cosine_annealing: cycle_size must be at least 2");
  detail::require_schedule(cycle_mult >= 1.0, "cosine_annealing: cycle_mult must be at least 1");
  return Schedule(
      [=](std::int64_t t) {
        double length = static_cast<double>(cycle_size), position = static_cast<double>(t);
        while (position >= length) {
          position -= length;
          length *= cycle_mult;
        }
        const double progress = position / length;
        return start + (end - start) / 2 * (1 - std::cos(3.14159265358979323846 * progress));
      },
      "cosine_annealing");
}
TRAINLOOP_DETAIL_API Schedule linear_cyclical(double start, double end, std::int64_t cycle_size) {
  detail::require_schedule(cycle_size >= 2, "linear_cyclical: cycle_size must be at least 2");
  return Schedule(
      [=](std::int64_t t) {
        const double progress = static_cast<double>(t % cycle_size) / static_cast<double>(cycle_size);
        return end + (start - end) * std::abs(progress - 0.5) * 2;
      },
      "linear_cyclical");
}
TRAINLOOP_DETAIL_API Schedule piecewise_linear(std::vector<std::pair<std::int64_t, double>> milestones) {
  detail::require_schedule(!milestones.empty(), "piecewise_linear: give at least one (event, value) milestone");
  for (std::size_t i = 1; i < milestones.size(); ++i)
    detail::require_schedule(milestones[i].first > milestones[i - 1].first,
                             "piecewise_linear: milestone events must increase strictly");
  return Schedule(
      [m = std::move(milestones)](std::int64_t t) {
        if (t <= m.front().first) return m.front().second;
        for (std::size_t i = 1; i < m.size(); ++i)
          if (t <= m[i].first) {
            const double f = static_cast<double>(t - m[i - 1].first) / static_cast<double>(m[i].first - m[i - 1].first);
            return m[i - 1].second + f * (m[i].second - m[i - 1].second);
          }
        return m.back().second;
      },
      "piecewise_linear");
}
TRAINLOOP_DETAIL_API Schedule step_decay(double initial, double gamma, std::int64_t step_size) {
  detail::require_schedule(step_size >= 1, "step_decay: step_size must be at least 1");
  return Schedule([=](std::int64_t t) { return initial * std::pow(gamma, static_cast<double>(t / step_size)); },
                  "step_decay");
}
TRAINLOOP_DETAIL_API Schedule multi_step(double initial, double gamma, std::vector<std::int64_t> milestones) {
  detail::require_schedule(std::is_sorted(milestones.begin(), milestones.end()), "multi_step: milestones must be sorted");
  return Schedule(
      [=](std::int64_t t) {
        const auto reached = std::upper_bound(milestones.begin(), milestones.end(), t) - milestones.begin();
        return initial * std::pow(gamma, static_cast<double>(reached));
      },
      "multi_step");
}
TRAINLOOP_DETAIL_API Schedule exponential(double initial, double gamma) {
  return Schedule([=](std::int64_t t) { return initial * std::pow(gamma, static_cast<double>(t)); }, "exponential");
}
TRAINLOOP_DETAIL_API Schedule concatenate(std::vector<Schedule> schedules, std::vector<std::int64_t> durations) {
  detail::require_schedule(!schedules.empty() && durations.size() + 1 == schedules.size(),
                           "concatenate: give n schedules and n - 1 durations");
  for (auto d : durations) detail::require_schedule(d >= 1, "concatenate: durations must be at least 1");
  return Schedule(
      [s = std::move(schedules), d = std::move(durations)](std::int64_t t) {
        for (std::size_t i = 0; i < d.size(); ++i) {
          if (t < d[i]) return s[i](t);
          t -= d[i];
        }
        return s.back()(t);
      },
      "concatenate");
}
TRAINLOOP_DETAIL_API Schedule with_warmup(Schedule schedule, double warmup_start, std::int64_t warmup_duration) {
  detail::require_schedule(warmup_duration >= 1, "with_warmup: warmup_duration must be at least 1");
  const double target = schedule(0);
  return concatenate({piecewise_linear({{0, warmup_start}, {warmup_duration, target}}), std::move(schedule)},
                     {warmup_duration});
}
namespace detail {
TRAINLOOP_DETAIL_API std::optional<double> try_access_param(torch::optim::OptimizerOptions& options, Param param,
                                                            const double* set) {
  if (param == Param::lr) {
    if (set) options.set_lr(*set);
    return options.get_lr();
  }
  auto apply = [&](auto* typed) -> std::optional<double> {
    if (!typed) return std::nullopt;
    using T = std::remove_pointer_t<decltype(typed)>;
    if (param == Param::weight_decay) {
      if (set) typed->weight_decay(*set);
      return typed->weight_decay();
    }
    if constexpr (std::is_same_v<T, torch::optim::SGDOptions> || std::is_same_v<T, torch::optim::RMSpropOptions>) {
      if (set) typed->momentum(*set);
      return typed->momentum();
    } else if constexpr (std::is_same_v<T, torch::optim::AdamOptions> || std::is_same_v<T, torch::optim::AdamWOptions>) {
      auto betas = typed->betas();  // Adam's momentum is beta1, as in PyTorch's cyclic schedulers
      if (set) typed->betas(std::make_tuple(*set, std::get<1>(betas)));
      return std::get<0>(typed->betas());
    } else {
      return std::nullopt;
    }
  };
  if (auto v = apply(dynamic_cast<torch::optim::SGDOptions*>(&options))) return v;
  if (auto v = apply(dynamic_cast<torch::optim::AdamOptions*>(&options))) return v;
  if (auto v = apply(dynamic_cast<torch::optim::AdamWOptions*>(&options))) return v;
  if (auto v = apply(dynamic_cast<torch::optim::RMSpropOptions*>(&options))) return v;
  if (auto v = apply(dynamic_cast<torch::optim::AdagradOptions*>(&options))) return v;
  return std::nullopt;
}
TRAINLOOP_DETAIL_API double access_param(torch::optim::OptimizerOptions& options, Param param, const double* set) {
  if (auto v = try_access_param(options, param, set)) return *v;
  throw std::invalid_argument(std::string("trainloop: this optimizer's options (") + demangle(typeid(options).name()) + ") have no " +
                              (param == Param::momentum ? "momentum" : "weight_decay"));
}
}  // namespace detail
TRAINLOOP_DETAIL_API void ParamScheduler::step() {
  ++t_;
  apply();
}
TRAINLOOP_DETAIL_API void ParamScheduler::load_state_dict(const StateDict& state) {
  auto it = state.find("t");
  if (it == state.end() || !std::holds_alternative<std::int64_t>(it->second))
    throw std::invalid_argument("trainloop: ParamScheduler state: key 't' is missing or not an integer");
  t_ = std::get<std::int64_t>(it->second);
  apply();
}
TRAINLOOP_DETAIL_API void ParamScheduler::apply() {
  const double v = schedule_(t_);
  for (auto& group : optimizer_->param_groups()) detail::access_param(group.options(), param_, &v);
}
TRAINLOOP_DETAIL_API void ReduceLROnPlateau::step(double metric) {
  const bool better = options_.mode == Mode::min ? metric < best_ * (1 - options_.threshold)
                                                 : metric > best_ * (1 + options_.threshold);
  if (better || std::isinf(best_)) {
    best_ = metric;
    bad_checks_ = 0;
  } else {
    ++bad_checks_;
  }
  if (cooldown_left_ > 0) {
    --cooldown_left_;
    bad_checks_ = 0;
  }
  if (bad_checks_ > options_.patience) {
    for (auto& group : optimizer_->param_groups()) {
      const double lr = group.options().get_lr();
      group.options().set_lr(std::max(lr * options_.factor, options_.min_lr));
    }
    cooldown_left_ = options_.cooldown;
    bad_checks_ = 0;
    ++reductions_;
  }
}
TRAINLOOP_DETAIL_API StateDict ReduceLROnPlateau::state_dict() const {
  return {{"best", best_}, {"bad_checks", bad_checks_}, {"cooldown_left", cooldown_left_}, {"reductions", reductions_}};
}
TRAINLOOP_DETAIL_API void ReduceLROnPlateau::load_state_dict(const StateDict& state) {
  auto get = [&](const char* key) -> const StateValue& {
    auto it = state.find(key);
    if (it == state.end()) throw std::invalid_argument(std::string("trainloop: ReduceLROnPlateau state: key '") + key + "' is missing");
    return it->second;
  };
  best_ = std::get<double>(get("best"));
  bad_checks_ = std::get<std::int64_t>(get("bad_checks"));
  cooldown_left_ = std::get<std::int64_t>(get("cooldown_left"));
  reductions_ = std::get<std::int64_t>(get("reductions"));
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
