// The Engine's run semantics: data sources, limits, resume, stop requests, exceptions, run-time handlers, state.
#include <doctest/doctest.h>

#include <list>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <vector>

#include "trace.hpp"

using namespace trainloop;

namespace {
// Collects the batches the step saw.
struct Seen {
  std::vector<int> batches;
  auto step() {
    return [this](int& b) {
      batches.push_back(b);
      return b;
    };
  }
};

struct Counter {
  int iterations = 0;
  template <class E>
  void on_iteration_completed(E&) {
    ++iterations;
  }
};
struct UserEventCounter {
  int seen = 0;
  template <class E>
  void on_event(E&, Event) {
    ++seen;
  }
};
struct Observer {
  int seen = 0;
  template <class E>
  void on_exception_raised(E&, std::exception_ptr error) {
    seen += error != nullptr;
  }
};
}  // namespace

TEST_CASE("data: containers by reference or by value, callables returning ranges, generators") {
  Seen seen;
  std::list<int> sized{1, 2, 3};
  make_engine<int>(seen.step()).run(sized, max_epochs(2));
  CHECK(seen.batches == std::vector<int>{1, 2, 3, 1, 2, 3});

  seen.batches.clear();
  auto moved = make_engine<int>(seen.step());
  moved.run(std::vector<int>{4, 5});  // an rvalue range is owned by the run
  CHECK(seen.batches == std::vector<int>{4, 5});
  CHECK(moved.state.epoch_length == 2u);

  seen.batches.clear();
  int pass = 0;
  auto per_pass = [&pass] {  // a fresh range per pass: here each pass differs, like a reshuffling loader
    ++pass;
    return std::vector<int>{pass * 10, pass * 10 + 1};
  };
  make_engine<int>(seen.step()).run(per_pass, max_epochs(2));
  // Unsized: the first pass defines the epoch length; the second epoch finds the pass exhausted and asks for another.
  CHECK(seen.batches == std::vector<int>{10, 11, 20, 21});

  seen.batches.clear();
  int next = 0;
  auto infinite = [&next]() -> std::optional<int> { return next++; };
  auto engine = make_engine<int>(seen.step());
  engine.run(infinite, max_epochs(3).epoch_length(2));
  CHECK(seen.batches == std::vector<int>{0, 1, 2, 3, 4, 5});
  CHECK(engine.state.iteration == 6);
}

TEST_CASE("data: a finite generator defines the epoch; asking it for a second pass is a clear error") {
  Seen seen;
  int left = 3;
  auto finite = [&left]() -> std::optional<int> {
    if (left == 0) return std::nullopt;
    return left--;
  };
  auto engine = make_engine<int>(seen.step());
  engine.run(finite);
  CHECK(seen.batches == std::vector<int>{3, 2, 1});
  CHECK(engine.state.epoch_length == 3u);
  CHECK_THROWS_WITH_AS(engine.run(finite, max_epochs(2)),
                       doctest::Contains("the data ran out: a fresh pass yielded no batch at epoch 2"),
                       std::runtime_error);
}

TEST_CASE("data: empty data is rejected before anything runs") {
  Seen seen;
  std::vector<int> empty;
  auto engine = make_engine<int>(seen.step());
  CHECK_THROWS_WITH_AS(engine.run(empty), "trainloop: run(): the data is empty (size 0)", std::invalid_argument);
  auto nothing = []() -> std::optional<int> { return std::nullopt; };
  CHECK_THROWS_WITH_AS(engine.run(nothing), "trainloop: the data yielded no batch in epoch 1", std::runtime_error);
}

TEST_CASE("limits: max_iters, max_epochs, mutually exclusive, epoch_length validation") {
  Seen seen;
  std::vector<int> data{1, 2, 3, 4};
  auto engine = make_engine<int>(seen.step());
  engine.run(data, max_iters(6));
  CHECK(engine.state.iteration == 6);
  CHECK(engine.state.epoch == 2);
  CHECK(engine.state.max_epochs == 2u);  // derived: ceil(6 / 4)
  CHECK_FALSE(engine.state.in_epoch);    // the partial epoch was completed
  CHECK_THROWS_WITH_AS(engine.run(data, max_epochs(1).max_iters(2)),
                       "trainloop: run(): max_epochs and max_iters are mutually exclusive; give one",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(engine.run(data, epoch_length(0)), "trainloop: epoch_length(n): n must be positive",
                       std::invalid_argument);
  CHECK_THROWS_AS(max_epochs(0), std::invalid_argument);
}

TEST_CASE("resume rule: a finished run restarts unless a limit is raised, which continues it") {
  Seen seen;
  std::vector<int> data{1, 2};
  auto engine = make_engine<int>(seen.step());
  engine.run(data, max_epochs(2));
  CHECK(engine.state.iteration == 4);
  engine.run(data, max_epochs(3));  // raised: continues with epoch 3
  CHECK(engine.state.epoch == 3);
  CHECK(engine.state.iteration == 6);
  engine.run(data);  // finished and no new limit: a fresh run with the same limits
  CHECK(engine.state.epoch == 1);
  CHECK(engine.state.iteration == 2);
  CHECK(engine.state.max_epochs == 1u);

  // A stopped run resumes; a limit below where it stands is refused.
  auto stopper = make_engine<int>(seen.step(), on(Events::iteration_completed | once(3), [](auto& e) { e.terminate(); }));
  stopper.run(data, max_epochs(4));
  CHECK(stopper.state.iteration == 3);
  CHECK_THROWS_WITH_AS(stopper.run(data, max_epochs(1)),
                       "trainloop: run(): max_epochs 1 is below the epoch the state is at (2)", std::invalid_argument);
  CHECK_THROWS_WITH_AS(stopper.run(data, epoch_length(3)), doctest::Contains("differs from the state's (2)"),
                       std::invalid_argument);
  stopper.run(data);
  CHECK(stopper.state.iteration == 8);
  CHECK(stopper.state.epoch == 4);
}

TEST_CASE("a run resumed exactly at the end of an epoch completes it without running another iteration") {
  Trace trace;
  std::vector<int> data{1, 2};
  auto engine = make_engine<int>([](int& b) { return b; }, Tracer{&trace, ""},
                                 on(Events::iteration_completed | once(2), [](auto& e) { e.terminate(); }));
  engine.run(data, max_epochs(2));
  CHECK(engine.state.in_epoch);
  trace.lines.clear();
  engine.run(data);
  CHECK(trace.lines.at(0) == "started e1.2 i2");
  CHECK(trace.lines.at(1) == "epoch_started e1.2 i2");
  CHECK(trace.lines.at(2) == "epoch_completed e1.2 i2");
  CHECK(engine.state.iteration == 4);
}

TEST_CASE("the step may take the engine or only the batch, and return nothing") {
  std::vector<int> data{1, 2, 3};
  int sum = 0;
  auto with_engine = make_engine([&sum](EngineCore& e, int& b) {
    sum += b;
    if (e.state.iteration == 2) e.terminate();
  });
  static_assert(std::is_same_v<decltype(with_engine)::batch_type, int>, "batch type deduced from the step");
  static_assert(std::is_same_v<decltype(with_engine)::output_type, std::monostate>, "void step -> monostate output");
  with_engine.run(data);
  CHECK(sum == 3);

  Engine by_deduction([](int& b) { return b + 1; }, Timer{});  // class template argument deduction
  static_assert(std::is_same_v<decltype(by_deduction)::batch_type, int>, "CTAD deduced the batch type");
  by_deduction.run(data);
  CHECK(by_deduction.output() == 4);
  CHECK(by_deduction.handler<Timer>().iteration().count == 3);

  auto generic = make_engine<int>([](auto& engine, auto& batch) { return batch * 10 + static_cast<int>(engine.state.epoch); });
  generic.run(data);
  CHECK(generic.output() == 31);
}

TEST_CASE("handlers see the batch and may replace it before the step, and read the output after") {
  std::vector<int> data{1, 2, 3};
  std::vector<int> outputs;
  auto engine = make_engine<int>([](int& b) { return b * 100; },
                                 on(Events::iteration_started, [](auto& e) { *e.batch() += 1; }),
                                 on(Events::iteration_completed, [&outputs](auto& e) { outputs.push_back(e.output()); }));
  CHECK_FALSE(engine.has_output());
  CHECK_THROWS_AS(engine.output(), std::logic_error);
  engine.run(data);
  CHECK(outputs == std::vector<int>{200, 300, 400});
  CHECK(engine.batch() == nullptr);  // no dangling batch after the run
  CHECK(data == std::vector<int>{2, 3, 4});  // a Batch& from the range is used in place
}

TEST_CASE("compile-time handlers can be shared with std::ref and reached through handler<>()") {
  Counter shared;
  std::vector<int> data{1, 2, 3};
  auto engine = make_engine<int>([](int&) {}, std::ref(shared), Counter{});
  engine.run(data, max_epochs(2));
  CHECK(shared.iterations == 6);
  CHECK(engine.handler<1>().iterations == 6);
  CHECK(engine.handler<Counter>().iterations == 6);
}

TEST_CASE("run-time handlers: on, has, has_handlers, remove (also from inside a handler)") {
  std::vector<int> data{1, 2, 3, 4};
  auto engine = make_engine<int>([](int&) {});
  int every_two = 0, one_shot = 0;
  const HandlerId a = engine.on(Events::iteration_completed | every(2), [&] { ++every_two; });
  HandlerId b{};
  b = engine.on(Events::iteration_completed, [&](auto& e) {
    ++one_shot;
    CHECK(e.remove(b));  // removing itself mid-dispatch is safe
  });
  CHECK(engine.has(a));
  CHECK(engine.has(b));
  CHECK(engine.has_handlers(Event::iteration_completed));
  CHECK_FALSE(engine.has_handlers(Event::epoch_started));
  engine.run(data);
  CHECK(every_two == 2);
  CHECK(one_shot == 1);
  CHECK_FALSE(engine.has(b));
  CHECK(engine.remove(a));
  CHECK_FALSE(engine.remove(a));
  CHECK_FALSE(engine.has_handlers(Event::iteration_completed));
  engine.run(data);
  CHECK(every_two == 2);

  // One registration for several events keeps one callable (and one state).
  int calls = 0;
  engine.on(Events::started | Events::completed, [counter = 0, &calls]() mutable { calls = ++counter; });
  engine.run(data);
  CHECK(calls == 2);
}

TEST_CASE("user-defined events: registered by name, counted per engine, filtered, dispatched to both kinds") {
  const Event backward = register_event("test_backward_completed");
  CHECK(register_event("test_backward_completed") == backward);
  CHECK(event_name(backward) == "test_backward_completed");
  CHECK_FALSE(is_builtin(backward));
  CHECK_THROWS_WITH_AS(register_event("completed"), doctest::Contains("that is a built-in event"),
                       std::invalid_argument);
  CHECK_THROWS_AS(register_event(""), std::invalid_argument);

  std::vector<int> data{1, 2, 3, 4, 5, 6};
  int filtered = 0, runtime_calls = 0;
  auto engine = make_engine<int>([backward](EngineCore& e, int&) { e.fire(backward); }, UserEventCounter{},
                                 on(backward | every(3), [&] { ++filtered; }));
  engine.on(backward | after(4), [&] { ++runtime_calls; });
  engine.run(data);
  CHECK(engine.state.fired(backward) == 6);
  CHECK(engine.state.count(backward) == 6);
  CHECK(filtered == 2);       // firings 3 and 6
  CHECK(runtime_calls == 2);  // firings 5 and 6
  CHECK(engine.handler<UserEventCounter>().seen == 6);
  CHECK_THROWS_AS(engine.fire(Event::completed), std::invalid_argument);
  CHECK_THROWS_WITH_AS(engine.on(Event::completed, [] {}), doctest::Contains("write Events::completed"),
                       std::invalid_argument);
}

TEST_CASE("exceptions: a handler returning true handles them; inside an epoch the run goes on") {
  std::vector<int> data{1, 2, 3};
  Seen seen;
  int caught = 0;
  auto engine = make_engine<int>(
      [&seen](int& b) {
        if (b == 2) throw std::runtime_error("boom");
        seen.batches.push_back(b);
      },
      on(Events::exception_raised, [&caught](auto& e) {
        try {
          std::rethrow_exception(e.current_exception());
        } catch (const std::runtime_error& error) {
          caught += std::string(error.what()) == "boom";
        }
        return true;
      }));
  engine.run(data, max_epochs(2));
  // Each epoch ends at the failing batch; the epoch completes and the next one starts on a fresh pass.
  CHECK(seen.batches == std::vector<int>{1, 1});
  CHECK(caught == 2);
  CHECK(engine.state.epoch == 2);
  CHECK(engine.state.fired(Event::epoch_completed) == 2);
  CHECK(engine.state.fired(Event::completed) == 1);

  // Outside the epoch (here: a completed handler), a handled exception ends the run.
  auto observed = make_engine<int>([](int&) {}, Observer{}, on(Events::epoch_completed, []() { throw std::logic_error("late"); }));
  CHECK_THROWS_WITH_AS(observed.run(data), "late", std::logic_error);  // a void hook observes, it does not handle
  CHECK(observed.handler<Observer>().seen == 1);
  CHECK(observed.current_exception() == nullptr);
}

TEST_CASE("terminate_epoch in a started handler is refused; in epoch_started it skips the epoch") {
  std::vector<int> data{1, 2};
  auto early = make_engine<int>([](int&) {}, on(Events::started, [](auto& e) { e.terminate_epoch(); }));
  CHECK_THROWS_WITH_AS(early.run(data), doctest::Contains("terminate_epoch() was called in a started handler"),
                       std::logic_error);
  Seen seen;
  auto skip = make_engine<int>(seen.step(), on(Events::epoch_started | once(1), [](auto& e) { e.terminate_epoch(); }));
  skip.run(data, max_epochs(2));
  CHECK(seen.batches == std::vector<int>{1, 2});
  CHECK(skip.state.fired(Event::terminate_single_epoch) == 1);
  CHECK(skip.state.fired(Event::epoch_completed) == 2);
}

TEST_CASE("state: times, metrics, state_dict round trip and validation") {
  std::vector<int> data{1, 2, 3};
  const Event custom = register_event("test_state_custom");
  auto engine = make_engine<int>([custom](EngineCore& e, int&) { e.fire(custom); },
                                 on(Events::epoch_completed, [](auto& e) { e.state.metrics["accuracy"] = 0.5; }),
                                 on(Events::iteration_completed | once(5), [](auto& e) { e.terminate(); }));
  engine.run(data, max_epochs(3));
  CHECK(engine.state.times.at("completed") >= engine.state.times.at("epoch_completed"));
  CHECK(engine.state.times.at("epoch_completed") >= 0.0);

  const StateDict saved = engine.state.state_dict();
  CHECK(std::get<std::int64_t>(saved.at("iteration")) == 5);
  CHECK(std::get<std::int64_t>(saved.at("epoch_iteration")) == 2);
  CHECK(std::get<std::int64_t>(saved.at("in_epoch")) == 1);
  CHECK(std::get<double>(saved.at("metrics/accuracy")) == 0.5);
  CHECK(std::get<std::int64_t>(saved.at("fired/test_state_custom")) == 5);

  // A fresh engine restored from the dict finishes the run exactly where the first would have.
  auto resumed = make_engine<int>([custom](EngineCore& e, int&) { e.fire(custom); });
  resumed.state.load_state_dict(saved);
  CHECK(resumed.state.fired(custom) == 5);
  resumed.run(data);
  CHECK(resumed.state.iteration == 9);
  CHECK(resumed.state.epoch == 3);
  CHECK(resumed.state.fired(custom) == 9);

  StateDict missing = saved;
  missing.erase("epoch");
  CHECK_THROWS_WITH_AS(resumed.state.load_state_dict(missing), "trainloop: Engine state_dict: key 'epoch' is missing",
                       std::invalid_argument);
  StateDict wrong_type = saved;
  wrong_type["iteration"] = std::string("five");
  CHECK_THROWS_WITH_AS(resumed.state.load_state_dict(wrong_type),
                       "trainloop: Engine state_dict: key 'iteration' must be an integer", std::invalid_argument);
  StateDict inconsistent = saved;
  inconsistent["epoch_iteration"] = std::int64_t{7};
  CHECK_THROWS_WITH_AS(resumed.state.load_state_dict(inconsistent),
                       "trainloop: Engine state_dict: key 'epoch_iteration' 7 exceeds epoch_length 3",
                       std::invalid_argument);
  StateDict unknown = saved;
  unknown["bogus"] = std::int64_t{1};
  CHECK_THROWS_WITH_AS(resumed.state.load_state_dict(unknown),
                       "trainloop: Engine state_dict: key 'bogus' is not an Engine state key", std::invalid_argument);
  CHECK(resumed.state.iteration == 9);  // a rejected dict changed nothing
}
