// trainloop: the per-hook profiler behind TrainerOptions().profiler(true) (Lightning's SimpleProfiler). The Trainer
// times each hook call, step, backward, optimizer step and batch fetch under a named action and prints a table of
// where the time went when a stage ends. Host wall time: on CUDA, asynchronous kernels are charged to whatever
// waits for them (often the optimizer step or the next .item()), as in Lightning; nothing here syncs the device.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

TRAINLOOP_DETAIL_BEGIN

/// The Trainer's own actions (hooks and steps are named "[Callback]Type.hook" and "[LightningModule]Type.hook").
namespace profiler_actions {
inline const std::string run_training_batch = "run_training_batch", get_train_batch = "get_train_batch",
                         backward = "backward", optimizer_step = "optimizer_step", zero_grad = "optimizer_zero_grad",
                         run_validation = "run_validation", run_test = "run_test", run_predict = "run_predict",
                         write_logs = "loggers.log_metrics";
}  // namespace profiler_actions

class Profiler {
 public:
  using Clock = std::chrono::steady_clock;
  struct Action {
    std::int64_t calls = 0;
    double total_s = 0, min_s = 0, max_s = 0;
  };

  void start(const std::string& stage) {
    actions_.clear();
    stage_ = stage;
    started_ = Clock::now();
  }
  TRAINLOOP_DETAIL_API void record(const std::string& action, Clock::duration elapsed);
  /// Records the time until it goes out of scope (an exception included) under `action`; null: records nothing.
  class Section {
   public:
    Section(Profiler& profiler, const std::string* action) : profiler_(profiler), action_(action) {
      if (action_) start_ = Clock::now();
    }
    ~Section() {
      if (action_) profiler_.record(*action_, Clock::now() - start_);
    }
    Section(const Section&) = delete;
    Section& operator=(const Section&) = delete;

   private:
    Profiler& profiler_;
    const std::string* action_;
    Clock::time_point start_{};
  };
  const std::map<std::string, Action>& actions() const noexcept { return actions_; }
  /// Wall time since start(): the denominator of the report's percentages.
  double elapsed_s() const { return std::chrono::duration<double>(Clock::now() - started_).count(); }

  /// The report: one row per action, the most expensive first. Nested actions (a hook inside the training step)
  /// are counted in both, so percentages need not add up to 100.
  TRAINLOOP_DETAIL_API std::string report() const;

 private:
  std::map<std::string, Action> actions_;
  std::string stage_;
  Clock::time_point started_ = Clock::now();
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API void Profiler::record(const std::string& action, Clock::duration elapsed) {
  const double s = std::chrono::duration<double>(elapsed).count();
  Action& a = actions_[action];
  a.min_s = a.calls == 0 ? s : std::min(a.min_s, s);
  a.max_s = std::max(a.max_s, s);
  a.total_s += s;
  ++a.calls;
}

TRAINLOOP_DETAIL_API std::string Profiler::report() const {
  const auto format = [](const char* spec, auto value) {
    char text[64];
    std::snprintf(text, sizeof text, spec, value);
    return std::string(text);
  };
  std::vector<std::pair<std::string, Action>> rows(actions_.begin(), actions_.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.total_s > b.second.total_s; });
  std::size_t width = 6;
  for (const auto& row : rows) width = std::max(width, row.first.size());
  const auto pad = [width](const std::string& s) { return s + std::string(width - s.size(), ' '); };
  const double total = elapsed_s();
  std::string out = stage_ + " profiler report (host wall time; total " + format("%.3f", total) + " s)\n";
  out += pad("Action") + " | Mean (s)   | Calls   | Total (s)  | Percent\n";
  out += std::string(width + 47, '-') + "\n";
  for (const auto& [name, a] : rows)
    out += pad(name) + " | " + format("%-10.6f", a.total_s / static_cast<double>(a.calls)) + " | " +
           format("%-7lld", static_cast<long long>(a.calls)) + " | " + format("%-10.4f", a.total_s) + " | " +
           format("%.1f %%", total > 0 ? 100.0 * a.total_s / total : 0.0) + "\n";
  return out;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
