// trainloop: everything a fit's checkpoint holds, assembled and restored in one place (Lightning's
// _CheckpointConnector): the model and optimizers (checkpoint.hpp writes them), the loop's progress and where it
// stands, the loss scaler, the values callbacks monitor and the epoch's running sums, the training data's position,
// the schedulers, the callbacks' states and Lightning's on_save_checkpoint entries. Restoring follows Lightning's two
// phases: the model and the callbacks before on_fit_start, the loop and the rest after it; the resume point then
// tells the fit loop what was left to do where the checkpoint was written.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cstdio>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "parts/core/engine.hpp"
#include "parts/core/function.hpp"
#include "parts/core/hooks.hpp"
#include "parts/core/state.hpp"
#include "parts/core/type_name.hpp"
#include "parts/torch/checkpoint.hpp"
#include "parts/torch/lightning_checkpoint.hpp"
#include "parts/torch/logger_connector.hpp"
#include "parts/torch/loop_progress.hpp"
#include "parts/torch/optim.hpp"
#include "parts/torch/precision.hpp"
#include "parts/torch/strategy.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
// A checkpoint keys a callback's state by its type, plus its state_key() when it has one (two of a type need it).
template <class C>
std::string callback_type_key() {
  return "callback/" + type_name<C>();
}
template <class C>
using state_key_t = decltype(std::declval<const C&>().state_key());
template <class C>
std::string callback_state_key(const C& callback) {
  std::string key = callback_type_key<C>();
  if constexpr (is_detected_v<state_key_t, C>) key += "/" + callback.state_key();
  return key;
}
// A ModelCheckpoint-like callback, which "last" and "best" resolve through.
template <class C>
using last_model_path_t = decltype(std::declval<const C&>().last_model_path());
// A callback's tensors in checkpoints (EMA weights): TensorDict tensor_state() const, load_tensor_state(const TensorDict&).
template <class C>
using tensor_state_t = decltype(std::declval<const C&>().tensor_state());
template <class C>
using load_tensor_state_t = decltype(std::declval<C&>().load_tensor_state(std::declval<const TensorDict&>()));

class CheckpointConnector {
 public:
  // The Trainer's objects whose states a checkpoint holds (the connector reads and restores them; they own them).
  struct Sources {
    LoopProgress& progress;
    PrecisionPolicy& precision;
    LoggerConnector& logs;
    Optimizers& optimizers;
    StrategyPolicy& strategy;
    const torch::Device& device;
  };
  explicit CheckpointConnector(Sources sources) : sources_(sources) {}

  // What fit's checkpoint holds besides the model and the optimizers: the loop's states, the callbacks' (keyed by
  // type) and Lightning's on_save_checkpoint entries.
  struct Contents {
    std::map<std::string, StateDict> states;
    std::map<std::string, TensorDict> tensors;
    StateDict entries;
    TensorDict entry_tensors;
  };
  // A checkpoint read back, for the two restoring phases.
  struct Loaded {
    std::map<std::string, StateDict> states;
    std::map<std::string, TensorDict> tensors;
    bool lightning = false;  // read from Lightning's format: no callback tensors (EMA weights), no RNG, no data position
    TRAINLOOP_DETAIL_API const StateDict& need(const std::string& path, const std::string& key) const;
    // A callback's tensor state (`key`), which a checkpoint written with that callback always holds.
    TRAINLOOP_DETAIL_API const TensorDict& need_tensors(const std::string& path, const std::string& key) const;
    // The on_save_checkpoint entries (empty when the checkpoint has none).
    TRAINLOOP_DETAIL_API const StateDict& entries() const;
    TRAINLOOP_DETAIL_API const TensorDict& entry_tensors() const;
  };

  // --- while (and after) a fit runs: what save_checkpoint needs ------------------------------------------------------

  // How to write the fit's checkpoint (set by fit: it knows the module and the callbacks' types); empty before a fit
  // and after a failed one.
  std::function<bool(const std::string& path, bool weights_only, CheckpointFormat format)> save;
  // The training data's position, when the data has one.
  std::function<StateDict()> train_data_state;
  // While the training Engine runs, checkpoints read the loop's state from it; from a copy once it is gone.
  class EngineScope {
   public:
    TRAINLOOP_DETAIL_API EngineScope(CheckpointConnector& connector, EngineCore& engine);
    TRAINLOOP_DETAIL_API ~EngineScope();
    EngineScope(const EngineScope&) = delete;
    EngineScope& operator=(const EngineScope&) = delete;

   private:
    CheckpointConnector& connector_;
    EngineCore& engine_;
  };
  // A fit's start: nothing of an earlier fit's loop is left to save.
  void begin_fit() {
    final_loop_state_.reset();
    resumed_at.reset();
    resuming_mid_epoch = false;
  }
  // Leaving fit: a failed fit cannot be saved afterwards.
  void end_fit(bool completed) {
    train_engine_ = nullptr;
    if (!completed) {
      save = nullptr;
      train_data_state = nullptr;
    }
  }

  // Writes the checkpoint: the weights only, or everything, the callbacks' part added by `add_callbacks`. Returns
  // false when it is skipped: a non-finite state while the fit terminates (TerminateOnNan).
  TRAINLOOP_DETAIL_API bool write(const std::string& path, bool weights_only, CheckpointFormat format,
                                  torch::nn::Module& module, const StateDict& hparams,
                                  FunctionRef<void(Contents&)> add_callbacks);
  // Trainer::save_checkpoint: rank 0 writes, every rank waits until the file is complete.
  TRAINLOOP_DETAIL_API bool save_on_rank_zero(const std::string& path, bool weights_only, CheckpointFormat format);

  // --- restoring --------------------------------------------------------------------------------------------------

  // Phase 1: the checkpoint read into the model and the optimizers (and the RNG); the rest waits for its phase. A file
  // in Lightning's format (torch.save's) is read through lightning_checkpoint.hpp into the same states.
  TRAINLOOP_DETAIL_API Loaded load(const std::string& path, torch::nn::Module& module);
  // Phase 2: the progress and where the loop stood, the loss scaler, the values callbacks monitor, the epoch's running
  // sums and the schedulers (the training data's position is the Trainer's, which knows the data's type). Notes the
  // resume point; returns the training Engine's state.
  TRAINLOOP_DETAIL_API StateDict restore_loop(const std::string& path, const Loaded& loaded);
  // The training data's saved position for this rank (rank 0 saved it: every rank takes the same position in its own
  // shard); nullopt when the checkpoint has none.
  TRAINLOOP_DETAIL_API std::optional<StateDict> train_data_position(const Loaded& loaded) const;

  // A state's own load error (a missing key in a DataLoader's state) names the checkpoint and the state's key too.
  template <class F>
  static void restoring(const std::string& path, const std::string& key, F&& load) {
    try {
      load();
    } catch (const std::exception& error) {
      throw_restore_error(path, key, error);
    }
  }

  // The resume point: where the checkpoint a fit resumed from was written, and whether inside an epoch (the fit loop
  // does what was left there first, then clears it).
  std::optional<LoopPoint> resumed_at;
  bool resuming_mid_epoch = false;

 private:
  [[noreturn]] TRAINLOOP_DETAIL_API static void throw_restore_error(const std::string& path, const std::string& key,
                                                                    const std::exception& error);
  // The loop's own states: the training Engine's, the progress, the loss scaler, the epoch's running sums, the data's
  // position, the schedulers; and as tensors what callbacks monitor and the running sums.
  TRAINLOOP_DETAIL_API std::map<std::string, StateDict> loop_states() const;
  TRAINLOOP_DETAIL_API std::map<std::string, TensorDict> loop_tensor_states() const;
  // Lightning's format: the states a resume needs, made from what the file maps to.
  TRAINLOOP_DETAIL_API Loaded load_lightning(const std::string& path, torch::nn::Module& module);

  Sources sources_;
  EngineCore* train_engine_ = nullptr;
  std::optional<StateDict> final_loop_state_;  // the training Engine's state once it is gone (after training)
};

// The callbacks' and the module's part of a checkpoint, for a Trainer whose types it knows (`T`: the Trainer, which
// befriends this).
struct CallbackCheckpoints {
  // on_save_checkpoint (`Save`: Entries and Tensors are StateDict& and TensorDict&) or on_load_checkpoint (const
  // ones): a hook may take the entries, the tensors, or both. `owner...` is (trainer, module) for a callback, nothing
  // for the module.
  template <bool Save, class H, class Entries, class Tensors, class... Owner>
  static void hooks(H& h, Entries& entries, Tensors& tensors, Owner&... owner) {
    if constexpr (Save) {
      constexpr bool with_entries = is_detected_v<on_save_checkpoint_t, H, Owner&..., Entries&>;
      constexpr bool with_tensors = is_detected_v<on_save_checkpoint_t, H, Owner&..., Tensors&>;
      static_assert(!declares_on_save_checkpoint<H>::value || with_entries || with_tensors,
                    "trainloop: on_save_checkpoint cannot be called as on_save_checkpoint(StateDict& checkpoint) or "
                    "on_save_checkpoint(TensorDict& checkpoint) (a callback's: (trainer&, module&, StateDict&) or "
                    "(trainer&, module&, TensorDict&))");
      if constexpr (with_entries) h.on_save_checkpoint(owner..., entries);
      if constexpr (with_tensors) h.on_save_checkpoint(owner..., tensors);
    } else {
      constexpr bool with_entries = is_detected_v<on_load_checkpoint_t, H, Owner&..., Entries&>;
      constexpr bool with_tensors = is_detected_v<on_load_checkpoint_t, H, Owner&..., Tensors&>;
      static_assert(!declares_on_load_checkpoint<H>::value || with_entries || with_tensors,
                    "trainloop: on_load_checkpoint cannot be called as on_load_checkpoint(const StateDict& checkpoint) "
                    "or on_load_checkpoint(const TensorDict& checkpoint) (a callback's: (trainer&, module&, const "
                    "StateDict&) or (trainer&, module&, const TensorDict&))");
      if constexpr (with_entries) h.on_load_checkpoint(owner..., entries);
      if constexpr (with_tensors) h.on_load_checkpoint(owner..., tensors);
    }
  }

  // The callbacks' states, then Lightning's on_save_checkpoint entries, the callbacks' and then the module's.
  template <class T, class Module>
  static void add(T& trainer, Module& module, CheckpointConnector::Contents& contents) {
    // The values logged so far reach the loggers and their files first, so their states (how many records each
    // holds) cover everything logged before this checkpoint: a run resumed from it keeps exactly those records.
    trainer.write_logs();
    trainer.for_each_logger([](auto& logger) {
      if constexpr (is_detected_v<logger_flush_t, std::decay_t<decltype(logger)>>) logger.flush();
    });
    trainer.for_each_callback(module, [&](auto& callback) {
      using C = std::decay_t<decltype(callback)>;
      if constexpr (is_detected_v<state_dict_t, C>) {
        const std::string key = callback_state_key(callback);
        if (contents.states.count(key))
          throw std::logic_error("trainloop: two callbacks of type " + type_name<C>() +
                                 " would share the checkpoint key '" + key + "'; give them distinct state_key()s");
        contents.states[key] = callback.state_dict();
      }
      if constexpr (is_detected_v<tensor_state_t, C>) contents.tensors[callback_state_key(callback)] = callback.tensor_state();
    });
    trainer.for_each_callback(module, [&](auto& callback) {
      hooks<true>(callback, contents.entries, contents.entry_tensors, trainer, module);
    });
    hooks<true>(module, contents.entries, contents.entry_tensors);
  }

  // Phase 1 of a resume: the model and optimizers (and the RNG), then on_load_checkpoint (module, then callbacks),
  // then the callbacks' states (a callback whose saved state is empty is not asked to load it, as in Lightning).
  template <class T, class Module>
  static CheckpointConnector::Loaded restore(T& trainer, const std::string& path, Module& module) {
    using Connector = CheckpointConnector;
    Connector::Loaded loaded = trainer.checkpoints_.load(path, module);
    const StateDict& checkpoint = loaded.entries();
    const TensorDict& checkpoint_tensors = loaded.entry_tensors();
    Connector::restoring(path, "checkpoint", [&] {
      hooks<false>(module, checkpoint, checkpoint_tensors);
      trainer.for_each_callback(module, [&](auto& callback) { hooks<false>(callback, checkpoint, checkpoint_tensors, trainer, module); });
    });
    trainer.for_each_callback(module, [&](auto& callback) {
      using C = std::decay_t<decltype(callback)>;
      if constexpr (is_detected_v<load_state_dict_t, C>) {
        auto it = loaded.states.find(callback_state_key(callback));
        if (it != loaded.states.end() && !it->second.empty())
          Connector::restoring(path, it->first, [&] { callback.load_state_dict(it->second); });
      }
      if constexpr (is_detected_v<load_tensor_state_t, C>) {
        const std::string key = callback_state_key(callback);
        if (loaded.lightning && !loaded.tensors.count(key)) return;  // named in the resume's warning
        const TensorDict& tensors = loaded.need_tensors(path, key);
        Connector::restoring(path, key + " (tensors)", [&] { callback.load_tensor_state(tensors); });
      }
    });
    return loaded;
  }

  // "last" and "best" name what a ModelCheckpoint in the pack wrote, in this process or (after a crash) on disk in
  // its folder; anything else is a path.
  template <class T, class Module>
  static std::string resolve_path(T& trainer, const Module& module, const std::string& ckpt_path) {
    if (ckpt_path != "last" && ckpt_path != "best") return ckpt_path;
    std::string found, folders;
    trainer.for_each_callback(module, [&](auto& callback) {
      using C = std::decay_t<decltype(callback)>;
      if constexpr (is_detected_v<last_model_path_t, C>) {
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
};
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API void detail::CheckpointConnector::throw_restore_error(const std::string& path,
                                                                          const std::string& key,
                                                                          const std::exception& error) {
  throw CheckpointError("trainloop: checkpoint '" + path + "': key '" + key + "': " + error.what());
}

TRAINLOOP_DETAIL_API const StateDict& detail::CheckpointConnector::Loaded::need(const std::string& path,
                                                                                const std::string& key) const {
  auto it = states.find(key);
  if (it == states.end())
    throw CheckpointError("trainloop: checkpoint '" + path + "': key '" + key + "' is missing (not written by fit?)");
  return it->second;
}
TRAINLOOP_DETAIL_API const TensorDict& detail::CheckpointConnector::Loaded::need_tensors(const std::string& path,
                                                                                        const std::string& key) const {
  auto it = tensors.find(key);
  if (it == tensors.end())
    throw CheckpointError("trainloop: checkpoint '" + path + "': key '" + key +
                          "' (tensors) is missing: it was written without this callback");
  return it->second;
}
TRAINLOOP_DETAIL_API const StateDict& detail::CheckpointConnector::Loaded::entries() const {
  static const StateDict none;
  auto it = states.find("checkpoint");
  return it != states.end() ? it->second : none;
}
TRAINLOOP_DETAIL_API const TensorDict& detail::CheckpointConnector::Loaded::entry_tensors() const {
  static const TensorDict none;
  auto it = tensors.find("checkpoint");
  return it != tensors.end() ? it->second : none;
}

TRAINLOOP_DETAIL_API detail::CheckpointConnector::EngineScope::EngineScope(CheckpointConnector& connector,
                                                                          EngineCore& engine)
    : connector_(connector), engine_(engine) {
  connector_.train_engine_ = &engine;
}
TRAINLOOP_DETAIL_API detail::CheckpointConnector::EngineScope::~EngineScope() {
  connector_.final_loop_state_ = engine_.state.state_dict();
  connector_.train_engine_ = nullptr;
}

TRAINLOOP_DETAIL_API bool detail::CheckpointConnector::write(const std::string& path, bool weights_only,
                                                             CheckpointFormat format, torch::nn::Module& module,
                                                             const StateDict& hparams,
                                                             FunctionRef<void(Contents&)> add_callbacks) {
  try {
    if (format == CheckpointFormat::lightning) {
      const LoopProgress& progress = sources_.progress;
      Contents contents{loop_states(), {}, {}, {}};
      if (!weights_only) add_callbacks(contents);
      const std::string non_finite = first_non_finite(named_tensors(module), {});
      if (!non_finite.empty())
        throw NonFiniteStateError("trainloop: checkpoint '" + path + "': '" + non_finite +
                                  "' holds NaN or inf; nothing was written");
      write_pytorch_file(path, lightning_checkpoint({module, sources_.optimizers, progress, contents.states,
                                                     contents.entries, hparams, weights_only}));
      return true;
    }
    if (weights_only) {
      trainloop::save_weights(path, module);
      return true;
    }
    const LoopProgress& progress = sources_.progress;
    Contents contents{loop_states(), loop_tensor_states(),
                      {{"epoch", progress.current_epoch}, {"global_step", progress.global_step}}, {}};
    add_callbacks(contents);
    contents.states["checkpoint"] = std::move(contents.entries);
    if (!contents.entry_tensors.empty()) contents.tensors["checkpoint"] = std::move(contents.entry_tensors);
    if (!hparams.empty()) contents.states["hparams"] = hparams;
    trainloop::save_checkpoint(path, module, optimizer_pointers(sources_.optimizers), contents.states, true, contents.tensors);
    return true;
  } catch (const NonFiniteStateError& error) {
    if (!sources_.progress.terminate_requested) throw;  // a diverged fit fails, its last finite checkpoint intact
    std::fprintf(stderr, "%s; the fit is stopping, so this checkpoint is skipped\n", error.what());
    return false;
  }
}

TRAINLOOP_DETAIL_API bool detail::CheckpointConnector::save_on_rank_zero(const std::string& path, bool weights_only,
                                                                         CheckpointFormat format) {
  if (!save) throw std::logic_error("trainloop: Trainer::save_checkpoint(\"" + path + "\") needs a fit in progress or done");
  StrategyPolicy& strategy = sources_.strategy;
  if (strategy.world_size() == 1) return save(path, weights_only, format);
  bool written = true;
  std::exception_ptr error;
  if (strategy.global_rank() == 0) {
    try {
      written = save(path, weights_only, format);
    } catch (...) {
      error = std::current_exception();
    }
  }
  strategy.barrier();  // no rank reads (or resumes from) a checkpoint before it is complete
  if (error) std::rethrow_exception(error);
  return written;
}

TRAINLOOP_DETAIL_API std::map<std::string, StateDict> detail::CheckpointConnector::loop_states() const {
  std::map<std::string, StateDict> states;
  if (train_engine_) states["loop"] = train_engine_->state.state_dict();
  else if (final_loop_state_) states["loop"] = *final_loop_state_;
  states["trainer"] = sources_.progress.state_dict();
  if (sources_.precision.scaling()) states["precision/grad_scaler"] = sources_.precision.state_dict();
  states["trainer/train_epoch_sums"] = sources_.logs.store(Stage::train).epoch_state();
  if (train_data_state) states["train_data"] = train_data_state();
  const Optimizers& optimizers = sources_.optimizers;
  for (std::size_t i = 0; i < optimizers.size(); ++i)
    if (const auto& s = optimizers[i].scheduler())
      if (auto state = s->state_dict()) states["scheduler/" + std::to_string(i)] = *state;
  return states;
}

TRAINLOOP_DETAIL_API std::map<std::string, TensorDict> detail::CheckpointConnector::loop_tensor_states() const {
  std::map<std::string, TensorDict> tensors;
  const auto& callback_metrics = sources_.logs.callback_metrics();
  tensors["trainer/callback_metrics"] = TensorDict(callback_metrics.begin(), callback_metrics.end());
  tensors["trainer/train_epoch_sums"] = sources_.logs.store(Stage::train).epoch_sums();
  return tensors;
}

TRAINLOOP_DETAIL_API detail::CheckpointConnector::Loaded detail::CheckpointConnector::load(const std::string& path,
                                                                                          torch::nn::Module& module) {
  if (is_pytorch_file(path)) return load_lightning(path, module);
  Loaded loaded;
  loaded.states = trainloop::load_checkpoint(path, module, optimizer_pointers(sources_.optimizers), sources_.device, true, &loaded.tensors);
  return loaded;
}

TRAINLOOP_DETAIL_API detail::CheckpointConnector::Loaded detail::CheckpointConnector::load_lightning(
    const std::string& path, torch::nn::Module& module) {
  const Optimizers& optimizers = sources_.optimizers;
  std::map<std::string, StateDict> scheduler_shapes;
  for (std::size_t i = 0; i < optimizers.size(); ++i)
    if (const auto& s = optimizers[i].scheduler())
      if (auto state = s->state_dict()) scheduler_shapes["scheduler/" + std::to_string(i)] = *state;
  LightningResume resume = read_lightning_checkpoint(path, module, optimizers, scheduler_shapes);
  Loaded loaded;
  loaded.lightning = true;
  loaded.states = std::move(resume.states);
  // The training Engine between epochs (Lightning keeps no position inside one), as in a longer run: what is left of
  // an epoch saved at its end runs first (its epoch-end hooks or schedulers), then the next epoch. The fit loop takes
  // the epoch length from this run.
  State loop;
  loop.epoch = static_cast<std::uint64_t>(resume.epochs_done);
  loop.iteration = static_cast<std::uint64_t>(resume.total_batches);
  loop.max_epochs = loop.epoch + 1;
  loaded.states["loop"] = loop.state_dict();
  LoopProgress progress = sources_.progress;
  progress.point = resume.point;
  progress.current_epoch = resume.point == LoopPoint::training_done ? resume.epochs_done : resume.epochs_done - 1;
  progress.global_step = resume.global_step;
  progress.total_batches = resume.total_batches;
  loaded.states["trainer"] = progress.state_dict();
  loaded.states["trainer/train_epoch_sums"] = sources_.logs.store(Stage::train).epoch_state();
  if (sources_.precision.scaling() && !loaded.states.count("precision/grad_scaler"))
    loaded.states["precision/grad_scaler"] = sources_.precision.state_dict();  // none saved: the scaler as it is
  return loaded;
}

TRAINLOOP_DETAIL_API StateDict detail::CheckpointConnector::restore_loop(const std::string& path, const Loaded& loaded) {
  const StateDict& loop = loaded.need(path, "loop");
  LoopProgress& progress = sources_.progress;
  progress.load_state_dict(loaded.need(path, "trainer"), path);
  PrecisionPolicy& precision = sources_.precision;
  if (precision.scaling()) {
    const std::string key = "precision/grad_scaler";
    const StateDict& scaler = loaded.need(path, key);
    restoring(path, key, [&] { precision.load_state_dict(scaler); });
  }
  LoggerConnector& logs = sources_.logs;
  auto metrics = loaded.tensors.find("trainer/callback_metrics");
  if (metrics != loaded.tensors.end()) logs.callback_metrics().insert(metrics->second.begin(), metrics->second.end());
  auto sums = loaded.tensors.find("trainer/train_epoch_sums");
  logs.store(Stage::train).load_epoch_state(loaded.need(path, "trainer/train_epoch_sums"),
                                            sums != loaded.tensors.end() ? sums->second : TensorDict{}, path);
  const Optimizers& optimizers = sources_.optimizers;
  for (std::size_t i = 0; i < optimizers.size(); ++i)
    if (const auto& s = optimizers[i].scheduler()) {
      auto it = loaded.states.find("scheduler/" + std::to_string(i));
      if (it != loaded.states.end()) restoring(path, it->first, [&] { s->load_state_dict(it->second); });
    }
  resumed_at = progress.point;
  auto in_epoch = loop.find("in_epoch");
  resuming_mid_epoch = in_epoch != loop.end() && in_epoch->second == StateValue{std::int64_t{1}};
  return loop;
}

TRAINLOOP_DETAIL_API std::optional<StateDict> detail::CheckpointConnector::train_data_position(const Loaded& loaded) const {
  auto it = loaded.states.find("train_data");
  if (it == loaded.states.end()) return std::nullopt;
  StateDict state = it->second;
  const StrategyPolicy& strategy = sources_.strategy;
  if (strategy.world_size() > 1 && state.count("rank")) state["rank"] = std::int64_t{strategy.global_rank()};
  return state;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
