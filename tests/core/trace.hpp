// A handler that records every event it sees, for the golden-trace and order tests.
#pragma once
#include <trainloop.hpp>

#include <string>
#include <vector>

struct Trace {
  std::vector<std::string> lines;
  std::string joined() const {
    std::string all;
    for (const auto& line : lines) all += line + "\n";
    return all;
  }
};

// "event e<epoch>.<epoch_iteration> i<iteration>"
inline std::string trace_line(const std::string& what, const trainloop::State& s) {
  return what + " e" + std::to_string(s.epoch) + "." + std::to_string(s.epoch_iteration) + " i" +
         std::to_string(s.iteration);
}

struct Tracer {
  Trace* trace;
  std::string tag;  // prefixes lines when several tracers interleave

  void record(const std::string& what, const trainloop::State& s) { trace->lines.push_back(tag + trace_line(what, s)); }

#define TRACE_HOOK(name)                                                                                               \
  template <class E>                                                                                                   \
  void on_##name(E& e) {                                                                                               \
    record(#name, e.state);                                                                                            \
  }
  TRACE_HOOK(started)
  TRACE_HOOK(epoch_started)
  TRACE_HOOK(get_batch_started)
  TRACE_HOOK(get_batch_completed)
  TRACE_HOOK(iteration_started)
  TRACE_HOOK(iteration_completed)
  TRACE_HOOK(epoch_completed)
  TRACE_HOOK(completed)
  TRACE_HOOK(terminate)
  TRACE_HOOK(terminate_single_epoch)
  TRACE_HOOK(data_exhausted)
  TRACE_HOOK(interrupt)
#undef TRACE_HOOK
  template <class E>
  void on_exception_raised(E& e, std::exception_ptr) {
    record("exception_raised", e.state);
  }
  template <class E>
  void on_event(E& e, trainloop::Event user_event) {
    record("user:" + trainloop::event_name(user_event), e.state);
  }
};
