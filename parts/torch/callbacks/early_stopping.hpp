// trainloop: EarlyStopping and TerminateOnNan. Each works as a Trainer callback and as an Engine handler.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>

#include "parts/core/engine.hpp"
#include "parts/torch/logging.hpp"
#include "parts/torch/loops/optimization.hpp"

TRAINLOOP_DETAIL_BEGIN

/// Stops training when a monitored metric stops improving (Lightning's EarlyStopping). Patience is counted in checks:
/// a check happens at each validation end of fit (or each training epoch end with check_on_train_epoch_end); after
/// `patience` checks in a row without an improvement of more than `min_delta`, it asks the Trainer to stop
/// (honoured once min_epochs/min_steps are reached). It also stops at once when the metric crosses
/// `stopping_threshold` (good enough) or `divergence_threshold` (hopeless), or is NaN/inf with `check_finite`.
///
/// As an Engine handler (Ignite's habit), attach it to the evaluator and name the engine to stop:
/// `make_engine(eval_step, attach("val_loss", loss), EarlyStopping(options).stops(trainer_engine))`; it checks
/// evaluator.state.metrics[monitor] when the evaluator completes.
class EarlyStopping {
 public:
  static constexpr bool trainloop_monitoring_callback = true;  // runs after the module's on_train_epoch_end
  using Mode = MonitorMode;
  struct Options {
    std::string monitor;
    Mode mode = Mode::min;
    std::int64_t patience = 3;
    double min_delta = 0.0;
    std::optional<double> stopping_threshold, divergence_threshold;
    bool check_finite = true;
    bool check_on_train_epoch_end = false;
  };
  TRAINLOOP_DETAIL_API explicit EarlyStopping(Options options);
  TRAINLOOP_DETAIL_API EarlyStopping& stops(EngineCore& engine);

  // Trainer callback hooks.
  template <class T, class M>
  void on_validation_end(T& trainer, M&) {
    if (trainer.fitting() && !trainer.sanity_checking() && !options_.check_on_train_epoch_end) check_trainer(trainer);
  }
  template <class T, class M>
  void on_train_epoch_end(T& trainer, M&) {
    if (options_.check_on_train_epoch_end) check_trainer(trainer);
  }
  // Engine handler hook (only with stops(engine)).
  template <class E>
  void on_completed(E& evaluator) {
    if (!target_) return;
    auto it = evaluator.state.metrics.find(options_.monitor);
    if (it == evaluator.state.metrics.end())
      throw std::runtime_error("trainloop: EarlyStopping: the evaluator has no metric '" + options_.monitor + "'");
    if (check(it->second)) target_->terminate();
  }

  /// One check with the metric's value; true when training should stop. The reason is in reason().
  TRAINLOOP_DETAIL_API bool check(double current);

  std::optional<double> best_score() const { return best_; }
  std::int64_t wait_count() const { return wait_; }
  bool stopped() const { return !reason_.empty(); }
  const std::string& reason() const { return reason_; }
  TRAINLOOP_DETAIL_API StateDict state_dict() const;
  TRAINLOOP_DETAIL_API void load_state_dict(const StateDict& s);

 private:
  template <class T>
  void check_trainer(T& trainer) {
    const auto& metrics = trainer.callback_metrics();
    auto it = metrics.find(options_.monitor);
    if (it == metrics.end()) {
      std::string logged;
      for (const auto& entry : metrics) logged += (logged.empty() ? "" : ", ") + entry.first;
      throw std::runtime_error("trainloop: EarlyStopping monitors '" + options_.monitor +
                               "', which was not logged (logged: " + (logged.empty() ? "nothing" : logged) + ")");
    }
    // Every rank stops if any does (data-parallel ranks that disagree would wait for each other forever).
    if (trainer.reduce_decision(check(it->second.template item<double>()), /*all=*/false)) trainer.should_stop(true);
  }
  TRAINLOOP_DETAIL_API bool stop(std::string why);

  Options options_;
  EngineCore* target_ = nullptr;
  std::optional<double> best_;
  std::int64_t wait_ = 0, checks_ = 0;
  std::string reason_;
};

/// Stops the run when the step's output (the loss, for the Trainer: a tensor, a struct with `loss`, or a map with
/// "loss") holds a NaN or an infinity, with a message naming the iteration and the value. In a Trainer it checks in
/// on_train_batch_end and calls terminate(), before any checkpointing callback of that batch, so no checkpoint holds
/// the diverged weights; in an Engine, at iteration_completed. It reads the value on the host every iteration: a
/// sync per step, which is what asking for it costs.
class TerminateOnNan {
 public:
  template <class T, class M, class O, class B>
  void on_train_batch_end(T& trainer, M&, const O& output, B&, std::int64_t batch_idx) {
    checked_by_trainer_ = true;
    if constexpr (std::is_same_v<O, torch::Tensor> || detail::is_detected_v<detail::loss_member_t, O> ||
                  detail::is_map<O>::value) {
      const torch::Tensor bad = first_non_finite(detail::loss_of(output));
      if (!trainer.reduce_decision(bad.defined(), /*all=*/false)) return;  // data-parallel ranks stop together
      if (!bad.defined()) {
        stop("another rank's loss of epoch " + std::to_string(trainer.current_epoch()) + ", batch " +
             std::to_string(batch_idx) + " is not finite");
        trainer.terminate();
        return;
      }
      stop("the loss of epoch " + std::to_string(trainer.current_epoch()) + ", batch " + std::to_string(batch_idx) +
           " (global step " + std::to_string(trainer.global_step()) + ") is " + c10::str(bad.template item<double>()));
      trainer.terminate();
    }
  }
  template <class E>
  void on_iteration_completed(E& engine) {
    if (checked_by_trainer_) {  // the Trainer forwards its Engine's events too: checked already
      checked_by_trainer_ = false;
      return;
    }
    const torch::Tensor bad = first_non_finite(detail::loss_of(engine.output()));
    if (!bad.defined()) return;
    stop("the output of iteration " + std::to_string(engine.state.iteration) + " (epoch " +
         std::to_string(engine.state.epoch) + ", its batch " + std::to_string(engine.state.epoch_iteration) + ") is " +
         c10::str(bad.item<double>()));
    engine.terminate();
  }
  bool triggered() const { return !message_.empty(); }
  const std::string& message() const { return message_; }

 private:
  TRAINLOOP_DETAIL_API static torch::Tensor first_non_finite(const torch::Tensor& value);
  TRAINLOOP_DETAIL_API void stop(const std::string& what);
  std::string message_;
  bool checked_by_trainer_ = false;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API EarlyStopping::EarlyStopping(Options options) : options_(std::move(options)) {
  if (options_.monitor.empty()) throw std::invalid_argument("trainloop: EarlyStopping: name the metric to monitor");
  if (options_.patience < 1) throw std::invalid_argument("trainloop: EarlyStopping: patience must be at least 1");
  if (options_.min_delta < 0) throw std::invalid_argument("trainloop: EarlyStopping: min_delta must not be negative");
}

TRAINLOOP_DETAIL_API EarlyStopping& EarlyStopping::stops(EngineCore& engine) {
  target_ = &engine;
  return *this;
}
TRAINLOOP_DETAIL_API bool EarlyStopping::check(double current) {
  ++checks_;
  const bool minimize = options_.mode == Mode::min;
  auto fmt = [](double v) {
    char text[32];
    std::snprintf(text, sizeof text, "%.6g", v);
    return std::string(text);
  };
  if (options_.check_finite && !std::isfinite(current))
    return stop("monitored metric " + options_.monitor + " = " + fmt(current) + " is not finite");
  if (options_.stopping_threshold && (minimize ? current < *options_.stopping_threshold : current > *options_.stopping_threshold))
    return stop(options_.monitor + " = " + fmt(current) + " reached the stopping threshold " + fmt(*options_.stopping_threshold));
  if (options_.divergence_threshold &&
      (minimize ? current > *options_.divergence_threshold : current < *options_.divergence_threshold))
    return stop(options_.monitor + " = " + fmt(current) + " crossed the divergence threshold " + fmt(*options_.divergence_threshold));
  const bool improved = !best_ || (minimize ? current < *best_ - options_.min_delta : current > *best_ + options_.min_delta);
  if (improved) {
    best_ = current;
    wait_ = 0;
    return false;
  }
  if (++wait_ >= options_.patience)
    return stop(options_.monitor + " did not improve by more than " + fmt(options_.min_delta) + " in " +
                std::to_string(wait_) + " checks; best " + fmt(*best_));
  return false;
}
TRAINLOOP_DETAIL_API StateDict EarlyStopping::state_dict() const {
  StateDict s{{"wait_count", wait_}, {"checks", checks_}, {"reason", reason_}};
  if (best_) s["best_score"] = *best_;
  return s;
}
TRAINLOOP_DETAIL_API void EarlyStopping::load_state_dict(const StateDict& s) {
  auto it = s.find("wait_count");
  if (it == s.end() || !std::holds_alternative<std::int64_t>(it->second))
    throw std::invalid_argument("trainloop: EarlyStopping state: key 'wait_count' is missing or not an integer");
  wait_ = std::get<std::int64_t>(it->second);
  checks_ = s.count("checks") ? std::get<std::int64_t>(s.at("checks")) : 0;
  reason_ = s.count("reason") ? std::get<std::string>(s.at("reason")) : std::string();
  best_ = s.count("best_score") ? std::optional<double>(std::get<double>(s.at("best_score"))) : std::nullopt;
}
TRAINLOOP_DETAIL_API bool EarlyStopping::stop(std::string why) {
  reason_ = std::move(why);
  return true;
}
TRAINLOOP_DETAIL_API torch::Tensor TerminateOnNan::first_non_finite(const torch::Tensor& value) {
  if (!value.defined() || !value.is_floating_point()) return {};
  const torch::Tensor finite = torch::isfinite(value.detach());
  if (finite.all().item<bool>()) return {};
  return value.detach().reshape({-1}).index({finite.reshape({-1}).logical_not()}).slice(0, 0, 1);
}
TRAINLOOP_DETAIL_API void TerminateOnNan::stop(const std::string& what) {
  message_ = "trainloop: TerminateOnNan: " + what + "; stopping";
  std::fprintf(stderr, "%s\n", message_.c_str());
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
