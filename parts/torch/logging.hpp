// trainloop: `log(name, value, options)`. Values stay tensors on their device and are reduced there; the host reads
// them only when something consumes them (the progress bar at its refresh rate, a logger at its interval, a monitor
// at epoch end).
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "parts/core/state.hpp"

TRAINLOOP_DETAIL_BEGIN

/// How an epoch-level value is reduced over the epoch's steps.
enum class Reduce { mean, sum, max, min };

/// Options of `log` (Lightning's `self.log` keywords), as chainable setters. on_step/on_epoch default by stage, as in
/// Lightning: training logs per step, validation and test per epoch.
class LogOptions {
 public:
  LogOptions& on_step(bool v) { return on_step_ = v, *this; }
  LogOptions& on_epoch(bool v) { return on_epoch_ = v, *this; }
  LogOptions& prog_bar(bool v) { return prog_bar_ = v, *this; }
  LogOptions& reduce(Reduce v) { return reduce_ = v, *this; }
  /// Reduce across ranks at epoch end (wired by the distributed build; a no-op in a single process).
  LogOptions& sync_dist(bool v) { return sync_dist_ = v, *this; }
  LogOptions& logger(bool v) { return logger_ = v, *this; }
  /// Weight of this value in an epoch mean (Lightning weights by batch size); default 1.
  LogOptions& batch_size(std::int64_t v) { return batch_size_ = v, *this; }

  const std::optional<bool>& on_step() const { return on_step_; }
  const std::optional<bool>& on_epoch() const { return on_epoch_; }
  bool prog_bar() const { return prog_bar_; }
  Reduce reduce() const { return reduce_; }
  bool sync_dist() const { return sync_dist_; }
  bool logger() const { return logger_; }
  std::int64_t batch_size() const { return batch_size_; }

 private:
  std::optional<bool> on_step_, on_epoch_;
  bool prog_bar_ = false;
  Reduce reduce_ = Reduce::mean;
  bool sync_dist_ = false;
  bool logger_ = true;
  std::int64_t batch_size_ = 1;
};

/// Whether a monitored metric is better low (a loss) or high (an accuracy): EarlyStopping, ModelCheckpoint and
/// ReduceLROnPlateau all take one (as their nested `Mode`).
enum class MonitorMode { min, max };

/// What the Trainer is running; decides log()'s defaults and where values go. (The sanity check is a validation
/// run: Trainer::sanity_checking() tells them apart.)
enum class Stage { train, validate, test, predict };

/// The values one stage logged: the latest per-step value and an epoch accumulator, both tensors on their device.
class MetricStore {
 public:
  struct Entry {
    bool on_step = false, on_epoch = false, prog_bar = false, logger = true, sync_dist = false;
    Reduce reduce = Reduce::mean;
    torch::Tensor step_value;   ///< the last logged value (detached), when on_step
    torch::Tensor accumulated;  ///< float64 sum / max / min over the epoch, when on_epoch
    double weight = 0;          ///< sum of batch sizes, for the mean
    bool logged_this_epoch = false;
    bool step_pending = false;  ///< logged on_step since the Trainer last published step values
    std::function<torch::Tensor()> metric_compute;  ///< a logged Metric: computed at epoch end...
    std::function<void()> metric_reset;             ///< ... then reset, as Lightning does with torchmetrics
  };

  // "epoch" and "step" are the loggers' own columns: the Trainer writes them in every record.
  TRAINLOOP_DETAIL_API static void check_name(const std::string& name, const LogOptions& options);
  TRAINLOOP_DETAIL_API void log(Stage stage, const std::string& name, const torch::Tensor& value,
                                const LogOptions& options);

  /// Logs a Metric (anything with reset/update/compute) kept by reference: its value is computed once, at epoch end,
  /// from everything it accumulated, and the metric is reset then. Update it in the step as usual.
  template <class M>
  void log_metric(const std::string& name, M& metric, const LogOptions& options) {
    check_name(name, options);
    if (options.on_step().value_or(false))
      throw std::invalid_argument("trainloop: log(\"" + name + "\", metric): a Metric is logged per epoch; log its "
                                  "compute() to see per-step values");
    Entry& e = entries_[name];
    e.on_step = false;
    e.on_epoch = true;
    e.prog_bar = options.prog_bar();
    e.logger = options.logger();
    e.sync_dist = options.sync_dist();
    e.metric_compute = [&metric] { return metric.compute(); };
    e.metric_reset = [&metric] { metric.reset(); };
    e.logged_this_epoch = true;
  }

  /// The epoch-level value of `e` (a device tensor), or undefined when it was not logged this epoch.
  TRAINLOOP_DETAIL_API static torch::Tensor epoch_value(const Entry& e);
  /// Resets the Metrics logged this epoch, after their values were published.
  TRAINLOOP_DETAIL_API void reset_logged_metrics();

  /// Calls f(name, entry) for each value logged on_step since the last call, and forgets them.
  template <class F>
  void take_step_values(F&& f) {
    for (const auto& name : pending_steps_) {
      Entry& e = entries_.at(name);
      e.step_pending = false;
      f(name, e);
    }
    pending_steps_.clear();
  }
  TRAINLOOP_DETAIL_API void start_epoch();
  TRAINLOOP_DETAIL_API void clear();
  const std::map<std::string, Entry>& entries() const { return entries_; }

  /// The epoch's running sums, for checkpoints: a fit resumed mid-epoch reports the epoch's values over all its
  /// batches. (A logged Metric object keeps its own state: checkpoint it with the module.) epoch_state() holds how
  /// each sum is kept and reduced, epoch_sums() the tensors.
  TRAINLOOP_DETAIL_API StateDict epoch_state() const;
  TRAINLOOP_DETAIL_API std::map<std::string, torch::Tensor> epoch_sums() const;
  TRAINLOOP_DETAIL_API void load_epoch_state(const StateDict& state, const std::map<std::string, torch::Tensor>& sums,
                                             const std::string& source);

 private:
  template <class F>
  void for_each_epoch_sum(F&& f) const {
    for (const auto& [name, e] : entries_)
      if (e.on_epoch && e.logged_this_epoch && e.accumulated.defined() && !e.metric_compute) f(name, e);
  }

  std::map<std::string, Entry> entries_;
  std::vector<std::string> pending_steps_;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API void MetricStore::check_name(const std::string& name, const LogOptions& options) {
  if (name.empty()) throw std::invalid_argument("trainloop: log(): the metric name is empty");
  if (options.logger() && (name == "epoch" || name == "step"))
    throw std::invalid_argument("trainloop: log(\"" + name + "\"): '" + name + "' is a column every logger record "
                                "already has (the Trainer writes it); choose another name, or pass logger(false)");
}

TRAINLOOP_DETAIL_API void MetricStore::log(Stage stage, const std::string& name, const torch::Tensor& value,
                                           const LogOptions& options) {
  check_name(name, options);
  if (!value.defined()) throw std::invalid_argument("trainloop: log(\"" + name + "\"): the value is an undefined tensor");
  if (value.numel() != 1)
    throw std::invalid_argument("trainloop: log(\"" + name + "\"): the value must hold one number, got shape " +
                                c10::str(value.sizes()));
  if (options.batch_size() <= 0)
    throw std::invalid_argument("trainloop: log(\"" + name + "\"): batch_size must be positive");
  const bool training = stage == Stage::train;
  Entry& e = entries_[name];
  e.on_step = options.on_step().value_or(training);
  e.on_epoch = options.on_epoch().value_or(!training);
  e.prog_bar = options.prog_bar();
  e.logger = options.logger();
  e.sync_dist = options.sync_dist();
  e.reduce = options.reduce();
  torch::Tensor v = value.detach().reshape({});
  if (e.on_step) {
    if (!e.step_pending) pending_steps_.push_back(name);
    e.step_value = v;
    e.step_pending = true;
  }
  if (e.on_epoch) {
    torch::Tensor v64 = v.to(torch::kFloat64);
    const double w = static_cast<double>(options.batch_size());
    if (!e.logged_this_epoch || !e.accumulated.defined()) {
      e.accumulated = e.reduce == Reduce::mean ? v64 * w : v64.clone();
      e.weight = w;
    } else {
      switch (e.reduce) {
        case Reduce::mean: e.accumulated.add_(v64, w); break;
        case Reduce::sum: e.accumulated.add_(v64); break;
        case Reduce::max: e.accumulated = torch::maximum(e.accumulated, v64); break;
        case Reduce::min: e.accumulated = torch::minimum(e.accumulated, v64); break;
      }
      e.weight += w;
    }
  }
  e.logged_this_epoch = true;
}

TRAINLOOP_DETAIL_API StateDict MetricStore::epoch_state() const {
  StateDict state;
  for_each_epoch_sum([&](const std::string& name, const Entry& e) {
    state[name + "/flags"] = std::int64_t{(e.on_step ? 1 : 0) | (e.on_epoch ? 2 : 0) | (e.prog_bar ? 4 : 0) |
                                          (e.logger ? 8 : 0) | (e.sync_dist ? 16 : 0)};
    state[name + "/reduce"] = static_cast<std::int64_t>(e.reduce);
    state[name + "/weight"] = e.weight;
  });
  return state;
}

TRAINLOOP_DETAIL_API std::map<std::string, torch::Tensor> MetricStore::epoch_sums() const {
  std::map<std::string, torch::Tensor> sums;
  for_each_epoch_sum([&](const std::string& name, const Entry& e) { sums[name] = e.accumulated; });
  return sums;
}

TRAINLOOP_DETAIL_API void MetricStore::load_epoch_state(const StateDict& state,
                                                        const std::map<std::string, torch::Tensor>& sums,
                                                        const std::string& source) {
  auto read = [&](const std::string& key, auto type) {
    using T = decltype(type);
    auto it = state.find(key);
    if (it == state.end() || !std::holds_alternative<T>(it->second))
      throw std::runtime_error("trainloop: checkpoint '" + source + "': key 'trainer/train_epoch_sums/" + key +
                               "' is missing or of the wrong type");
    return std::get<T>(it->second);
  };
  std::map<std::string, Entry> loaded;
  for (const auto& [name, sum] : sums) {
    Entry& e = loaded[name];
    const std::int64_t flags = read(name + "/flags", std::int64_t{});
    e.on_step = flags & 1;
    e.on_epoch = flags & 2;
    e.prog_bar = flags & 4;
    e.logger = flags & 8;
    e.sync_dist = flags & 16;
    const std::int64_t reduce = read(name + "/reduce", std::int64_t{});
    if (reduce < 0 || reduce > static_cast<std::int64_t>(Reduce::min))
      throw std::runtime_error("trainloop: checkpoint '" + source + "': key 'trainer/train_epoch_sums/" + name +
                               "/reduce' is " + std::to_string(reduce) + ", not a Reduce");
    e.reduce = static_cast<Reduce>(reduce);
    e.weight = read(name + "/weight", double{});
    e.accumulated = sum;
    e.logged_this_epoch = true;
  }
  entries_ = std::move(loaded);
  pending_steps_.clear();
}
TRAINLOOP_DETAIL_API torch::Tensor MetricStore::epoch_value(const Entry& e) {
  if (!e.on_epoch || !e.logged_this_epoch) return {};
  if (e.metric_compute) return e.metric_compute();
  if (!e.accumulated.defined()) return {};
  return e.reduce == Reduce::mean ? e.accumulated / e.weight : e.accumulated;
}
TRAINLOOP_DETAIL_API void MetricStore::reset_logged_metrics() {
  for (auto& [name, e] : entries_)
    if (e.metric_reset && e.logged_this_epoch) e.metric_reset();
}
TRAINLOOP_DETAIL_API void MetricStore::start_epoch() {
  for (auto& [name, e] : entries_) e.logged_this_epoch = false;
}
TRAINLOOP_DETAIL_API void MetricStore::clear() {
  entries_.clear();
  pending_steps_.clear();
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
