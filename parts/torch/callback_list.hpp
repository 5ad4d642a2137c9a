// trainloop: the Trainer's callbacks: the compile-time pack as given, the built-in progress bar and model summary
// (added unless the options turn them off or the pack has its own), those the module's configure_callbacks() adds,
// and the one place that says in which order a hook reaches them (docs/trainer.md: hook order). Visiting costs
// nothing for a group the pack does not have.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <tuple>
#include <type_traits>
#include <utility>

#include "parts/core/hooks.hpp"
#include "parts/torch/callbacks/model_summary.hpp"
#include "parts/torch/callbacks/progress_bar.hpp"
#include "parts/torch/device.hpp"
#include "parts/torch/trainer_options.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
// Where a callback runs among the others for each hook (see docs/trainer.md: hook order):
//  - plain callbacks, in the order of the pack, then the built-in progress bar and model summary;
//  - monitoring callbacks (`static constexpr bool trainloop_monitoring_callback = true`: early stopping), whose
//    on_train_epoch_end runs after the module's, once the epoch's values are published, as in Lightning;
//  - checkpointing callbacks (`static constexpr bool trainloop_checkpointing_callback = true`: ModelCheckpoint,
//    Preemption) last of all, after the module too, so a checkpoint holds what every other hook of that event did.
enum class CallbackGroup { plain, monitoring, checkpointing };
template <class C>
using monitoring_marker_t = decltype(C::trainloop_monitoring_callback);
template <class C>
using checkpointing_marker_t = decltype(C::trainloop_checkpointing_callback);
template <class C>
constexpr CallbackGroup callback_group() {
  if constexpr (is_detected_v<checkpointing_marker_t, C>) {
    if constexpr (C::trainloop_checkpointing_callback) return CallbackGroup::checkpointing;
  }
  if constexpr (is_detected_v<monitoring_marker_t, C>) {
    if constexpr (C::trainloop_monitoring_callback) return CallbackGroup::monitoring;
  }
  return CallbackGroup::plain;
}

// Which callbacks a visit reaches, each in hook order:
enum class CallbackOrder {
  all,            // plain (then the built-ins), monitoring, checkpointing
  before_module,  // plain (then the built-ins), monitoring: a module hook runs next, then the checkpointing ones
  plain,          // plain, then the built-ins
  monitoring,
  checkpointing,
  pack,           // the pack alone (plain, monitoring, checkpointing): the training Engine's events
};

// What a module's configure_callbacks() returned, as a tuple (a single callback is wrapped in one); std::tie's
// references stay references, so the module keeps owning what it returned that way.
template <class R>
auto as_callback_tuple(R&& result) {
  if constexpr (is_tuple<std::decay_t<R>>::value) return std::decay_t<R>(std::forward<R>(result));
  else return std::tuple<std::decay_t<R>>(std::forward<R>(result));
}
template <class Module>
using module_callbacks_t = decltype(as_callback_tuple(std::declval<Module&>().configure_callbacks()));
template <class Module, bool = lightning_hook<lightning_tags::configure_callbacks>::callable<Module>>
struct module_callbacks {
  using type = std::tuple<>;
};
template <class Module>
struct module_callbacks<Module, true> {
  using type = module_callbacks_t<Module>;
};

// Whether a callback of type C gives way to one the module configured: Lightning replaces a Trainer's callback by a
// module's of the same class or a subclass.
template <class C, class ModuleCallbacks>
struct overridden_by;
template <class C, class... M>
struct overridden_by<C, std::tuple<M...>>
    : std::bool_constant<(std::is_base_of_v<C, std::decay_t<unwrap_reference_t<std::decay_t<M>>>> || ... || false)> {};

template <class... Callbacks>
class CallbackList {
 public:
  explicit CallbackList(const TrainerOptions& options, Callbacks... callbacks)
      : callbacks_(std::move(callbacks)...),
        builtin_progress_bar_(options.enable_progress_bar() && !has<ProgressBar>()),
        builtin_model_summary_(options.enable_model_summary() && !has<ModelSummary>()) {
    static_assert((check_lightning_names<unwrap_reference_t<Callbacks>>() && ... && true));
  }

  template <class C>
  static constexpr bool has() {
    return (std::is_same_v<unwrap_reference_t<Callbacks>, C> || ... || false);
  }
  static constexpr bool has_loggers = (is_logger<unwrap_reference_t<Callbacks>>() || ... || false);

  std::tuple<Callbacks...>& tuple() noexcept { return callbacks_; }
  template <class C>
  C& get() noexcept {
    return unwrap(std::get<C>(callbacks_));
  }

  // f(callback) for each callback `Order` reaches: the pack's, then (in each group) those the module configured
  // (`module_callbacks`: its configure_callbacks() result, or an empty tuple), which replace the pack's of their type,
  // as Lightning appends them and moves checkpointing callbacks last. Loggers, the progress bar and the model summary
  // exist on rank 0 only (Lightning's rank_zero_only): `global_zero` says whether this is it.
  template <CallbackOrder Order, class ModuleCallbacks, class F>
  void for_each(bool global_zero, ModuleCallbacks& module_callbacks, F&& f) {
    using O = CallbackOrder;
    constexpr bool plain = Order == O::all || Order == O::before_module || Order == O::plain || Order == O::pack;
    constexpr bool monitoring = Order == O::all || Order == O::before_module || Order == O::monitoring || Order == O::pack;
    constexpr bool checkpointing = Order == O::all || Order == O::checkpointing || Order == O::pack;
    if constexpr (plain) visit<CallbackGroup::plain, ModuleCallbacks>(callbacks_, global_zero, f);
    if constexpr (Order == O::all || Order == O::before_module || Order == O::plain) {
      if (builtin_progress_bar_ && global_zero && !overridden_by<ProgressBar, ModuleCallbacks>::value) f(progress_bar_);
      if (builtin_model_summary_ && global_zero && !overridden_by<ModelSummary, ModuleCallbacks>::value) f(model_summary_);
    }
    if constexpr (plain) visit<CallbackGroup::plain, std::tuple<>>(module_callbacks, global_zero, f);
    if constexpr (monitoring) {
      visit<CallbackGroup::monitoring, ModuleCallbacks>(callbacks_, global_zero, f);
      visit<CallbackGroup::monitoring, std::tuple<>>(module_callbacks, global_zero, f);
    }
    if constexpr (checkpointing) {
      visit<CallbackGroup::checkpointing, ModuleCallbacks>(callbacks_, global_zero, f);
      visit<CallbackGroup::checkpointing, std::tuple<>>(module_callbacks, global_zero, f);
    }
  }
  template <class F>
  void for_each_logger(bool global_zero, F&& f) {
    if constexpr (has_loggers) {
      std::tuple<> none;
      for_each<CallbackOrder::all>(global_zero, none, [&](auto& callback) {
        if constexpr (is_logger<std::decay_t<decltype(callback)>>()) f(callback);
      });
    }
  }

 private:
  template <class C>
  static constexpr bool rank_zero_only_v =
      is_logger<C>() || std::is_same_v<C, ProgressBar> || std::is_same_v<C, ModelSummary>;
  // Whether a tuple has a callback of group G: a hook with none costs no instantiation at all (most Trainers have
  // few callbacks, and every hook asks every group).
  template <CallbackGroup G, class Tuple>
  struct has_group;
  template <CallbackGroup G, class... Cs>
  struct has_group<G, std::tuple<Cs...>>
      : std::bool_constant<((callback_group<std::decay_t<unwrap_reference_t<std::decay_t<Cs>>>>() == G) || ... ||
                            false)> {};
  // f(callback) for each callback of group G in `tuple` that the module's callbacks (`Overriding`) do not replace.
  template <CallbackGroup G, class Overriding, class Tuple, class F>
  static void visit(Tuple& tuple, [[maybe_unused]] bool global_zero, [[maybe_unused]] F& f) {
    if constexpr (has_group<G, std::remove_const_t<Tuple>>::value) {
      std::apply(
          [&](auto&... callbacks) {
            [[maybe_unused]] auto one = [&](auto& callback) {
              using C = std::decay_t<decltype(callback)>;
              if constexpr (callback_group<C>() == G && !overridden_by<C, Overriding>::value) {
                if constexpr (rank_zero_only_v<C>) {
                  if (!global_zero) return;
                }
                f(callback);
              }
            };
            (one(unwrap(callbacks)), ...);
          },
          tuple);
    }
  }

  std::tuple<Callbacks...> callbacks_;
  ProgressBar progress_bar_;
  ModelSummary model_summary_;
  bool builtin_progress_bar_, builtin_model_summary_;
};
}  // namespace detail

TRAINLOOP_DETAIL_END
