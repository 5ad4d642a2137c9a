// Golden traces: the exact sequence of events the Engine fires. Each trace is written out in full, so any change to
// the loop's event order shows up here as a diff. Lines read "event e<epoch>.<epoch_iteration> i<iteration>";
// "step(b)" is the step running on batch b.
#include <doctest/doctest.h>

#include <vector>

#include "trace.hpp"

using namespace trainloop;

namespace {
template <class... Extra>
auto make_traced_engine(Trace& trace, Extra... extra) {
  return make_engine<int>(
      [&trace](EngineCore& engine, int& batch) {
        trace.lines.push_back(trace_line("step(" + std::to_string(batch) + ")", engine.state));
        return batch;
      },
      Tracer{&trace, ""}, extra...);
}

// An Engine's events over [1, 2, 3]: "event e<epoch>.<epoch_iteration> i<iteration>", and the step's batch.
const std::string epoch_1 =
    "epoch_started e1.0 i0\n"
    "get_batch_started e1.0 i0\n"
    "get_batch_completed e1.0 i0\n"
    "iteration_started e1.1 i1\n"
    "step(1) e1.1 i1\n"
    "iteration_completed e1.1 i1\n"
    "get_batch_started e1.1 i1\n"
    "get_batch_completed e1.1 i1\n"
    "iteration_started e1.2 i2\n"
    "step(2) e1.2 i2\n"
    "iteration_completed e1.2 i2\n"
    "get_batch_started e1.2 i2\n"
    "get_batch_completed e1.2 i2\n"
    "iteration_started e1.3 i3\n"
    "step(3) e1.3 i3\n"
    "iteration_completed e1.3 i3\n"
    "epoch_completed e1.3 i3\n";
// Epoch 2 finds the pass exhausted at its first fetch (data_exhausted), restarts the data, and fetches again
// without a second get_batch_started.
const std::string epoch_2_after_exhausted_pass =
    "epoch_started e2.0 i3\n"
    "get_batch_started e2.0 i3\n"
    "data_exhausted e2.0 i3\n"
    "get_batch_completed e2.0 i3\n"
    "iteration_started e2.1 i4\n"
    "step(1) e2.1 i4\n"
    "iteration_completed e2.1 i4\n"
    "get_batch_started e2.1 i4\n"
    "get_batch_completed e2.1 i4\n"
    "iteration_started e2.2 i5\n"
    "step(2) e2.2 i5\n"
    "iteration_completed e2.2 i5\n"
    "get_batch_started e2.2 i5\n"
    "get_batch_completed e2.2 i5\n"
    "iteration_started e2.3 i6\n"
    "step(3) e2.3 i6\n"
    "iteration_completed e2.3 i6\n"
    "epoch_completed e2.3 i6\n";
}  // namespace

TEST_CASE("golden trace: 2 epochs x 3 iterations") {
  Trace trace;
  std::vector<int> data{1, 2, 3};
  auto engine = make_traced_engine(trace);
  engine.run(data, max_epochs(2));
  CHECK(trace.joined() == "started e0.0 i0\n" + epoch_1 + epoch_2_after_exhausted_pass + "completed e2.3 i6\n");
  CHECK(engine.state.epoch == 2);
  CHECK(engine.state.iteration == 6);
  CHECK_FALSE(engine.state.in_epoch);
}

TEST_CASE("golden trace: terminate in the middle, then resume") {
  Trace trace;
  std::vector<int> data{1, 2, 3};
  bool stop_once = true;
  auto engine = make_traced_engine(trace, on(Events::iteration_completed | once(2), [&](auto& e) {
                                             if (stop_once) e.terminate();
                                             stop_once = false;
                                           }));
  engine.run(data, max_epochs(2));
  // terminate() takes effect right after the handlers of the event that asked: no epoch_completed for the
  // interrupted epoch; terminate, then completed.
  CHECK(trace.joined() ==
        "started e0.0 i0\n"
        "epoch_started e1.0 i0\n"
        "get_batch_started e1.0 i0\n"
        "get_batch_completed e1.0 i0\n"
        "iteration_started e1.1 i1\n"
        "step(1) e1.1 i1\n"
        "iteration_completed e1.1 i1\n"
        "get_batch_started e1.1 i1\n"
        "get_batch_completed e1.1 i1\n"
        "iteration_started e1.2 i2\n"
        "step(2) e1.2 i2\n"
        "iteration_completed e1.2 i2\n"
        "terminate e1.2 i2\n"
        "completed e1.2 i2\n");
  CHECK(engine.state.in_epoch);

  // Running again over the same data object resumes: the unfinished epoch 1 goes on from its 3rd iteration
  // (epoch_started fires again, with epoch_iteration telling how far it got) with the same pass, so epochs keep
  // lining up with passes: epoch 1 = [1, 2, 3], epoch 2 = [1, 2, 3].
  trace.lines.clear();
  engine.run(data);
  const std::string resumed =
      "started e1.2 i2\n"
      "epoch_started e1.2 i2\n"
      "get_batch_started e1.2 i2\n"
      "get_batch_completed e1.2 i2\n"
      "iteration_started e1.3 i3\n"
      "step(3) e1.3 i3\n"
      "iteration_completed e1.3 i3\n"
      "epoch_completed e1.3 i3\n" +
      epoch_2_after_exhausted_pass + "completed e2.3 i6\n";
  CHECK(trace.joined() == resumed);
  CHECK(engine.state.iteration == 6);

  // A fresh data source (another object, or a new process restoring state_dict()) cannot continue the pass: it
  // skips the batches the pass already gave, so the same batches come in the same epochs.
  SUBCASE("a new engine from the state_dict, over a copy of the data") {
    Trace again;
    bool stop = true;
    auto first = make_traced_engine(again, on(Events::iteration_completed | once(2), [&](auto& e) {
                                              if (stop) e.terminate();
                                              stop = false;
                                            }));
    first.run(data, max_epochs(2));
    CHECK(first.state.pass_position == 2);
    const StateDict saved = first.state.state_dict();
    Trace fresh_trace;
    auto fresh = make_traced_engine(fresh_trace);
    fresh.state.load_state_dict(saved);
    fresh.run(std::vector<int>(data));
    CHECK(fresh_trace.joined() == resumed);
  }
}

namespace {
// A sized range that counts the batches read from it (dereferences), to show what a resumed run reads.
struct CountingRange {
  std::vector<int> values;
  int* reads;
  struct iterator {
    const int* at;
    int* reads;
    const int& operator*() const { return ++*reads, *at; }
    iterator& operator++() { return ++at, *this; }
    bool operator==(const iterator& o) const { return at == o.at; }
    bool operator!=(const iterator& o) const { return at != o.at; }
  };
  iterator begin() const { return {values.data(), reads}; }
  iterator end() const { return {values.data() + values.size(), reads}; }
  std::size_t size() const { return values.size(); }
};

// Ignite 0.5, `trainer.run([1, 2, 3], max_epochs=2)` then `trainer.run(data, max_epochs=3)` (the same list or a new
// one): the second run starts its own iterator, so epoch 3 reads batches 1, 2, 3 with no DATALOADER_STOP_ITERATION.
const std::string epoch_3_after_more_epochs =
    "started e2.3 i6\n"
    "epoch_started e3.0 i6\n"
    "get_batch_started e3.0 i6\n"
    "get_batch_completed e3.0 i6\n"
    "iteration_started e3.1 i7\n"
    "step(1) e3.1 i7\n"
    "iteration_completed e3.1 i7\n"
    "get_batch_started e3.1 i7\n"
    "get_batch_completed e3.1 i7\n"
    "iteration_started e3.2 i8\n"
    "step(2) e3.2 i8\n"
    "iteration_completed e3.2 i8\n"
    "get_batch_started e3.2 i8\n"
    "get_batch_completed e3.2 i8\n"
    "iteration_started e3.3 i9\n"
    "step(3) e3.3 i9\n"
    "iteration_completed e3.3 i9\n"
    "epoch_completed e3.3 i9\n"
    "completed e3.3 i9\n";
}  // namespace

TEST_CASE("golden trace: a finished run resumed with more epochs starts a fresh pass (Ignite's 'resume with more epochs')") {
  Trace trace;
  int reads = 0;
  const CountingRange data{{1, 2, 3}, &reads};
  auto engine = make_traced_engine(trace);
  engine.run(data, max_epochs(2));
  CHECK(reads == 6);
  trace.lines.clear();
  reads = 0;

  SUBCASE("over the same data object") { engine.run(data, max_epochs(3)); }
  SUBCASE("over a fresh data object: the pass had ended, so nothing is skipped") {
    engine.run(CountingRange{{1, 2, 3}, &reads}, max_epochs(3));
  }
  SUBCASE("a new engine from the state_dict, over a fresh data object") {
    const StateDict saved = engine.state.state_dict();
    auto fresh = make_traced_engine(trace);
    fresh.state.load_state_dict(saved);
    fresh.run(CountingRange{{1, 2, 3}, &reads}, max_epochs(3));
  }
  SUBCASE("unsized data (a range per pass) over a fresh object: the skip finds the pass's end, and starts anew") {
    auto fresh = make_traced_engine(trace);
    fresh.state.load_state_dict(engine.state.state_dict());
    int passes = 0;
    fresh.run([&] { return ++passes, CountingRange{{1, 2, 3}, &reads}; }, max_epochs(3));
    CHECK(passes == 2);  // the skipped pass, then epoch 3's
    reads -= 3;          // the skipped pass's reads: unsized data must be read to find where it ends
  }
  CHECK(trace.joined() == epoch_3_after_more_epochs);
  CHECK(reads == 3);  // 3 batches read for 3 steps
}

TEST_CASE("golden trace: rerunning a finished run with the same limits starts a fresh state (Ignite's rerun)") {
  std::vector<int> data{1, 2, 3};
  Trace trace;
  auto engine = make_traced_engine(trace);
  engine.run(data, max_epochs(2));
  const std::vector<std::string> first = trace.lines;
  trace.lines.clear();
  SUBCASE("same object") { engine.run(data, max_epochs(2)); }
  SUBCASE("a fresh object") { engine.run(std::vector<int>{1, 2, 3}, max_epochs(2)); }
  CHECK(trace.lines == first);
  CHECK(trace.lines.back() == "completed e2.3 i6");
}

// Interrupts the run at every firing of one event.
struct InterruptAt {
  Event at;
#define INTERRUPT_HOOK(name)                                                                                           \
  template <class E>                                                                                                   \
  void on_##name(E& e) {                                                                                               \
    if (at == Event::name) e.interrupt();                                                                              \
  }
  INTERRUPT_HOOK(started)
  INTERRUPT_HOOK(epoch_started)
  INTERRUPT_HOOK(get_batch_started)
  INTERRUPT_HOOK(get_batch_completed)
  INTERRUPT_HOOK(iteration_started)
  INTERRUPT_HOOK(iteration_completed)
  INTERRUPT_HOOK(data_exhausted)
  INTERRUPT_HOOK(epoch_completed)
#undef INTERRUPT_HOOK
};

TEST_CASE("golden trace: interrupt, then run() continues from the very point") {
  // Ignite's interrupt(): the run returns right after the handlers of the event that asked, firing `interrupt`;
  // the next run() continues from there, firing nothing again. Interrupting at every event and continuing gives
  // the trace of an uninterrupted run, plus the interrupt lines.
  std::vector<int> data{1, 2, 3};
  Trace plain_trace;
  make_traced_engine(plain_trace).run(data, max_epochs(2).epoch_length(2));
  for (Event at : {Event::started, Event::epoch_started, Event::get_batch_started, Event::get_batch_completed,
                   Event::iteration_started, Event::iteration_completed, Event::data_exhausted,
                   Event::epoch_completed}) {
    CAPTURE(event_name(at));
    Trace trace;
    auto engine = make_traced_engine(trace, InterruptAt{at});
    engine.run(data, max_epochs(2).epoch_length(2));
    std::size_t runs = 1;
    while (engine.interrupted()) {
      CHECK(trace.lines.back().rfind("interrupt ", 0) == 0);
      engine.run();
      ++runs;
      REQUIRE(runs < 20);
    }
    std::vector<std::string> without_interrupts;
    for (const auto& line : trace.lines)
      if (line.rfind("interrupt ", 0) != 0) without_interrupts.push_back(line);
    CHECK(without_interrupts == plain_trace.lines);
    CHECK(runs == 1 + engine.state.fired(Event::interrupt));
    CHECK(engine.state.fired(Event::interrupt) >= 1);
  }

  SUBCASE("run(data) with the same object continues too; another object is refused") {
    Trace trace;
    auto engine = make_traced_engine(trace, on(Events::iteration_completed | once(2), [](auto& e) { e.interrupt(); }));
    engine.run(data, max_epochs(1));
    REQUIRE(engine.interrupted());
    std::vector<int> other{1, 2, 3};
    CHECK_THROWS_WITH_AS(engine.run(other), doctest::Contains("interrupted"), std::logic_error);
    // An rvalue is always another object (the engine owns the one it was given): refused, not silently ignored.
    CHECK_THROWS_WITH_AS(engine.run(std::vector<int>{1, 2, 3}), doctest::Contains("an rvalue included"),
                         std::logic_error);
    CHECK(engine.interrupted());
    engine.run(data);
    CHECK_FALSE(engine.interrupted());
    CHECK(engine.state.iteration == 3);
    CHECK(trace.lines.back() == "completed e1.3 i3");
  }
}

TEST_CASE("run() from inside the same engine's run is refused") {
  std::vector<int> data{1, 2};
  auto engine = make_engine<int>([](int&) {});
  engine.on(Events::epoch_completed, [&](auto& e) { e.run(data); });
  CHECK_THROWS_WITH_AS(engine.run(data), doctest::Contains("inside the same engine's run"), std::logic_error);
  CHECK(engine.state.fired(Event::completed) == 0);
}

TEST_CASE("golden trace: epoch_length shorter than the data") {
  Trace trace;
  std::vector<int> data{1, 2, 3};
  auto engine = make_traced_engine(trace);
  engine.run(data, max_epochs(2).epoch_length(2));
  // The pass is not restarted at an epoch boundary: epoch 2 continues with batch 3, then the data restarts.
  CHECK(trace.joined() ==
        "started e0.0 i0\n"
        "epoch_started e1.0 i0\n"
        "get_batch_started e1.0 i0\n"
        "get_batch_completed e1.0 i0\n"
        "iteration_started e1.1 i1\n"
        "step(1) e1.1 i1\n"
        "iteration_completed e1.1 i1\n"
        "get_batch_started e1.1 i1\n"
        "get_batch_completed e1.1 i1\n"
        "iteration_started e1.2 i2\n"
        "step(2) e1.2 i2\n"
        "iteration_completed e1.2 i2\n"
        "epoch_completed e1.2 i2\n"
        "epoch_started e2.0 i2\n"
        "get_batch_started e2.0 i2\n"
        "get_batch_completed e2.0 i2\n"
        "iteration_started e2.1 i3\n"
        "step(3) e2.1 i3\n"
        "iteration_completed e2.1 i3\n"
        "get_batch_started e2.1 i3\n"
        "data_exhausted e2.1 i3\n"
        "get_batch_completed e2.1 i3\n"
        "iteration_started e2.2 i4\n"
        "step(1) e2.2 i4\n"
        "iteration_completed e2.2 i4\n"
        "epoch_completed e2.2 i4\n"
        "completed e2.2 i4\n");
}

TEST_CASE("golden trace: terminate_epoch, and terminate with skip_completed") {
  Trace trace;
  std::vector<int> data{1, 2, 3};
  auto engine = make_traced_engine(trace, on(Events::iteration_completed | once(1), [](auto& e) { e.terminate_epoch(); }),
                                   on(Events::iteration_completed | once(4), [](auto& e) { e.terminate(true); }));
  engine.run(data, max_epochs(3));
  // terminate_epoch ends epoch 1 after one iteration and restarts the data; epoch 2 is whole; terminate(true) in
  // epoch 3 skips completed.
  CHECK(trace.joined() ==
        "started e0.0 i0\n"
        "epoch_started e1.0 i0\n"
        "get_batch_started e1.0 i0\n"
        "get_batch_completed e1.0 i0\n"
        "iteration_started e1.1 i1\n"
        "step(1) e1.1 i1\n"
        "iteration_completed e1.1 i1\n"
        "terminate_single_epoch e1.1 i1\n"
        "epoch_completed e1.1 i1\n"
        "epoch_started e2.0 i1\n"
        "get_batch_started e2.0 i1\n"
        "get_batch_completed e2.0 i1\n"
        "iteration_started e2.1 i2\n"
        "step(1) e2.1 i2\n"
        "iteration_completed e2.1 i2\n"
        "get_batch_started e2.1 i2\n"
        "get_batch_completed e2.1 i2\n"
        "iteration_started e2.2 i3\n"
        "step(2) e2.2 i3\n"
        "iteration_completed e2.2 i3\n"
        "get_batch_started e2.2 i3\n"
        "get_batch_completed e2.2 i3\n"
        "iteration_started e2.3 i4\n"
        "step(3) e2.3 i4\n"
        "iteration_completed e2.3 i4\n"
        "terminate e2.3 i4\n");
  // The state is unfinished (epoch 2 was never completed), so a later run would resume it.
  CHECK(engine.state.in_epoch);
}

TEST_CASE("golden trace: max_iters ends inside an epoch; user events; unhandled exception") {
  Trace trace;
  std::vector<int> data{1, 2, 3};
  const Event backward = register_event("trace_backward");
  auto engine = make_engine<int>(
      [&](EngineCore& e, int& batch) {
        if (batch == 2) e.fire(backward);
        return batch;
      },
      Tracer{&trace, ""});
  engine.run(data, max_iters(2));
  // Reaching max_iters is a normal end: the partial epoch completes, then the run (no terminate event).
  CHECK(trace.joined() ==
        "started e0.0 i0\n"
        "epoch_started e1.0 i0\n"
        "get_batch_started e1.0 i0\n"
        "get_batch_completed e1.0 i0\n"
        "iteration_started e1.1 i1\n"
        "iteration_completed e1.1 i1\n"
        "get_batch_started e1.1 i1\n"
        "get_batch_completed e1.1 i1\n"
        "iteration_started e1.2 i2\n"
        "user:trace_backward e1.2 i2\n"
        "iteration_completed e1.2 i2\n"
        "epoch_completed e1.2 i2\n"
        "completed e1.2 i2\n");
  CHECK(engine.state.fired(backward) == 1);

  trace.lines.clear();
  auto failing = make_engine<int>(
      [](int& batch) {
        if (batch == 2) throw std::runtime_error("bad batch");
        return batch;
      },
      Tracer{&trace, ""});
  CHECK_THROWS_WITH_AS(failing.run(data), "bad batch", std::runtime_error);
  // exception_raised fires once, then the exception leaves run(): nothing else fires.
  CHECK(trace.joined() ==
        "started e0.0 i0\n"
        "epoch_started e1.0 i0\n"
        "get_batch_started e1.0 i0\n"
        "get_batch_completed e1.0 i0\n"
        "iteration_started e1.1 i1\n"
        "iteration_completed e1.1 i1\n"
        "get_batch_started e1.1 i1\n"
        "get_batch_completed e1.1 i1\n"
        "iteration_started e1.2 i2\n"
        "exception_raised e1.2 i2\n");
}

TEST_CASE("handler order: compile-time handlers in pack order, then run-time handlers in registration order") {
  Trace trace;
  std::vector<int> data{1};
  auto engine = make_engine<int>([](int&) {}, Tracer{&trace, "A:"},
                                 on(Events::completed, [&] { trace.lines.push_back("B:completed"); }),
                                 Tracer{&trace, "C:"});
  engine.on(Events::completed, [&] { trace.lines.push_back("D:completed"); });
  engine.on(Events::completed | Events::started, [&] { trace.lines.push_back("E:started-or-completed"); });
  engine.run(data);
  std::vector<std::string> completed_lines;
  for (const auto& line : trace.lines)
    if (line.find("completed") != std::string::npos && line.find("iteration") == std::string::npos &&
        line.find("epoch") == std::string::npos && line.find("get_batch") == std::string::npos)
      completed_lines.push_back(line);
  // E matches twice: once at started (first of the lines kept), once at completed (last).
  CHECK(completed_lines == std::vector<std::string>{"E:started-or-completed", "A:completed e1.1 i1", "B:completed",
                                                    "C:completed e1.1 i1", "D:completed", "E:started-or-completed"});
  CHECK(trace.lines.front() == "A:started e0.0 i0");
  CHECK(trace.lines[1] == "C:started e0.0 i0");
  CHECK(trace.lines[2] == "E:started-or-completed");
}
