// trainloop: where a fit stands: its counters and stop flags (LoopProgress, the checkpoint's "trainer" key) and the
// point in the loop a checkpoint is written at (LoopPoint), which tells a resumed fit what is left to do there.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cstdint>
#include <string>
#include <variant>

#include "parts/core/state.hpp"
#include "parts/torch/checkpoint.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
// Where in the loop a fit stands. Checkpoints record it, and a resumed fit first does what was left at that point,
// so it ends where the uninterrupted fit would (docs/checkpoints.md: "what resumes exactly").
enum class LoopPoint : std::int64_t {
  in_batch = 0,          // inside a training batch, before on_train_batch_end: not an exact resume point
  batch_end = 1,         // on_train_batch_end: the batch's stop checks and validation are still to come
  batch_validation = 2,  // inside that validation, before its on_validation_end: it runs again
  between_batches = 3,   // nothing left of the batch (or of the epoch)
  epoch_validation = 4,  // inside the epoch-end validation (data of unknown size), before its on_validation_end:
                         // it runs again
  epoch_hooks = 5,       // on_validation_end of that validation: on_train_epoch_end and the rest to come
  epoch_rest = 6,        // checkpointing callbacks' on_train_epoch_end: the epoch's schedulers and stop to come
  training_done = 7,     // on_train_end, on_fit_end, after fit
};

// A fit's counters and flags (Lightning's loop progress), all of which a checkpoint holds.
struct LoopProgress {
  std::int64_t current_epoch = 0;  // 0-based while running; after fit, the epochs run
  std::int64_t global_step = 0;    // optimizer steps taken
  std::int64_t total_batches = 0;  // training batches run, over all epochs
  std::int64_t batch_idx = 0;      // within the current epoch
  std::int64_t batches_since_step = 0;  // batches whose gradients wait for the next optimizer step
  std::int64_t accumulate_grad_batches = 1;
  std::int64_t skipped_steps = 0;  // steps the loss scaler skipped
  bool last_step_skipped = false;
  bool should_stop = false;          // asked to stop (honoured once the minimums are reached)
  bool terminate_requested = false;  // stop after this batch, whatever the minimums
  bool stop_after_epoch = false;     // a stop condition was met: the epoch ends, then the fit
  bool skip_rest_of_epoch = false;   // on_train_batch_start returned -1
  LoopPoint point = LoopPoint::between_batches;

  // The checkpoint's "trainer" state, and back (`path` names the checkpoint in errors).
  TRAINLOOP_DETAIL_API StateDict state_dict() const;
  TRAINLOOP_DETAIL_API void load_state_dict(const StateDict& state, const std::string& path);
};
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API StateDict detail::LoopProgress::state_dict() const {
  auto flag = [](bool b) { return std::int64_t{b ? 1 : 0}; };
  return {{"global_step", global_step},
          {"total_batches", total_batches},
          {"batches_since_step", batches_since_step},
          {"current_epoch", current_epoch},
          {"accumulate_grad_batches", accumulate_grad_batches},
          {"loop_point", static_cast<std::int64_t>(point)},
          {"should_stop", flag(should_stop)},
          {"stop_after_epoch", flag(stop_after_epoch)},
          {"skip_rest_of_epoch", flag(skip_rest_of_epoch)},
          {"skipped_steps", skipped_steps},
          {"last_step_skipped", flag(last_step_skipped)}};
}

TRAINLOOP_DETAIL_API void detail::LoopProgress::load_state_dict(const StateDict& state, const std::string& path) {
  auto count = [&](const char* key) {
    auto it = state.find(key);
    if (it == state.end() || !std::holds_alternative<std::int64_t>(it->second))
      throw CheckpointError("trainloop: checkpoint '" + path + "': key 'trainer/" + key + "' is missing");
    return std::get<std::int64_t>(it->second);
  };
  global_step = count("global_step");
  total_batches = count("total_batches");
  batches_since_step = count("batches_since_step");
  current_epoch = count("current_epoch");
  accumulate_grad_batches = count("accumulate_grad_batches");
  const std::int64_t loop_point = count("loop_point");
  if (loop_point < 0 || loop_point > static_cast<std::int64_t>(LoopPoint::training_done))
    throw CheckpointError("trainloop: checkpoint '" + path + "': key 'trainer/loop_point' is " +
                          std::to_string(loop_point) + ", not a point this trainloop knows");
  point = static_cast<LoopPoint>(loop_point);
  should_stop = count("should_stop") != 0;
  stop_after_epoch = count("stop_after_epoch") != 0;
  skip_rest_of_epoch = count("skip_rest_of_epoch") != 0;
  skipped_steps = state.count("skipped_steps") ? count("skipped_steps") : 0;  // absent from older checkpoints
  last_step_skipped = state.count("last_step_skipped") && count("last_step_skipped") != 0;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
