// trainloop: LearningRateMonitor (Lightning's): the learning rate of every optimizer and parameter group, and
// optionally momentum and weight decay, handed to the loggers and kept in a history. Host values from the optimizer's
// options: it never touches the device.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "parts/core/type_name.hpp"
#include "parts/torch/optim.hpp"
#include "parts/torch/schedulers.hpp"

TRAINLOOP_DETAIL_BEGIN

/// As a Trainer callback: names are Lightning's, "lr-SGD", "lr-Adam/pg1" and "lr-Adam/pg2" for several parameter
/// groups, "lr-Adam-1" for a second Adam, plus "-momentum" and "-weight_decay" suffixes. With logging_interval step
/// it records at each optimizer step that lands on a logging step (log_every_n_steps), so the value joins that step's
/// record; with epoch, at each epoch start; unset, it follows each optimizer's scheduler (epoch without one).
///
/// As an Engine handler: `LearningRateMonitor(options).watch(optimizer)` records at each iteration (or epoch) into
/// engine.state.metrics and the history.
class LearningRateMonitor {
 public:
  struct Options {
    std::optional<Interval> logging_interval;
    bool log_momentum = false;
    bool log_weight_decay = false;
  };
  LearningRateMonitor() : LearningRateMonitor(Options{}) {}
  explicit LearningRateMonitor(Options options) : options_(options) {}

  TRAINLOOP_DETAIL_API LearningRateMonitor& watch(torch::optim::Optimizer& optimizer);

  /// Every value recorded, by name, in order.
  const std::map<std::string, std::vector<double>>& lrs() const noexcept { return history_; }

  // --- Trainer callback hooks ---
  template <class T, class M>
  void on_train_start(T& trainer, M&) {
    std::vector<torch::optim::Optimizer*> optimizers;
    intervals_.clear();
    for (const auto& config : trainer.optimizers()) {
      optimizers.push_back(config.optimizer().get());
      intervals_.push_back(options_.logging_interval ? *options_.logging_interval
                           : config.scheduler()      ? config.scheduler()->interval()
                                                     : Interval::epoch);
    }
    name_optimizers(optimizers);
  }
  template <class T, class M>
  void on_train_epoch_start(T& trainer, M&) {
    trainer.log_metrics(read_where([&](std::size_t i) { return intervals_[i] == Interval::epoch; }));
  }
  template <class T, class M>
  void on_before_optimizer_step(T& trainer, M&, torch::optim::Optimizer& optimizer) {
    if (!trainer.logging_next_step()) return;
    trainer.log_metrics(
        read_where([&](std::size_t i) { return optimizers_[i] == &optimizer && intervals_[i] == Interval::step; }));
  }

  // --- Engine handler hooks (with watch(); a Trainer callback also receives the training Engine's events) ---
  template <class E>
  void on_started(E&) {
    if (watched_.empty()) return;
    intervals_.assign(watched_.size(), options_.logging_interval.value_or(Interval::step));
    name_optimizers(watched_);
  }
  template <class E>
  void on_epoch_started(E& engine) {
    record_engine(engine, Interval::epoch);
  }
  template <class E>
  void on_iteration_started(E& engine) {
    record_engine(engine, Interval::step);
  }

 private:
  template <class E>
  void record_engine(E& engine, Interval interval) {
    if (watched_.empty()) return;
    for (const auto& [name, value] : read_where([&](std::size_t i) { return intervals_[i] == interval; }))
      engine.state.metrics[name] = value;
  }
  // The values of the optimizers `wanted(i)` picks, recorded in the history too.
  template <class Wanted>
  std::map<std::string, double> read_where(Wanted wanted) {
    std::map<std::string, double> values;
    for (std::size_t i = 0; i < names_.size(); ++i)
      if (wanted(i)) read(i, values);
    return values;
  }

  // Lightning's names: the optimizer's class, numbered from its second occurrence, "/pgN" with several groups.
  TRAINLOOP_DETAIL_API void name_optimizers(const std::vector<torch::optim::Optimizer*>& optimizers);
  TRAINLOOP_DETAIL_API void read(std::size_t i, std::map<std::string, double>& values);
  TRAINLOOP_DETAIL_API void put(std::map<std::string, double>& values, const std::string& name,
                                std::optional<double> value);

  Options options_;
  std::vector<torch::optim::Optimizer*> watched_, optimizers_;
  std::vector<Interval> intervals_;
  std::vector<std::vector<std::string>> names_;  // per optimizer, per parameter group
  std::map<std::string, std::vector<double>> history_;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API LearningRateMonitor& LearningRateMonitor::watch(torch::optim::Optimizer& optimizer) {
  watched_.push_back(&optimizer);
  return *this;
}
TRAINLOOP_DETAIL_API void LearningRateMonitor::name_optimizers(const std::vector<torch::optim::Optimizer*>& optimizers) {
  optimizers_ = optimizers;
  names_.clear();
  std::map<std::string, int> seen;
  for (auto* optimizer : optimizers) {
    std::string type = detail::demangle(typeid(*optimizer).name());
    if (type.rfind("torch::optim::", 0) == 0) type = type.substr(14);
    const int n = seen[type]++;
    const std::string base = "lr-" + type + (n > 0 ? "-" + std::to_string(n) : "");
    std::vector<std::string> groups;
    const auto count = optimizer->param_groups().size();
    for (std::size_t g = 0; g < count; ++g) groups.push_back(count == 1 ? base : base + "/pg" + std::to_string(g + 1));
    names_.push_back(groups);
  }
}
TRAINLOOP_DETAIL_API void LearningRateMonitor::read(std::size_t i, std::map<std::string, double>& values) {
  auto& groups = optimizers_[i]->param_groups();
  for (std::size_t g = 0; g < groups.size() && g < names_[i].size(); ++g) {
    auto& options = groups[g].options();
    put(values, names_[i][g], detail::try_access_param(options, Param::lr, nullptr));
    if (options_.log_momentum)
      put(values, names_[i][g] + "-momentum", detail::try_access_param(options, Param::momentum, nullptr));
    if (options_.log_weight_decay)
      put(values, names_[i][g] + "-weight_decay", detail::try_access_param(options, Param::weight_decay, nullptr));
  }
}
TRAINLOOP_DETAIL_API void LearningRateMonitor::put(std::map<std::string, double>& values, const std::string& name,
                                                   std::optional<double> value) {
  if (!value) return;  // an optimizer without momentum (Adagrad): nothing to log, as in Lightning
  values[name] = *value;
  history_[name].push_back(*value);
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
