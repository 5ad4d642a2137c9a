// Event filters and their composition, checked against the counters they are defined on.
#include <doctest/doctest.h>

#include <functional>
#include <thread>
#include <vector>

#include <trainloop.hpp>

using namespace trainloop;

namespace {
std::vector<std::uint64_t> accepted(const Filter& f, std::uint64_t up_to = 30) {
  State state;
  std::vector<std::uint64_t> out;
  for (std::uint64_t c = 1; c <= up_to; ++c)
    if (f.accepts(state, c)) out.push_back(c);
  return out;
}
using Counts = std::vector<std::uint64_t>;
}  // namespace

TEST_CASE("every, once, before, after, predicate") {
  CHECK(accepted(every(7)) == Counts{7, 14, 21, 28});
  CHECK(accepted(once(5)) == Counts{5});
  CHECK(accepted(once({9, 2, 30})) == Counts{2, 9, 30});
  CHECK(accepted(before(4)) == Counts{1, 2, 3});
  CHECK(accepted(after(27)) == Counts{28, 29, 30});
  CHECK(accepted(filter([](const State&, std::uint64_t c) { return c * c == 49; })) == Counts{7});
  CHECK(accepted(Filter()).size() == 30);
  CHECK(Filter().is_trivial());
  CHECK_FALSE(every(2).is_trivial());
  CHECK_THROWS_AS(every(0), std::invalid_argument);
  CHECK_THROWS_WITH_AS(once(0), doctest::Contains("counts start at 1"), std::invalid_argument);
  CHECK_THROWS_AS(once({3, 0}), std::invalid_argument);
  CHECK_THROWS_AS(once(std::vector<std::uint64_t>{}), std::invalid_argument);
}

TEST_CASE("a predicate: std::function and function pointers are checked for null; copies share one state") {
  CHECK_THROWS_WITH_AS(filter(std::function<bool(const State&, std::uint64_t)>{}),
                       doctest::Contains("the predicate is empty"), std::invalid_argument);
  bool (*null_predicate)(const State&, std::uint64_t) = nullptr;
  CHECK_THROWS_AS(filter(null_predicate), std::invalid_argument);
  CHECK(accepted(filter(std::function<bool(const State&, std::uint64_t)>(
            [](const State&, std::uint64_t c) { return c == 3; }))) == Counts{3});

  // A stateful predicate (every other call) shared by the copies of its filter, as one Python callable would be.
  const Filter original = filter([calls = 0](const State&, std::uint64_t) mutable { return ++calls % 2 == 0; });
  const Filter copy = original;
  State state;
  CHECK_FALSE(original.accepts(state, 1));
  CHECK(copy.accepts(state, 1));
  CHECK_FALSE(copy.accepts(state, 1));
  CHECK(original.accepts(state, 1));

  // Copies made and dropped on several threads keep the shared target alive exactly as long as one copy lives.
  struct Alive {
    int* count;
    explicit Alive(int* c) : count(c) { ++*count; }
    Alive(const Alive& o) : count(o.count) { ++*count; }
    ~Alive() { --*count; }
    bool operator()(const State&, std::uint64_t) const { return true; }
  };
  int alive = 0;
  {
    const Filter shared = filter(Alive(&alive));
    CHECK(alive == 1);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&shared] {
        for (int i = 0; i < 10000; ++i) Filter copy = shared;
      });
    for (auto& thread : threads) thread.join();
    CHECK(alive == 1);
  }
  CHECK(alive == 0);
}

TEST_CASE("combinations, as Ignite's filters: every within a range counts from the range's start; once within a range") {
  // The lists Ignite 0.5's Events.ITERATION_COMPLETED(every=..., after=..., before=...).filter accepts for 0..30.
  CHECK(accepted(every(5).after(10)) == Counts{11, 16, 21, 26});
  CHECK(accepted(every(5).before(16)) == Counts{1, 6, 11});
  CHECK(accepted(every(3).before(8)) == Counts{1, 4, 7});
  CHECK(accepted(every(4).after(2).before(20)) == Counts{3, 7, 11, 15, 19});
  CHECK(accepted(every(5).after(8).before(25)) == Counts{9, 14, 19, 24});
  // Count 0 (`started`, `completed` of a run that did nothing: the epoch counter): a range starts above 0 even when
  // only before() is given; every(n) alone accepts it (0 % n == 0).
  State state;
  CHECK_FALSE(before(4).accepts(state, 0));
  CHECK_FALSE(every(3).before(8).accepts(state, 0));
  CHECK_FALSE(after(0).accepts(state, 0));
  CHECK(every(7).accepts(state, 0));
  // Ignite refuses once or a predicate with other conditions; here they combine by "and".
  CHECK(accepted(once({3, 6, 9}).after(4)) == Counts{6, 9});
  CHECK(accepted(every(3).predicate([](const State&, std::uint64_t c) { return c % 2 == 0; })) == Counts{6, 12, 18, 24, 30});
}

TEST_CASE("filters read the event's counter: iterations for iteration events, epochs for epoch events") {
  CHECK(counter_of(Event::iteration_completed) == EventCounter::iteration);
  CHECK(counter_of(Event::get_batch_started) == EventCounter::iteration);
  CHECK(counter_of(Event::epoch_completed) == EventCounter::epoch);
  CHECK(counter_of(Event::completed) == EventCounter::epoch);
  CHECK(counter_of(Event::terminate) == EventCounter::own_firings);

  std::vector<int> data(10);
  std::vector<std::uint64_t> iterations, epochs, exhausted;
  auto engine = make_engine<int>(
      [](int&) {}, on(Events::iteration_completed | every(4), [&](auto& e) { iterations.push_back(e.state.iteration); }),
      on(Events::epoch_completed | every(2), [&](auto& e) { epochs.push_back(e.state.epoch); }),
      on(Events::data_exhausted | once(2), [&](auto& e) { exhausted.push_back(e.state.epoch); }));
  engine.run(data, max_epochs(4));
  CHECK(iterations == Counts{4, 8, 12, 16, 20, 24, 28, 32, 36, 40});
  CHECK(epochs == Counts{2, 4});
  CHECK(exhausted == Counts{3});  // the 2nd time the data ran out was at the start of epoch 3
}

TEST_CASE("OR-composition builds one spec; the compile-time mask covers the tagged events") {
  auto spec = Events::epoch_completed | Events::completed | (Events::iteration_completed | every(10));
  CHECK(spec.items.size() == 3);
  static_assert(decltype(spec)::builtin_mask ==
                    (event_bit(Event::epoch_completed) | event_bit(Event::completed) |
                     event_bit(Event::iteration_completed)),
                "mask");
  CHECK(spec.items[2].event == Event::iteration_completed);
  const Event user = register_event("test_filters_user");
  auto mixed = Events::started | (user | every(2));
  static_assert(decltype(mixed)::builtin_mask == event_bit(Event::started), "user events are not in the mask");
  CHECK(mixed.items[1].event == user);

  std::vector<int> data{1, 2, 3};
  std::vector<std::string> fired;
  auto engine = make_engine<int>([](int&) {}, on(Events::epoch_completed | Events::completed | (Events::iteration_completed | once(2)),
                                                 [&](auto& e) { fired.push_back(std::to_string(e.state.iteration)); }));
  engine.run(data, max_epochs(2));
  CHECK(fired == std::vector<std::string>{"2", "3", "6", "6"});
}
