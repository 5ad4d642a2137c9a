// trainloop: the Trainer, Lightning's face, built on the Engine. Training is an Engine whose step runs Lightning's
// batch procedure and whose events drive the epoch-level hooks; validation, test and predict are one pass over their
// data (a plain loop: they have no events of their own to dispatch, and an Engine per module type costs compile time).
// Hook order (callbacks in the order given, then the module) is Lightning's; the README has the table and
// tests/torch/test_trainer_trace.cpp pins it.
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <variant>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <typeinfo>
#include <type_traits>
#include <utility>
#include <vector>

TRAINLOOP_DETAIL_BEGIN

namespace detail {
/// fit() without validation data.
struct NoData {};

// Keeps an lvalue by reference and an rvalue by value, so fit() can run the same data several times.
template <class T>
struct Held {
  T value;
  std::remove_reference_t<T>& get() { return value; }
};

// The loss inside what training_step returns: a tensor, a struct with a `loss` member, or a map with "loss".
template <class T>
using loss_member_t = decltype(std::declval<const T&>().loss);
template <class Out>
torch::Tensor loss_of(const Out& out) {
  if constexpr (std::is_same_v<Out, torch::Tensor>) {
    return out;
  } else if constexpr (is_detected_v<loss_member_t, Out>) {
    return out.loss;
  } else if constexpr (is_map<Out>::value) {
    auto it = out.find("loss");
    if (it == out.end()) throw std::invalid_argument("training_step returned a map without a \"loss\" entry");
    return it->second;
  } else {
    static_assert(is_detected_v<loss_member_t, Out>,
                  "trainloop: training_step must return the loss: a torch::Tensor, a struct with a `loss` member, or a "
                  "map with a \"loss\" entry (or use manual optimisation)");
    return {};
  }
}

// Where a callback runs among the others for each hook (see the README's hook order):
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

// Forwards an Engine's events to an owner's `engine_event<E>(engine)`.
template <class Owner>
struct EngineEventsTo {
  Owner* owner;
#define TRAINLOOP_DETAIL_FORWARD(name)                                                                                 \
  template <class E>                                                                                                   \
  void on_##name(E& engine) {                                                                                          \
    owner->template engine_event<Event::name>(engine);                                                                 \
  }
  TRAINLOOP_DETAIL_FORWARD(started)
  TRAINLOOP_DETAIL_FORWARD(epoch_started)
  TRAINLOOP_DETAIL_FORWARD(get_batch_started)
  TRAINLOOP_DETAIL_FORWARD(get_batch_completed)
  TRAINLOOP_DETAIL_FORWARD(iteration_started)
  TRAINLOOP_DETAIL_FORWARD(iteration_completed)
  TRAINLOOP_DETAIL_FORWARD(epoch_completed)
  TRAINLOOP_DETAIL_FORWARD(completed)
  TRAINLOOP_DETAIL_FORWARD(terminate)
  TRAINLOOP_DETAIL_FORWARD(terminate_single_epoch)
  TRAINLOOP_DETAIL_FORWARD(data_exhausted)
  TRAINLOOP_DETAIL_FORWARD(interrupt)
#undef TRAINLOOP_DETAIL_FORWARD
  template <class E>
  void on_exception_raised(E& engine, std::exception_ptr) {
    owner->template engine_event<Event::exception_raised>(engine);
  }
};

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

template <class C>
using last_model_path_t = decltype(std::declval<const C&>().last_model_path());
template <class C>
using state_key_t = decltype(std::declval<const C&>().state_key());
// A callback's tensors in checkpoints (EMA weights): TensorDict tensor_state() const, load_tensor_state(const TensorDict&).
template <class C>
using tensor_state_t = decltype(std::declval<const C&>().tensor_state());
template <class C>
using load_tensor_state_t = decltype(std::declval<C&>().load_tensor_state(std::declval<const TensorDict&>()));

// trainloop's DataLoader re-shards itself for data-parallel ranks.
template <class D>
using shard_t = decltype(std::declval<D&>().shard(std::int64_t{}, std::int64_t{}), std::declval<const D&>().options().world_size());

// fit() data as it is kept: an lvalue by reference, an rvalue (or a value a data hook returned) by value.
template <class D>
using held_t = std::conditional_t<std::is_rvalue_reference_v<D>, std::remove_reference_t<D>, D>;

// Data given to validate()/test()/predict() as the data-making callable every stage takes (the data hooks' way):
// one type, so validate(m, d) and test(m, d) share an instantiation.
template <class Data>
struct GivenData {
  Data&& data;
  Data&& operator()() const { return std::forward<Data>(data); }
};

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

namespace tags = lightning_tags;
}  // namespace detail

/// The Trainer: `Trainer trainer(TrainerOptions().max_epochs(5), MyCallback{});` then
/// `trainer.fit(model, train_data, val_data)`, `trainer.test(model, test_data)`.
///
/// Callbacks are a compile-time pack: types declaring any Lightning callback hooks (taking trainer&, module&, ...; a
/// TrainerCore& and a torch::nn::Module& serve every Trainer and module) and/or Engine hooks (they then receive the
/// training Engine's events). A ProgressBar and a ModelSummary are added unless options turn them off or the pack has
/// its own.
template <class... Callbacks>
class Trainer : public TrainerCore {
 public:
  explicit Trainer(TrainerOptions options = TrainerOptions(), Callbacks... callbacks)
      : TrainerCore(std::move(options), has_loggers), callbacks_(std::move(callbacks)...) {
    static_assert((detail::check_lightning_names<detail::unwrap_reference_t<Callbacks>>() && ... && true));
    builtin_progress_bar_ = options_.enable_progress_bar() && !has_callback_type<ProgressBar>();
    builtin_model_summary_ = options_.enable_model_summary() && !has_callback_type<ModelSummary>();
  }

  std::tuple<Callbacks...>& callbacks() noexcept { return callbacks_; }
  template <class C>
  C& callback() noexcept {
    return detail::unwrap(std::get<C>(callbacks_));
  }

  // --- entry points ------------------------------------------------------------------------------------------------

  /// Trains `module` on `train_data`, validating on `val_data` when given (sanity check first, then at the cadence of
  /// val_check_interval / check_val_every_n_epoch).
  template <class Module, class TrainData, class ValData = detail::NoData,
            class = std::enable_if_t<!std::is_convertible_v<TrainData, std::string> &&
                                     !std::is_convertible_v<ValData, std::string>>>
  void fit(Module& module, TrainData&& train_data, ValData&& val_data = ValData{}, const std::string& ckpt_path = "") {
    fit_with(
        module, [&]() -> TrainData&& { return std::forward<TrainData>(train_data); },
        [&]() -> ValData&& { return std::forward<ValData>(val_data); }, ckpt_path);
  }
  /// Lightning's `fit(model, train_dataloaders=data, ckpt_path="last")`: no validation data, resuming from a
  /// checkpoint file, "last" or "best".
  template <class Module, class TrainData, class = std::enable_if_t<!std::is_convertible_v<TrainData, std::string>>>
  void fit(Module& module, TrainData&& train_data, const std::string& ckpt_path) {
    fit(module, std::forward<TrainData>(train_data), detail::NoData{}, ckpt_path);
  }
  /// Lightning's most common form: the data comes from the module's train_dataloader() (and val_dataloader(), when
  /// it has one and a validation_step), called once setup() and configure_model() have run.
  template <class Module>
  void fit(Module& module, const std::string& ckpt_path = "") {
    static_assert(detail::lightning_hook<detail::tags::train_dataloader>::callable<Module>,
                  "trainloop: fit(module): the module has no train_dataloader(); give the data: "
                  "fit(module, train_data, val_data)");
    auto train = [&module]() -> decltype(auto) { return module.train_dataloader(); };
    if constexpr (detail::lightning_hook<detail::tags::val_dataloader>::callable<Module> &&
                  detail::is_detected_v<detail::call_validation_step_t, Module,
                                        detail::batch_of_data_t<decltype(module.val_dataloader())>&, std::int64_t>)
      fit_with(module, train, [&module]() -> decltype(auto) { return module.val_dataloader(); }, ckpt_path);
    else
      fit_with(module, train, [] { return detail::NoData{}; }, ckpt_path);
  }

  /// Runs validation_step over `data` (or the module's val_dataloader()) once; returns the epoch metrics logged
  /// (read to the host).
  template <class Module, class Data>
  std::map<std::string, double> validate(Module& module, Data&& data) {
    return evaluate_with<detail::tags::validation_step>(module, detail::GivenData<Data>{std::forward<Data>(data)});
  }
  template <class Module>
  std::map<std::string, double> validate(Module& module) {
    return evaluate_with<detail::tags::validation_step>(module, module_data<detail::tags::val_dataloader>(module));
  }
  /// Runs test_step over `data` (or the module's test_dataloader()) once; returns the epoch metrics logged (read to
  /// the host).
  template <class Module, class Data>
  std::map<std::string, double> test(Module& module, Data&& data) {
    return evaluate_with<detail::tags::test_step>(module, detail::GivenData<Data>{std::forward<Data>(data)});
  }
  template <class Module>
  std::map<std::string, double> test(Module& module) {
    return evaluate_with<detail::tags::test_step>(module, module_data<detail::tags::test_dataloader>(module));
  }
  /// Runs predict_step over `data` (or the module's predict_dataloader()); returns its outputs in order.
  template <class Module, class Data>
  auto predict(Module& module, Data&& data) {
    return predict_with(module, detail::GivenData<Data>{std::forward<Data>(data)});
  }
  template <class Module>
  auto predict(Module& module) {
    return predict_with(module, module_data<detail::tags::predict_dataloader>(module));
  }

 private:
  template <class>
  friend struct detail::EvalHooks;

  // --- entry points' bodies: the data is made (a data hook called) once setup and configure_model have run --------

  template <class DataTag, class Module>
  static auto module_data(Module& module) {
    static_assert(detail::lightning_hook<DataTag>::template callable<Module>,
                  "trainloop: validate(module)/test(module)/predict(module) take the data from the module's "
                  "val_dataloader()/test_dataloader()/predict_dataloader(), which it does not have; give the data");
    return [&module]() -> decltype(auto) { return detail::lightning_hook<DataTag>::call(module); };
  }

  template <class Module, class MakeTrain, class MakeVal>
  void fit_with(Module& module, MakeTrain&& make_train, MakeVal&& make_val, const std::string& ckpt_path) {
    using TrainData = detail::held_t<decltype(make_train())>;
    using ValData = detail::held_t<decltype(make_val())>;
    using Batch = detail::batch_of_data_t<TrainData>;
    constexpr bool has_val = !std::is_same_v<std::decay_t<ValData>, detail::NoData>;
    check_module<Module>();
    static_assert(detail::lightning_hook<detail::tags::training_step>::callable<Module, Batch&, std::int64_t>,
                  "trainloop: fit(): the module has no training_step(Batch& batch, std::int64_t batch_idx) for the "
                  "batches of the training data");
    detail::lightning_hook<detail::tags::training_step>::check_module<Module, Batch&, std::int64_t>();
    if constexpr (has_val) {
      using ValBatch = detail::batch_of_data_t<ValData>;
      static_assert(detail::lightning_hook<detail::tags::validation_step>::callable<Module, ValBatch&, std::int64_t>,
                    "trainloop: fit() was given validation data, but the module has no "
                    "validation_step(Batch& batch, std::int64_t batch_idx) for its batches");
      // overfit_batches validates on the training batches, which a validation_step for another batch type can't take.
      if constexpr (!detail::lightning_hook<detail::tags::validation_step>::callable<Module, Batch&, std::int64_t>)
        if (options_.overfit_batches().is_set())
          throw std::invalid_argument("trainloop: overfit_batches validates on the training batches, but " +
                                      detail::type_name<Module>() +
                                      "::validation_step does not take them (only the validation data's batches)");
    }
    const std::string resolved_ckpt = resolve_ckpt_path(ckpt_path);
    fitting_ = true;
    struct Done {
      Trainer& t;
      bool completed = false;
      ~Done() {
        t.fitting_ = false;
        t.train_engine_ = nullptr;
        if (!completed) {  // a failed fit cannot be saved afterwards
          t.save_ = nullptr;
          t.train_data_state_ = nullptr;
        }
      }
    } done{*this};
    save_ = [this, &module](const std::string& path, bool weights_only) {
      return write_fit_checkpoint(path, weights_only, module, module.hparams(),
                                  [&](CheckpointContents& contents) { add_checkpoint_contents(module, contents); });
    };
    train_data_state_ = nullptr;
    run_stage(module, Stage::train, "fit", [&] {
      detail::Held<TrainData> train{make_train()};
      detail::Held<ValData> val{make_val()};
      shard_for_ranks(train.get());
      shard_for_ranks(val.get());
#if TRAINLOOP_WITH_DISTRIBUTED
      // Gradients averaged over the ranks while fit trains (rank 0's weights broadcast first).
      struct DropSync {
        Trainer& t;
        ~DropSync() { t.ddp_.reset(); }
      } drop_sync{*this};
      if (group_) ddp_ = std::make_unique<distributed::DistributedDataParallel>(module, group_, options_.ddp());
#endif
      FitContext<Module, decltype(train), decltype(val), Batch> fit(*this, module, train, val);
      fit.ckpt_path = resolved_ckpt;
      if constexpr (detail::is_detected_v<detail::state_dict_t, std::remove_reference_t<decltype(train.get())>>)
        train_data_state_ = [&train] { return train.get().state_dict(); };
      fit.run();
      // save_checkpoint keeps working after fit (the module must still be alive): the data's position as fit left it.
      if (train_data_state_) train_data_state_ = [state = train_data_state_()] { return state; };
    });
    done.completed = true;
  }

  template <class StepTag, class Module, class MakeData>
  std::map<std::string, double> evaluate_with(Module& module, MakeData&& make_data) {
    using Data = detail::held_t<decltype(make_data())>;
    static_assert(detail::lightning_hook<StepTag>::template callable<Module, detail::batch_of_data_t<Data>&, std::int64_t>,
                  "trainloop: validate()/test(): the module has no validation_step/test_step(Batch& batch, "
                  "std::int64_t batch_idx) for the batches of the data");
    return evaluate_stage(module, make_data,
                          std::is_same_v<StepTag, detail::tags::test_step> ? Stage::test : Stage::validate);
  }
  // validate() and test() share this body (the stage is a run-time value): one instantiation for both.
  template <class Module, class MakeData>
  std::map<std::string, double> evaluate_stage(Module& module, MakeData& make_data, Stage stage) {
    using Data = detail::held_t<decltype(make_data())>;
    const bool is_test = stage == Stage::test;
    check_module<Module>();
    run_stage(module, stage, is_test ? "test" : "validate", [&] {
      detail::Held<Data> held{make_data()};
      shard_for_ranks(held.get());
      const BatchLimit& limit = is_test ? options_.limit_test_batches() : options_.limit_val_batches();
      run_evaluation<false>(module, held.get(), stage,
                            eval_limit(limit, held.get(), is_test ? "limit_test_batches" : "limit_val_batches"));
    });
    return host_values(metrics_[index(stage)]);
  }

  template <class Module, class MakeData>
  auto predict_with(Module& module, MakeData&& make_data) {
    using Data = detail::held_t<decltype(make_data())>;
    using Batch = detail::batch_of_data_t<Data>;
    static_assert(detail::lightning_hook<detail::tags::predict_step>::callable<Module, Batch&, std::int64_t>,
                  "trainloop: predict(): the module has no predict_step(Batch& batch, std::int64_t batch_idx)");
    using Out = std::decay_t<decltype(std::declval<Module&>().predict_step(std::declval<Batch&>(), std::int64_t{}))>;
    static_assert(!std::is_void_v<Out>, "trainloop: predict_step must return its prediction");
    check_module<Module>();
    std::vector<Out> predictions;
    run_stage(module, Stage::predict, "predict", [&] {
      detail::Held<Data> held{make_data()};
      predictions = run_evaluation<true>(module, held.get(), Stage::predict,
                                         eval_limit(options_.limit_predict_batches(), held.get(), "limit_predict_batches"));
    });
    return predictions;
  }

  // --- checkpoint hooks ------------------------------------------------------------------------------------------

  // `owner...` is (trainer, module) for a callback, nothing for the module.
  template <class H, class... Owner>
  static void save_checkpoint_hooks(H& h, StateDict& entries, TensorDict& tensors, Owner&... owner) {
    constexpr bool with_entries = detail::is_detected_v<detail::on_save_checkpoint_t, H, Owner&..., StateDict&>;
    constexpr bool with_tensors = detail::is_detected_v<detail::on_save_checkpoint_t, H, Owner&..., TensorDict&>;
    static_assert(!detail::declares_on_save_checkpoint<H>::value || with_entries || with_tensors,
                  "trainloop: on_save_checkpoint cannot be called as on_save_checkpoint(StateDict& checkpoint) or "
                  "on_save_checkpoint(TensorDict& checkpoint) (a callback's: (trainer&, module&, StateDict&) or "
                  "(trainer&, module&, TensorDict&))");
    if constexpr (with_entries) h.on_save_checkpoint(owner..., entries);
    if constexpr (with_tensors) h.on_save_checkpoint(owner..., tensors);
  }
  template <class H, class... Owner>
  static void load_checkpoint_hooks(H& h, const StateDict& entries, const TensorDict& tensors, Owner&... owner) {
    constexpr bool with_entries = detail::is_detected_v<detail::on_load_checkpoint_t, H, Owner&..., const StateDict&>;
    constexpr bool with_tensors = detail::is_detected_v<detail::on_load_checkpoint_t, H, Owner&..., const TensorDict&>;
    static_assert(!detail::declares_on_load_checkpoint<H>::value || with_entries || with_tensors,
                  "trainloop: on_load_checkpoint cannot be called as on_load_checkpoint(const StateDict& checkpoint) "
                  "or on_load_checkpoint(const TensorDict& checkpoint) (a callback's: (trainer&, module&, const "
                  "StateDict&) or (trainer&, module&, const TensorDict&))");
    if constexpr (with_entries) h.on_load_checkpoint(owner..., entries);
    if constexpr (with_tensors) h.on_load_checkpoint(owner..., tensors);
  }

  template <class C>
  static constexpr bool has_callback_type() {
    return (std::is_same_v<detail::unwrap_reference_t<Callbacks>, C> || ... || false);
  }

  template <class Module>
  static constexpr void check_module() {
    static_assert(detail::is_lightning_module<Module>::value,
                  "trainloop: the module must derive from trainloop::LightningModule<Module> (CRTP: "
                  "struct Net : trainloop::LightningModule<Net> { ... })");
    static_assert(detail::check_lightning_names<Module>());
  }

  // --- hook dispatch: callbacks in order (then the built-in ones), then the module ---------------------------------

  // Every callback, in hook order: plain ones (then the built-ins), monitoring ones, checkpointing ones.
  template <class F>
  void for_each_callback(F&& f) {
    for_each_callback_before_module(f);
    for_each_callback_in<detail::CallbackGroup::checkpointing>(f);
  }
  template <class F>
  void for_each_callback_before_module(F&& f) {
    for_each_plain_callback(f);
    for_each_callback_in<detail::CallbackGroup::monitoring>(f);
  }
  // The plain callbacks of the pack, then the built-in progress bar and model summary.
  template <class F>
  void for_each_plain_callback(F&& f) {
    for_each_callback_in<detail::CallbackGroup::plain>(f);
    if (builtin_progress_bar_ && is_global_zero()) f(progress_bar_);
    if (builtin_model_summary_ && is_global_zero()) f(model_summary_);
  }
  // Loggers, the progress bar and the model summary exist on rank 0 only (Lightning's rank_zero_only).
  template <class C>
  static constexpr bool rank_zero_only_v =
      detail::is_logger<C>() || std::is_same_v<C, ProgressBar> || std::is_same_v<C, ModelSummary>;
  // Whether the pack has a callback of group G: a hook with none costs no instantiation at all (most Trainers have
  // few callbacks, and every hook asks every group).
  template <detail::CallbackGroup G>
  static constexpr bool has_group_v = ((detail::callback_group<detail::unwrap_reference_t<Callbacks>>() == G) || ... ||
                                       false);
  template <detail::CallbackGroup G, class F>
  void for_each_callback_in([[maybe_unused]] F&& f) {
    if constexpr (has_group_v<G>) {
      std::apply(
          [&](auto&... cb) {
            [[maybe_unused]] auto visit = [&](auto& callback) {
              using C = std::decay_t<decltype(callback)>;
              if constexpr (detail::callback_group<C>() == G) {
                if constexpr (rank_zero_only_v<C>) {
                  if (!is_global_zero()) return;
                }
                f(callback);
              }
            };
            (visit(detail::unwrap(cb)), ...);
          },
          callbacks_);
    }
  }
  template <class Tag, class C, class Module, class... Args>
  void call_callback(C& callback, Module& module, Args&... args) {
    using Hook = detail::lightning_hook<Tag>;
    Hook::template check_callback<C, Trainer&, Module&, Args&...>();
    if constexpr (Hook::template callable<C, Trainer&, Module&, Args&...>)
      profiled(hook_action<Tag, C>("[Callback]"), [&] { Hook::call(callback, *this, module, args...); });
  }
  // Returns what the module's hook returned, when it returns something (on_train_batch_start's -1).
  template <class Tag, class Module, class... Args>
  auto call_module(Module& module, Args&... args) {
    using Hook = detail::lightning_hook<Tag>;
    Hook::template check_module<Module, Args&...>();
    if constexpr (Hook::template callable<Module, Args&...>) {
      using R = decltype(Hook::call(module, args...));
      auto action = hook_action<Tag, Module>("[LightningModule]");
      if constexpr (std::is_void_v<R>) {
        profiled(action, [&] { Hook::call(module, args...); });
        return std::monostate{};
      } else {
        return profiled(action, [&] { return Hook::call(module, args...); });
      }
    } else {
      return std::monostate{};
    }
  }
  // Profiler action names, each built once: "[Callback]ProgressBar.on_train_batch_end", "[LightningModule]Net.training_step".
  template <class Tag, class Owner>
  static auto hook_action(const char* kind) {
    return [kind]() -> const std::string& {
      static const std::string action =
          hook_action_name(kind, typeid(Owner).name(), detail::lightning_hook<Tag>::name_string);
      return action;
    };
  }

  template <class Tag, class Module, class... Args>
  auto call_hook(Module& module, Args&&... args) {
    for_each_callback_before_module([&](auto& cb) { call_callback<Tag>(cb, module, args...); });
    auto result = call_module<Tag>(module, args...);
    for_each_callback_in<detail::CallbackGroup::checkpointing>([&](auto& cb) { call_callback<Tag>(cb, module, args...); });
    return result;
  }

  // --- setup shared by every entry point ---------------------------------------------------------------------------

  // One instantiation per module: the stage's body is borrowed, so fit, validate, test and predict share it.
  template <class Module>
  void run_stage(Module& module, Stage stage, const std::string& stage_name, detail::FunctionRef<void()> body) {
    prepare_stage(stage, stage_name);
    module.to(device_);
    runtime_.backward = [this, &module](torch::Tensor& loss) { backward(module, loss); };
    runtime_.step = [this, &module](torch::optim::Optimizer& optimizer) {
      count_optimizer_step(step_optimizer(module, optimizer, false));
    };
    runtime_.zero_grad = [this, &module](torch::optim::Optimizer& optimizer) { zero_grad(module, optimizer, false); };
    // Lightning's lr_scheduler_step(scheduler, metric): the module steps its schedulers itself when it has one.
    using SchedulerStep = detail::lightning_hook<detail::tags::lr_scheduler_step>;
    SchedulerStep::template check_module<Module, const SchedulerConfig&, std::optional<double>>();
    scheduler_step_ = [&module](const SchedulerConfig& scheduler, std::optional<double> metric) {
      if constexpr (SchedulerStep::template callable<Module, const SchedulerConfig&, std::optional<double>>) {
        module.lr_scheduler_step(scheduler, metric);
      } else {
        (void)module;
        if (metric) scheduler.step(*metric);
        else scheduler.step();
      }
    };
    module.attach_runtime_(&runtime_);
    struct Detach {
      Module& m;
      ~Detach() { m.attach_runtime_(nullptr); }
    } detach{module};
    try {
      call_module<detail::tags::prepare_data>(module);
      call_hook<detail::tags::setup>(module, stage_name);  // loggers create their folders here: before any work
      call_module<detail::tags::configure_model>(module);
      if (stage != Stage::predict)
        for_each_logger([&](auto& logger) {
          if constexpr (detail::is_detected_v<detail::log_hyperparams_t, std::decay_t<decltype(logger)>>)
            logger.log_hyperparams(module.hparams());
        });
      body();
      write_logs();
      call_hook<detail::tags::teardown>(module, stage_name);
      finalize_loggers("success");
    } catch (...) {
      std::exception_ptr error = std::current_exception();
      call_hook<detail::tags::on_exception>(module, error);
#if TRAINLOOP_WITH_DISTRIBUTED
      if (group_) group_->abort_local_ranks();  // ranks this process started cannot finish without it
#endif
      try {
        finalize_loggers("failed");
      } catch (...) {  // the original error matters more than a logger's failure to close
      }
      throw;
    }
    if (profiling_) report_profile();
  }

  // --- data-parallel setup ----------------------------------------------------------------------------------------

  // trainloop DataLoaders serve each rank its shard (unless the user sharded them, or asked not to).
  template <class D>
  void shard_for_ranks(D& data) {
    if constexpr (detail::is_detected_v<detail::shard_t, D>) {
      if (world_size() > 1 && options_.use_distributed_sampler() && data.options().world_size() == 1)
        data.shard(global_rank(), world_size());
    } else {
      (void)data;
    }
  }
  void finalize_loggers(const std::string& status) {
    for_each_logger([&](auto& logger) {
      if constexpr (detail::is_detected_v<detail::finalize_t, std::decay_t<decltype(logger)>>) logger.finalize(status);
    });
  }
  template <class Data>
  std::optional<std::int64_t> eval_limit(const BatchLimit& limit, Data& data, const char* option) const {
    if (options_.fast_dev_run() > 0) return options_.fast_dev_run();
    return limit.apply(detail::data_size(data), option);
  }

  // --- checkpoint state --------------------------------------------------------------------------------------------

  // "last" and "best" name what a ModelCheckpoint in the pack wrote, in this process or (after a crash) on disk in
  // its folder; anything else is a path.
  std::string resolve_ckpt_path(const std::string& ckpt_path) {
    if (ckpt_path != "last" && ckpt_path != "best") return ckpt_path;
    std::string found, folders;
    for_each_callback([&](auto& callback) {
      using C = std::decay_t<decltype(callback)>;
      if constexpr (detail::is_detected_v<detail::last_model_path_t, C>) {
        if (found.empty()) found = callback.find_checkpoint(ckpt_path);
        folders += (folders.empty() ? "'" : ", '") + callback.dirpath() + "'";
      }
    });
    if (found.empty())
      throw std::invalid_argument("trainloop: fit(..., \"" + ckpt_path + "\"): " +
                                  (folders.empty() ? std::string("there is no ModelCheckpoint in this Trainer")
                                                   : "no " + ckpt_path + " checkpoint in " + folders) +
                                  "; give a path");
    return found;
  }

  // Callbacks with state are keyed by their type, plus state_key() when they have one (two of a type need it).
  template <class C>
  static std::string callback_key(const C& callback) {
    std::string key = "callback/" + detail::type_name<C>();
    if constexpr (detail::is_detected_v<detail::state_key_t, C>) key += "/" + callback.state_key();
    return key;
  }

  // The callbacks' part of fit's checkpoint (the loop's own is TrainerCore's): their states, then Lightning's
  // on_save_checkpoint entries, the callbacks' and then the module's.
  template <class Module>
  void add_checkpoint_contents(Module& module, CheckpointContents& contents) {
    // The values logged so far reach the loggers and their files first, so their states (how many records each
    // holds) cover everything logged before this checkpoint: a run resumed from it keeps exactly those records.
    write_logs();
    for_each_logger([](auto& logger) {
      if constexpr (detail::is_detected_v<detail::logger_flush_t, std::decay_t<decltype(logger)>>) logger.flush();
    });
    for_each_callback([&](auto& callback) {
      using C = std::decay_t<decltype(callback)>;
      if constexpr (detail::is_detected_v<detail::state_dict_t, C>) {
        const std::string key = callback_key(callback);
        if (contents.states.count(key))
          throw std::logic_error("trainloop: two callbacks of type " + detail::type_name<C>() +
                                 " would share the checkpoint key '" + key + "'; give them distinct state_key()s");
        contents.states[key] = callback.state_dict();
      }
      if constexpr (detail::is_detected_v<detail::tensor_state_t, C>)
        contents.tensors[callback_key(callback)] = callback.tensor_state();
    });
    for_each_callback([&](auto& callback) {
      save_checkpoint_hooks(callback, contents.entries, contents.entry_tensors, *this, module);
    });
    save_checkpoint_hooks(module, contents.entries, contents.entry_tensors);
  }

  // The model and optimizers (and the RNG), then on_load_checkpoint (module, then callbacks), then the callbacks'
  // states (a callback whose saved state is empty is not asked to load it, as in Lightning).
  template <class Module>
  LoadedCheckpoint restore_module_and_callbacks(const std::string& path, Module& module) {
    LoadedCheckpoint loaded = load_fit_checkpoint(path, module);
    const StateDict& checkpoint = loaded.entries();
    const TensorDict& checkpoint_tensors = loaded.entry_tensors();
    restoring(path, "checkpoint", [&] {
      load_checkpoint_hooks(module, checkpoint, checkpoint_tensors);
      for_each_callback([&](auto& callback) { load_checkpoint_hooks(callback, checkpoint, checkpoint_tensors, *this, module); });
    });
    for_each_callback([&](auto& callback) {
      using C = std::decay_t<decltype(callback)>;
      if constexpr (detail::is_detected_v<detail::load_state_dict_t, C>) {
        auto it = loaded.states.find(callback_key(callback));
        if (it != loaded.states.end() && !it->second.empty())
          restoring(path, it->first, [&] { callback.load_state_dict(it->second); });
      }
      if constexpr (detail::is_detected_v<detail::load_tensor_state_t, C>) {
        const std::string key = callback_key(callback);
        const TensorDict& tensors = loaded.need_tensors(path, key);
        restoring(path, key + " (tensors)", [&] { callback.load_tensor_state(tensors); });
      }
    });
    return loaded;
  }

  // The counters, where the loop stood, the schedulers, the values callbacks monitor, the epoch's running sums and
  // the training data's position. Returns the loop's state for the training Engine; `data_positioned` tells whether
  // the data restored its own position (else the Engine skips what the epoch consumed).
  template <class TrainHeld>
  StateDict restore_training_state(const std::string& path, const LoadedCheckpoint& loaded, TrainHeld& train,
                                   bool& data_positioned) {
    StateDict loop = restore_loop_state(path, loaded);
    data_positioned = false;
    if constexpr (detail::is_detected_v<detail::load_state_dict_t, std::remove_reference_t<decltype(train.get())>>) {
      if (std::optional<StateDict> data_state = train_data_state(loaded)) {
        restoring(path, "train_data", [&] { train.get().load_state_dict(*data_state); });
        data_positioned = true;
      }
    }
    return loop;
  }

  // --- optimisation ------------------------------------------------------------------------------------------------

  template <class Module>
  void configure_optimizers(Module& module) {
    optimizers_.clear();
    if constexpr (detail::lightning_hook<detail::tags::configure_optimizers>::callable<Module>) {
      optimizers_ = detail::to_optimizers(module.configure_optimizers());
    }
    check_optimizers(detail::type_name<Module>(), module.automatic_optimization());
  }

  // The gradients unscaled ("16-mixed"), on_before_optimizer_step, clipping (the module's
  // configure_gradient_clipping when it has one), then the step (the module's optimizer_step(epoch, batch_idx,
  // optimizer) when it has one: it must call optimizer.step()), unless the loss scaler skips it (inf/NaN gradients).
  // Manual optimisation steps the optimizer itself, as Lightning's does. Returns whether the optimizer stepped.
  template <class Module>
  bool step_optimizer(Module& module, torch::optim::Optimizer& optimizer, bool automatic) {
    using Clipping = detail::lightning_hook<detail::tags::configure_gradient_clipping>;
    Clipping::template check_module<Module, torch::optim::Optimizer&, double, ClipAlgorithm>();
#if TRAINLOOP_WITH_DISTRIBUTED
    if (ddp_) ddp_->wait();  // the gradients averaged over the ranks (once per backward; later optimizers find it done)
#endif
    precision_.unscale(optimizer);  // the hook and clipping see the true gradients, as in Lightning
    call_hook<detail::tags::on_before_optimizer_step>(module, optimizer);
    return profiled(profiler_actions::optimizer_step, [&] {
      const double limit = options_.gradient_clip_val();
      const ClipAlgorithm algorithm = options_.gradient_clip_algorithm();
      if constexpr (Clipping::template callable<Module, torch::optim::Optimizer&, double, ClipAlgorithm>) {
        if (automatic) module.configure_gradient_clipping(optimizer, limit, algorithm);
        else clip_gradients(optimizer, limit, algorithm);
      } else {
        clip_gradients(optimizer, limit, algorithm);
      }
      return precision_.step(optimizer, [&] {
        if constexpr (detail::is_detected_v<detail::optimizer_step_hook_t, Module, torch::optim::Optimizer>) {
          if (automatic) {
            module.optimizer_step(current_epoch_, batch_idx_, optimizer);
            return;
          }
        }
        optimizer.step();
      });
    });
  }
  // Automatic optimisation's step: every optimizer, counted once when at least one stepped.
  template <class Module>
  void step_optimizers(Module& module) {
    bool stepped = false;
    for (const auto& config : optimizers_) stepped = step_optimizer(module, *config.optimizer(), true) || stepped;
    count_optimizer_step(stepped);
  }
  // on_before_zero_grad, then the module's optimizer_zero_grad(epoch, batch_idx, optimizer) or optimizer.zero_grad().
  template <class Module>
  void zero_grad(Module& module, torch::optim::Optimizer& optimizer, bool automatic) {
    call_hook<detail::tags::on_before_zero_grad>(module, optimizer);
    profiled(profiler_actions::zero_grad, [&] {
      if constexpr (detail::is_detected_v<detail::optimizer_zero_grad_hook_t, Module, torch::optim::Optimizer>) {
        if (automatic) {
          module.optimizer_zero_grad(current_epoch_, batch_idx_, optimizer);
          return;
        }
      }
      optimizer.zero_grad();
    });
  }
  // The loss scaled ("16-mixed"), on_before_backward, the module's backward(loss) or loss.backward(),
  // on_after_backward. The hooks get the scaled loss, as in Lightning.
  template <class Module>
  void backward(Module& module, const torch::Tensor& unscaled_loss) {
    using Backward = detail::lightning_hook<detail::tags::backward>;
    Backward::template check_module<Module, torch::Tensor&>();
    torch::Tensor loss = precision_.scale_loss(unscaled_loss);
    call_hook<detail::tags::on_before_backward>(module, loss);
    profiled(profiler_actions::backward, [&] {
      if constexpr (Backward::template callable<Module, torch::Tensor&>) module.backward(loss);
      else loss.backward();
    });
    call_hook<detail::tags::on_after_backward>(module);
  }
  // --- logged values -------------------------------------------------------------------------------------------------

  // --- loggers -------------------------------------------------------------------------------------------------------

  template <class C>
  static constexpr bool is_logger_v = detail::is_logger<detail::unwrap_reference_t<C>>();
  static constexpr bool has_loggers = (is_logger_v<Callbacks> || ... || false);
  template <class F>
  void for_each_logger(F&& f) {
    for_each_callback([&](auto& callback) {
      if constexpr (detail::is_logger<std::decay_t<decltype(callback)>>()) f(callback);
    });
  }

  // One record to every logger: the pending values, read to the host with one transfer, plus "epoch". This is where
  // logging syncs the device, and only when something is written.
  void write_logs() {
    if constexpr (has_loggers) {
      if (pending_log_.empty() && pending_host_log_.empty()) return;
      if (!is_global_zero()) {  // loggers write on rank 0 only
        pending_log_.clear();
        pending_host_log_.clear();
        return;
      }
      profiled(profiler_actions::write_logs, [&] {
        const std::map<std::string, double> record = take_log_record();
        for_each_logger([&](auto& logger) { logger.log_metrics(global_step_, record); });
      });
    }
  }
  // --- batches ------------------------------------------------------------------------------------------------------

  // Lightning's transfer hooks, then the move to the device (skipped on CPU, where the batch is used as given).
  template <class Module, class Batch>
  Batch* transfer(Module& module, Batch& raw, std::optional<Batch>& slot) {
    using Before = detail::lightning_hook<detail::tags::on_before_batch_transfer>;
    using To = detail::lightning_hook<detail::tags::transfer_batch_to_device>;
    using After = detail::lightning_hook<detail::tags::on_after_batch_transfer>;
    Before::template check_module<Module, Batch, int>();
    To::template check_module<Module, Batch, torch::Device, int>();
    After::template check_module<Module, Batch, int>();
    constexpr bool hooked = Before::template callable<Module, Batch, int> ||
                            To::template callable<Module, Batch, torch::Device, int> ||
                            After::template callable<Module, Batch, int>;
    if (!hooked && device_.is_cpu()) return &raw;
    Batch batch = raw;
    if constexpr (Before::template callable<Module, Batch, int>) batch = module.on_before_batch_transfer(std::move(batch), 0);
    if constexpr (To::template callable<Module, Batch, torch::Device, int>)
      batch = module.transfer_batch_to_device(std::move(batch), device_, 0);
    else
      batch = detail::to_device(std::move(batch), device_);
    if constexpr (After::template callable<Module, Batch, int>) batch = module.on_after_batch_transfer(std::move(batch), 0);
    slot.reset();
    slot.emplace(std::move(batch));
    return &*slot;
  }

  // One training batch, Lightning's procedure. The batch-start hooks already ran (iteration_started).
  template <class Module, class Batch>
  auto train_batch(Module& module, EngineCore& core, Batch& batch) {
    std::int64_t batch_idx = batch_idx_;
#if TRAINLOOP_WITH_DISTRIBUTED
    if (ddp_) ddp_->sync_buffers();  // rank 0's buffers (batch-norm statistics) before the forward
#endif
    using Out = decltype(module.training_step(batch, batch_idx));
    if constexpr (std::is_void_v<Out>) {
      if (module.automatic_optimization())
        throw std::logic_error("trainloop: " + detail::type_name<Module>() +
                               "::training_step returns nothing, so there is no loss to optimise; return it, or use "
                               "manual optimisation with automatic_optimization(false)");
      profiled(hook_action<detail::tags::training_step, Module>("[LightningModule]"),
               [&] {
                 [[maybe_unused]] auto autocast = precision_.forward_guard();
                 module.training_step(batch, batch_idx);
               });
      const std::monostate out{};
      end_train_batch(module, out, batch, batch_idx);
      return out;
    } else {
      return train_batch_with_output(module, core, batch, batch_idx);
    }
  }
  template <class Module, class Batch>
  auto train_batch_with_output(Module& module, EngineCore& core, Batch& batch, std::int64_t batch_idx) {
    auto out = profiled(hook_action<detail::tags::training_step, Module>("[LightningModule]"),
                        [&] {
                          [[maybe_unused]] auto autocast = precision_.forward_guard();
                          return module.training_step(batch, batch_idx);
                        });
    if (module.automatic_optimization()) {
      torch::Tensor loss;
      try {
        loss = detail::loss_of(out);
      } catch (const std::invalid_argument& error) {
        throw std::runtime_error("trainloop: " + detail::type_name<Module>() + "::" + error.what());
      }
      check_loss(loss, batch_idx, &detail::type_name<Module>);
      const auto accumulate = accumulate_grad_batches_;
      const bool last_batch = core.state.epoch_length && core.state.epoch_iteration >= *core.state.epoch_length;
      const bool step_now = (batch_idx + 1) % accumulate == 0 || last_batch;
      if (batches_since_step_ == 0)
        for (const auto& config : optimizers_) zero_grad(module, *config.optimizer(), true);
#if TRAINLOOP_WITH_DISTRIBUTED
      if (ddp_) ddp_->require_sync(step_now);  // accumulation micro-steps: no communication until the batch that steps
#endif
      backward(module, accumulate > 1 ? loss / static_cast<double>(accumulate) : loss);
#if TRAINLOOP_WITH_DISTRIBUTED
      if (ddp_) ddp_->require_sync(true);
#endif
      ++batches_since_step_;
      if (step_now) step_optimizers(module);
    }
    end_train_batch(module, out, batch, batch_idx);
    return out;
  }
  // The batch is counted and its step values published before on_train_batch_end, so callbacks (a checkpoint
  // monitoring a step metric) see this batch's values, and a checkpoint written there holds the counted batch.
  template <class Module, class Out, class Batch>
  void end_train_batch(Module& module, const Out& out, Batch& batch, std::int64_t batch_idx) {
    precision_.update();  // once per batch, after all its steps (manual optimisation's too)
    ++total_batches_;
    publish_step_values(metrics_[index(Stage::train)]);
    loop_point_ = LoopPoint::batch_end;
    call_hook<detail::tags::on_train_batch_end>(module, out, batch, batch_idx);
    write_logs();
  }

  // --- evaluation (validate, test, predict; the sanity check) -----------------------------------------------------

  // The step's tag for an evaluation stage. Validation and test share one instantiation of run_evaluation (and of its
  // Engine), the stage choosing their hooks at run time: a TU that validates and tests compiles one loop, not two.
  template <bool Predict, class F>
  static decltype(auto) with_eval_tag(Stage stage, F&& f) {
    if constexpr (Predict)
      return f(detail::tags::predict_step{});
    else if (stage == Stage::test)
      return f(detail::tags::test_step{});
    else
      return f(detail::tags::validation_step{});
  }

  // Validation or test (Predict false: `stage` says which; nothing is kept), or predict (its outputs, in order).
  template <bool Predict, class Module, class Data>
  auto run_evaluation(Module& module, Data& data, Stage stage, std::optional<std::int64_t> limit) {
    using Batch = detail::batch_of_data_t<Data&>;
    using Stored = typename detail::prediction_of<Predict, Module, Batch>::type;
    std::vector<Stored> outputs;
    if (limit && *limit == 0) return outputs;

    const bool sanity = sanity_checking_;  // set by the fit's SanityCheckScope
    EvaluationScope scope(*this, module, stage, limit ? limit : detail::data_size(data));
    MetricStore& store = scope.store();
    // Lightning's mode hooks: on_validation_model_zero_grad before a validation inside fit, then
    // on_<stage>_model_eval (default: eval()); on_<stage>_model_train after on_<stage>_end (default: the mode
    // restored).
    if (stage == Stage::validate && fitting_ && !sanity) {
      if constexpr (detail::lightning_hook<detail::tags::on_validation_model_zero_grad>::callable<Module>)
        call_module<detail::tags::on_validation_model_zero_grad>(module);
      else if (batches_since_step_ == 0)  // release the gradients, unless an accumulation window still needs them
        module.zero_grad();
    }
    with_eval_tag<Predict>(stage, [&](auto tag) { model_mode_hooks<decltype(tag)>(module, true); });
    torch::NoGradGuard no_grad;

    with_eval_tag<Predict>(stage, [&](auto tag) { detail::EvalHooks<decltype(tag)>::start(*this, module); });
    std::optional<Batch> slot;
    profiled(stage == Stage::test      ? profiler_actions::run_test
             : stage == Stage::predict ? profiler_actions::run_predict
                                       : profiler_actions::run_validation,
             [&] {
               auto source = detail::make_data_source<Batch>(data);
               for (std::int64_t batch_idx = 0; !limit || batch_idx < *limit; ++batch_idx) {
                 Batch* raw = source.next();
                 if (!raw) break;
                 Batch* batch = transfer(module, *raw, slot);
                 with_eval_tag<Predict>(stage, [&](auto tag) {
                   eval_batch<decltype(tag)>(module, *batch, batch_idx, outputs);
                 });
                 publish_step_values(store);
               }
             });
    with_eval_tag<Predict>(stage, [&](auto tag) { detail::EvalHooks<decltype(tag)>::epoch_end(*this, module); });
    scope.end_epoch();
    if (!sanity) write_logs();
    with_eval_tag<Predict>(stage, [&](auto tag) { detail::EvalHooks<decltype(tag)>::end(*this, module); });
    scope.restore_mode =
        !with_eval_tag<Predict>(stage, [&](auto tag) { return model_mode_hooks<decltype(tag)>(module, false); });
    return outputs;
  }

  // One evaluation batch: its start hooks, the step (profiled, under the precision's autocast), its end hooks; a
  // prediction is kept.
  template <class StepTag, class Module, class Batch, class Stored>
  void eval_batch(Module& module, Batch& batch, std::int64_t batch_idx, std::vector<Stored>& outputs) {
    if constexpr (detail::lightning_hook<StepTag>::template callable<Module, Batch&, std::int64_t>) {
      using Out = std::decay_t<decltype(detail::lightning_hook<StepTag>::call(module, batch, batch_idx))>;
      detail::EvalHooks<StepTag>::batch_start(*this, module, batch, batch_idx);
      auto action = hook_action<StepTag, Module>("[LightningModule]");
      if constexpr (std::is_void_v<Out>) {
        profiled(action, [&] {
          [[maybe_unused]] auto autocast = precision_.forward_guard();
          detail::lightning_hook<StepTag>::call(module, batch, batch_idx);
        });
        detail::EvalHooks<StepTag>::batch_end(*this, module, std::monostate{}, batch, batch_idx);
      } else {
        Out out = profiled(action, [&] {
          [[maybe_unused]] auto autocast = precision_.forward_guard();
          return detail::lightning_hook<StepTag>::call(module, batch, batch_idx);
        });
        detail::EvalHooks<StepTag>::batch_end(*this, module, out, batch, batch_idx);
        if constexpr (std::is_same_v<StepTag, detail::tags::predict_step>) outputs.push_back(std::move(out));
      }
    } else {  // the entry points check the step exists before they evaluate a stage
      throw std::logic_error("trainloop: internal error: " + detail::type_name<Module>() + " has no " +
                             detail::lightning_hook<StepTag>::name_string + " for this evaluation");
    }
  }

  // on_<stage>_model_eval (eval: true) or on_<stage>_model_train; returns whether the module has the hook (without
  // it, eval() is called, or the previous mode is restored). Predict has no train hook, as in Lightning.
  template <class StepTag, class Module>
  bool model_mode_hooks(Module& module, bool eval) {
    using namespace detail::tags;
    auto call = [&](auto tag) {
      using Tag = decltype(tag);
      detail::lightning_hook<Tag>::template check_module<Module>();
      if constexpr (detail::lightning_hook<Tag>::template callable<Module>) {
        call_module<Tag>(module);
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

  // --- fit ------------------------------------------------------------------------------------------------------------

  template <class Module, class TrainHeld, class ValHeld, class Batch>
  struct FitContext {
    FitContext(Trainer& t, Module& m, TrainHeld& train_data, ValHeld& val_data)
        : trainer(&t), module(&m), train(&train_data), val(&val_data) {}
    Trainer* trainer;
    Module* module;
    TrainHeld* train;
    ValHeld* val;
    static constexpr bool has_val = !std::is_same_v<std::decay_t<decltype(std::declval<ValHeld&>().get())>, detail::NoData>;

    std::optional<Batch> slot;
    Batch* batch = nullptr;
    std::string ckpt_path;  // resume from this checkpoint when set
    Profiler::Clock::time_point fetch_started;

    void run() {
      Trainer& t = *trainer;
      const TrainerOptions& o = t.options_;
      t.configure_optimizers(*module);
      module->train();
      t.begin_fit(detail::data_size(train->get()));
      // Resuming, as Lightning: the model and callbacks before on_fit_start, the loop's counters after it.
      std::optional<LoadedCheckpoint> loaded;
      if (!ckpt_path.empty()) loaded = t.restore_module_and_callbacks(ckpt_path, *module);
      if constexpr (has_val) {
        t.fit_.val_limit = o.overfit_batches().is_set()
                               ? t.num_training_batches_
                               : t.eval_limit(o.limit_val_batches(), val->get(), "limit_val_batches");
        t.check_val_check_interval();
      }

      t.template call_hook<detail::tags::on_fit_start>(*module);
      std::optional<StateDict> loop_state;
      bool data_positioned = false;
      if (loaded) {
        loop_state = t.restore_training_state(ckpt_path, *loaded, *train, data_positioned);
        loaded.reset();
        t.note_resume_point(*loop_state);
      }
      if constexpr (has_val) {
        // The sanity check runs on resume too (Lightning's does), isolated from the fit (SanityCheckScope).
        std::optional<std::int64_t> limit;
        if (t.sanity_check_due(limit)) {
          SanityCheckScope sanity_check(t);
          t.template call_hook<detail::tags::on_sanity_check_start>(*module);
          validate_now(limit);
          t.template call_hook<detail::tags::on_sanity_check_end>(*module);
        }
      }
      t.template call_hook<detail::tags::on_train_start>(*module);
      if ((!t.num_training_batches_ || *t.num_training_batches_ > 0) && !t.finished_before(loop_state)) {
        auto engine = make_engine<Batch>(
            [this](EngineCore& core, Batch&) {
              return trainer->profiled(profiler_actions::run_training_batch,
                                       [&] { return trainer->train_batch(*module, core, *batch); });
            },
            detail::EngineEventsTo<FitContext>{this});
        check_callback_engine_hooks<decltype(engine)>();
        TrainingEngineScope running(t, engine);
        if (loop_state) engine.state.load_state_dict(*loop_state);
        RunOptions run;
        run.max_epochs(t.max_epochs_to_run());
        if (t.num_training_batches_) run.epoch_length(static_cast<std::uint64_t>(*t.num_training_batches_));
        run.restart_data_each_epoch(true);
        run.skip_consumed_batches(!data_positioned);  // plain ranges resume mid-epoch at the right batch too
        engine.run(train->get(), run);
        if (engine.interrupted())
          throw std::logic_error("trainloop: the training Engine was interrupted; in a Trainer, stop with "
                                 "trainer.should_stop(true) or trainer.terminate()");
      }
      t.loop_point_ = LoopPoint::training_done;
      t.template call_hook<detail::tags::on_train_end>(*module);
      t.template call_hook<detail::tags::on_fit_end>(*module);
    }

    template <class Engine>
    static constexpr void check_callback_engine_hooks() {
      static_assert((detail::check_engine_hook_signatures<detail::unwrap_reference_t<Callbacks>, Engine>() && ... && true));
    }

    void validate_now(std::optional<std::int64_t> limit) {
      if constexpr (has_val) {
        constexpr bool validates_train_batches =
            detail::lightning_hook<detail::tags::validation_step>::callable<Module, Batch&, std::int64_t>;
        if constexpr (validates_train_batches) {  // overfit_batches validates on them (fit_with refused it otherwise)
          if (trainer->options_.overfit_batches().is_set()) {
            trainer->template run_evaluation<false>(*module, train->get(), Stage::validate, limit);
            return;
          }
        }
        trainer->template run_evaluation<false>(*module, val->get(), Stage::validate, limit);
      }
    }

    // The training Engine's events: callbacks' Engine hooks first, then the Trainer's own work.
    template <Event E, class Engine>
    void engine_event(Engine& engine) {
      auto hook = [&](auto& callback) { call_engine_hook<E>(callback, engine); };
      trainer->template for_each_callback_in<detail::CallbackGroup::plain>(hook);
      trainer->template for_each_callback_in<detail::CallbackGroup::monitoring>(hook);
      trainer->template for_each_callback_in<detail::CallbackGroup::checkpointing>(hook);
      if constexpr (E == Event::get_batch_started)
        if (trainer->profiling_) fetch_started = Profiler::Clock::now();
      if constexpr (E == Event::get_batch_completed)
        if (trainer->profiling_)
          trainer->profiler_.record(profiler_actions::get_train_batch, Profiler::Clock::now() - fetch_started);
      if constexpr (E == Event::started) resume_between_epochs(engine);
      if constexpr (E == Event::epoch_started) epoch_started(engine);
      if constexpr (E == Event::iteration_started) iteration_started(engine);
      if constexpr (E == Event::iteration_completed) iteration_completed(engine);
      if constexpr (E == Event::epoch_completed) finish_epoch(engine, LoopPoint::in_batch);
    }
    template <Event E, class C, class Engine>
    static void call_engine_hook(C& callback, Engine& engine) {
      if constexpr (detail::hook<E>::template callable<C, Engine>) {
        if constexpr (E == Event::exception_raised)
          detail::hook<E>::call(callback, engine, engine.current_exception());
        else
          detail::hook<E>::call(callback, engine);
      }
    }

    // A checkpoint written during an epoch's end: what was left of it runs before the next epoch.
    void resume_between_epochs(EngineCore& engine) {
      auto& fit = trainer->fit_;
      if (!fit.resumed_at || fit.resuming_mid_epoch) return;
      const LoopPoint point = *fit.resumed_at;
      fit.resumed_at.reset();
      if (point == LoopPoint::epoch_validation || point == LoopPoint::epoch_hooks || point == LoopPoint::epoch_rest)
        finish_epoch(engine, point);
      trainer->loop_point_ = LoopPoint::between_batches;
    }

    void epoch_started(EngineCore& engine) {
      Trainer& t = *trainer;
      t.start_epoch(engine.state);
      module->train();
      t.template call_hook<detail::tags::on_train_epoch_start>(*module);  // again at a mid-epoch resume, as in Lightning
      if (t.fit_.resuming_mid_epoch) {  // what was left of the batch the checkpoint was written at runs now
        t.fit_.resuming_mid_epoch = false;
        const LoopPoint point = t.fit_.resumed_at.value_or(LoopPoint::between_batches);
        t.fit_.resumed_at.reset();
        t.batch_idx_ = static_cast<std::int64_t>(engine.state.epoch_iteration) - 1;
        if (point == LoopPoint::batch_end) {
          finish_batch(engine);
        } else if (point == LoopPoint::batch_validation) {
          t.loop_point_ = LoopPoint::batch_validation;
          validate_now(t.fit_.val_limit);
        }
        t.loop_point_ = LoopPoint::between_batches;
      }
    }

    template <class Engine>
    void iteration_started(Engine& engine) {
      Trainer& t = *trainer;
      t.loop_point_ = LoopPoint::in_batch;
      t.batch_idx_ = static_cast<std::int64_t>(engine.state.epoch_iteration) - 1;
      batch = t.transfer(*module, *engine.batch(), slot);
      auto result = t.template call_hook<detail::tags::on_train_batch_start>(*module, *batch, t.batch_idx_);
      if constexpr (std::is_convertible_v<decltype(result), int>) {
        if (static_cast<int>(result) == -1) {  // Lightning: -1 skips the rest of the epoch, this batch included
          t.skip_rest_of_epoch_ = true;
          t.loop_point_ = LoopPoint::between_batches;
          engine.terminate_epoch();
        }
      }
    }

    // After a batch's on_train_batch_end: the stop checks, then a mid-epoch validation when due.
    void iteration_completed(EngineCore& engine) {
      finish_batch(engine);
      trainer->loop_point_ = LoopPoint::between_batches;
    }
    void finish_batch(EngineCore& engine) {
      Trainer& t = *trainer;
      if (t.terminate_requested_) return engine.terminate();
      const bool out_of_time = t.out_of_time();
      if (has_val && t.validation_due_at_batch_end(engine.state, out_of_time)) {
        t.loop_point_ = LoopPoint::batch_validation;
        validate_now(t.fit_.val_limit);
        t.loop_point_ = LoopPoint::between_batches;
      }
      if (t.stop_due(out_of_time)) {  // the epoch ends here, then the fit
        t.stop_after_epoch_ = true;
        engine.terminate_epoch();
      }
    }

    // The epoch's end, from the start (`from` = in_batch) or from where a checkpoint was written.
    void finish_epoch(EngineCore& engine, LoopPoint from) {
      Trainer& t = *trainer;
      if (from == LoopPoint::in_batch) {
        if (!t.num_training_batches_ && engine.state.epoch_length)  // unsized data: the first pass told its length
          t.num_training_batches_ = static_cast<std::int64_t>(*engine.state.epoch_length);
        if (t.batches_since_step_ > 0 && module->automatic_optimization()) {  // the epoch ended inside a window
          t.step_optimizers(*module);
          t.precision_.update();
        }
      }
      if (from == LoopPoint::in_batch || from == LoopPoint::epoch_validation) {
        if (has_val && t.validation_at_epoch_end() && t.validation_due_this_epoch() && !t.skip_rest_of_epoch_) {
          t.loop_point_ = LoopPoint::epoch_validation;  // its on_validation_end moves on to epoch_hooks
          validate_now(t.fit_.val_limit);
        }
        from = LoopPoint::epoch_hooks;
      }
      if (from == LoopPoint::epoch_hooks) {
        // on_train_epoch_end: callbacks, the module, the epoch's train values, the monitoring callbacks; then the
        // checkpointing callbacks, whose checkpoints resume with what follows.
        auto epoch_end = [&](auto& callback) {
          t.template call_callback<detail::tags::on_train_epoch_end>(callback, *module);
        };
        t.loop_point_ = LoopPoint::epoch_hooks;
        t.for_each_plain_callback(epoch_end);
        t.template call_module<detail::tags::on_train_epoch_end>(*module);
        t.publish_epoch_values(t.metrics_[index(Stage::train)]);
        t.template for_each_callback_in<detail::CallbackGroup::monitoring>(epoch_end);
        t.loop_point_ = LoopPoint::epoch_rest;
        t.template for_each_callback_in<detail::CallbackGroup::checkpointing>(epoch_end);
      }
      t.write_logs();
      t.end_epoch(engine);
    }
  };

  std::tuple<Callbacks...> callbacks_;
  ProgressBar progress_bar_;
  ModelSummary model_summary_;
  bool builtin_progress_bar_ = false;
  bool builtin_model_summary_ = false;

};

template <class... Callbacks>
Trainer(TrainerOptions, Callbacks...) -> Trainer<Callbacks...>;

TRAINLOOP_DETAIL_END
