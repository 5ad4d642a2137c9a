// trainloop: the Trainer, Lightning's face: the entry points (fit, validate, test, predict), the stage around each,
// and the dispatch of every hook to the callbacks and the module, in Lightning's order (docs/trainer.md has the table;
// tests/torch/test_trainer_trace.cpp pins it). What runs inside a stage lives in its own unit: loops/fit_loop.hpp
// (training on the Engine), loops/evaluation_loop.hpp, loops/optimization.hpp, checkpoint_connector.hpp.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <variant>
#include <vector>

#include "parts/core/function.hpp"
#include "parts/core/hooks.hpp"
#include "parts/torch/callback_list.hpp"
#include "parts/torch/checkpoint_connector.hpp"
#include "parts/torch/device.hpp"
#include "parts/torch/loops/evaluation_loop.hpp"
#include "parts/torch/loops/fit_loop.hpp"
#include "parts/torch/loops/optimization.hpp"
#include "parts/torch/module.hpp"
#include "parts/torch/trainer_core.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {

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
  // The units of the Trainer (loops/, checkpoint_connector.hpp): they run its procedures on its state.
  template <class, class, class, class, class>
  friend class detail::FitLoop;
  template <class>
  friend struct detail::EvalHooks;
  friend struct detail::EvaluationLoop;
  friend struct detail::OptimizerCalls;
  friend struct detail::AutomaticOptimization;
  friend struct detail::ManualOptimization;
  friend struct detail::CallbackCheckpoints;

 public:
  explicit Trainer(TrainerOptions options = TrainerOptions(), Callbacks... callbacks)
      : TrainerCore(std::move(options), Callbacks_::has_loggers), callbacks_(options_, std::move(callbacks)...) {}

  std::tuple<Callbacks...>& callbacks() noexcept { return callbacks_.tuple(); }
  template <class C>
  C& callback() noexcept {
    return callbacks_.template get<C>();
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
    configure_callbacks(module);
    const std::string resolved_ckpt = detail::CallbackCheckpoints::resolve_path(*this, module, ckpt_path);
    fitting_ = true;
    struct Done {
      Trainer& t;
      bool completed = false;
      ~Done() {
        t.fitting_ = false;
        t.checkpoints_.end_fit(completed);
      }
    } done{*this};
    checkpoints_.save = [this, &module](const std::string& path, bool weights_only, CheckpointFormat format) {
      return checkpoints_.write(path, weights_only, format, module, module.hparams(), [&](auto& contents) {
        detail::CallbackCheckpoints::add(*this, module, contents);
      });
    };
    checkpoints_.train_data_state = nullptr;
    run_stage(module, Stage::train, "fit", [&] {
      detail::Held<TrainData> train{make_train()};
      detail::Held<ValData> val{make_val()};
      shard_for_ranks(train.get());
      shard_for_ranks(val.get());
      [[maybe_unused]] auto in_sync = strategy_.train_module(module, options_);  // data-parallel: gradients averaged
      if constexpr (detail::is_detected_v<detail::state_dict_t, std::remove_reference_t<decltype(train.get())>>)
        checkpoints_.train_data_state = [&train] { return train.get().state_dict(); };
      detail::FitLoop<Trainer, Module, decltype(train), decltype(val), Batch>(*this, module, train, val).run(resolved_ckpt);
      // save_checkpoint keeps working after fit (the module must still be alive): the data's position as fit left it.
      if (auto& position = checkpoints_.train_data_state) position = [state = position()] { return state; };
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
    configure_callbacks(module);
    run_stage(module, stage, is_test ? "test" : "validate", [&] {
      detail::Held<Data> held{make_data()};
      shard_for_ranks(held.get());
      const BatchLimit& limit = is_test ? options_.limit_test_batches() : options_.limit_val_batches();
      detail::EvaluationLoop::run<false>(*this, module, held.get(), stage,
                                         eval_limit(limit, held.get(), is_test ? "limit_test_batches" : "limit_val_batches"));
    });
    return logs_.host_values(logs_.store(stage));
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
    configure_callbacks(module);
    std::vector<Out> predictions;
    run_stage(module, Stage::predict, "predict", [&] {
      detail::Held<Data> held{make_data()};
      predictions = detail::EvaluationLoop::run<true>(
          *this, module, held.get(), Stage::predict,
          eval_limit(options_.limit_predict_batches(), held.get(), "limit_predict_batches"));
    });
    return predictions;
  }

  template <class Module>
  static constexpr void check_module() {
    static_assert(detail::is_lightning_module<Module>::value,
                  "trainloop: the module must derive from trainloop::LightningModule<Module> (CRTP: "
                  "struct Net : trainloop::LightningModule<Net> { ... })");
    static_assert(detail::check_lightning_names<Module>());
  }

  // --- hook dispatch: callbacks in order (then the built-in ones), then the module ---------------------------------

  using Callbacks_ = detail::CallbackList<Callbacks...>;
  using Order = detail::CallbackOrder;
  // f(callback) for every callback `order` reaches, in hook order (callback_list.hpp): the pack's and those `module`'s
  // configure_callbacks() returned.
  template <Order order = Order::all, class Module, class F>
  void for_each_callback(const Module&, F&& f) {
    using Configured = typename detail::module_callbacks<Module>::type;
    if constexpr (std::tuple_size_v<Configured> > 0) {
      if (module_callbacks_type_ && *module_callbacks_type_ == typeid(Configured))
        return callbacks_.template for_each<order>(is_global_zero(), *static_cast<Configured*>(module_callbacks_.get()), f);
    }
    std::tuple<> none;
    callbacks_.template for_each<order>(is_global_zero(), none, f);
  }
  // Lightning's configure_callbacks, the first hook of every entry point: what the module returns joins the pack for
  // this stage and stays until the next one (save_checkpoint after fit sees it), replacing the pack's callbacks of its
  // types, as Lightning's _attach_model_callbacks does (and says so).
  template <class Module>
  void configure_callbacks(Module& module) {
    using Hook = detail::lightning_hook<detail::tags::configure_callbacks>;
    Hook::template check_module<Module>();
    if constexpr (Hook::template callable<Module>) {
      if (tuning_) return;
      using Configured = detail::module_callbacks_t<Module>;
      check_configured_callbacks(static_cast<Configured*>(nullptr));
      module_callbacks_ = std::make_shared<Configured>(detail::as_callback_tuple(module.configure_callbacks()));
      module_callbacks_type_ = &typeid(Configured);
      std::string overridden;
      auto name = [&](auto* callback, bool present) {
        using C = std::remove_pointer_t<decltype(callback)>;
        if (present && detail::overridden_by<C, Configured>::value)
          overridden += (overridden.empty() ? "" : ", ") + detail::type_name<C>();
      };
      (name(static_cast<detail::unwrap_reference_t<Callbacks>*>(nullptr), true), ...);
      name(static_cast<ProgressBar*>(nullptr), options_.enable_progress_bar() && !Callbacks_::template has<ProgressBar>());
      name(static_cast<ModelSummary*>(nullptr), options_.enable_model_summary() && !Callbacks_::template has<ModelSummary>());
      if (!overridden.empty() && detail::process_rank() == 0)
        std::fprintf(stderr, "The following callbacks returned in %s::configure_callbacks will override existing "
                     "callbacks passed to Trainer: %s\n", detail::type_name<Module>().c_str(), overridden.c_str());
    } else {
      (void)module;
    }
  }
  template <class... Configured>
  static constexpr void check_configured_callbacks(std::tuple<Configured...>*) {
    using detail::unwrap_reference_t;
    static_assert(!(detail::is_logger<std::decay_t<unwrap_reference_t<std::decay_t<Configured>>>>() || ... || false),
                  "trainloop: configure_callbacks() returned a logger; loggers are the Trainer's (pass them to its "
                  "constructor), as in Lightning");
    static_assert((detail::check_lightning_names<std::decay_t<unwrap_reference_t<std::decay_t<Configured>>>>() && ... && true));
  }
  template <class F>
  void for_each_logger(F&& f) {
    callbacks_.for_each_logger(is_global_zero(), f);
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
    for_each_callback<Order::before_module>(module, [&](auto& cb) { call_callback<Tag>(cb, module, args...); });
    auto result = call_module<Tag>(module, args...);
    for_each_callback<Order::checkpointing>(module, [&](auto& cb) { call_callback<Tag>(cb, module, args...); });
    return result;
  }

  // --- setup shared by every entry point ---------------------------------------------------------------------------

  // One instantiation per module: the stage's body is borrowed, so fit, validate, test and predict share it.
  template <class Module>
  void run_stage(Module& module, Stage stage, const std::string& stage_name, detail::FunctionRef<void()> body) {
    prepare_stage(stage, stage_name);
    module.to(device_);
    detail::ManualOptimization::connect(*this, module);
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
      strategy_.on_exception();
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

  // --- optimisation ------------------------------------------------------------------------------------------------

  template <class Module>
  void configure_optimizers(Module& module) {
    optimizers_.clear();
    if constexpr (detail::lightning_hook<detail::tags::configure_optimizers>::callable<Module>) {
      optimizers_ = detail::to_optimizers(module.configure_optimizers());
      if (tuning_)
        for (auto& config : optimizers_) config = OptimizerConfig(config.optimizer());
    }
    check_optimizers(detail::type_name<Module>(), module.automatic_optimization());
  }

  // --- loggers -------------------------------------------------------------------------------------------------------

  // One record to every logger: the pending values, read to the host with one transfer, plus "epoch". This is where
  // logging syncs the device, and only when something is written.
  void write_logs() {
    if constexpr (Callbacks_::has_loggers) {
      if (!logs_.has_pending()) return;
      if (!is_global_zero()) return logs_.drop_pending();  // loggers write on rank 0 only
      profiled(profiler_actions::write_logs, [&] {
        const std::map<std::string, double> record = logs_.take_record(progress_.current_epoch);
        for_each_logger([&](auto& logger) { logger.log_metrics(progress_.global_step, record); });
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

  template <class Engine>
  static constexpr void check_callback_engine_hooks() {
    static_assert((detail::check_engine_hook_signatures<detail::unwrap_reference_t<Callbacks>, Engine>() && ... && true));
  }

  Callbacks_ callbacks_;
  std::shared_ptr<void> module_callbacks_;                // what the last stage's configure_callbacks() returned
  const std::type_info* module_callbacks_type_ = nullptr;  // its type (detail::module_callbacks_t)
};

template <class... Callbacks>
Trainer(TrainerOptions, Callbacks...) -> Trainer<Callbacks...>;

TRAINLOOP_DETAIL_END
