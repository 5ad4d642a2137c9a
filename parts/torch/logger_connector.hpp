// trainloop: the Trainer's logged values (Lightning's LoggerConnector): what the module and callbacks log() goes to
// one MetricStore per stage; at step and epoch ends the values are published to callback_metrics (what callbacks
// monitor) and logged_metrics (what loggers receive), and the values waiting for the loggers are read to the host in
// one transfer when a record is written. Tensors throughout: nothing syncs the device before a record is written.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "parts/torch/logging.hpp"
#include "parts/torch/strategy.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
class LoggerConnector {
 public:
  // `has_loggers`: the Trainer's callbacks include a logger, so logged values are kept for it.
  explicit LoggerConnector(bool has_loggers) : has_loggers_(has_loggers) {}

  MetricStore& store(Stage stage) noexcept { return stores_[static_cast<std::size_t>(stage)]; }
  const MetricStore& store(Stage stage) const noexcept { return stores_[static_cast<std::size_t>(stage)]; }
  std::map<std::string, torch::Tensor>& callback_metrics() noexcept { return callback_metrics_; }
  const std::map<std::string, torch::Tensor>& callback_metrics() const noexcept { return callback_metrics_; }
  std::map<std::string, torch::Tensor>& logged_metrics() noexcept { return logged_metrics_; }
  const std::map<std::string, torch::Tensor>& logged_metrics() const noexcept { return logged_metrics_; }

  /// Host values for the next record (LearningRateMonitor's, the loss scaler's skipped steps).
  void add_host_values(const std::map<std::string, double>& values) {
    for (const auto& [name, value] : values) pending_host_[name] = value;
  }
  bool has_pending() const noexcept { return !pending_.empty() || !pending_host_.empty(); }
  /// Nothing waits any more (a stage's start; ranks other than 0, whose loggers do not write).
  void drop_pending() {
    pending_.clear();
    pending_host_.clear();
  }
  /// A fit's start: no values published, none logged.
  TRAINLOOP_DETAIL_API void clear();

  // Step values into callback_metrics (always) and logged_metrics (when `log_now`: every log_every_n_steps) as
  // "name" or "name_step". Only the training stage's reach the loggers (`training`); evaluation step values stay out
  // of them (their step does not advance), as their epoch values go in.
  TRAINLOOP_DETAIL_API void publish_step_values(MetricStore& store, bool log_now, bool training);
  // Epoch values ("name" or "name_epoch") from the stage's running sums; those logged with sync_dist are reduced over
  // the strategy's ranks (a mean as the ranks' weighted sums over their weights: exactly the mean over all batches).
  TRAINLOOP_DETAIL_API void publish_epoch_values(MetricStore& store, StrategyPolicy& strategy);
  // The values waiting for the loggers, read to the host with one transfer, plus "epoch"; nothing stays pending.
  // This is where logging syncs the device, and only when something is written.
  TRAINLOOP_DETAIL_API std::map<std::string, double> take_record(std::int64_t epoch);
  // The epoch values a validate/test run published, read to the host.
  TRAINLOOP_DETAIL_API std::map<std::string, double> host_values(const MetricStore& store) const;
  // The prog_bar values read to the host (the one place the progress bar syncs).
  TRAINLOOP_DETAIL_API std::map<std::string, double> progress_bar_values() const;

 private:
  bool has_loggers_;
  std::array<MetricStore, 4> stores_;  // one per Stage: train, validate (the sanity check too), test, predict
  std::map<std::string, torch::Tensor> callback_metrics_, logged_metrics_;
  std::map<std::string, torch::Tensor> pending_;  // logged values waiting for the next record to the loggers
  std::map<std::string, double> pending_host_;     // host values handed over for it
};
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API void detail::LoggerConnector::clear() {
  callback_metrics_.clear();
  logged_metrics_.clear();
  for (auto& store : stores_) store.clear();
  drop_pending();
}

TRAINLOOP_DETAIL_API void detail::LoggerConnector::publish_step_values(MetricStore& store, bool log_now, bool training) {
  const bool to_loggers = has_loggers_ && training;
  store.take_step_values([&](const std::string& name, const MetricStore::Entry& e) {
    callback_metrics_[name] = e.step_value;
    if (!e.logger || !log_now) return;
    const std::string logged = e.on_epoch ? name + "_step" : name;
    logged_metrics_[logged] = e.step_value;
    if (to_loggers) pending_[logged] = e.step_value;
  });
}

TRAINLOOP_DETAIL_API void detail::LoggerConnector::publish_epoch_values(MetricStore& store, StrategyPolicy& strategy) {
  for (const auto& [name, e] : store.entries()) {
    torch::Tensor value = MetricStore::epoch_value(e);
    if (!value.defined()) continue;
    if (strategy.world_size() > 1 && e.sync_dist && !e.metric_compute) {
      if (e.reduce == Reduce::mean) {
        torch::Tensor sums = torch::stack({e.accumulated.reshape({}), torch::full({}, e.weight, e.accumulated.options())});
        strategy.all_reduce(sums, SyncOp::sum);
        value = sums[0] / sums[1];
      } else {
        value = value.clone();
        strategy.all_reduce(value, e.reduce == Reduce::sum ? SyncOp::sum : e.reduce == Reduce::max ? SyncOp::max : SyncOp::min);
      }
    }
    callback_metrics_[name] = value;
    if (!e.logger) continue;
    const std::string logged = e.on_step ? name + "_epoch" : name;
    logged_metrics_[logged] = value;
    if (has_loggers_) pending_[logged] = value;
  }
  store.reset_logged_metrics();
}

TRAINLOOP_DETAIL_API std::map<std::string, double> detail::LoggerConnector::take_record(std::int64_t epoch) {
  std::map<std::string, double> record = std::move(pending_host_);
  if (!pending_.empty()) {
    std::vector<torch::Tensor> values;
    for (const auto& entry : pending_) values.push_back(entry.second.detach().reshape({}).to(torch::kFloat64));
    const torch::Tensor host = torch::stack(values).to(torch::kCPU);
    const double* data = host.data_ptr<double>();
    std::size_t i = 0;
    for (const auto& entry : pending_) record[entry.first] = data[i++];
  }
  record["epoch"] = static_cast<double>(epoch);
  drop_pending();
  return record;
}

TRAINLOOP_DETAIL_API std::map<std::string, double> detail::LoggerConnector::host_values(const MetricStore& store) const {
  std::map<std::string, double> values;
  for (const auto& [name, e] : store.entries()) {
    auto it = callback_metrics_.find(name);
    if (e.on_epoch && e.logged_this_epoch && it != callback_metrics_.end())
      values[name] = it->second.item<double>();
  }
  return values;
}

TRAINLOOP_DETAIL_API std::map<std::string, double> detail::LoggerConnector::progress_bar_values() const {
  std::map<std::string, double> values;
  for (const auto& store : stores_)
    for (const auto& [name, entry] : store.entries()) {
      if (!entry.prog_bar) continue;
      auto it = callback_metrics_.find(name);
      if (it != callback_metrics_.end() && it->second.defined()) values[name] = it->second.template item<double>();
    }
  return values;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
