// trainloop: the evaluation loop: validation, test and predict are one pass over their data with Lightning's hooks
// around each batch and the stage (a plain loop: they have no events of their own to dispatch, and an Engine per
// module type costs compile time). Validation and test share one instantiation, the stage choosing their hooks at run
// time. The sanity check and fit's validations run through it too.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "parts/core/data_source.hpp"
#include "parts/core/hooks.hpp"
#include "parts/torch/logging.hpp"
#include "parts/torch/module.hpp"
#include "parts/torch/profiler.hpp"
#include "parts/torch/trainer_core.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
namespace tags = lightning_tags;

// The hooks around each evaluation kind (validation, test, predict); the step is the tag's own.
template <class StepTag>
struct EvalHooks;
#define TRAINLOOP_DETAIL_EVAL_HOOKS(step_tag, prefix)                                                                  \
  template <>                                                                                                          \
  struct EvalHooks<lightning_tags::step_tag> {                                                                         \
    template <class T, class M>                                                                                        \
    static void start(T& t, M& m) {                                                                                    \
      t.template call_hook<lightning_tags::on_##prefix##_start>(m);                                                    \
      t.template call_hook<lightning_tags::on_##prefix##_epoch_start>(m);                                              \
    }                                                                                                                  \
    template <class T, class M, class B>                                                                               \
    static void batch_start(T& t, M& m, B& batch, std::int64_t& batch_idx) {                                           \
      t.template call_hook<lightning_tags::on_##prefix##_batch_start>(m, batch, batch_idx);                            \
    }                                                                                                                  \
    template <class T, class M, class O, class B>                                                                      \
    static void batch_end(T& t, M& m, const O& out, B& batch, std::int64_t& batch_idx) {                               \
      t.template call_hook<lightning_tags::on_##prefix##_batch_end>(m, out, batch, batch_idx);                         \
    }                                                                                                                  \
    template <class T, class M>                                                                                        \
    static void epoch_end(T& t, M& m) {                                                                                \
      t.template call_hook<lightning_tags::on_##prefix##_epoch_end>(m);                                                \
    }                                                                                                                  \
    template <class T, class M>                                                                                        \
    static void end(T& t, M& m) {                                                                                      \
      t.template call_hook<lightning_tags::on_##prefix##_end>(m);                                                      \
    }                                                                                                                  \
  };
TRAINLOOP_DETAIL_EVAL_HOOKS(validation_step, validation)
TRAINLOOP_DETAIL_EVAL_HOOKS(test_step, test)
TRAINLOOP_DETAIL_EVAL_HOOKS(predict_step, predict)
#undef TRAINLOOP_DETAIL_EVAL_HOOKS

// What an evaluation keeps per batch: predict_step's output for predict, nothing for validation and test.
template <bool Predict, class Module, class Batch>
struct prediction_of {
  using type = std::monostate;
};
template <class Module, class Batch>
struct prediction_of<true, Module, Batch> {
  using type = std::decay_t<decltype(lightning_hook<lightning_tags::predict_step>::call(
      std::declval<Module&>(), std::declval<Batch&>(), std::int64_t{}))>;
};

// What an evaluation changes, put back when it ends (by an exception too): the stage, the metric store the module
// logs to, the module's mode (unless an on_<stage>_model_train hook took care of it). A sanity check's evaluation
// (SanityCheckScope owns the flag) publishes nothing and leaves no values in the store.
class EvaluationScope {
 public:
  // `batches`: the evaluation's batch count (nullopt: unknown), for num_val_batches() and the progress bar.
  TRAINLOOP_DETAIL_API EvaluationScope(TrainerCore& trainer, torch::nn::Module& module, Stage stage,
                                       std::optional<std::int64_t> batches);
  TRAINLOOP_DETAIL_API ~EvaluationScope();
  EvaluationScope(const EvaluationScope&) = delete;
  EvaluationScope& operator=(const EvaluationScope&) = delete;
  MetricStore& store() const noexcept { return store_; }
  // After the evaluation's last batch: the epoch's values published (not the sanity check's), and a validation
  // inside fit moves the loop point on (see LoopPoint).
  TRAINLOOP_DETAIL_API void end_epoch();
  bool restore_mode = true;

 private:
  TrainerCore& trainer_;
  torch::nn::Module& module_;
  Stage stage_, previous_stage_;
  bool sanity_, was_training_;
  MetricStore& store_;
};

// The loop itself; `T` is the Trainer (which befriends it).
struct EvaluationLoop {
  // The step's tag for an evaluation stage. Validation and test share one instantiation of run(), the stage choosing
  // their hooks at run time: a TU that validates and tests compiles one loop, not two.
  template <bool Predict, class F>
  static decltype(auto) with_tag(Stage stage, F&& f) {
    if constexpr (Predict)
      return f(tags::predict_step{});
    else if (stage == Stage::test)
      return f(tags::test_step{});
    else
      return f(tags::validation_step{});
  }

  // Validation or test (Predict false: `stage` says which; nothing is kept), or predict (its outputs, in order).
  template <bool Predict, class T, class Module, class Data>
  static auto run(T& t, Module& module, Data& data, Stage stage, std::optional<std::int64_t> limit) {
    using Batch = batch_of_data_t<Data&>;
    using Stored = typename prediction_of<Predict, Module, Batch>::type;
    std::vector<Stored> outputs;
    if (limit && *limit == 0) return outputs;

    const bool sanity = t.sanity_checking_;  // set by the fit's SanityCheckScope
    EvaluationScope scope(t, module, stage, limit ? limit : data_size(data));
    MetricStore& store = scope.store();
    // Lightning's mode hooks: on_validation_model_zero_grad before a validation inside fit, then
    // on_<stage>_model_eval (default: eval()); on_<stage>_model_train after on_<stage>_end (default: the mode
    // restored).
    if (stage == Stage::validate && t.fitting_ && !sanity) {
      if constexpr (lightning_hook<tags::on_validation_model_zero_grad>::callable<Module>)
        t.template call_module<tags::on_validation_model_zero_grad>(module);
      else if (t.progress_.batches_since_step == 0)  // release the gradients, unless an accumulation window still needs them
        module.zero_grad();
    }
    with_tag<Predict>(stage, [&](auto tag) { mode_hooks<decltype(tag)>(t, module, true); });
    torch::NoGradGuard no_grad;

    with_tag<Predict>(stage, [&](auto tag) { EvalHooks<decltype(tag)>::start(t, module); });
    std::optional<Batch> slot;
    t.profiled(stage == Stage::test      ? profiler_actions::run_test
               : stage == Stage::predict ? profiler_actions::run_predict
                                         : profiler_actions::run_validation,
               [&] {
               auto source = make_data_source<Batch>(data);
               for (std::int64_t batch_idx = 0; !limit || batch_idx < *limit; ++batch_idx) {
                 Batch* raw = source.next();
                 if (!raw) break;
                 Batch* batch = t.transfer(module, *raw, slot);
                 with_tag<Predict>(stage, [&](auto tag) {
                   run_batch<decltype(tag)>(t, module, *batch, batch_idx, outputs);
                 });
                 t.publish_step_values(store);
               }
             });
    with_tag<Predict>(stage, [&](auto tag) { EvalHooks<decltype(tag)>::epoch_end(t, module); });
    scope.end_epoch();
    if (!sanity) t.write_logs();
    with_tag<Predict>(stage, [&](auto tag) { EvalHooks<decltype(tag)>::end(t, module); });
    scope.restore_mode =
        !with_tag<Predict>(stage, [&](auto tag) { return mode_hooks<decltype(tag)>(t, module, false); });
    return outputs;
  }

  // One evaluation batch: its start hooks, the step (profiled, under the precision's autocast), its end hooks; a
  // prediction is kept.
  template <class StepTag, class T, class Module, class Batch, class Stored>
  static void run_batch(T& t, Module& module, Batch& batch, std::int64_t batch_idx, std::vector<Stored>& outputs) {
    if constexpr (lightning_hook<StepTag>::template callable<Module, Batch&, std::int64_t>) {
      using Out = std::decay_t<decltype(lightning_hook<StepTag>::call(module, batch, batch_idx))>;
      EvalHooks<StepTag>::batch_start(t, module, batch, batch_idx);
      auto action = T::template hook_action<StepTag, Module>("[LightningModule]");
      if constexpr (std::is_void_v<Out>) {
        t.profiled(action, [&] {
          [[maybe_unused]] auto autocast = t.precision_.forward_guard();
          lightning_hook<StepTag>::call(module, batch, batch_idx);
        });
        EvalHooks<StepTag>::batch_end(t, module, std::monostate{}, batch, batch_idx);
      } else {
        Out out = t.profiled(action, [&] {
          [[maybe_unused]] auto autocast = t.precision_.forward_guard();
          return lightning_hook<StepTag>::call(module, batch, batch_idx);
        });
        EvalHooks<StepTag>::batch_end(t, module, out, batch, batch_idx);
        if constexpr (std::is_same_v<StepTag, tags::predict_step>) outputs.push_back(std::move(out));
      }
    } else {  // the entry points check the step exists before they evaluate a stage
      throw std::logic_error("trainloop: internal error: " + type_name<Module>() + " has no " +
                             lightning_hook<StepTag>::name_string + " for this evaluation");
    }
  }

  // on_<stage>_model_eval (eval: true) or on_<stage>_model_train; returns whether the module has the hook (without
  // it, eval() is called, or the previous mode is restored). Predict has no train hook, as in Lightning.
  template <class StepTag, class T, class Module>
  static bool mode_hooks(T& t, Module& module, bool eval) {
    using namespace tags;
    auto call = [&](auto tag) {
      using Tag = decltype(tag);
      lightning_hook<Tag>::template check_module<Module>();
      if constexpr (lightning_hook<Tag>::template callable<Module>) {
        t.template call_module<Tag>(module);
        return true;
      } else {
        return false;
      }
    };
    bool called = false;
    if constexpr (std::is_same_v<StepTag, validation_step>)
      called = eval ? call(on_validation_model_eval{}) : call(on_validation_model_train{});
    else if constexpr (std::is_same_v<StepTag, test_step>)
      called = eval ? call(on_test_model_eval{}) : call(on_test_model_train{});
    else if (eval)
      called = call(on_predict_model_eval{});
    if (eval && !called) module.eval();
    return called;
  }
};
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API detail::EvaluationScope::EvaluationScope(TrainerCore& trainer, torch::nn::Module& module,
                                                              Stage stage, std::optional<std::int64_t> batches)
    : trainer_(trainer),
      module_(module),
      stage_(stage),
      previous_stage_(trainer.stage_),
      sanity_(trainer.sanity_checking_),
      was_training_(module.is_training()),
      store_(trainer.logs_.store(stage)) {
  trainer_.stage_ = stage;
  trainer_.runtime_.stage = stage;
  trainer_.runtime_.metrics = &store_;
  store_.start_epoch();
  (stage == Stage::test ? trainer_.num_test_batches_
   : stage == Stage::predict ? trainer_.num_predict_batches_
                             : trainer_.num_val_batches_) = batches;
}
TRAINLOOP_DETAIL_API void detail::EvaluationScope::end_epoch() {
  if (sanity_) return;
  trainer_.publish_epoch_values(store_);
  if (stage_ == Stage::validate && trainer_.fitting_) {  // the validation's results are in: see LoopPoint
    LoopPoint& point = trainer_.progress_.point;
    if (point == LoopPoint::batch_validation) point = LoopPoint::between_batches;
    if (point == LoopPoint::epoch_validation) point = LoopPoint::epoch_hooks;
  }
}
TRAINLOOP_DETAIL_API detail::EvaluationScope::~EvaluationScope() {
  if (sanity_) store_.clear();  // the sanity check's values are not results
  if (restore_mode) module_.train(was_training_);
  trainer_.stage_ = previous_stage_;
  trainer_.runtime_.stage = previous_stage_;
  trainer_.runtime_.metrics = &trainer_.logs_.store(previous_stage_);
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
