// trainloop: Lightning's checkpoint layout (lightning.pytorch's _CheckpointConnector.dump_checkpoint), written and
// read in torch.save's format (pytorch_files.hpp): a fit saved with Trainer::save_checkpoint(path,
// CheckpointFormat::lightning) loads in Python with MyModule.load_from_checkpoint(path) and continues there with
// Trainer.fit(model, ckpt_path=path); a .ckpt Lightning wrote continues here with fit(module, data, ckpt_path).
//
// What maps (docs/checkpoints.md, "Lightning's format"): the weights, the optimizers' states (PyTorch's
// optimizer.state_dict() layout), the epoch and global step with the fit loop's progress counters, the schedulers'
// step counts, the loss scaler, the hyperparameters, the on_save_checkpoint entries that are plain values, and
// trainloop's own callbacks' states (under their trainloop keys, which Lightning ignores). What does not: Python
// callbacks' states, the loops' internals beyond their counters, a datamodule's state, the training data's position
// and the RNG (neither is in a Lightning checkpoint): a resume names them in one warning.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "parts/core/launch_environment.hpp"
#include "parts/core/state.hpp"
#include "parts/torch/loop_progress.hpp"
#include "parts/torch/optim.hpp"
#include "parts/torch/pytorch_files.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
// The Lightning version whose layout is written ("pytorch-lightning_version"; Lightning migrates older ones).
inline constexpr char lightning_layout_version[] = "2.4.0";

// What a fit's save knows, for the Lightning layout.
struct LightningSave {
  const torch::nn::Module& module;
  const Optimizers& optimizers;
  const LoopProgress& progress;
  const std::map<std::string, StateDict>& states;  // the trainloop checkpoint's named states (callbacks, schedulers)
  const StateDict& entries;                        // on_save_checkpoint's entries
  const StateDict& hparams;
  bool weights_only;
};
TRAINLOOP_DETAIL_API c10::impl::GenericDict lightning_checkpoint(const LightningSave& save);

// What a Lightning checkpoint gives a resumed fit besides the weights and optimizer states (which reading puts in
// place): the loop's position and the states trainloop keys by name (schedulers, scaler, callbacks, entries).
struct LightningResume {
  std::int64_t epochs_done = 0, global_step = 0, total_batches = 0;
  // Where the fit continues: after a fit or between epochs (training_done), or at the end of the epoch whose training
  // is done (epoch_hooks: saved at its validation's end; epoch_rest: saved in on_train_epoch_end), as Lightning does.
  LoopPoint point = LoopPoint::training_done;
  std::map<std::string, StateDict> states;  // "scheduler/<i>", "precision/grad_scaler", "callback/...", "checkpoint"
};
// Reads `path` into the module and the optimizers (validated first; the weights last) and returns the rest. What
// cannot be mapped is named in one warning on stderr (rank 0).
TRAINLOOP_DETAIL_API LightningResume read_lightning_checkpoint(const std::string& path, torch::nn::Module& module,
                                                               const Optimizers& optimizers,
                                                               const std::map<std::string, StateDict>& scheduler_shapes);
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
namespace detail {
// Lightning's progress trackers (loops/progress.py: asdict of its dataclasses).
inline c10::impl::GenericDict lightning_tracker(std::int64_t ready, std::int64_t started, std::int64_t processed,
                                                std::int64_t completed, bool with_started, bool with_processed) {
  c10::impl::GenericDict t = python_dict();
  t.insert("ready", ready);
  t.insert("completed", completed);
  if (with_started) t.insert("started", started);
  if (with_processed) t.insert("processed", processed);
  return t;
}
inline c10::impl::GenericDict lightning_progress(c10::impl::GenericDict total, c10::impl::GenericDict current) {
  c10::impl::GenericDict p = python_dict();
  p.insert("total", std::move(total));
  p.insert("current", std::move(current));
  return p;
}
inline c10::impl::GenericDict lightning_batch_progress(std::int64_t total, std::int64_t total_completed,
                                                       std::int64_t current, std::int64_t current_completed,
                                                       bool is_last_batch) {
  c10::impl::GenericDict p = lightning_progress(lightning_tracker(total, total, total, total_completed, true, true),
                                                lightning_tracker(current, current, current, current_completed, true, true));
  p.insert("is_last_batch", is_last_batch);
  return p;
}
inline c10::impl::GenericDict lightning_step_progress(std::int64_t steps) {
  return lightning_progress(lightning_tracker(steps, steps, steps, steps, false, false),
                            lightning_tracker(steps, steps, steps, steps, false, false));
}
inline c10::impl::GenericDict lightning_evaluation_loop() {
  c10::impl::GenericDict loop = python_dict();
  loop.insert("state_dict", python_dict());
  loop.insert("batch_progress", lightning_batch_progress(0, 0, 0, 0, false));
  return loop;
}

// fit_loop.state_dict() as Lightning writes it at the same point of a fit (a flat dict of dotted keys).
TRAINLOOP_DETAIL_API c10::impl::GenericDict lightning_fit_loop(const LoopProgress& progress) {
  const std::int64_t epoch = progress.current_epoch, steps = progress.global_step, batches = progress.total_batches;
  // Where the save happens: after the fit (epochs done), at the epoch's end (processed, not completed), in it.
  const bool done = progress.point == LoopPoint::training_done;
  const bool at_epoch_end = progress.point == LoopPoint::epoch_validation || progress.point == LoopPoint::epoch_hooks ||
                            progress.point == LoopPoint::epoch_rest;
  const std::int64_t started = done ? epoch : epoch + 1;
  const std::int64_t processed = done ? epoch : at_epoch_end ? epoch + 1 : epoch;
  c10::impl::GenericDict loop = python_dict();
  loop.insert("state_dict", python_dict());
  loop.insert("epoch_progress", lightning_progress(lightning_tracker(started, started, processed, epoch, true, true),
                                                   lightning_tracker(started, started, processed, epoch, true, true)));
  c10::impl::GenericDict epoch_state = python_dict();
  epoch_state.insert("_batches_that_stepped", steps);
  loop.insert("epoch_loop.state_dict", epoch_state);
  // At on_train_batch_end a batch is processed, not yet completed.
  const std::int64_t in_epoch = progress.total_batches == 0 ? 0 : progress.batch_idx + 1;
  const std::int64_t pending = progress.point == LoopPoint::batch_end || progress.point == LoopPoint::in_batch ? 1 : 0;
  loop.insert("epoch_loop.batch_progress", lightning_batch_progress(batches, batches - pending, in_epoch,
                                                                    in_epoch - pending, done || at_epoch_end));
  loop.insert("epoch_loop.scheduler_progress", lightning_step_progress(0));
  loop.insert("epoch_loop.automatic_optimization.state_dict", python_dict());
  c10::impl::GenericDict optimizer = python_dict();
  optimizer.insert("step", lightning_step_progress(steps));
  optimizer.insert("zero_grad", lightning_progress(lightning_tracker(steps, steps, 0, steps, true, false),
                                                   lightning_tracker(steps, steps, 0, steps, true, false)));
  c10::impl::GenericDict optim_progress = python_dict();
  optim_progress.insert("optimizer", optimizer);
  loop.insert("epoch_loop.automatic_optimization.optim_progress", optim_progress);
  loop.insert("epoch_loop.manual_optimization.state_dict", python_dict());
  loop.insert("epoch_loop.manual_optimization.optim_step_progress", lightning_step_progress(steps));
  c10::impl::GenericDict val = lightning_evaluation_loop();
  loop.insert("epoch_loop.val_loop.state_dict", val.at("state_dict"));
  loop.insert("epoch_loop.val_loop.batch_progress", val.at("batch_progress"));
  return loop;
}

// A scheduler's state with PyTorch's LRScheduler / ReduceLROnPlateau names beside trainloop's, so that either side
// continues the count: last_epoch and _step_count (ParamScheduler's t), best, num_bad_epochs, cooldown_counter.
TRAINLOOP_DETAIL_API c10::impl::GenericDict lightning_scheduler(const StateDict& state,
                                                                const torch::optim::Optimizer& optimizer) {
  c10::impl::GenericDict d = to_python_dict(state);
  auto alias = [&](const char* ours, const char* pytorch, std::int64_t add) {
    auto it = state.find(ours);
    if (it != state.end() && std::holds_alternative<std::int64_t>(it->second))
      d.insert(pytorch, std::get<std::int64_t>(it->second) + add);
  };
  alias("t", "last_epoch", 0);
  alias("t", "_step_count", 1);
  alias("bad_checks", "num_bad_epochs", 0);
  alias("cooldown_left", "cooldown_counter", 0);
  c10::impl::GenericList lrs(c10::FloatType::get());
  for (const auto& group : optimizer.param_groups()) lrs.push_back(group.options().get_lr());
  d.insert("_last_lr", lrs);
  return d;
}

TRAINLOOP_DETAIL_API c10::impl::GenericDict lightning_checkpoint(const LightningSave& save) {
  c10::impl::GenericDict checkpoint = python_dict();
  checkpoint.insert("epoch", save.progress.current_epoch);
  checkpoint.insert("global_step", save.progress.global_step);
  checkpoint.insert("pytorch-lightning_version", std::string(lightning_layout_version));
  checkpoint.insert("state_dict", pytorch_state_dict(save.module));
  c10::impl::GenericDict loops = python_dict();
  loops.insert("fit_loop", lightning_fit_loop(save.progress));
  for (const char* name : {"validate_loop", "test_loop", "predict_loop"}) loops.insert(name, lightning_evaluation_loop());
  checkpoint.insert("loops", loops);
  if (!save.weights_only) {
    c10::impl::GenericDict callbacks = python_dict();  // trainloop's callbacks under their keys: Lightning skips them
    for (const auto& [key, state] : save.states)
      if (key.rfind("callback/", 0) == 0) callbacks.insert(key, to_python_dict(state));
    checkpoint.insert("callbacks", callbacks);
    c10::impl::GenericList optimizer_states(c10::AnyType::get());
    c10::impl::GenericList schedulers(c10::AnyType::get());
    for (std::size_t i = 0; i < save.optimizers.size(); ++i) {
      const torch::optim::Optimizer& optimizer = *save.optimizers[i].optimizer();
      optimizer_states.push_back(pytorch_optimizer_state_dict(optimizer));
      auto it = save.states.find("scheduler/" + std::to_string(i));
      if (it != save.states.end()) schedulers.push_back(lightning_scheduler(it->second, optimizer));
    }
    checkpoint.insert("optimizer_states", optimizer_states);
    checkpoint.insert("lr_schedulers", schedulers);
    auto scaler = save.states.find("precision/grad_scaler");  // PyTorch's GradScaler.state_dict() names
    if (scaler != save.states.end() && !scaler->second.empty())
      checkpoint.insert("MixedPrecision", to_python_dict(scaler->second));
  }
  if (!save.hparams.empty()) {
    checkpoint.insert("hparams_name", std::string("kwargs"));
    checkpoint.insert("hyper_parameters", to_python_dict(save.hparams));
  }
  for (const auto& [key, value] : save.entries)  // on_save_checkpoint's entries, at the top as in Lightning
    if (!checkpoint.contains(key)) std::visit([&, k = key](const auto& v) { checkpoint.insert(k, v); }, value);
  checkpoint.insert("trainloop_version", std::string(version_string));
  return checkpoint;
}

inline std::int64_t lightning_count(const c10::impl::GenericDict& d, const std::vector<std::string>& path,
                                    std::int64_t fallback) {
  c10::IValue v = d;
  for (const auto& key : path) {
    if (!v.isGenericDict()) return fallback;
    auto next = dict_get(v.toGenericDict(), key);
    if (!next) return fallback;
    v = *next;
  }
  if (v.isInt()) return v.toInt();
  if (v.isBool()) return v.toBool() ? 1 : 0;
  return fallback;
}

// A scheduler's Lightning state in the names of the scheduler configure_optimizers returned (`shape`: its own state
// now); nullopt when one of them has no counterpart.
inline std::optional<StateDict> scheduler_from_lightning(const c10::IValue& value, const StateDict& shape) {
  if (!value.isGenericDict()) return std::nullopt;
  const c10::impl::GenericDict d = value.toGenericDict();
  static const std::map<std::string, std::string> pytorch_names = {
      {"t", "last_epoch"}, {"bad_checks", "num_bad_epochs"}, {"cooldown_left", "cooldown_counter"}};
  StateDict state;
  for (const auto& [key, now] : shape) {
    std::optional<c10::IValue> v = dict_get(d, key);
    auto alias = pytorch_names.find(key);
    if (!v && alias != pytorch_names.end()) v = dict_get(d, alias->second);
    if (!v && key == "reductions") v = c10::IValue(std::get<std::int64_t>(now));
    if (!v) return std::nullopt;
    if (std::holds_alternative<std::int64_t>(now) && v->isInt()) state[key] = v->toInt();
    else if (std::holds_alternative<double>(now) && (v->isDouble() || v->isInt())) state[key] = v->toScalar().toDouble();
    else if (std::holds_alternative<double>(now) && v->isTensor() && v->toTensor().numel() == 1)
      state[key] = v->toTensor().item<double>();
    else if (std::holds_alternative<std::string>(now) && v->isString()) state[key] = v->toStringRef();
    else return std::nullopt;
  }
  return state;
}

TRAINLOOP_DETAIL_API LightningResume read_lightning_checkpoint(const std::string& path, torch::nn::Module& module,
                                                               const Optimizers& optimizers,
                                                               const std::map<std::string, StateDict>& scheduler_shapes) {
  const c10::IValue file = read_pytorch_file(path, std::nullopt);
  auto key_error = [&](const std::string& key, const std::string& what) {
    return checkpoint_error(path, "key '" + key + "' " + what);
  };
  if (!file.isGenericDict()) throw checkpoint_error(path, "holds a " + std::string(file.tagKind()) + ", not a checkpoint dict");
  const c10::impl::GenericDict checkpoint = file.toGenericDict();
  auto need = [&](const std::string& key) {
    auto v = dict_get(checkpoint, key);
    if (!v) throw key_error(key, "is missing: not a Lightning checkpoint, or one saved with weights_only");
    require_no_python_object(*v, path, key);
    return *v;
  };
  const c10::IValue weights = need("state_dict");
  const c10::IValue optimizer_states = need("optimizer_states");
  if (!optimizer_states.isList()) throw key_error("optimizer_states", "is not a list");
  const auto states = optimizer_states.toList();
  if (states.size() != optimizers.size())
    throw key_error("optimizer_states", "holds " + std::to_string(states.size()) + " optimizer states; "
                    "configure_optimizers returned " + std::to_string(optimizers.size()));
  LightningResume resume;
  const c10::IValue epoch = need("epoch"), global_step = need("global_step");
  if (!epoch.isInt() || !global_step.isInt()) throw key_error("epoch", "or 'global_step' is not an integer");
  resume.global_step = global_step.toInt();
  // The loop's position: the fit loop's epoch progress says whether the epoch it was saved in had ended.
  resume.epochs_done = epoch.toInt();
  resume.total_batches = resume.global_step;
  std::vector<std::string> unmapped{"the training data's position, the RNG states and callbacks' tensors such as EMA "
                                    "weights (a Lightning checkpoint has none of them)"};
  if (auto loops = dict_get(checkpoint, "loops"); loops && loops->isGenericDict()) {
    if (auto fit = dict_get(loops->toGenericDict(), "fit_loop"); fit && fit->isGenericDict()) {
      const c10::impl::GenericDict f = fit->toGenericDict();
      const std::int64_t completed = lightning_count(f, {"epoch_progress", "current", "completed"}, resume.epochs_done);
      const std::int64_t processed = lightning_count(f, {"epoch_progress", "current", "processed"}, completed);
      const std::int64_t started = lightning_count(f, {"epoch_progress", "current", "started"}, completed);
      const bool last_batch = lightning_count(f, {"epoch_loop.batch_progress", "is_last_batch"}, 0) != 0;
      const std::int64_t in_epoch = lightning_count(f, {"epoch_loop.batch_progress", "current", "completed"}, 0);
      // An epoch started and not completed: its training ended when saved at its end (its last batch done: the
      // validation and epoch-end hooks, where ModelCheckpoint saves), else it was saved inside it.
      const bool in_an_epoch = started > completed;
      const bool epoch_trained = in_an_epoch && (processed > completed || last_batch);
      resume.epochs_done = completed + (epoch_trained ? 1 : 0);
      if (epoch_trained) resume.point = processed > completed ? LoopPoint::epoch_rest : LoopPoint::epoch_hooks;
      resume.total_batches = lightning_count(f, {"epoch_loop.batch_progress", "total", "completed"}, resume.global_step);
      if (in_an_epoch && !epoch_trained && in_epoch > 0)
        unmapped.push_back("the position inside epoch " + std::to_string(completed) + " (saved after " +
                           std::to_string(in_epoch) + " of its batches; Lightning keeps no data position, so that "
                           "epoch runs again from its first batch)");
    }
    unmapped.push_back("loops (only the fit loop's epoch, batch and step counts are read)");
  }
  // Everything read is validated before the weights change: the optimizers, then the weights.
  for (std::size_t i = 0; i < optimizers.size(); ++i)
    load_python_optimizer_state(*optimizers[i].optimizer(), states.get(i), path, "optimizer_states/" + std::to_string(i));
  load_state_dict_from(module, weights, LoadStateDictOptions(), "trainloop: checkpoint '" + path + "': key 'state_dict'");

  if (auto schedulers = dict_get(checkpoint, "lr_schedulers"); schedulers && schedulers->isList()) {
    const auto list = schedulers->toList();
    std::size_t next = 0;
    for (const auto& [key, shape] : scheduler_shapes) {  // Lightning lists the schedulers in the optimizers' order
      if (next >= list.size()) break;
      if (auto state = scheduler_from_lightning(list.get(next), shape)) resume.states[key] = *state;
      else unmapped.push_back("lr_schedulers/" + std::to_string(next) + " (not a state of " + key + "'s type)");
      ++next;
    }
    for (; next < list.size(); ++next) unmapped.push_back("lr_schedulers/" + std::to_string(next) + " (no scheduler here)");
  }
  for (const char* scaler : {"MixedPrecision", "native_amp_scaling_state"})
    if (auto v = dict_get(checkpoint, scaler); v && v->isGenericDict())
      resume.states["precision/grad_scaler"] = from_python_dict(*v, "trainloop: checkpoint '" + path + "': key '" + scaler + "'");
  static const std::vector<std::string> read_keys = {
      "epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "optimizer_states", "lr_schedulers",
      "MixedPrecision", "native_amp_scaling_state", "hparams_name", "trainloop_version"};
  StateDict entries;
  for (const auto& item : checkpoint) {
    const std::string key = item.key().isString() ? item.key().toStringRef() : "?";
    const c10::IValue& v = item.value();
    if (std::find(read_keys.begin(), read_keys.end(), key) != read_keys.end()) continue;
    if (key == "callbacks" && v.isGenericDict()) {
      for (const auto& callback : v.toGenericDict()) {
        const std::string name = callback.key().isString() ? callback.key().toStringRef() : "?";
        if (name.rfind("callback/", 0) == 0 && !find_python_object(callback.value(), ""))
          resume.states[name] = from_python_dict(callback.value(), "trainloop: checkpoint '" + path + "': key 'callbacks/" + name + "'");
        else
          unmapped.push_back("callbacks/" + name);
      }
    } else if (key == "hyper_parameters") {
      if (auto object = find_python_object(v, key))
        unmapped.push_back(key + " ('" + object->first + "' holds a Python object of class " + object->second + ")");
    } else if (v.isInt() || v.isDouble() || (v.isString() && !find_python_object(v, key))) {
      entries[key] = v.isInt() ? StateValue{v.toInt()} : v.isDouble() ? StateValue{v.toDouble()} : StateValue{v.toStringRef()};
    } else if (v.isBool()) {
      entries[key] = std::int64_t{v.toBool() ? 1 : 0};
    } else {
      unmapped.push_back(key);
    }
  }
  resume.states["checkpoint"] = entries;
  if (!unmapped.empty() && process_rank() == 0) {
    std::string list;
    for (const auto& u : unmapped) list += "\n  - " + u;
    std::fprintf(stderr,
                 "trainloop: checkpoint '%s' (Lightning's format): the weights, optimizer states, epoch %lld and "
                 "global step %lld are restored; not mapped (left as they are here):%s\n",
                 path.c_str(), static_cast<long long>(resume.epochs_done), static_cast<long long>(resume.global_step),
                 list.c_str());
  }
  return resume;
}
}  // namespace detail
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
