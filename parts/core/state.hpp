// trainloop: the Engine's state. Counters, limits, metrics, times, event firings; saved and restored as a StateDict.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "parts/core/events.hpp"

TRAINLOOP_DETAIL_BEGIN

/// A flat, torch-free state dictionary: what `state_dict()` returns and `load_state_dict()` takes.
using StateValue = std::variant<std::int64_t, double, std::string>;
using StateDict = std::map<std::string, StateValue>;

/// What an Engine knows about its run. Counters are 1-based while running: in the first iteration of the first
/// epoch, `epoch == 1`, `iteration == 1`, `epoch_iteration == 1`.
struct State {
  std::uint64_t epoch = 0;            ///< epochs started
  std::uint64_t iteration = 0;        ///< iterations started in the whole run (Ignite's `iteration`)
  std::uint64_t epoch_iteration = 0;  ///< iterations started in the current epoch
  bool in_epoch = false;  ///< between epoch_started and epoch_completed; a run stopped mid-epoch resumes that epoch
  /// Batches drawn from the data since its current pass began. A run resumed over a fresh data source (a new
  /// process, a new range) skips this many first, so the epoch continues the same pass.
  std::uint64_t pass_position = 0;
  std::optional<std::uint64_t> epoch_length;  ///< iterations per epoch; unknown until a pass ends for unsized data
  std::optional<std::uint64_t> max_epochs;
  std::optional<std::uint64_t> max_iters;
  std::map<std::string, double> metrics;  ///< for handlers and evaluators to publish results (Ignite's `metrics`)
  /// Seconds: "epoch_completed" is the last epoch's duration, "completed" the run's, as in Ignite.
  std::map<std::string, double> times;

  /// How many times `e` has fired in this run (user-defined events included).
  std::uint64_t fired(Event e) const noexcept {
    if (is_builtin(e)) return builtin_fired_[event_index(e)];
    const std::size_t user_index = event_index(e) - builtin_event_count;
    return user_index < user_fired_.size() ? user_fired_[user_index] : 0;
  }
  /// The counter that filters of `e` look at (see `counter_of`).
  std::uint64_t count(Event e) const noexcept {
    switch (counter_of(e)) {
      case EventCounter::iteration: return iteration;
      case EventCounter::epoch: return epoch;
      default: return fired(e);
    }
  }
  void count_firing(Event e) { ++fired_slot(e); }
  void reset_firings() {
    builtin_fired_.fill(0);
    user_fired_.clear();
  }

  TRAINLOOP_DETAIL_API StateDict state_dict() const;

  /// Restores what `state_dict()` saved. Validates everything first, so a bad dictionary leaves the state as it was;
  /// errors name the key at fault.
  TRAINLOOP_DETAIL_API void load_state_dict(const StateDict& dict);

 private:
  std::array<std::uint64_t, builtin_event_count> builtin_fired_{};
  std::vector<std::uint64_t> user_fired_;

  std::uint64_t& fired_slot(Event e) {
    if (is_builtin(e)) return builtin_fired_[event_index(e)];
    const std::size_t user_index = event_index(e) - builtin_event_count;
    if (user_index >= user_fired_.size()) user_fired_.resize(user_index + 1, 0);
    return user_fired_[user_index];
  }

  TRAINLOOP_DETAIL_API static bool is_core_key(const std::string& key);
  TRAINLOOP_DETAIL_API static std::invalid_argument bad_key(const std::string& key, const std::string& what);
  TRAINLOOP_DETAIL_API static std::int64_t read_int(const StateDict& dict, const std::string& key);
  TRAINLOOP_DETAIL_API static std::uint64_t read_count(const StateDict& dict, const std::string& key);
  TRAINLOOP_DETAIL_API static std::optional<std::uint64_t> read_optional_count(const StateDict& dict,
                                                                         const std::string& key);
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API StateDict State::state_dict() const {
  StateDict dict;
  auto as_int = [](std::uint64_t v) { return StateValue{static_cast<std::int64_t>(v)}; };
  auto optional_int = [](const std::optional<std::uint64_t>& v) {
    return StateValue{v ? static_cast<std::int64_t>(*v) : std::int64_t{-1}};
  };
  dict["epoch"] = as_int(epoch);
  dict["iteration"] = as_int(iteration);
  dict["epoch_iteration"] = as_int(epoch_iteration);
  dict["in_epoch"] = StateValue{std::int64_t{in_epoch ? 1 : 0}};
  dict["pass_position"] = as_int(pass_position);
  dict["epoch_length"] = optional_int(epoch_length);
  dict["max_epochs"] = optional_int(max_epochs);
  dict["max_iters"] = optional_int(max_iters);
  for (const auto& [name, value] : metrics) dict["metrics/" + name] = StateValue{value};
  for (std::size_t i = 0; i < builtin_event_count; ++i)
    if (builtin_fired_[i] != 0) dict["fired/" + event_name(static_cast<Event>(i))] = as_int(builtin_fired_[i]);
  for (std::size_t i = 0; i < user_fired_.size(); ++i)
    if (user_fired_[i] != 0)
      dict["fired/" + event_name(static_cast<Event>(builtin_event_count + i))] = as_int(user_fired_[i]);
  return dict;
}

TRAINLOOP_DETAIL_API void State::load_state_dict(const StateDict& dict) {
  State loaded;
  loaded.epoch = read_count(dict, "epoch");
  loaded.iteration = read_count(dict, "iteration");
  loaded.epoch_iteration = read_count(dict, "epoch_iteration");
  const std::uint64_t in_epoch_flag = read_count(dict, "in_epoch");
  if (in_epoch_flag > 1) throw bad_key("in_epoch", "must be 0 or 1, got " + std::to_string(in_epoch_flag));
  loaded.in_epoch = in_epoch_flag == 1;
  // Written since the Engine resumes passes; a dictionary from before holds epochs that began their pass.
  loaded.pass_position = dict.count("pass_position") ? read_count(dict, "pass_position") : loaded.epoch_iteration;
  loaded.epoch_length = read_optional_count(dict, "epoch_length");
  loaded.max_epochs = read_optional_count(dict, "max_epochs");
  loaded.max_iters = read_optional_count(dict, "max_iters");
  if (loaded.epoch_length && *loaded.epoch_length == 0) throw bad_key("epoch_length", "must be positive, got 0");
  if (loaded.epoch_length && loaded.epoch_iteration > *loaded.epoch_length)
    throw bad_key("epoch_iteration", std::to_string(loaded.epoch_iteration) + " exceeds epoch_length " +
                                         std::to_string(*loaded.epoch_length));
  if (loaded.epoch_iteration > loaded.iteration)
    throw bad_key("epoch_iteration", std::to_string(loaded.epoch_iteration) + " exceeds iteration " +
                                         std::to_string(loaded.iteration));
  for (const auto& [key, value] : dict) {
    if (key.rfind("metrics/", 0) == 0) {
      const double* v = std::get_if<double>(&value);
      if (!v) throw bad_key(key, "must be a floating-point value");
      loaded.metrics[key.substr(8)] = *v;
    } else if (key.rfind("fired/", 0) == 0) {
      const std::string name = key.substr(6);
      Event e = Event::started;
      bool builtin = false;
      for (std::size_t i = 0; i < builtin_event_count && !builtin; ++i)
        if (event_name(static_cast<Event>(i)) == name) e = static_cast<Event>(i), builtin = true;
      if (!builtin) e = register_event(name);
      loaded.fired_slot(e) = read_count(dict, key);
    } else if (!is_core_key(key)) {
      throw bad_key(key, "is not an Engine state key");
    }
  }
  loaded.times = times;
  *this = std::move(loaded);
}

TRAINLOOP_DETAIL_API bool State::is_core_key(const std::string& key) {
  for (const char* k : {"epoch", "iteration", "epoch_iteration", "in_epoch", "pass_position", "epoch_length",
                        "max_epochs", "max_iters"})
    if (key == k) return true;
  return false;
}

TRAINLOOP_DETAIL_API std::invalid_argument State::bad_key(const std::string& key, const std::string& what) {
  return std::invalid_argument("trainloop: Engine state_dict: key '" + key + "' " + what);
}

TRAINLOOP_DETAIL_API std::int64_t State::read_int(const StateDict& dict, const std::string& key) {
  auto it = dict.find(key);
  if (it == dict.end()) throw bad_key(key, "is missing");
  const std::int64_t* v = std::get_if<std::int64_t>(&it->second);
  if (!v) throw bad_key(key, "must be an integer");
  return *v;
}

TRAINLOOP_DETAIL_API std::uint64_t State::read_count(const StateDict& dict, const std::string& key) {
  const std::int64_t v = read_int(dict, key);
  if (v < 0) throw bad_key(key, "must not be negative, got " + std::to_string(v));
  return static_cast<std::uint64_t>(v);
}

TRAINLOOP_DETAIL_API std::optional<std::uint64_t> State::read_optional_count(const StateDict& dict,
                                                                       const std::string& key) {
  const std::int64_t v = read_int(dict, key);
  if (v < -1) throw bad_key(key, "must be -1 (unset) or a count, got " + std::to_string(v));
  if (v == -1) return std::nullopt;
  return static_cast<std::uint64_t>(v);
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
