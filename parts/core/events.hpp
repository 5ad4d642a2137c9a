// trainloop: events. The built-in events the Engine fires, their names, and user-defined events.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <cstddef>
#include <cstdint>
#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

TRAINLOOP_DETAIL_BEGIN

// The one list of built-in events, in the order a plain run fires them. Everything that enumerates events
// (the enum, names, hook detection, handler dispatch) expands this list, so adding an event is one line.
#define TRAINLOOP_DETAIL_BUILTIN_EVENTS(X)                                                                             \
  X(started)                                                                                                           \
  X(epoch_started)                                                                                                     \
  X(get_batch_started)                                                                                                 \
  X(get_batch_completed)                                                                                               \
  X(iteration_started)                                                                                                 \
  X(iteration_completed)                                                                                               \
  X(epoch_completed)                                                                                                   \
  X(completed)                                                                                                         \
  X(exception_raised)                                                                                                  \
  X(terminate)                                                                                                         \
  X(terminate_single_epoch)                                                                                            \
  X(data_exhausted)                                                                                                    \
  X(interrupt)

/// An event. The named values are the built-in events; values from `register_event` are user-defined events.
enum class Event : std::uint16_t {
#define TRAINLOOP_DETAIL_ENUMERATE(name) name,
  TRAINLOOP_DETAIL_BUILTIN_EVENTS(TRAINLOOP_DETAIL_ENUMERATE)
#undef TRAINLOOP_DETAIL_ENUMERATE
};

#define TRAINLOOP_DETAIL_COUNT(name) +1
inline constexpr std::size_t builtin_event_count = 0 TRAINLOOP_DETAIL_BUILTIN_EVENTS(TRAINLOOP_DETAIL_COUNT);
#undef TRAINLOOP_DETAIL_COUNT

constexpr std::size_t event_index(Event e) noexcept { return static_cast<std::size_t>(e); }
constexpr bool is_builtin(Event e) noexcept { return event_index(e) < builtin_event_count; }
constexpr std::uint32_t event_bit(Event e) noexcept { return std::uint32_t{1} << event_index(e); }

/// Which counter an event's filters look at: `every(100)` on an iteration event means every 100th iteration of
/// the run, on an epoch event every 100th epoch; other events count their own firings (as Ignite does).
enum class EventCounter { iteration, epoch, own_firings };
constexpr EventCounter counter_of(Event e) noexcept {
  switch (e) {
    case Event::get_batch_started:
    case Event::get_batch_completed:
    case Event::iteration_started:
    case Event::iteration_completed: return EventCounter::iteration;
    case Event::started:
    case Event::epoch_started:
    case Event::epoch_completed:
    case Event::completed: return EventCounter::epoch;
    default: return EventCounter::own_firings;
  }
}

namespace detail {
// User-defined events live in one process-wide registry, so an event made once can be used with every engine
// (and in compile-time handlers built before any engine exists). Names are unique: registering a name twice
// returns the same event.
struct UserEventRegistry {
  std::atomic_flag busy = ATOMIC_FLAG_INIT;
  std::vector<std::string> names;
  static UserEventRegistry& instance() {
    static UserEventRegistry registry;
    return registry;
  }
  // Held for a lookup or an append at registration and in messages, never on the loop's path: a spin lock does, and
  // spares every TU <mutex>.
  class Lock {
   public:
    explicit Lock(UserEventRegistry& r) noexcept : busy_(r.busy) {
      while (busy_.test_and_set(std::memory_order_acquire)) {
      }
    }
    ~Lock() { busy_.clear(std::memory_order_release); }
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;

   private:
    std::atomic_flag& busy_;
  };
};
inline const char* builtin_event_name(Event e) noexcept {
  switch (e) {
#define TRAINLOOP_DETAIL_NAME_CASE(name)                                                                               \
  case Event::name: return #name;
    TRAINLOOP_DETAIL_BUILTIN_EVENTS(TRAINLOOP_DETAIL_NAME_CASE)
#undef TRAINLOOP_DETAIL_NAME_CASE
    default: return nullptr;
  }
}
}  // namespace detail

/// The event's name: "iteration_completed" for built-ins, the registered name for user-defined events.
TRAINLOOP_DETAIL_API std::string event_name(Event e);

/// Registers a user-defined event (Ignite's `register_events`), fired with `engine.fire(event)`. Each engine counts
/// its firings, which `every`/`once`/... filters look at. The same name always gives the same event.
TRAINLOOP_DETAIL_API Event register_event(const std::string& name);

/// A built-in event as a type, so handlers built from it (`on(Events::iteration_completed | every(10), f)`)
/// are dispatched at compile time. Converts to its run-time `Event`.
template <Event E>
struct EventTag {
  static constexpr Event value = E;
  constexpr operator Event() const noexcept { return E; }  // NOLINT(google-explicit-constructor)
};

/// The built-in events as tags: `Events::started`, `Events::iteration_completed`, ...
struct Events {
#define TRAINLOOP_DETAIL_TAG(name) static constexpr EventTag<Event::name> name{};
  TRAINLOOP_DETAIL_BUILTIN_EVENTS(TRAINLOOP_DETAIL_TAG)
#undef TRAINLOOP_DETAIL_TAG
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API std::string event_name(Event e) {
  if (const char* builtin = detail::builtin_event_name(e)) return builtin;
  auto& registry = detail::UserEventRegistry::instance();
  detail::UserEventRegistry::Lock lock(registry);
  const std::size_t user_index = event_index(e) - builtin_event_count;
  if (user_index < registry.names.size()) return registry.names[user_index];
  return "<unregistered event " + std::to_string(event_index(e)) + ">";
}

TRAINLOOP_DETAIL_API Event register_event(const std::string& name) {
  if (name.empty()) throw std::invalid_argument("trainloop: register_event(): the event name is empty");
  for (std::size_t i = 0; i < builtin_event_count; ++i)
    if (name == detail::builtin_event_name(static_cast<Event>(i)))
      throw std::invalid_argument("trainloop: register_event(\"" + name +
                                  "\"): that is a built-in event; use Events::" + name);
  auto& registry = detail::UserEventRegistry::instance();
  detail::UserEventRegistry::Lock lock(registry);
  std::size_t user_index = 0;
  while (user_index < registry.names.size() && registry.names[user_index] != name) ++user_index;
  if (user_index == registry.names.size()) {
    if (builtin_event_count + user_index > 0xFFFF)
      throw std::length_error("trainloop: register_event(): too many user-defined events");
    registry.names.push_back(name);
  }
  return static_cast<Event>(builtin_event_count + user_index);
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
