// trainloop: generic handlers that need no torch: `on(events, callable)`, Timer, TimeLimit.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <chrono>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "parts/core/filters.hpp"
#include "parts/core/hooks.hpp"

TRAINLOOP_DETAIL_BEGIN

/// A compile-time handler made of a callable and the events (with filters) it runs on; see `on`.
template <std::uint32_t BuiltinMask, class F>
class EventHandler {
 public:
  using trainloop_event_handler = void;
  static constexpr std::uint32_t builtin_mask = BuiltinMask;

  EventHandler(EventSpec<BuiltinMask> spec, F f) : spec_(std::move(spec)), f_(std::move(f)) {
    for (const auto& item : spec_.items) has_user_events_ |= !is_builtin(item.event);
  }

  F& callable() noexcept { return f_; }
  const EventSpec<BuiltinMask>& events() const noexcept { return spec_; }

  // Called by the engine for built-in events in builtin_mask only.
  template <Event E, class Engine>
  bool dispatch(Engine& engine) {
    bool handled = false;
    const std::uint64_t count = engine.state.count(E);
    for (const auto& item : spec_.items)
      if (item.event == E && item.filter.accepts(engine.state, count)) handled |= call(engine);
    return handled;
  }
  template <class Engine>
  void dispatch_user(Engine& engine, Event e) {
    if (!has_user_events_) return;
    const std::uint64_t count = engine.state.count(e);
    for (const auto& item : spec_.items)
      if (item.event == e && item.filter.accepts(engine.state, count)) call(engine);
  }
  template <class Engine>
  static constexpr bool check_callable() {
    static_assert(std::is_invocable_v<F&, Engine&> || std::is_invocable_v<F&>,
                  "trainloop: on(events, f): f must be callable as f(engine) or f()");
    return true;
  }

 private:
  template <class Engine>
  bool call(Engine& engine) {
    if constexpr (std::is_invocable_v<F&, Engine&>)
      return detail::invoke_handler(f_, engine);
    else
      return detail::invoke_handler(f_);
  }

  EventSpec<BuiltinMask> spec_;
  F f_;
  bool has_user_events_ = false;
};

/// A compile-time handler from a callable: `make_engine(step, on(Events::iteration_completed | every(100), log))`.
/// The callable takes the engine or nothing; on exception_raised, returning true marks the exception handled.
template <class Spec, class F>
auto on(Spec&& events, F f) {
  static_assert(detail::is_event_like_v<std::decay_t<Spec>>,
                "trainloop: on(events, f): events must be Events::x, a user event, `event | filter` or an OR of those");
  auto spec = detail::to_spec(std::forward<Spec>(events));
  return EventHandler<decltype(spec)::builtin_mask, F>(std::move(spec), std::move(f));
}

/// Where the time goes: the whole run, each epoch, fetching each batch (get_batch_started to _completed) and each
/// iteration (iteration_started to _completed: the step plus the handlers between). Spans include the handlers
/// that run after the Timer in the same event; put it first in the pack to time the most.
class Timer {
 public:
  using Clock = std::chrono::steady_clock;
  struct Span {
    double total = 0;  ///< seconds
    double last = 0;   ///< seconds
    std::uint64_t count = 0;
    double mean() const noexcept { return count ? total / static_cast<double>(count) : 0.0; }
    void begin() noexcept { start_ = Clock::now(); }
    void end() noexcept {
      last = std::chrono::duration<double>(Clock::now() - start_).count();
      total += last;
      ++count;
    }

   private:
    Clock::time_point start_{};
  };

  template <class E>
  void on_started(E&) noexcept { run_.begin(); }
  template <class E>
  void on_epoch_started(E&) noexcept { epoch_.begin(); }
  template <class E>
  void on_get_batch_started(E&) noexcept { fetch_.begin(); }
  template <class E>
  void on_get_batch_completed(E&) noexcept { fetch_.end(); }
  template <class E>
  void on_iteration_started(E&) noexcept { iteration_.begin(); }
  template <class E>
  void on_iteration_completed(E&) noexcept { iteration_.end(); }
  template <class E>
  void on_epoch_completed(E&) noexcept { epoch_.end(); }
  template <class E>
  void on_completed(E&) noexcept { run_.end(); }

  const Span& run() const noexcept { return run_; }
  const Span& epoch() const noexcept { return epoch_; }
  const Span& batch_fetch() const noexcept { return fetch_; }
  const Span& iteration() const noexcept { return iteration_; }
  void reset() noexcept { *this = Timer{}; }

 private:
  Span run_, epoch_, fetch_, iteration_;
};

/// Stops the run (terminate) once it has lasted `limit`, checked after each iteration (Ignite's TimeLimit,
/// Lightning's max_time). The clock restarts with each run.
class TimeLimit {
 public:
  using Clock = std::chrono::steady_clock;
  explicit TimeLimit(std::chrono::duration<double> limit) : limit_(limit) {}

  template <class E>
  void on_started(E&) noexcept {
    start_ = Clock::now();
    reached_ = false;
  }
  template <class E>
  void on_iteration_completed(E& engine) noexcept {
    if (Clock::now() - start_ >= limit_) {
      reached_ = true;
      engine.terminate();
    }
  }
  /// Whether the last run was stopped by this limit.
  bool reached() const noexcept { return reached_; }

 private:
  std::chrono::duration<double> limit_;
  Clock::time_point start_{};
  bool reached_ = false;
};

TRAINLOOP_DETAIL_END
