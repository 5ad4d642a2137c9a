// trainloop: hook detection. The one place that decides which hooks a handler type declares and how they are called.
// Every hook has one trait here; the Engine's dispatch and its compile-time checks use nothing else.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <cstdint>
#include <exception>
#include <map>
#include <string>
#include <type_traits>
#include <utility>

#include "parts/core/events.hpp"
#include "parts/core/state.hpp"

TRAINLOOP_DETAIL_BEGIN
namespace detail {

template <class...>
struct type_list {};

// `make_engine(step, std::ref(timer))` shares a handler the caller keeps; the engine sees through the wrapper.
// std::reference_wrapper is recognised by its shape (a `type` and a `get()` giving `type&`), so the core needs no
// <functional>; boost::reference_wrapper qualifies too.
template <class T>
using reference_wrapper_get_t = decltype(std::declval<const T&>().get());
template <class T, class = void>
struct unwrap_reference {
  using type = T;
  static T& get(T& t) noexcept { return t; }
};
template <class T>
struct unwrap_reference<T, std::enable_if_t<std::is_same_v<reference_wrapper_get_t<T>, typename T::type&>>> {
  using type = typename T::type;
  static type& get(const T& r) noexcept { return r.get(); }
};
template <class T>
using unwrap_reference_t = typename unwrap_reference<T>::type;
template <class T>
decltype(auto) unwrap(T& t) noexcept {
  return unwrap_reference<T>::get(t);
}

template <template <class...> class Op, class Void, class... Args>
struct detector : std::false_type {};
template <template <class...> class Op, class... Args>
struct detector<Op, std::void_t<Op<Args...>>, Args...> : std::true_type {};
/// True when Op<Args...> is well formed.
template <template <class...> class Op, class... Args>
inline constexpr bool is_detected_v = detector<Op, void, Args...>::value;

/// Calls a hook or handler callable. Handlers return bool (true: the event is handled; only exception_raised uses
/// it) or nothing, which counts as not handled.
template <class F, class... Args>
bool invoke_handler(F&& f, Args&&... args) {
  if constexpr (std::is_same_v<std::invoke_result_t<F, Args...>, bool>) {
    return std::forward<F>(f)(std::forward<Args>(args)...);
  } else {
    std::forward<F>(f)(std::forward<Args>(args)...);
    return false;
  }
}

// declares_<member><H>: H has a member of that name, whatever its kind or signature. Deriving from H and from a
// probe with a same-named member makes `&both::member` ambiguous exactly when H declares it. This lets a hook with
// the wrong signature be reported as such instead of being silently ignored.
#define TRAINLOOP_DETAIL_MEMBER_PROBE(member)                                                                          \
  struct probe_##member {                                                                                              \
    int member;                                                                                                        \
  };                                                                                                                   \
  template <class H, bool = std::is_class_v<H> && !std::is_final_v<H>>                                                 \
  struct declares_##member : std::false_type {};                                                                       \
  template <class H>                                                                                                   \
  struct declares_##member<H, true> {                                                                                  \
    struct both : H, probe_##member {};                                                                                \
    template <class T>                                                                                                 \
    static std::false_type test(decltype(&T::member)*);                                                                \
    template <class T>                                                                                                 \
    static std::true_type test(...);                                                                                   \
    static constexpr bool value = decltype(test<both>(nullptr))::value;                                                \
  };

// The extra arguments a hook takes after the engine: only exception_raised has one.
template <Event E>
struct hook_extra_args {
  using type = type_list<>;
};
template <>
struct hook_extra_args<Event::exception_raised> {
  using type = type_list<std::exception_ptr>;
};

/// hook<E>: for built-in event E, whether handler H declares `on_<event>`, whether it can be called as
/// `h.on_<event>(engine, extra...)`, and the call itself.
template <Event E>
struct hook;

#define TRAINLOOP_DETAIL_HOOK(name)                                                                                    \
  TRAINLOOP_DETAIL_MEMBER_PROBE(on_##name)                                                                             \
  template <class H, class... Args>                                                                                    \
  using call_on_##name##_t = decltype(std::declval<H&>().on_##name(std::declval<Args>()...));                         \
  template <>                                                                                                          \
  struct hook<Event::name> {                                                                                           \
    static constexpr const char* name_string = "on_" #name;                                                            \
    template <class H>                                                                                                 \
    static constexpr bool declared = declares_on_##name<H>::value;                                                     \
    template <class H, class Engine, class... Extra>                                                                   \
    static constexpr bool callable_with(type_list<Extra...>) {                                                         \
      return is_detected_v<call_on_##name##_t, H, Engine&, Extra...>;                                                  \
    }                                                                                                                  \
    template <class H, class Engine>                                                                                   \
    static constexpr bool callable = callable_with<H, Engine>(typename hook_extra_args<Event::name>::type{});          \
    template <class H, class Engine, class... Extra>                                                                   \
    static decltype(auto) call(H& h, Engine& engine, Extra&&... extra) {                                               \
      return h.on_##name(engine, std::forward<Extra>(extra)...);                                                       \
    }                                                                                                                  \
  };
TRAINLOOP_DETAIL_BUILTIN_EVENTS(TRAINLOOP_DETAIL_HOOK)
#undef TRAINLOOP_DETAIL_HOOK

// User-defined events reach compile-time handlers through one hook: on_event(engine, trainloop::Event).
TRAINLOOP_DETAIL_MEMBER_PROBE(on_event)
template <class H, class Engine>
using call_on_event_t = decltype(std::declval<H&>().on_event(std::declval<Engine&>(), std::declval<Event>()));
template <class H, class Engine>
inline constexpr bool has_user_event_hook_v = is_detected_v<call_on_event_t, H, Engine>;

// Handlers built by `on(events, callable)` carry their events and filters; the engine asks them to dispatch.
template <class H>
using event_handler_marker_t = typename H::trainloop_event_handler;
template <class H>
inline constexpr bool is_event_handler_v = is_detected_v<event_handler_marker_t, H>;

// Names a user may write for a hook that does not exist (other libraries' names, or near misses), with the right one.
#define TRAINLOOP_DETAIL_NEAR_MISS_HOOKS(X)                                                                            \
  X(on_start, on_started)                                                                                              \
  X(on_run_started, on_started)                                                                                        \
  X(on_epoch_start, on_epoch_started)                                                                                  \
  X(on_epoch_begin, on_epoch_started)                                                                                  \
  X(on_epoch_end, on_epoch_completed)                                                                                  \
  X(on_epoch_complete, on_epoch_completed)                                                                             \
  X(on_iteration_start, on_iteration_started)                                                                          \
  X(on_iteration_begin, on_iteration_started)                                                                          \
  X(on_iteration_end, on_iteration_completed)                                                                          \
  X(on_iteration_complete, on_iteration_completed)                                                                     \
  X(on_get_batch_start, on_get_batch_started)                                                                          \
  X(on_get_batch_end, on_get_batch_completed)                                                                          \
  X(on_get_batch_complete, on_get_batch_completed)                                                                     \
  X(on_complete, on_completed)                                                                                         \
  X(on_end, on_completed)                                                                                              \
  X(on_terminated, on_terminate)                                                                                       \
  X(on_terminate_epoch, on_terminate_single_epoch)                                                                     \
  X(on_dataloader_stop_iteration, on_data_exhausted)                                                                   \
  X(on_interrupted, on_interrupt)
#define TRAINLOOP_DETAIL_NEAR_MISS_PROBE(wrong, right) TRAINLOOP_DETAIL_MEMBER_PROBE(wrong)
TRAINLOOP_DETAIL_NEAR_MISS_HOOKS(TRAINLOOP_DETAIL_NEAR_MISS_PROBE)
#undef TRAINLOOP_DETAIL_NEAR_MISS_PROBE

// ---- Lightning hooks (the Trainer's face) ------------------------------------------------------------------------
// Each entry: the hook, how a callback declares it, how the module declares it. A callback's hook takes
// (trainer&, module&, ...); the module's takes only the trailing arguments. The Trainer calls them only through
// lightning_hook<...> below; a declared hook that cannot be called with the arguments shown is a compile error.
// The hooks named on_*: their systematic misspellings are rejected too (see check_lightning_names).
#define TRAINLOOP_DETAIL_LIGHTNING_ON_HOOKS(X)                                                                         \
  X(on_fit_start, "(trainer&, module&)", "()")                                                                         \
  X(on_fit_end, "(trainer&, module&)", "()")                                                                           \
  X(on_sanity_check_start, "(trainer&, module&)", "()")                                                                \
  X(on_sanity_check_end, "(trainer&, module&)", "()")                                                                  \
  X(on_train_start, "(trainer&, module&)", "()")                                                                       \
  X(on_train_end, "(trainer&, module&)", "()")                                                                         \
  X(on_train_epoch_start, "(trainer&, module&)", "()")                                                                 \
  X(on_train_epoch_end, "(trainer&, module&)", "()")                                                                   \
  X(on_train_batch_start, "(trainer&, module&, Batch& batch, std::int64_t batch_idx)",                                 \
    "(Batch& batch, std::int64_t batch_idx), optionally returning int (-1 skips the rest of the epoch)")               \
  X(on_train_batch_end, "(trainer&, module&, const Output& outputs, Batch& batch, std::int64_t batch_idx)",            \
    "(const Output& outputs, Batch& batch, std::int64_t batch_idx)")                                                   \
  X(on_validation_start, "(trainer&, module&)", "()")                                                                  \
  X(on_validation_end, "(trainer&, module&)", "()")                                                                    \
  X(on_validation_epoch_start, "(trainer&, module&)", "()")                                                            \
  X(on_validation_epoch_end, "(trainer&, module&)", "()")                                                              \
  X(on_validation_batch_start, "(trainer&, module&, Batch& batch, std::int64_t batch_idx)",                            \
    "(Batch& batch, std::int64_t batch_idx)")                                                                          \
  X(on_validation_batch_end, "(trainer&, module&, const Output& outputs, Batch& batch, std::int64_t batch_idx)",       \
    "(const Output& outputs, Batch& batch, std::int64_t batch_idx)")                                                   \
  X(on_test_start, "(trainer&, module&)", "()")                                                                        \
  X(on_test_end, "(trainer&, module&)", "()")                                                                          \
  X(on_test_epoch_start, "(trainer&, module&)", "()")                                                                  \
  X(on_test_epoch_end, "(trainer&, module&)", "()")                                                                    \
  X(on_test_batch_start, "(trainer&, module&, Batch& batch, std::int64_t batch_idx)",                                  \
    "(Batch& batch, std::int64_t batch_idx)")                                                                          \
  X(on_test_batch_end, "(trainer&, module&, const Output& outputs, Batch& batch, std::int64_t batch_idx)",             \
    "(const Output& outputs, Batch& batch, std::int64_t batch_idx)")                                                   \
  X(on_predict_start, "(trainer&, module&)", "()")                                                                     \
  X(on_predict_end, "(trainer&, module&)", "()")                                                                       \
  X(on_predict_epoch_start, "(trainer&, module&)", "()")                                                               \
  X(on_predict_epoch_end, "(trainer&, module&)", "()")                                                                 \
  X(on_predict_batch_start, "(trainer&, module&, Batch& batch, std::int64_t batch_idx)",                               \
    "(Batch& batch, std::int64_t batch_idx)")                                                                          \
  X(on_predict_batch_end, "(trainer&, module&, const Output& outputs, Batch& batch, std::int64_t batch_idx)",          \
    "(const Output& outputs, Batch& batch, std::int64_t batch_idx)")                                                   \
  X(on_before_backward, "(trainer&, module&, torch::Tensor& loss)", "(torch::Tensor& loss)")                           \
  X(on_after_backward, "(trainer&, module&)", "()")                                                                    \
  X(on_before_optimizer_step, "(trainer&, module&, torch::optim::Optimizer& optimizer)",                               \
    "(torch::optim::Optimizer& optimizer)")                                                                            \
  X(on_before_zero_grad, "(trainer&, module&, torch::optim::Optimizer& optimizer)", "(torch::optim::Optimizer& optimizer)") \
  X(on_exception, "(trainer&, module&, std::exception_ptr error)", "(std::exception_ptr error)")                       \
  X(on_before_batch_transfer, "(not a callback hook)", "(Batch batch, int dataloader_idx) returning Batch")            \
  X(on_after_batch_transfer, "(not a callback hook)", "(Batch batch, int dataloader_idx) returning Batch")             \
  X(on_validation_model_eval, "(not a callback hook)", "()")                                                           \
  X(on_validation_model_train, "(not a callback hook)", "()")                                                          \
  X(on_validation_model_zero_grad, "(not a callback hook)", "()")                                                      \
  X(on_test_model_eval, "(not a callback hook)", "()")                                                                 \
  X(on_test_model_train, "(not a callback hook)", "()")                                                                \
  X(on_predict_model_eval, "(not a callback hook)", "()")
#define TRAINLOOP_DETAIL_LIGHTNING_OTHER_HOOKS(X)                                                                      \
  X(setup, "(trainer&, module&, const std::string& stage)", "(const std::string& stage)")                              \
  X(teardown, "(trainer&, module&, const std::string& stage)", "(const std::string& stage)")                           \
  X(transfer_batch_to_device, "(not a callback hook)",                                                                 \
    "(Batch batch, torch::Device device, int dataloader_idx) returning Batch")                                         \
  X(training_step, "(not a callback hook)", "(Batch& batch, std::int64_t batch_idx) returning the loss")               \
  X(validation_step, "(not a callback hook)", "(Batch& batch, std::int64_t batch_idx)")                                \
  X(test_step, "(not a callback hook)", "(Batch& batch, std::int64_t batch_idx)")                                      \
  X(predict_step, "(not a callback hook)", "(Batch& batch, std::int64_t batch_idx)")                                   \
  X(configure_optimizers, "(not a callback hook)", "() returning an optimizer or trainloop::Optimizers")               \
  X(configure_callbacks, "(not a callback hook)",                                                                      \
    "() returning a callback or a std::tuple of callbacks (values, or references: std::tie)")                          \
  X(backward, "(not a callback hook)", "(torch::Tensor& loss), calling loss.backward() or what replaces it")           \
  X(configure_gradient_clipping, "(not a callback hook)",                                                              \
    "(torch::optim::Optimizer& optimizer, double gradient_clip_val, trainloop::ClipAlgorithm algorithm)")              \
  X(lr_scheduler_step, "(not a callback hook)",                                                                        \
    "(const trainloop::SchedulerConfig& scheduler, std::optional<double> metric)")                                     \
  X(prepare_data, "(not a callback hook)", "()")                                                                       \
  X(configure_model, "(not a callback hook)", "()")                                                                    \
  X(train_dataloader, "(not a callback hook)", "() returning the training data")                                       \
  X(val_dataloader, "(not a callback hook)", "() returning the validation data")                                       \
  X(test_dataloader, "(not a callback hook)", "() returning the test data")                                            \
  X(predict_dataloader, "(not a callback hook)", "() returning the data to predict on")
#define TRAINLOOP_DETAIL_LIGHTNING_HOOKS(X)                                                                            \
  TRAINLOOP_DETAIL_LIGHTNING_ON_HOOKS(X)                                                                               \
  TRAINLOOP_DETAIL_LIGHTNING_OTHER_HOOKS(X)

template <class Tag>
struct lightning_hook;
namespace lightning_tags {
#define TRAINLOOP_DETAIL_LIGHTNING_TAG(name, callback_signature, module_signature) struct name {};
TRAINLOOP_DETAIL_LIGHTNING_HOOKS(TRAINLOOP_DETAIL_LIGHTNING_TAG)
#undef TRAINLOOP_DETAIL_LIGHTNING_TAG
}  // namespace lightning_tags

#define TRAINLOOP_DETAIL_LIGHTNING_HOOK(name, callback_signature, module_signature)                                    \
  TRAINLOOP_DETAIL_MEMBER_PROBE(name)                                                                                  \
  template <class H, class... Args>                                                                                    \
  using call_##name##_t = decltype(std::declval<H&>().name(std::declval<Args>()...));                                 \
  template <>                                                                                                          \
  struct lightning_hook<lightning_tags::name> {                                                                        \
    static constexpr const char* name_string = #name;                                                                  \
    template <class H>                                                                                                 \
    static constexpr bool declared = declares_##name<H>::value;                                                        \
    template <class H, class... Args>                                                                                  \
    static constexpr bool callable = is_detected_v<call_##name##_t, H, Args...>;                                      \
    template <class H, class... Args>                                                                                  \
    static constexpr bool check_callback() {                                                                           \
      static_assert(!declared<H> || callable<H, Args...>,                                                              \
                    "trainloop: a callback declares " #name " but it cannot be called as " #name callback_signature);  \
      return true;                                                                                                     \
    }                                                                                                                  \
    template <class H, class... Args>                                                                                  \
    static constexpr bool check_module() {                                                                             \
      static_assert(!declared<H> || callable<H, Args...>,                                                              \
                    "trainloop: the LightningModule declares " #name " but it cannot be called as " #name             \
                    module_signature);                                                                                 \
      return true;                                                                                                     \
    }                                                                                                                  \
    template <class H, class... Args>                                                                                  \
    static decltype(auto) call(H& h, Args&&... args) {                                                                 \
      return h.name(std::forward<Args>(args)...);                                                                      \
    }                                                                                                                  \
  };
TRAINLOOP_DETAIL_LIGHTNING_HOOKS(TRAINLOOP_DETAIL_LIGHTNING_HOOK)
#undef TRAINLOOP_DETAIL_LIGHTNING_HOOK

// Lightning's optimizer_step and optimizer_zero_grad hooks share their names with LightningModule's manual-optimisation
// helpers, so they are told apart by their full signature: (epoch, batch_idx, optimizer, optimizer_closure) and
// (epoch, batch_idx, optimizer). optimizer_step_without_closure_t finds the form without the closure that trainloop
// took in 0.1, to name the change in an error.
template <class M, class Optimizer, class Closure>
using optimizer_step_hook_t = decltype(std::declval<M&>().optimizer_step(
    std::int64_t{}, std::int64_t{}, std::declval<Optimizer&>(), std::declval<Closure&>()));
template <class M, class Optimizer>
using optimizer_step_without_closure_t =
    decltype(std::declval<M&>().optimizer_step(std::int64_t{}, std::int64_t{}, std::declval<Optimizer&>()));
template <class M, class Optimizer>
using optimizer_zero_grad_hook_t =
    decltype(std::declval<M&>().optimizer_zero_grad(std::int64_t{}, std::int64_t{}, std::declval<Optimizer&>()));

// Checkpoint hooks, each in two forms: entries of the checkpoint (StateDict&) and tensors (TensorDict&); a module
// takes only that argument, a callback (trainer&, module&, ...) first. The Trainer checks both forms together.
template <class H, class... A>
using on_save_checkpoint_t = decltype(std::declval<H&>().on_save_checkpoint(std::declval<A>()...));
template <class H, class... A>
using on_load_checkpoint_t = decltype(std::declval<H&>().on_load_checkpoint(std::declval<A>()...));
TRAINLOOP_DETAIL_MEMBER_PROBE(on_save_checkpoint)
TRAINLOOP_DETAIL_MEMBER_PROBE(on_load_checkpoint)

// Logger hooks: a callback that declares log_metrics is a logger. The Trainer hands it the logged values at the
// logging interval (log_metrics(step, {name: value}), the epoch among the values as "epoch"), the module's
// hyperparameters when a stage starts (log_hyperparams) and the outcome when it ends (finalize("success"|"failed")).
// Before a checkpoint is assembled the Trainer writes the pending record and calls flush(), so a logger's
// state_dict() (its run and how many records it holds) matches its files.
template <class H>
using log_metrics_t =
    decltype(std::declval<H&>().log_metrics(std::int64_t{}, std::declval<const std::map<std::string, double>&>()));
template <class H>
using log_hyperparams_t = decltype(std::declval<H&>().log_hyperparams(std::declval<const StateDict&>()));
template <class H>
using finalize_t = decltype(std::declval<H&>().finalize(std::declval<const std::string&>()));
template <class H>
using logger_flush_t = decltype(std::declval<H&>().flush());
// What a logger shows beside scalars (loggers/media.hpp): histograms, images, text, checkpoints. A logger without one
// (CSV, JSON lines) is passed by.
template <class H, class Histogram>
using log_histogram_t = decltype(std::declval<H&>().log_histogram(std::declval<const std::string&>(),
                                                                  std::declval<const Histogram&>(), std::int64_t{}));
template <class H, class Image>
using log_image_t =
    decltype(std::declval<H&>().log_image(std::declval<const std::string&>(), std::declval<const Image&>(), std::int64_t{}));
template <class H>
using log_text_t = decltype(std::declval<H&>().log_text(std::declval<const std::string&>(),
                                                        std::declval<const std::string&>(), std::int64_t{}));
template <class H, class Checkpoint>
using after_save_checkpoint_t = decltype(std::declval<H&>().after_save_checkpoint(std::declval<const Checkpoint&>()));
TRAINLOOP_DETAIL_MEMBER_PROBE(log_metrics)
template <class H>
constexpr bool is_logger() {
  static_assert(!declares_log_metrics<H>::value || is_detected_v<log_metrics_t, H>,
                "trainloop: a callback declares log_metrics but it cannot be called as "
                "log_metrics(std::int64_t step, const std::map<std::string, double>& metrics)");
  return is_detected_v<log_metrics_t, H>;
}

// Names from other Lightning versions or near misses, with the hook to write instead. (on_epoch_start and
// on_epoch_end are checked too; their probes come from the Engine's list above.)
#define TRAINLOOP_DETAIL_NEAR_MISS_LIGHTNING_HOOKS(X)                                                                  \
  X(training_epoch_end, on_train_epoch_end)                                                                            \
  X(validation_epoch_end, on_validation_epoch_end)                                                                     \
  X(test_epoch_end, on_test_epoch_end)                                                                                 \
  X(on_batch_start, on_train_batch_start)                                                                              \
  X(on_batch_end, on_train_batch_end)                                                                                  \
  X(on_train_epoch_begin, on_train_epoch_start)                                                                        \
  X(on_training_epoch_end, on_train_epoch_end)                                                                         \
  X(on_train_batch_begin, on_train_batch_start)                                                                        \
  X(on_validation_epoch_begin, on_validation_epoch_start)                                                              \
  X(on_val_epoch_end, on_validation_epoch_end)                                                                         \
  X(train_step, training_step)                                                                                         \
  X(val_step, validation_step)                                                                                         \
  X(validate_step, validation_step)                                                                                    \
  X(configure_optimizer, configure_optimizers)
#define TRAINLOOP_DETAIL_NEAR_MISS_PROBE(wrong, right) TRAINLOOP_DETAIL_MEMBER_PROBE(wrong)
TRAINLOOP_DETAIL_NEAR_MISS_LIGHTNING_HOOKS(TRAINLOOP_DETAIL_NEAR_MISS_PROBE)
#undef TRAINLOOP_DETAIL_NEAR_MISS_PROBE

// Every on_* hook's systematic misspellings: a plural (on_train_epoch_ends), a trailing underscore (on_validation_end_),
// a past tense (on_fit_ended). C++ cannot list a class's members, so "any on_* that is not a hook" is checked as these
// plus the names above; a type whose own helpers collide opts out with
// `static constexpr bool trainloop_skip_hook_name_check = true;`.
#define TRAINLOOP_DETAIL_MISSPELLING_PROBES(name, callback_signature, module_signature)                                \
  TRAINLOOP_DETAIL_MEMBER_PROBE(name##s)                                                                               \
  TRAINLOOP_DETAIL_MEMBER_PROBE(name##_)                                                                               \
  TRAINLOOP_DETAIL_MEMBER_PROBE(name##ed)
TRAINLOOP_DETAIL_LIGHTNING_ON_HOOKS(TRAINLOOP_DETAIL_MISSPELLING_PROBES)
#undef TRAINLOOP_DETAIL_MISSPELLING_PROBES
template <class H>
using skip_hook_name_check_t = decltype(H::trainloop_skip_hook_name_check);
template <class H>
constexpr bool skips_hook_name_check() {
  if constexpr (is_detected_v<skip_hook_name_check_t, H>) return H::trainloop_skip_hook_name_check;
  return false;
}

/// Rejects Lightning hook names that do not exist (a misspelling or another version's name) on a callback or module.
template <class H>
constexpr bool check_lightning_names() {
  if constexpr (!skips_hook_name_check<H>()) {
#define TRAINLOOP_DETAIL_CHECK_NEAR_MISS(wrong, right)                                                                 \
  static_assert(!declares_##wrong<H>::value,                                                                           \
                "trainloop: a LightningModule or callback declares " #wrong ", which is not a hook; write " #right);
    TRAINLOOP_DETAIL_NEAR_MISS_LIGHTNING_HOOKS(TRAINLOOP_DETAIL_CHECK_NEAR_MISS)
    TRAINLOOP_DETAIL_CHECK_NEAR_MISS(on_epoch_start, on_train_epoch_start)
    TRAINLOOP_DETAIL_CHECK_NEAR_MISS(on_epoch_end, on_train_epoch_end)
#define TRAINLOOP_DETAIL_CHECK_MISSPELLINGS(name, callback_signature, module_signature)                                \
  TRAINLOOP_DETAIL_CHECK_NEAR_MISS(name##s, name)                                                                      \
  TRAINLOOP_DETAIL_CHECK_NEAR_MISS(name##_, name)                                                                      \
  TRAINLOOP_DETAIL_CHECK_NEAR_MISS(name##ed, name)
    TRAINLOOP_DETAIL_LIGHTNING_ON_HOOKS(TRAINLOOP_DETAIL_CHECK_MISSPELLINGS)
#undef TRAINLOOP_DETAIL_CHECK_MISSPELLINGS
#undef TRAINLOOP_DETAIL_CHECK_NEAR_MISS
  }
  return true;
}

/// Checks the Engine hooks a type declares have signatures the engine can call (no other requirement: a Trainer
/// callback may declare Engine hooks, Lightning hooks, or both).
template <class H, class Engine>
constexpr bool check_engine_hook_signatures() {
#define TRAINLOOP_DETAIL_CHECK_SIGNATURE(name)                                                                         \
  static_assert(!hook<Event::name>::declared<H> || hook<Event::name>::callable<H, Engine>,                             \
                "trainloop: a handler declares on_" #name " but it cannot be called as on_" #name                      \
                "(engine&) (on_exception_raised: (engine&, std::exception_ptr)); make it a template "                   \
                "`template <class E> void on_" #name "(E& engine)` or take the engine type it is given");
  TRAINLOOP_DETAIL_BUILTIN_EVENTS(TRAINLOOP_DETAIL_CHECK_SIGNATURE)
#undef TRAINLOOP_DETAIL_CHECK_SIGNATURE
  return true;
}

/// Compile-time checks of one Engine handler type. The static_assert messages cannot print the type, but the
/// compiler's "required from check_engine_handler<H, ...>" note right below names it.
template <class H, class Engine>
constexpr bool check_engine_handler() {
  static_assert(std::is_class_v<H>,
                "trainloop: an Engine handler must be a class type with on_<event> hooks; wrap a function as "
                "trainloop::on(Events::iteration_completed, f)");
  if constexpr (is_event_handler_v<H>) {
    return H::template check_callable<Engine>();
  } else {
check_engine_hook_signatures<H, Engine>();
    static_assert(!declares_on_event<H>::value || has_user_event_hook_v<H, Engine>,
                  "trainloop: a handler declares on_event but it cannot be called as on_event(engine&, "
                  "trainloop::Event)");
#define TRAINLOOP_DETAIL_CHECK_NEAR_MISS(wrong, right)                                                                 \
  static_assert(!declares_##wrong<H>::value,                                                                           \
                "trainloop: a handler declares " #wrong ", which is not an Engine hook; did you mean " #right "?");
    TRAINLOOP_DETAIL_NEAR_MISS_HOOKS(TRAINLOOP_DETAIL_CHECK_NEAR_MISS)
    TRAINLOOP_DETAIL_CHECK_NEAR_MISS(on_exception, on_exception_raised)  // on_exception is a Trainer callback hook
#undef TRAINLOOP_DETAIL_CHECK_NEAR_MISS
#define TRAINLOOP_DETAIL_ANY_HOOK(name) || hook<Event::name>::declared<H>
    constexpr bool declares_any = declares_on_event<H>::value TRAINLOOP_DETAIL_BUILTIN_EVENTS(TRAINLOOP_DETAIL_ANY_HOOK);
#undef TRAINLOOP_DETAIL_ANY_HOOK
    static_assert(declares_any,
                  "trainloop: a handler declares no Engine hook; hooks are on_started, on_epoch_started, "
                  "on_get_batch_started, on_get_batch_completed, on_iteration_started, on_iteration_completed, "
                  "on_epoch_completed, on_completed, on_exception_raised, on_terminate, on_terminate_single_epoch, "
                  "on_data_exhausted, on_interrupt and on_event (user events); wrap a callable as trainloop::on(events, f)");
    return true;
  }
}

}  // namespace detail
TRAINLOOP_DETAIL_END
