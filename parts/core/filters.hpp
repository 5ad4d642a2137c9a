// trainloop: event filters (every, once, before, after, a predicate) and event specs (an event with a filter,
// OR-composed with `|`).
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#if TRAINLOOP_DETAIL_DEFINE_API
#include <algorithm>  // only the out-of-line definitions sort: a TU that only declares them skips <algorithm>
#endif

#include "parts/core/function.hpp"
#include "parts/core/state.hpp"

TRAINLOOP_DETAIL_BEGIN

/// When a handler runs, given the event's counter `c` (see `counter_of`). All conditions that were set must hold,
/// as in Ignite's filters (`ignite/engine/events.py`):
///   a range, after(a) and/or before(b): a < c < b, with a = 0 when only before(b) is given
///   every(n) alone: c % n == 0; within a range it counts from the range's first count: (c - a - 1) % n == 0,
///     so `every(3).before(8)` runs at 1, 4, 7 and `every(10).after(50)` at 51, 61, ...
///   once(n) / once({...}): c is one of them          filter(pred): pred(state, c)
/// Ignite refuses once or a predicate combined with other conditions; here they combine by "and".
class Filter {
 public:
  Filter() = default;

  Filter& every(std::uint64_t n) {
    if (n == 0) throw std::invalid_argument("trainloop: every(n): n must be positive");
    every_ = n;
    return *this;
  }
  Filter& after(std::uint64_t n) {
    after_ = n;
    ranged_ = true;
    return *this;
  }
  Filter& before(std::uint64_t n) {
    before_ = n;
    ranged_ = true;
    return *this;
  }
  TRAINLOOP_DETAIL_API Filter& once(std::vector<std::uint64_t> counts);
  /// A custom condition, `bool(const State&, std::uint64_t count)`. Copies of the filter share the predicate (one
  /// state for all the events it serves, as in Ignite).
  template <class Pred>
  Filter& predicate(Pred pred) {
    static_assert(std::is_invocable_r_v<bool, Pred&, const State&, std::uint64_t>,
                  "trainloop: filter(pred): pred must be callable as bool(const trainloop::State&, std::uint64_t "
                  "count)");
    // Null checks for what can be null: function pointers and std::function-like wrappers (explicit operator bool).
    if constexpr (std::is_pointer_v<Pred> ||
                  (std::is_constructible_v<bool, const Pred&> && !std::is_convertible_v<const Pred&, bool>))
      if (!static_cast<bool>(pred)) throw std::invalid_argument("trainloop: filter(pred): the predicate is empty");
    predicate_ = detail::SharedFunction<bool(const State&, std::uint64_t)>(std::move(pred));
    return *this;
  }

  bool accepts(const State& state, std::uint64_t c) const {
    if (ranged_ && (c <= after_ || c >= before_)) return false;
    if (every_ != 1 && (c - (ranged_ ? after_ + 1 : 0)) % every_ != 0) return false;
    if (!once_.empty() && !once_contains(c)) return false;
    return !predicate_ || predicate_(state, c);
  }
  bool is_trivial() const noexcept {
    return every_ == 1 && !ranged_ && once_.empty() && !predicate_;
  }

 private:
  static constexpr std::uint64_t kNoLimit = std::numeric_limits<std::uint64_t>::max();
  // A binary search of the sorted once_ list (by hand: std::binary_search would bring <algorithm> into every TU).
  bool once_contains(std::uint64_t c) const noexcept {
    std::size_t low = 0, high = once_.size();
    while (low < high) {
      const std::size_t mid = low + (high - low) / 2;
      if (once_[mid] < c) low = mid + 1;
      else high = mid;
    }
    return low < once_.size() && once_[low] == c;
  }
  std::uint64_t every_ = 1;
  std::uint64_t after_ = 0, before_ = kNoLimit;
  bool ranged_ = false;  // after or before was given: the count must then lie strictly inside, as in Ignite
  std::vector<std::uint64_t> once_;
  detail::SharedFunction<bool(const State&, std::uint64_t)> predicate_;
};

inline Filter every(std::uint64_t n) { return Filter().every(n); }
inline Filter once(std::uint64_t n) { return Filter().once({n}); }
inline Filter once(std::initializer_list<std::uint64_t> counts) { return Filter().once(counts); }
inline Filter once(std::vector<std::uint64_t> counts) { return Filter().once(std::move(counts)); }
inline Filter before(std::uint64_t n) { return Filter().before(n); }
inline Filter after(std::uint64_t n) { return Filter().after(n); }
template <class Pred>
Filter filter(Pred pred) {
  return Filter().predicate(std::move(pred));
}

/// One event with its filter.
struct FilteredEvent {
  Event event;
  Filter filter;
};

/// Events a handler listens to: `Events::epoch_completed | Events::completed`, `Events::iteration_completed |
/// every(100)`, or user events. `BuiltinMask` has a bit per built-in event named by tag, so compile-time handlers
/// skip every other event without a run-time test.
template <std::uint32_t BuiltinMask>
struct EventSpec {
  static constexpr std::uint32_t builtin_mask = BuiltinMask;
  std::vector<FilteredEvent> items;
};

namespace detail {
template <class T>
struct is_event_spec : std::false_type {};
template <std::uint32_t M>
struct is_event_spec<EventSpec<M>> : std::true_type {};
template <class T>
struct is_event_tag : std::false_type {};
template <Event E>
struct is_event_tag<EventTag<E>> : std::true_type {};
template <class T>
inline constexpr bool is_event_like_v = is_event_spec<T>::value || is_event_tag<T>::value || std::is_same_v<T, Event>;

template <Event E>
EventSpec<event_bit(E)> to_spec(EventTag<E>, Filter f = {}) {
  return {{FilteredEvent{E, std::move(f)}}};
}
// A run-time Event names a user-defined event; built-ins come as tags (`Events::completed`) so that compile-time
// handlers can be dispatched without a run-time test.
TRAINLOOP_DETAIL_API EventSpec<0> to_spec(Event e, Filter f = {});
template <std::uint32_t M>
EventSpec<M> to_spec(EventSpec<M> spec) {
  return spec;
}
}  // namespace detail

/// Attaches a filter: `Events::iteration_completed | every(100)`.
template <Event E>
EventSpec<event_bit(E)> operator|(EventTag<E> tag, Filter f) {
  return detail::to_spec(tag, std::move(f));
}
inline EventSpec<0> operator|(Event e, Filter f) { return detail::to_spec(e, std::move(f)); }

/// OR-composition: `Events::epoch_completed | Events::completed`, with filters or user events mixed in.
template <class A, class B,
          class = std::enable_if_t<detail::is_event_like_v<std::decay_t<A>> && detail::is_event_like_v<std::decay_t<B>>>>
auto operator|(A&& a, B&& b) {
  auto left = detail::to_spec(std::forward<A>(a));
  auto right = detail::to_spec(std::forward<B>(b));
  EventSpec<decltype(left)::builtin_mask | decltype(right)::builtin_mask> both;
  both.items = std::move(left.items);
  for (auto& item : right.items) both.items.push_back(std::move(item));
  return both;
}

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API Filter& Filter::once(std::vector<std::uint64_t> counts) {
  if (counts.empty()) throw std::invalid_argument("trainloop: once({...}): the list of counts is empty");
  // Counts start at 1 (the first iteration, the first epoch), so once(0) would never fire on them: refused, as in Ignite.
  if (std::find(counts.begin(), counts.end(), 0) != counts.end())
    throw std::invalid_argument("trainloop: once(0): counts start at 1; once(n) needs n >= 1");
  std::sort(counts.begin(), counts.end());
  once_ = std::move(counts);
  return *this;
}

TRAINLOOP_DETAIL_API EventSpec<0> detail::to_spec(Event e, Filter f) {
  if (is_builtin(e))
    throw std::invalid_argument("trainloop: a built-in event given as a run-time trainloop::Event (" + event_name(e) +
                                "); write Events::" + event_name(e));
  return {{FilteredEvent{e, std::move(f)}}};
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
