// trainloop: the Trainer's callbacks: the compile-time pack as given, the built-in progress bar and model summary
// (added unless the options turn them off or the pack has its own), and the one place that says in which order a
// hook reaches them (docs/trainer.md: hook order). Visiting costs nothing for a group the pack does not have.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <tuple>
#include <type_traits>
#include <utility>

#include "parts/core/hooks.hpp"
#include "parts/torch/callbacks/model_summary.hpp"
#include "parts/torch/callbacks/progress_bar.hpp"
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

  // f(callback) for each callback `Order` reaches. Loggers, the progress bar and the model summary exist on rank 0
  // only (Lightning's rank_zero_only): `global_zero` says whether this is it.
  template <CallbackOrder Order, class F>
  void for_each(bool global_zero, F&& f) {
    using O = CallbackOrder;
    if constexpr (Order == O::all || Order == O::before_module || Order == O::plain || Order == O::pack)
      visit<CallbackGroup::plain>(global_zero, f);
    if constexpr (Order == O::all || Order == O::before_module || Order == O::plain) {
      if (builtin_progress_bar_ && global_zero) f(progress_bar_);
      if (builtin_model_summary_ && global_zero) f(model_summary_);
    }
    if constexpr (Order == O::all || Order == O::before_module || Order == O::monitoring || Order == O::pack)
      visit<CallbackGroup::monitoring>(global_zero, f);
    if constexpr (Order == O::all || Order == O::checkpointing || Order == O::pack)
      visit<CallbackGroup::checkpointing>(global_zero, f);
  }
  template <class F>
  void for_each_logger(bool global_zero, F&& f) {
    if constexpr (has_loggers)
      for_each<CallbackOrder::all>(global_zero, [&](auto& callback) {
        if constexpr (is_logger<std::decay_t<decltype(callback)>>()) f(callback);
      });
  }

 private:
  template <class C>
  static constexpr bool rank_zero_only_v =
      is_logger<C>() || std::is_same_v<C, ProgressBar> || std::is_same_v<C, ModelSummary>;
  // Whether the pack has a callback of group G: a hook with none costs no instantiation at all (most Trainers have
  // few callbacks, and every hook asks every group).
  template <CallbackGroup G>
  static constexpr bool has_group_v = ((callback_group<unwrap_reference_t<Callbacks>>() == G) || ... || false);
  template <CallbackGroup G, class F>
  void visit([[maybe_unused]] bool global_zero, [[maybe_unused]] F& f) {
    if constexpr (has_group_v<G>) {
      std::apply(
          [&](auto&... callbacks) {
            [[maybe_unused]] auto one = [&](auto& callback) {
              using C = std::decay_t<decltype(callback)>;
              if constexpr (callback_group<C>() == G) {
                if constexpr (rank_zero_only_v<C>) {
                  if (!global_zero) return;
                }
                f(callback);
              }
            };
            (one(unwrap(callbacks)), ...);
          },
          callbacks_);
    }
  }

  std::tuple<Callbacks...> callbacks_;
  ProgressBar progress_bar_;
  ModelSummary model_summary_;
  bool builtin_progress_bar_, builtin_model_summary_;
};
}  // namespace detail

TRAINLOOP_DETAIL_END
