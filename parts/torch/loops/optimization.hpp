// trainloop: the two optimisation forms, Lightning's automatic and manual optimisation, and what they share: backward
// with its hooks, and an optimizer step with its hooks (the gradients unscaled under "16-mixed",
// on_before_optimizer_step, clipping, the step unless the loss scaler skips it, gradients synchronised across ranks
// first). Automatic optimisation calls the module's optimizer_step / optimizer_zero_grad / configure_gradient_clipping
// overrides; manual optimisation (the module calls manual_backward and steps its optimizers itself) uses the plain
// forms, as Lightning's does.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "parts/core/engine.hpp"
#include "parts/core/hooks.hpp"
#include "parts/torch/module.hpp"
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

  // The gradients synchronised across ranks and unscaled, on_before_optimizer_step, then (profiled as the optimizer
  // step) `clip()` and `step()` through the loss scaler, which skips the step on inf/NaN gradients. Returns whether
  // the optimizer stepped.
  template <class T, class Module, class Clip, class Step>
  static bool step(T& t, Module& module, torch::optim::Optimizer& optimizer, Clip&& clip, Step&& step) {
    t.strategy_.before_optimizer_step();
    t.precision_.unscale(optimizer);  // the hook and clipping see the true gradients, as in Lightning
    t.template call_hook<lightning_tags::on_before_optimizer_step>(module, optimizer);
    return t.profiled(profiler_actions::optimizer_step, [&] {
      clip();
      return t.precision_.step(optimizer, step);
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

// Lightning's automatic optimisation: for each batch, zero_grad at an accumulation window's start, backward of the
// loss (divided by the window), and at the window's end (or the epoch's) a step of every optimizer, with the module's
// optimizer_zero_grad(epoch, batch_idx, optimizer), configure_gradient_clipping(optimizer, value, algorithm) and
// optimizer_step(epoch, batch_idx, optimizer) overrides when it has them (optimizer_step must call optimizer.step()).
struct AutomaticOptimization {
  // After training_step returned `out`, at batch `batch_idx` of the epoch the Engine `core` runs.
  template <class T, class Module, class Out>
  static void run(T& t, Module& module, EngineCore& core, const Out& out, std::int64_t batch_idx) {
    torch::Tensor loss;
    try {
      loss = loss_of(out);
    } catch (const std::invalid_argument& error) {
      throw std::runtime_error("trainloop: " + type_name<Module>() + "::" + error.what());
    }
    t.check_loss(loss, batch_idx, &type_name<Module>);
    LoopProgress& progress = t.progress_;
    const std::int64_t accumulate = progress.accumulate_grad_batches;
    const bool last_batch = core.state.epoch_length && core.state.epoch_iteration >= *core.state.epoch_length;
    const bool step_now = (batch_idx + 1) % accumulate == 0 || last_batch;
    if (progress.batches_since_step == 0)
      for (const auto& config : t.optimizers_) zero_grad(t, module, *config.optimizer());
    t.strategy_.before_backward(step_now);  // accumulation micro-steps: no communication until the batch that steps
    OptimizerCalls::backward(t, module, accumulate > 1 ? loss / static_cast<double>(accumulate) : loss);
    t.strategy_.after_backward();
    ++progress.batches_since_step;
    if (step_now) step(t, module);
  }

  // Every optimizer, counted once when at least one stepped.
  template <class T, class Module>
  static void step(T& t, Module& module) {
    using Clipping = lightning_hook<lightning_tags::configure_gradient_clipping>;
    Clipping::template check_module<Module, torch::optim::Optimizer&, double, ClipAlgorithm>();
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
      auto step_it = [&] {
        if constexpr (is_detected_v<optimizer_step_hook_t, Module, torch::optim::Optimizer>)
          module.optimizer_step(t.progress_.current_epoch, t.progress_.batch_idx, optimizer);
        else
          optimizer.step();
      };
      stepped = OptimizerCalls::step(t, module, optimizer, clip, step_it) || stepped;
    }
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

// Manual optimisation: what the module's manual_backward(loss), optimizer step and zero_grad do (its runtime's
// functions), each through the shared hooks; a step counts at once.
struct ManualOptimization {
  template <class T, class Module>
  static void connect(T& t, Module& module) {
    ModuleRuntime& runtime = t.runtime_;
    runtime.backward = [&t, &module](torch::Tensor& loss) { OptimizerCalls::backward(t, module, loss); };
    runtime.step = [&t, &module](torch::optim::Optimizer& optimizer) {
      const bool stepped = OptimizerCalls::step(
          t, module, optimizer, [&] { OptimizerCalls::default_clip(t, optimizer); }, [&] { optimizer.step(); });
      t.count_optimizer_step(stepped);
    };
    runtime.zero_grad = [&t, &module](torch::optim::Optimizer& optimizer) {
      OptimizerCalls::zero_grad(t, module, optimizer, [&] { optimizer.zero_grad(); });
    };
  }
};
}  // namespace detail

TRAINLOOP_DETAIL_END
