// trainloop: the two optimisation forms, Lightning's automatic and manual optimisation, and what they share: backward
// with its hooks, and an optimizer step with its closure and hooks (the closure, the gradients synchronised across
// ranks and unscaled under "16-mixed", on_before_optimizer_step, clipping, then the step unless the loss scaler skips
// it). Automatic optimisation makes each batch a closure and calls the module's optimizer_step / optimizer_zero_grad /
// configure_gradient_clipping overrides; manual optimisation (the module calls manual_backward and steps its
// optimizers itself, with or without a closure) uses the plain forms, as Lightning's does.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "parts/core/engine.hpp"
#include "parts/core/function.hpp"
#include "parts/core/hooks.hpp"
#include "parts/torch/module.hpp"
#include "parts/torch/optim.hpp"
#include "parts/torch/profiler.hpp"
#include "parts/torch/trainer_core.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
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
// The same, for the Trainer: an error names the module.
template <class Module, class Out>
torch::Tensor training_loss(const Out& out) {
  try {
    return loss_of(out);
  } catch (const std::invalid_argument& error) {
    throw std::runtime_error("trainloop: " + type_name<Module>() + "::" + error.what());
  }
}

// What both forms share. `T` is the Trainer (which befriends these units).
struct OptimizerCalls {
  // The loss scaled ("16-mixed"), on_before_backward, the module's backward(loss) or loss.backward(),
  // on_after_backward. The hooks get the scaled loss, as in Lightning.
  template <class T, class Module>
  static void backward(T& t, Module& module, const torch::Tensor& unscaled_loss) {
    using Backward = lightning_hook<lightning_tags::backward>;
    Backward::template check_module<Module, torch::Tensor&>();
    torch::Tensor loss = t.precision_.scale_loss(unscaled_loss);
    t.template call_hook<lightning_tags::on_before_backward>(module, loss);
    t.profiled(profiler_actions::backward, [&] {
      if constexpr (Backward::template callable<Module, torch::Tensor&>) module.backward(loss);
      else loss.backward();
    });
    t.template call_hook<lightning_tags::on_after_backward>(module);
  }

  // Lightning's precision plugin's optimizer_step: `closure` (a training batch's forward and backward, or a manual
  // optimisation's own closure; null: none), then the gradients synchronised across ranks and unscaled (the hook and
  // clipping see the true gradients, as in Lightning), on_before_optimizer_step and `clip()`. Without a loss scaler all
  // of it runs inside the optimizer's step(closure), so an optimizer that re-evaluates the loss (LBFGS) repeats it; a
  // loss scaler runs it first and then decides whether the optimizer steps (inf/NaN gradients: skipped), as PyTorch's
  // GradScaler does (it takes no closure: fit refuses LBFGS under one); without a closure, the optimizer's plain
  // step() follows the hooks. Profiled as the optimizer step, the closure included, as in Lightning's profiler.
  // Returns the closure's loss; `stepped` says whether the optimizer stepped.
  template <class T, class Module, class Clip>
  static torch::Tensor step(T& t, Module& module, torch::optim::Optimizer& optimizer, Clip&& clip,
                            const FunctionRef<torch::Tensor()>* closure, bool& stepped) {
    auto after_closure = [&] {
      t.strategy_.before_optimizer_step();
      t.precision_.unscale(optimizer);
      t.template call_hook<lightning_tags::on_before_optimizer_step>(module, optimizer);
      clip();
    };
    return t.profiled(profiler_actions::optimizer_step, [&] {
      if (!closure || t.precision_.scaling()) {
        torch::Tensor loss = closure ? (*closure)() : torch::Tensor();
        after_closure();
        stepped = t.precision_.step(optimizer, [&] { optimizer.step(); });
        return loss;
      }
      stepped = true;
      return optimizer.step([&] {
        torch::Tensor loss = (*closure)();
        after_closure();
        return loss;
      });
    });
  }

  // on_before_zero_grad, then `zero()` (profiled).
  template <class T, class Module, class Zero>
  static void zero_grad(T& t, Module& module, torch::optim::Optimizer& optimizer, Zero&& zero) {
    t.template call_hook<lightning_tags::on_before_zero_grad>(module, optimizer);
    t.profiled(profiler_actions::zero_grad, zero);
  }

  // The TrainerOptions' clipping (gradient_clip_val, gradient_clip_algorithm).
  template <class T>
  static void default_clip(T& t, torch::optim::Optimizer& optimizer) {
    t.clip_gradients(optimizer, t.options_.gradient_clip_val(), t.options_.gradient_clip_algorithm());
  }
};

// Lightning's automatic optimisation. Each batch is a closure (training_step, zero_grad at an accumulation window's
// start, backward of the loss divided by the window); inside a window it runs at once, and at the window's end (or
// the epoch's) every optimizer steps with it: the module's optimizer_step(epoch, batch_idx, optimizer, closure) when
// it has one (it must call optimizer.step(closure)), else optimizer.step(closure), so training_step and the backward
// hooks run inside the step, where Lightning runs them. The module's optimizer_zero_grad(epoch, batch_idx, optimizer)
// and configure_gradient_clipping(optimizer, value, algorithm) overrides replace the defaults.
struct AutomaticOptimization {
  // Batch `batch_idx` of the epoch the Engine `core` runs; `forward()` runs training_step and returns its loss.
  // Returns the loss (divided by the window).
  template <class T, class Module, class Forward>
  static torch::Tensor run(T& t, Module& module, EngineCore& core, std::int64_t batch_idx, Forward&& forward) {
    LoopProgress& progress = t.progress_;
    const std::int64_t accumulate = progress.accumulate_grad_batches;
    const bool last_batch = core.state.epoch_length && core.state.epoch_iteration >= *core.state.epoch_length;
    const bool step_now = (batch_idx + 1) % accumulate == 0 || last_batch;
    const bool opens_window = progress.batches_since_step == 0;
    auto evaluate = [&]() -> torch::Tensor {
      torch::Tensor loss = forward();
      t.check_loss(loss, batch_idx, &type_name<Module>);
      if (opens_window)
        for (const auto& config : t.optimizers_) zero_grad(t, module, *config.optimizer());
      if (accumulate > 1) loss = loss / static_cast<double>(accumulate);
      t.strategy_.before_backward(step_now);  // accumulation micro-steps: no communication until the batch that steps
      OptimizerCalls::backward(t, module, loss);
      t.strategy_.after_backward();
      return loss;  // not detached: a detach is a dispatched op, 3-4 us a step (bench/trainer_overhead, tiny model)
    };
    ClosureBatch batch(evaluate);
    if (step_now) {
      step(t, module, batch);
    } else {
      OptimizerClosure{batch}();
      ++progress.batches_since_step;
    }
    return batch.loss;
  }

  // The step that closes a window the epoch ended inside (its length was unknown at its last batch, or it was cut
  // short): no batch is left, so the closures return the window's last loss, and an optimizer that re-evaluates
  // (LBFGS) cannot: an error says why.
  template <class T, class Module>
  static void step_without_batch(T& t, Module& module, const torch::Tensor& last_loss) {
    auto no_batch = []() -> torch::Tensor {
      throw std::logic_error(
          "trainloop: an optimizer re-evaluated its closure at the step after the epoch ended inside an accumulation "
          "window, where no batch is left to evaluate; give the training data a size divisible by "
          "accumulate_grad_batches, or use accumulate_grad_batches(1) with this optimizer");
    };
    ClosureBatch batch(no_batch, last_loss);
    step(t, module, batch);
  }

  // Every optimizer stepped with `batch`'s closure, counted once when at least one stepped.
  template <class T, class Module>
  static void step(T& t, Module& module, ClosureBatch& batch) {
    using Clipping = lightning_hook<lightning_tags::configure_gradient_clipping>;
    Clipping::template check_module<Module, torch::optim::Optimizer&, double, ClipAlgorithm>();
    static_assert(!is_detected_v<optimizer_step_without_closure_t, Module, torch::optim::Optimizer> ||
                      is_detected_v<optimizer_step_hook_t, Module, LightningOptimizer, OptimizerClosure>,
                  "trainloop: optimizer_step(epoch, batch_idx, optimizer) takes Lightning's closure now: declare "
                  "optimizer_step(std::int64_t epoch, std::int64_t batch_idx, trainloop::LightningOptimizer& "
                  "optimizer, trainloop::OptimizerClosure& optimizer_closure) and call "
                  "optimizer.step(optimizer_closure) where optimizer.step() was");
    static_assert(!is_detected_v<optimizer_step_hook_t, Module, torch::optim::Optimizer, OptimizerClosure> ||
                      is_detected_v<optimizer_step_hook_t, Module, LightningOptimizer, OptimizerClosure>,
                  "trainloop: optimizer_step's optimizer is a trainloop::LightningOptimizer& (its step(closure) "
                  "unscales, runs on_before_optimizer_step and clipping, and lets the loss scaler skip the step; "
                  "a torch::optim::Optimizer's step would bypass them)");
    bool stepped = false;
    for (const auto& config : t.optimizers_) {
      torch::optim::Optimizer& optimizer = *config.optimizer();
      auto clip = [&] {
        if constexpr (Clipping::template callable<Module, torch::optim::Optimizer&, double, ClipAlgorithm>)
          module.configure_gradient_clipping(optimizer, t.options_.gradient_clip_val(),
                                             t.options_.gradient_clip_algorithm());
        else
          OptimizerCalls::default_clip(t, optimizer);
      };
      bool this_stepped = false;
      auto through_trainer = [&](OptimizerClosure& closure) {
        auto run_closure = [&] { return closure(); };
        const FunctionRef<torch::Tensor()> closure_ref(run_closure);
        return OptimizerCalls::step(t, module, optimizer, clip, &closure_ref, this_stepped);
      };
      LightningOptimizer lightning_optimizer(optimizer, through_trainer);
      OptimizerClosure closure(batch);
      if constexpr (is_detected_v<optimizer_step_hook_t, Module, LightningOptimizer, OptimizerClosure>)
        module.optimizer_step(t.progress_.current_epoch, t.progress_.batch_idx, lightning_optimizer, closure);
      else
        lightning_optimizer.step(closure);
      stepped = this_stepped || stepped;
    }
    if (!batch.evaluated)
      throw std::logic_error("trainloop: " + type_name<Module>() +
                             "::optimizer_step did not run the closure, so training_step never ran (Lightning: \"the "
                             "closure hasn't been executed\"); call optimizer.step(optimizer_closure) in it");
    t.count_optimizer_step(stepped);
  }

  template <class T, class Module>
  static void zero_grad(T& t, Module& module, torch::optim::Optimizer& optimizer) {
    OptimizerCalls::zero_grad(t, module, optimizer, [&] {
      if constexpr (is_detected_v<optimizer_zero_grad_hook_t, Module, torch::optim::Optimizer>)
        module.optimizer_zero_grad(t.progress_.current_epoch, t.progress_.batch_idx, optimizer);
      else
        optimizer.zero_grad();
    });
  }
};

// Manual optimisation: what the module's manual_backward(loss), optimizer_step(optimizer[, closure]) and
// optimizer_zero_grad(optimizer) do (its runtime's functions), each through the shared hooks; a step counts at once.
struct ManualOptimization {
  template <class T, class Module>
  static void connect(T& t, Module& module) {
    ModuleRuntime& runtime = t.runtime_;
    runtime.backward = [&t, &module](torch::Tensor& loss) { OptimizerCalls::backward(t, module, loss); };
    runtime.step = [&t, &module](torch::optim::Optimizer& optimizer, const torch::optim::Optimizer::LossClosure& closure) {
      bool stepped = false;
      const FunctionRef<torch::Tensor()> closure_ref(closure);
      torch::Tensor loss = OptimizerCalls::step(
          t, module, optimizer, [&] { OptimizerCalls::default_clip(t, optimizer); }, closure ? &closure_ref : nullptr,
          stepped);
      t.count_optimizer_step(stepped);
      return loss;
    };
    runtime.zero_grad = [&t, &module](torch::optim::Optimizer& optimizer) {
      OptimizerCalls::zero_grad(t, module, optimizer, [&] { optimizer.zero_grad(); });
    };
  }
};
}  // namespace detail

TRAINLOOP_DETAIL_END
