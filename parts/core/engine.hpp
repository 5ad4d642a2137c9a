// trainloop: the Engine, the one loop core. Runs a step over data, fires events, dispatches them to compile-time
// handlers (a std::tuple, folded) and to run-time handlers registered with `on`.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <array>
#include <chrono>
#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>
#if TRAINLOOP_DETAIL_DEFINE_API
#include <algorithm>  // the out-of-line handler-list members; a TU that only declares them skips it
#endif

#include "parts/core/data_source.hpp"
#include "parts/core/filters.hpp"
#include "parts/core/hooks.hpp"
#include "parts/core/state.hpp"

TRAINLOOP_DETAIL_BEGIN

/// Limits for one `run`: `engine.run(data, max_epochs(5))`, `run(data, max_iters(1000).epoch_length(100))`.
class RunOptions {
 public:
  RunOptions& max_epochs(std::uint64_t n) { return max_epochs_ = positive(n, "max_epochs"), *this; }
  RunOptions& max_iters(std::uint64_t n) { return max_iters_ = positive(n, "max_iters"), *this; }
  RunOptions& epoch_length(std::uint64_t n) { return epoch_length_ = positive(n, "epoch_length"), *this; }
  /// Start a fresh pass over the data at every epoch (Lightning's epochs) instead of continuing the pass the last
  /// epoch left unfinished (Ignite's, the default). Matters when epoch_length is shorter than the data.
  RunOptions& restart_data_each_epoch(bool v) { return restart_data_each_epoch_ = v, *this; }
  /// A run that resumes a state over a fresh data source (another range, a new process) first skips the batches
  /// the pass already gave (`state.pass_position`), so the epoch goes on where it stopped. Turn it off for data
  /// that restores its own position (a DataLoader whose state_dict was loaded).
  RunOptions& skip_consumed_batches(bool v) { return skip_consumed_batches_ = v, *this; }

  std::optional<std::uint64_t> max_epochs() const { return unset_if_zero(max_epochs_); }
  std::optional<std::uint64_t> max_iters() const { return unset_if_zero(max_iters_); }
  std::optional<std::uint64_t> epoch_length() const { return unset_if_zero(epoch_length_); }
  bool restart_data_each_epoch() const { return restart_data_each_epoch_; }
  bool skip_consumed_batches() const { return skip_consumed_batches_; }

 private:
  // Plain integers with 0 for "not given" (every limit must be positive): copying a std::optional member makes
  // g++ 12 warn -Wmaybe-uninitialized at every `run(data, max_epochs(3))`.
  TRAINLOOP_DETAIL_API static std::uint64_t positive(std::uint64_t n, const char* name);
  static std::optional<std::uint64_t> unset_if_zero(std::uint64_t v) {
    return v ? std::optional<std::uint64_t>(v) : std::nullopt;
  }
  std::uint64_t max_epochs_ = 0, max_iters_ = 0, epoch_length_ = 0;
  bool restart_data_each_epoch_ = false;
  bool skip_consumed_batches_ = true;
};
inline RunOptions max_epochs(std::uint64_t n) { return RunOptions().max_epochs(n); }
inline RunOptions max_iters(std::uint64_t n) { return RunOptions().max_iters(n); }
inline RunOptions epoch_length(std::uint64_t n) { return RunOptions().epoch_length(n); }

/// Names a run-time handler registered with `Engine::on`, for `has` and `remove`.
struct HandlerId {
  std::uint64_t value = 0;
  friend bool operator==(HandlerId a, HandlerId b) { return a.value == b.value; }
  friend bool operator!=(HandlerId a, HandlerId b) { return a.value != b.value; }
};

/// What the step function sees of its engine: the state, the stop requests, and user-defined events. (The step is
/// given this base rather than the full Engine type, whose output type depends on the step itself.)
class EngineCore {
 public:
  State state;

  /// Stops the run after the current event's handlers: fires `terminate`, then `completed` unless skip_completed.
  /// A later `run` resumes from where it stopped.
  void terminate(bool skip_completed = false) noexcept {
    stop_ = skip_completed ? Stop::run_skip_completed : Stop::run;
  }
  /// Ends the current epoch after the current event's handlers: fires `terminate_single_epoch`, restarts the data,
  /// then `epoch_completed` unless skip_epoch_completed, and goes on with the next epoch.
  void terminate_epoch(bool skip_epoch_completed = false) noexcept {
    if (stop_ == Stop::none || stop_ == Stop::interrupt)
      stop_ = skip_epoch_completed ? Stop::epoch_skip_completed : Stop::epoch;
  }
  /// Ignite's interrupt: the run returns right after the current event's handlers, firing `interrupt` (after a
  /// pending terminate_epoch, at the epoch's end). The next `run()` continues from that very point over the same
  /// data pass, firing nothing again (no `started`, no second `epoch_started`).
  void interrupt() noexcept {
    interrupt_requested_ = true;
    if (stop_ == Stop::none) stop_ = Stop::interrupt;
  }
  /// Whether the last run was interrupted (and the next run() continues it).
  bool interrupted() const noexcept { return resume_ != Resume::none; }
  bool should_terminate() const noexcept { return stop_ == Stop::run || stop_ == Stop::run_skip_completed; }
  bool should_terminate_epoch() const noexcept {
    return stop_ == Stop::epoch || stop_ == Stop::epoch_skip_completed;
  }
  /// Fires a user-defined event (from `register_event`): counts it, then runs its handlers.
  void fire(Event e) {
    if (is_builtin(e))
      throw std::invalid_argument("trainloop: fire(" + event_name(e) +
                                  "): built-in events are fired by the loop; fire() is for register_event() events");
    state.count_firing(e);
    fire_user_(*this, e);
  }
  /// The exception being handled, during `exception_raised` handlers; null otherwise.
  const std::exception_ptr& current_exception() const noexcept { return exception_; }
  /// Whether a run() of this engine is under way (its handlers and step are running).
  bool running() const noexcept { return running_; }

  /// Whether the run-time handler `id` (from `on`) is registered.
  TRAINLOOP_DETAIL_API bool has(HandlerId id) const noexcept;
  /// Whether any run-time handler is registered for `e`.
  TRAINLOOP_DETAIL_API bool has_handlers(Event e) const noexcept;
  /// Removes a run-time handler (also from inside a handler). Returns whether it was registered.
  TRAINLOOP_DETAIL_API bool remove(HandlerId id);

 protected:
  enum class Stop : std::uint8_t { none, interrupt, epoch, epoch_skip_completed, run, run_skip_completed };
  // Where an interrupted run stopped: the event whose handlers ran last. The next run continues right after it.
  enum class Resume : std::uint8_t {
    none,
    after_started,
    after_epoch_started,
    after_get_batch_started,
    after_data_exhausted,
    after_get_batch_completed,
    after_iteration_started,
    after_iteration_completed,
    after_epoch_completed,
  };
  using UserFire = void (*)(EngineCore&, Event);

  explicit EngineCore(UserFire fire_user) noexcept : fire_user_(fire_user) {}
  EngineCore(const EngineCore&) = default;
  EngineCore(EngineCore&&) = default;
  EngineCore& operator=(const EngineCore&) = default;
  EngineCore& operator=(EngineCore&&) = default;
  TRAINLOOP_DETAIL_API ~EngineCore();  // out of line: the handler lists' destruction is not compiled per Engine

  // --- the loop ---------------------------------------------------------------------------------------------------
  // The run's control flow (epochs, limits, stops, interrupts, times, exceptions) is compiled once, here; what
  // depends on the Engine's types comes through LoopOps: one epoch's iterations over the run's data source, the
  // built-in events fired once per run or epoch, the source restarted. That is one indirect call per epoch or per
  // such event; the iterations and their events stay in the Engine's own code (run_epoch).
  struct LoopOps {
    void (*run_epoch)(EngineCore& engine, void* source, Resume entry);
    bool (*emit)(EngineCore& engine, Event e);  // started, epoch_started, epoch_completed, completed, terminate,
                                                 // terminate_single_epoch, interrupt, exception_raised
    void (*restart_data)(EngineCore& engine, void* source);
  };
  using Clock = std::chrono::steady_clock;
  TRAINLOOP_DETAIL_API void run_loop(void* source, const LoopOps& ops);
  // After an event whose handlers asked to stop: interrupt the run there, or end the epoch (or the run) early.
  TRAINLOOP_DETAIL_API void stopped(void* source, Resume point, const LoopOps& ops);
  TRAINLOOP_DETAIL_API void interrupt_at(Resume point, const LoopOps& ops);
  TRAINLOOP_DETAIL_API void end_epoch_early(void* source, const LoopOps& ops);
  // exception_raised's handlers may handle the error (the run goes on); otherwise it propagates, offered once.
  TRAINLOOP_DETAIL_API void handle_exception(std::exception_ptr error, const LoopOps& ops);
  // An interrupt asked for while the epoch was being ended waits for the epoch's end.
  void clear_epoch_stop() noexcept { stop_ = interrupt_requested_ ? Stop::interrupt : Stop::none; }

  // Run-time handlers (`on`), type-erased over the engine: this bookkeeping is compiled once, not per Engine type.
  // The callable casts the EngineCore& back to its Engine.
  using RuntimeFn = detail::SharedFunction<bool(EngineCore&)>;
  struct RuntimeHandler {
    HandlerId id;
    Event event;
    Filter filter;
    RuntimeFn fn;  // null once removed; erased when no dispatch is iterating
  };
  // Registers `fn` for every item of an event spec (one shared callable: one state for all its events).
  TRAINLOOP_DETAIL_API HandlerId add_runtime_handler(std::vector<FilteredEvent>& items, RuntimeFn fn);
  // Runs the handlers of `list` registered for `e` whose filter accepts; returns whether one handled the event.
  TRAINLOOP_DETAIL_API bool invoke_runtime(std::vector<RuntimeHandler>& list, Event e);
  bool has_runtime_handlers(Event builtin) const noexcept { return (runtime_mask_ & event_bit(builtin)) != 0; }
  std::vector<RuntimeHandler>& runtime_handlers(Event builtin) noexcept { return runtime_[event_index(builtin)]; }

  // The run's limits (Ignite's rules; see prepare_run's definition).
  TRAINLOOP_DETAIL_API bool is_done() const noexcept;
  TRAINLOOP_DETAIL_API bool prepare_run(const RunOptions& options, std::optional<std::size_t> data_size);
  TRAINLOOP_DETAIL_API std::optional<std::uint64_t> max_epochs_for_iters() const;
  // The first pass over unsized data ended: it defines the epoch length (a pass with no batch is an error).
  TRAINLOOP_DETAIL_API void end_unsized_pass();
  [[noreturn]] TRAINLOOP_DETAIL_API void throw_data_ran_out() const;
  // state.times[key] = seconds ("epoch_completed", "completed"), out of line: a std::map<std::string, ...> insert
  // would otherwise be compiled into every Engine type.
  TRAINLOOP_DETAIL_API void record_time(const char* key, double seconds);

  Stop stop_ = Stop::none;
  bool interrupt_requested_ = false;  // also kept while a terminate_epoch goes first
  Resume resume_ = Resume::none;
  std::exception_ptr exception_;
  bool running_ = false;
  std::vector<RuntimeHandler> runtime_user_;
  void* batch_ = nullptr;  // the current iteration's batch: the Engine's Batch*
  bool restart_data_each_epoch_ = false;
  std::exception_ptr propagating_;  // an unhandled exception on its way out, so it is offered to handlers once
  Clock::time_point run_start_, epoch_start_;  // kept across an interrupt: the times go on

 private:
  // Erases handlers removed during dispatch, once no dispatch is iterating the lists.
  TRAINLOOP_DETAIL_API void compact_runtime_handlers();

  UserFire fire_user_;
  std::array<std::vector<RuntimeHandler>, builtin_event_count> runtime_;
  std::uint32_t runtime_mask_ = 0;  // bit i: event i has run-time handlers, so an unused event costs one test
  std::uint64_t last_handler_id_ = 0;
  int dispatch_depth_ = 0;
  bool removed_pending_ = false;
};

namespace detail {
// Batch type of a non-generic step: the type of its last parameter.
template <class T>
struct last_param_of;
template <class R, class... A>
struct last_param_of<R (*)(A...)> {
  using type = std::decay_t<std::tuple_element_t<sizeof...(A) - 1, std::tuple<A...>>>;
};
template <class R, class... A>
struct last_param_of<R (*)(A...) noexcept> : last_param_of<R (*)(A...)> {};
#define TRAINLOOP_DETAIL_MEMBER_CALL(QUALIFIERS)                                                                       \
  template <class R, class C, class... A>                                                                              \
  struct last_param_of<R (C::*)(A...) QUALIFIERS> : last_param_of<R (*)(A...)> {};
TRAINLOOP_DETAIL_MEMBER_CALL()
TRAINLOOP_DETAIL_MEMBER_CALL(const)
TRAINLOOP_DETAIL_MEMBER_CALL(noexcept)
TRAINLOOP_DETAIL_MEMBER_CALL(const noexcept)
#undef TRAINLOOP_DETAIL_MEMBER_CALL
template <class F>
using call_operator_t = decltype(&F::operator());
template <class Step, class = void>
struct batch_of_step {
  static_assert(sizeof(Step) == 0,
                "trainloop: make_engine(step, ...) cannot tell the batch type of a generic step; write "
                "make_engine<Batch>(step, ...)");
};
template <class Step>
struct batch_of_step<Step, std::enable_if_t<is_detected_v<call_operator_t, Step>>>
    : last_param_of<call_operator_t<Step>> {};
template <class Step>
struct batch_of_step<Step, std::enable_if_t<std::is_pointer_v<Step>>> : last_param_of<Step> {};

struct deduce_batch {};

// std::addressof without <memory>: the object's address even if its type overloads unary &.
template <class T>
const void* address_of(T& object) noexcept {
  return const_cast<const char*>(&reinterpret_cast<const volatile char&>(object));
}

// A unique address per type, to tell whether a kept data source has the type a run needs (no RTTI needed).
template <class T>
struct type_tag {
  static constexpr char id = 0;
};

// The step is called as step(engine, batch) or step(batch); a step returning nothing has std::monostate output.
template <class Step, class Batch>
inline constexpr bool step_takes_engine_v = std::is_invocable_v<Step&, EngineCore&, Batch&>;
template <class Step, class Batch>
decltype(auto) call_step(Step& step, EngineCore& core, Batch& batch) {
  if constexpr (step_takes_engine_v<Step, Batch>)
    return step(core, batch);
  else
    return step(batch);
}
template <class Step, class Batch>
struct step_output {
  static_assert(step_takes_engine_v<Step, Batch> || std::is_invocable_v<Step&, Batch&>,
                "trainloop: the step must be callable as step(engine, batch) or step(batch), with engine a "
                "trainloop::EngineCore& (or auto&) and batch the Batch& the engine was made for");
  using raw = decltype(call_step(std::declval<Step&>(), std::declval<EngineCore&>(), std::declval<Batch&>()));
  using type = std::conditional_t<std::is_void_v<raw>, std::monostate, std::decay_t<raw>>;
};
}  // namespace detail

/// The loop core (Ignite's Engine), over batches of type `Batch`, with a step function and compile-time handlers.
/// Make one with `make_engine<Batch>(step, handlers...)`, or `make_engine(step, handlers...)` when the step's batch
/// parameter has a concrete type.
///
/// Handler order for every event: compile-time handlers in the order of the pack, then run-time handlers in the
/// order they were registered. Handlers registered while an event is being dispatched first run at its next firing.
template <class Batch, class Step, class... Handlers>
class Engine : public EngineCore {
 public:
  using batch_type = Batch;
  using output_type = typename detail::step_output<Step, Batch>::type;
  using handlers_type = std::tuple<Handlers...>;

  explicit Engine(Step step, Handlers... handlers)
      : EngineCore(&Engine::fire_user_event), step_(std::move(step)), handlers_(std::move(handlers)...) {
    static_assert((detail::check_engine_handler<detail::unwrap_reference_t<Handlers>, Engine>() && ... && true));
  }

  /// Runs (or resumes) over `data` (see RunOptions and docs/engine.md for the resume rule). Returns the state.
  /// A resumed run keeps reading the pass it was reading when given the same data object (an lvalue); given other
  /// data, it skips what the pass consumed, unless that pass had ended. After interrupt(), only run() or the same
  /// lvalue continues: other data, an rvalue included, is refused.
  template <class Data, class = std::enable_if_t<!std::is_same_v<std::decay_t<Data>, RunOptions>>>
  State& run(Data&& data, const RunOptions& options = {}) {
    using Source = decltype(detail::make_data_source<Batch>(std::forward<Data>(data)));
    RunningScope running(*this);
    const void* address = nullptr;  // an lvalue is read in place: the same object means the same pass
    if constexpr (std::is_lvalue_reference_v<Data>) address = detail::address_of(data);
    const auto size = detail::data_size(static_cast<const std::remove_reference_t<Data>&>(data));
    const bool resumed = prepare_run(options, size ? std::optional<std::size_t>(static_cast<std::size_t>(*size))
                                                   : std::nullopt);
    const bool same_pass =
        address != nullptr && kept_.data == address && kept_.type == &detail::type_tag<Source>::id;
    if (!resumed || !same_pass) {
      if (interrupted())
        throw std::logic_error("trainloop: run(data): the run was interrupted; continue it with run() or with the same "
                               "data object (other data, an rvalue included, cannot continue the interrupted pass)");
      kept_.run = typename KeptSource::Run(
          [source = detail::make_data_source<Batch>(std::forward<Data>(data))](Engine& engine) mutable {
            engine.run_loop(source);
          });
      kept_.type = &detail::type_tag<Source>::id;
      kept_.data = address;
      kept_.size = size ? std::optional<std::size_t>(static_cast<std::size_t>(*size)) : std::nullopt;
      // A pass the sized data cannot reach (it had ended, or the new data is shorter) leaves nothing to skip.
      if (resumed && kept_.size && state.pass_position >= *kept_.size) state.pass_position = 0;
      skip_pending_ = resumed && options.skip_consumed_batches() ? state.pass_position : 0;
    }
    begin_run(resumed, options);
    return state;
  }
  /// Continues the last run (interrupted, terminated, or finished and given a higher limit) over the data it was
  /// reading, from where it stopped.
  State& run(const RunOptions& options = {}) {
    if (!kept_.run) throw std::logic_error("trainloop: run(): no run to continue; give the data: run(data, ...)");
    RunningScope running(*this);
    if (!prepare_run(options, kept_.size))
      throw std::logic_error("trainloop: run(): the last run finished; start a new one with run(data, ...) or raise "
                             "max_epochs/max_iters to continue it");
    begin_run(true, options);
    return state;
  }

  /// The batch of the current iteration, from get_batch_completed to iteration_completed; nullptr otherwise.
  /// Handlers of iteration_started may replace it (Ignite's `state.batch`).
  Batch* batch() noexcept { return static_cast<Batch*>(batch_); }
  /// The last step's output (Ignite's `state.output`).
  const output_type& output() const {
    if (!output_) throw std::logic_error("trainloop: Engine::output(): no step has run yet");
    return *output_;
  }
  bool has_output() const noexcept { return output_.has_value(); }

  Step& step() noexcept { return step_; }
  handlers_type& handlers() noexcept { return handlers_; }
  template <std::size_t I>
  auto& handler() noexcept {
    return detail::unwrap(std::get<I>(handlers_));
  }
  template <class H>
  auto& handler() noexcept {
    constexpr std::size_t count = (std::size_t{std::is_same_v<H, Handlers>} + ... + 0);
    if constexpr (count == 1) {
      return detail::unwrap(std::get<H>(handlers_));
    } else {
      static_assert(count == 1,
                    "trainloop: engine.handler<T>(): the engine holds no handler of type T, or several; with several "
                    "of one type, name one by its place in the pack: engine.handler<I>()");
      return handlers_;
    }
  }

  /// Registers a run-time handler: `engine.on(Events::iteration_completed | every(100), [](auto& e) {...})`.
  /// The callable takes the engine or nothing; for exception_raised, returning true marks the exception handled.
  template <class Spec, class F>
  HandlerId on(Spec&& events, F&& f) {
    static_assert(detail::is_event_like_v<std::decay_t<Spec>>,
                  "trainloop: Engine::on(events, f): events must be Events::x, a user event, `event | filter` or an "
                  "OR of those");
    auto spec = detail::to_spec(std::forward<Spec>(events));
    return add_runtime_handler(spec.items, make_runtime_callable(std::forward<F>(f)));
  }

 private:

  template <class F>
  static RuntimeFn make_runtime_callable(F&& f) {
    using Fn = std::decay_t<F>;
    // One callable shared by all the events it was registered for (RuntimeFn's copies share it): one state.
    if constexpr (std::is_invocable_v<Fn&, Engine&>) {
      return RuntimeFn([fn = Fn(std::forward<F>(f))](EngineCore& core) mutable {
        return detail::invoke_handler(fn, static_cast<Engine&>(core));
      });
    } else {
      static_assert(std::is_invocable_v<Fn&>,
                    "trainloop: Engine::on(events, f): f must be callable as f(engine) or f()");
      return RuntimeFn([fn = Fn(std::forward<F>(f))](EngineCore&) mutable { return detail::invoke_handler(fn); });
    }
  }

  // --- dispatch -------------------------------------------------------------------------------------------------

  // Fires built-in event E: counts it, calls compile-time handlers, then run-time ones. Returns whether a handler
  // marked it handled (only exception_raised handlers do).
  template <Event E>
  bool emit() {
    state.count_firing(E);
    bool handled = false;
    std::apply([&](auto&... hs) { ((handled |= invoke_compile_time<E>(detail::unwrap(hs))), ...); }, handlers_);
    if (has_runtime_handlers(E)) handled |= invoke_runtime(runtime_handlers(E), E);
    return handled;
  }

  template <Event E, class H>
  bool invoke_compile_time(H& h) {
    if constexpr (detail::is_event_handler_v<H>) {
      if constexpr ((H::builtin_mask & event_bit(E)) != 0) return h.template dispatch<E>(*this);
      else return false;
    } else if constexpr (detail::hook<E>::template callable<H, Engine>) {
      return detail::invoke_handler([&]() -> decltype(auto) { return call_hook<E>(h); });
    } else {
      return false;
    }
  }
  template <Event E, class H>
  decltype(auto) call_hook(H& h) {
    if constexpr (E == Event::exception_raised)
      return detail::hook<E>::call(h, *this, std::exception_ptr(exception_));
    else
      return detail::hook<E>::call(h, *this);
  }

  static void fire_user_event(EngineCore& core, Event e) {
    auto& self = static_cast<Engine&>(core);
    std::apply([&](auto&... hs) { (self.invoke_user_hook(detail::unwrap(hs), e), ...); }, self.handlers_);
    if (!self.runtime_user_.empty()) self.invoke_runtime(self.runtime_user_, e);
  }
  template <class H>
  void invoke_user_hook(H& h, Event e) {
    if constexpr (detail::is_event_handler_v<H>)
      h.dispatch_user(*this, e);
    else if constexpr (detail::has_user_event_hook_v<H, Engine>)
      h.on_event(*this, e);
  }

  // --- the loop -------------------------------------------------------------------------------------------------

  void begin_run(bool resumed, const RunOptions& options) {
    restart_data_each_epoch_ = options.restart_data_each_epoch();
    first_fetch_of_resumed_run_ = resumed && !interrupted();
    kept_.run(*this);
  }
  template <class Source>
  void run_loop(Source& source) {
    EngineCore::run_loop(&source, loop_ops<Source>);
  }
  template <class Source>
  static void run_epoch_of(EngineCore& core, void* source, Resume entry) {
    static_cast<Engine&>(core).run_epoch(*static_cast<Source*>(source), entry);
  }
  template <class Source>
  static void restart_data_of(EngineCore& core, void* source) {
    static_cast<Engine&>(core).restart_data(*static_cast<Source*>(source));
  }
  static bool emit_event(EngineCore& core, Event e) {
    auto& self = static_cast<Engine&>(core);
    switch (e) {
      case Event::started: return self.template emit<Event::started>();
      case Event::epoch_started: return self.template emit<Event::epoch_started>();
      case Event::epoch_completed: return self.template emit<Event::epoch_completed>();
      case Event::completed: return self.template emit<Event::completed>();
      case Event::terminate: return self.template emit<Event::terminate>();
      case Event::terminate_single_epoch: return self.template emit<Event::terminate_single_epoch>();
      case Event::interrupt: return self.template emit<Event::interrupt>();
      case Event::exception_raised: return self.template emit<Event::exception_raised>();
      default: return false;  // the per-iteration events are fired inline, by run_epoch
    }
  }
  template <class Source>
  static constexpr LoopOps loop_ops{&Engine::run_epoch_of<Source>, &Engine::emit_event,
                                    &Engine::restart_data_of<Source>};

  // One epoch's iterations, from its start or from where an interrupted run stopped (`entry`). Each event's
  // handlers may stop the epoch or the run, or interrupt it; the flag is checked right after them.
  template <class Source>
  void run_epoch(Source& source, Resume entry) {
    try {
      bool just_restarted = entry == Resume::after_data_exhausted;
      if (just_restarted) restart_data(source);
      bool fetch_pending = entry == Resume::after_get_batch_started;  // get_batch_started already fired
      bool have_batch = entry == Resume::after_get_batch_completed || entry == Resume::after_iteration_started;
      bool iteration_begun = entry == Resume::after_iteration_started;
      while (true) {
        if (!have_batch) {
          if (!fetch_pending) {
            // Checked first, so a run resumed at the very end of an epoch completes it without another iteration.
            if (state.epoch_length && state.epoch_iteration >= *state.epoch_length) return;
            if (state.max_iters && state.iteration >= *state.max_iters) return;
            batch_ = nullptr;
            if (!just_restarted) {
              emit<Event::get_batch_started>();
              if (stop_ != Stop::none) return stopped(&source, Resume::after_get_batch_started, loop_ops<Source>);
            }
          }
          fetch_pending = false;
          Batch* next = next_batch(source);
          if (next == nullptr) {
            if (!state.epoch_length) return end_unsized_pass();
            if (just_restarted) throw_data_ran_out();
            emit<Event::data_exhausted>();
            if (stop_ != Stop::none) return stopped(&source, Resume::after_data_exhausted, loop_ops<Source>);
            restart_data(source);
            just_restarted = true;
            continue;
          }
          just_restarted = false;
          batch_ = next;
          emit<Event::get_batch_completed>();
          if (stop_ != Stop::none) return stopped(&source, Resume::after_get_batch_completed, loop_ops<Source>);
        }
        have_batch = false;
        if (!iteration_begun) {
          ++state.iteration;
          ++state.epoch_iteration;
          emit<Event::iteration_started>();
          if (stop_ != Stop::none) return stopped(&source, Resume::after_iteration_started, loop_ops<Source>);
        }
        iteration_begun = false;
        if constexpr (std::is_same_v<output_type, std::monostate>) {
          detail::call_step(step_, *this, *static_cast<Batch*>(batch_));
          output_.emplace();
        } else {
          output_.emplace(detail::call_step(step_, *this, *static_cast<Batch*>(batch_)));
        }
        emit<Event::iteration_completed>();
        if (stop_ != Stop::none) return stopped(&source, Resume::after_iteration_completed, loop_ops<Source>);
      }
    } catch (...) {
      // Ignite's rule: an exception inside the epoch that a handler handles ends the epoch, and the run goes on.
      batch_ = nullptr;
      handle_exception(std::current_exception(), loop_ops<Source>);
      restart_data(source);
    }
  }

  // The data source, counted: the pass position is what a resumed run over a fresh source skips first.
  template <class Source>
  Batch* next_batch(Source& source) {
    Batch* next = first_fetch_of_resumed_run_ || skip_pending_ > 0 ? first_fetch(source) : source.next();
    if (next != nullptr) ++state.pass_position;
    return next;
  }
  // Off the per-iteration path: skips what the pass consumed. A resumed run (not an interrupted one) whose first
  // fetch finds the pass at its end, or skips past it, starts a fresh pass without data_exhausted, as Ignite's, whose
  // every run() starts its own iterator: a pass that had ended leaves nothing to read again. (Unless the epoch length
  // is still unknown: then that end is what defines it.)
  template <class Source>
  Batch* first_fetch(Source& source) {
    const bool resumed = std::exchange(first_fetch_of_resumed_run_, false);
    bool pass_ended = false;
    for (; skip_pending_ > 0 && !pass_ended; --skip_pending_) pass_ended = source.next() == nullptr;
    skip_pending_ = 0;
    Batch* next = pass_ended ? nullptr : source.next();
    if (next == nullptr && resumed && state.epoch_length) {
      restart_data(source);
      next = source.next();
    }
    return next;
  }
  template <class Source>
  void restart_data(Source& source) {
    source.restart();
    state.pass_position = 0;
    skip_pending_ = 0;
  }

  Step step_;
  handlers_type handlers_;
  std::optional<output_type> output_;
  std::uint64_t skip_pending_ = 0;             // batches a fresh source skips before its first one
  bool first_fetch_of_resumed_run_ = false;   // see first_fetch
  // The data source of the last run, kept so a resumed run continues its pass (type-erased: its type depends on the
  // data given to run()). `run` owns the source and runs the loop over it.
  struct KeptSource {
    using Run = detail::SharedFunction<void(Engine&)>;
    Run run;
    const void* type = nullptr;  // detail::type_tag<Source>::id
    const void* data = nullptr;  // the lvalue it reads; null when it owns its data
    std::optional<std::size_t> size;
  } kept_;

  // run() from inside this engine's own run (a handler, the step) is refused: it would nest a second loop.
  struct RunningScope {
    Engine& engine;
    explicit RunningScope(Engine& e) : engine(e) {
      if (engine.running_)
        throw std::logic_error("trainloop: run() was called from inside the same engine's run (from a handler or the "
                               "step); a nested run would fire epoch_completed and completed twice. Use another "
                               "engine, or call run() again after this one returns");
      engine.running_ = true;
    }
    ~RunningScope() { engine.running_ = false; }
    RunningScope(const RunningScope&) = delete;
    RunningScope& operator=(const RunningScope&) = delete;
  };
};

/// CTAD for a step whose batch parameter has a concrete type: `Engine engine(step, Timer{});`.
template <class Step, class... Handlers>
Engine(Step, Handlers...) -> Engine<typename detail::batch_of_step<Step>::type, Step, Handlers...>;

namespace detail {
template <class Batch, class Step>
struct resolve_batch {
  using type = Batch;
};
template <class Step>
struct resolve_batch<deduce_batch, Step> : batch_of_step<Step> {};
}  // namespace detail

/// `make_engine<Batch>(step, handlers...)`; the Batch may be left out when the step's batch parameter is concrete.
template <class Batch = detail::deduce_batch, class Step, class... Handlers>
auto make_engine(Step step, Handlers... handlers) {
  using B = typename detail::resolve_batch<Batch, Step>::type;
  return Engine<B, Step, Handlers...>(std::move(step), std::move(handlers)...);
}

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API std::uint64_t RunOptions::positive(std::uint64_t n, const char* name) {
  if (n == 0) throw std::invalid_argument(std::string("trainloop: ") + name + "(n): n must be positive");
  return n;
}

TRAINLOOP_DETAIL_API bool EngineCore::has(HandlerId id) const noexcept {
  auto in = [id](const std::vector<RuntimeHandler>& list) {
    return std::any_of(list.begin(), list.end(), [id](const RuntimeHandler& h) { return h.fn && h.id == id; });
  };
  return std::any_of(runtime_.begin(), runtime_.end(), in) || in(runtime_user_);
}
TRAINLOOP_DETAIL_API bool EngineCore::has_handlers(Event e) const noexcept {
  const auto& list = is_builtin(e) ? runtime_[event_index(e)] : runtime_user_;
  return std::any_of(list.begin(), list.end(), [e](const RuntimeHandler& h) { return h.fn && h.event == e; });
}
TRAINLOOP_DETAIL_API bool EngineCore::remove(HandlerId id) {
  bool found = false;
  auto mark = [&](std::vector<RuntimeHandler>& list) {
    for (auto& h : list)
      if (h.id == id && h.fn) h.fn = nullptr, found = true;
  };
  for (auto& list : runtime_) mark(list);
  mark(runtime_user_);
  removed_pending_ |= found;
  if (dispatch_depth_ == 0) compact_runtime_handlers();
  return found;
}

TRAINLOOP_DETAIL_API HandlerId EngineCore::add_runtime_handler(std::vector<FilteredEvent>& items, RuntimeFn fn) {
  const HandlerId id{++last_handler_id_};
  for (auto& item : items) {
    auto& list = is_builtin(item.event) ? runtime_[event_index(item.event)] : runtime_user_;
    list.push_back({id, item.event, std::move(item.filter), fn});
    if (is_builtin(item.event)) runtime_mask_ |= event_bit(item.event);
  }
  return id;
}
TRAINLOOP_DETAIL_API bool EngineCore::invoke_runtime(std::vector<RuntimeHandler>& list, Event e) {
  bool handled = false;
  ++dispatch_depth_;
  const std::uint64_t count = state.count(e);
  const std::size_t n = list.size();  // handlers added during dispatch wait for the next firing
  try {
    for (std::size_t i = 0; i < n; ++i)
      if (list[i].event == e && list[i].fn && list[i].filter.accepts(state, count)) handled |= list[i].fn(*this);
  } catch (...) {
    --dispatch_depth_;
    throw;
  }
  if (--dispatch_depth_ == 0) compact_runtime_handlers();
  return handled;
}
TRAINLOOP_DETAIL_API void EngineCore::compact_runtime_handlers() {
  if (!removed_pending_) return;
  removed_pending_ = false;
  auto erase_removed = [](std::vector<RuntimeHandler>& list) {
    list.erase(std::remove_if(list.begin(), list.end(), [](const RuntimeHandler& h) { return !h.fn; }), list.end());
  };
  runtime_mask_ = 0;
  for (std::size_t i = 0; i < builtin_event_count; ++i) {
    erase_removed(runtime_[i]);
    if (!runtime_[i].empty()) runtime_mask_ |= std::uint32_t{1} << i;
  }
  erase_removed(runtime_user_);
}

TRAINLOOP_DETAIL_API EngineCore::~EngineCore() = default;

namespace detail {
inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace detail

TRAINLOOP_DETAIL_API void EngineCore::run_loop(void* source, const LoopOps& ops) {
  const Resume entry = resume_;
  resume_ = Resume::none;
  stop_ = Stop::none;
  interrupt_requested_ = false;
  propagating_ = nullptr;
  if (entry == Resume::none) {
    run_start_ = Clock::now();
    record_time("epoch_completed", 0.0);
    record_time("completed", 0.0);
  }
  try {
    if (entry == Resume::none) {
      ops.emit(*this, Event::started);
      if (should_terminate_epoch())
        throw std::logic_error("trainloop: terminate_epoch() was called in a started handler, before any epoch");
      if (stop_ == Stop::interrupt) return interrupt_at(Resume::after_started, ops);
    }
    Resume epoch_entry = entry;  // inside an epoch only when an interrupted run continues
    while (true) {
      const bool inside_epoch = epoch_entry != Resume::none && epoch_entry != Resume::after_started &&
                                epoch_entry != Resume::after_epoch_completed;
      if (!inside_epoch) {
        if (should_terminate() || is_done()) break;
        if (!state.in_epoch) {
          ++state.epoch;
          state.epoch_iteration = 0;
          state.in_epoch = true;
          if (restart_data_each_epoch_) ops.restart_data(*this, source);
        }
        epoch_start_ = Clock::now();
        ops.emit(*this, Event::epoch_started);
        if (should_terminate()) break;
        if (stop_ == Stop::interrupt) return interrupt_at(Resume::after_epoch_started, ops);
        epoch_entry = Resume::after_epoch_started;
      }
      if (should_terminate_epoch()) {
        end_epoch_early(source, ops);
      } else {
        ops.run_epoch(*this, source, epoch_entry);
        if (interrupted()) return;
      }
      if (should_terminate()) break;  // stopped mid-epoch: in_epoch stays set, a later run resumes the epoch
      state.in_epoch = false;
      record_time("epoch_completed", detail::seconds_since(epoch_start_));
      const bool skip_epoch_completed = stop_ == Stop::epoch_skip_completed;
      if (should_terminate_epoch()) clear_epoch_stop();
      if (!skip_epoch_completed) {
        ops.emit(*this, Event::epoch_completed);
        record_time("epoch_completed", detail::seconds_since(epoch_start_));
      }
      if (should_terminate_epoch()) clear_epoch_stop();  // nothing left to end in this epoch
      if (stop_ == Stop::interrupt) return interrupt_at(Resume::after_epoch_completed, ops);
      epoch_entry = Resume::after_epoch_completed;
    }
    batch_ = nullptr;
    if (should_terminate()) ops.emit(*this, Event::terminate);
    record_time("completed", detail::seconds_since(run_start_));
    if (stop_ != Stop::run_skip_completed) {
      ops.emit(*this, Event::completed);
      record_time("completed", detail::seconds_since(run_start_));
    }
  } catch (...) {
    batch_ = nullptr;
    if (propagating_ == std::current_exception()) {  // already offered to handlers inside the epoch
      propagating_ = nullptr;
      throw;
    }
    handle_exception(std::current_exception(), ops);
  }
}

TRAINLOOP_DETAIL_API void EngineCore::stopped(void* source, Resume point, const LoopOps& ops) {
  if (stop_ == Stop::interrupt) return interrupt_at(point, ops);
  end_epoch_early(source, ops);
}
TRAINLOOP_DETAIL_API void EngineCore::interrupt_at(Resume point, const LoopOps& ops) {
  stop_ = Stop::none;
  interrupt_requested_ = false;
  ops.emit(*this, Event::interrupt);
  resume_ = point;
}
TRAINLOOP_DETAIL_API void EngineCore::end_epoch_early(void* source, const LoopOps& ops) {
  batch_ = nullptr;
  if (should_terminate()) return;
  ops.emit(*this, Event::terminate_single_epoch);
  ops.restart_data(*this, source);
}
TRAINLOOP_DETAIL_API void EngineCore::handle_exception(std::exception_ptr error, const LoopOps& ops) {
  exception_ = error;
  bool handled = false;
  try {
    handled = ops.emit(*this, Event::exception_raised);
  } catch (...) {
    exception_ = nullptr;
    throw;
  }
  exception_ = nullptr;
  if (!handled) {
    propagating_ = error;
    std::rethrow_exception(error);
  }
}

TRAINLOOP_DETAIL_API bool EngineCore::is_done() const noexcept {
  if (state.max_iters) return state.iteration >= *state.max_iters;
  if (state.max_epochs) return state.epoch >= *state.max_epochs && !state.in_epoch;
  return true;
}
// Ignite's rule: a fresh state when nothing ran yet, or when the last run finished and the limits are not raised;
// otherwise resume where the state stands, with any new limit checked against it (an interrupted run always
// resumes). Returns whether it resumes.
TRAINLOOP_DETAIL_API bool EngineCore::prepare_run(const RunOptions& options, std::optional<std::size_t> data_size) {
  if (options.max_epochs() && options.max_iters())
    throw std::invalid_argument("trainloop: run(): max_epochs and max_iters are mutually exclusive; give one");
  const bool never_ran = !state.max_epochs && !state.max_iters;
  const bool same_limits = (!options.max_epochs() && !options.max_iters()) ||
                           (options.max_epochs() && options.max_epochs() == state.max_epochs) ||
                           (options.max_iters() && options.max_iters() == state.max_iters);
  if (never_ran || (is_done() && same_limits && !interrupted())) {
    std::optional<std::uint64_t> epoch_length = options.epoch_length();
    if (!epoch_length && data_size) {
      if (*data_size == 0) throw std::invalid_argument("trainloop: run(): the data is empty (size 0)");
      epoch_length = *data_size;
    }
    state.epoch = state.iteration = state.epoch_iteration = state.pass_position = 0;
    state.in_epoch = false;
    state.epoch_length = epoch_length;
    state.max_iters = options.max_iters();
    state.max_epochs = options.max_iters() ? max_epochs_for_iters() : options.max_epochs().value_or(1);
    state.reset_firings();
    return false;
  }
  if (options.max_epochs()) {
    if (*options.max_epochs() < state.epoch)
      throw std::invalid_argument("trainloop: run(): max_epochs " + std::to_string(*options.max_epochs()) +
                                  " is below the epoch the state is at (" + std::to_string(state.epoch) + ")");
    state.max_epochs = options.max_epochs();
    state.max_iters.reset();
  }
  if (options.max_iters()) {
    if (*options.max_iters() < state.iteration)
      throw std::invalid_argument("trainloop: run(): max_iters " + std::to_string(*options.max_iters()) +
                                  " is below the iteration the state is at (" + std::to_string(state.iteration) + ")");
    state.max_iters = options.max_iters();
    state.max_epochs = max_epochs_for_iters();
  }
  if (options.epoch_length() && options.epoch_length() != state.epoch_length)
    throw std::invalid_argument("trainloop: run(): epoch_length " + std::to_string(*options.epoch_length()) +
                                " differs from the state's (" +
                                (state.epoch_length ? std::to_string(*state.epoch_length) : "unset") +
                                ") in a resumed run");
  return true;
}
TRAINLOOP_DETAIL_API std::optional<std::uint64_t> EngineCore::max_epochs_for_iters() const {
  if (!state.max_iters || !state.epoch_length) return std::nullopt;
  return (*state.max_iters + *state.epoch_length - 1) / *state.epoch_length;
}
TRAINLOOP_DETAIL_API void EngineCore::end_unsized_pass() {
  if (state.epoch_iteration == 0)
    throw std::runtime_error("trainloop: the data yielded no batch in epoch " + std::to_string(state.epoch));
  state.epoch_length = state.epoch_iteration;
  if (state.max_iters) state.max_epochs = max_epochs_for_iters();
}
TRAINLOOP_DETAIL_API void EngineCore::throw_data_ran_out() const {
  throw std::runtime_error("trainloop: the data ran out: a fresh pass yielded no batch at epoch " +
                           std::to_string(state.epoch) + ", iteration " + std::to_string(state.iteration) +
                           " (a generator that returned std::nullopt stays exhausted; pass a range or a callable "
                           "returning a range per pass, or lower epoch_length/max_epochs/max_iters)");
}
TRAINLOOP_DETAIL_API void EngineCore::record_time(const char* key, double seconds) { state.times[key] = seconds; }
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
