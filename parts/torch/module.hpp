// trainloop: LightningModule<Derived>. A torch::nn::Module the user writes as usual, plus the steps and hooks the
// Trainer detects at compile time (CRTP: no virtual calls), plus log() and the manual-optimisation helpers.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "parts/core/type_name.hpp"
#include "parts/torch/logging.hpp"
#include "parts/torch/metrics/metric.hpp"
#include "parts/torch/trainer_options.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
// What a LightningModule reaches while a Trainer runs it. The Trainer owns it and points the module at it for the
// duration of fit/validate/test/predict.
struct ModuleRuntime {
  MetricStore* metrics = nullptr;
  Stage stage = Stage::train;
  std::int64_t current_epoch = 0;
  std::int64_t global_step = 0;
  torch::Device device = torch::Device(torch::kCPU);
  std::vector<std::shared_ptr<torch::optim::Optimizer>> optimizers;
  std::function<void(torch::Tensor&)> backward;                // runs the backward hooks around loss.backward()
  // the closure (may be empty), hooks, clipping, step, global_step + 1; returns the closure's loss
  std::function<torch::Tensor(torch::optim::Optimizer&, const torch::optim::Optimizer::LossClosure&)> step;
  std::function<void(torch::optim::Optimizer&)> zero_grad;     // hooks, zero_grad
  std::function<void(torch::optim::Optimizer&, double, ClipAlgorithm)> clip_gradients;
};
}  // namespace detail

/// Base of a Lightning-style module: `struct Net : trainloop::LightningModule<Net> { ... }`. Write the model as any
/// torch::nn::Module (register_module, forward) and add what you need: training_step, validation_step, test_step,
/// predict_step, configure_optimizers, and any hook (see docs/trainer.md: hook order).
namespace detail {
struct LightningModuleBase {};  // marks every LightningModule<...>, subclasses of one included
}  // namespace detail

template <class Derived>
class LightningModule : public torch::nn::Module, public detail::LightningModuleBase {
 public:
  LightningModule() : torch::nn::Module(detail::type_name<Derived>()) {}

  /// Logs a scalar (Lightning's self.log): kept on its device, reduced per epoch, read by the host only when used.
  void log(const std::string& name, const torch::Tensor& value, const LogOptions& options = {}) {
    runtime("log").metrics->log(runtime_->stage, name, value, options);
  }
  void log(const std::string& name, double value, const LogOptions& options = {}) {
    log(name, torch::tensor(value, torch::kFloat64), options);
  }
  /// Logs a Metric (trainloop::Accuracy, ...): computed at epoch end from all its updates, then reset.
  template <class M, class = std::enable_if_t<detail::is_metric_v<M>>>
  void log(const std::string& name, M& metric, const LogOptions& options = {}) {
    runtime("log").metrics->log_metric(name, metric, options);
  }

  /// 0-based epoch and optimizer steps so far, as in Lightning; the device the Trainer placed the module on.
  std::int64_t current_epoch() const { return runtime_ ? runtime_->current_epoch : 0; }
  std::int64_t global_step() const { return runtime_ ? runtime_->global_step : 0; }
  torch::Device device() const { return runtime_ ? runtime_->device : torch::Device(torch::kCPU); }
  Stage stage() const { return runtime_ ? runtime_->stage : Stage::train; }

  /// Manual optimisation: with automatic_optimization(false), training_step steps its own optimizers through these,
  /// so hooks fire, clipping applies and global_step counts.
  bool automatic_optimization() const { return automatic_optimization_; }
  void automatic_optimization(bool enabled) { automatic_optimization_ = enabled; }
  const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers() { return runtime("optimizers").optimizers; }
  void manual_backward(torch::Tensor loss) { runtime("manual_backward").backward(loss); }
  void optimizer_step(torch::optim::Optimizer& optimizer) { runtime("optimizer_step").step(optimizer, nullptr); }
  /// Lightning's opt.step(closure=closure) in manual optimisation, for an optimizer that re-evaluates the loss
  /// (torch::optim::LBFGS): `closure` computes the loss, calls manual_backward(loss) and returns the loss; it runs
  /// inside the step (before it under a loss scaler, which LBFGS cannot have), then the hooks and clipping, as
  /// without one. Returns the closure's loss.
  torch::Tensor optimizer_step(torch::optim::Optimizer& optimizer, const torch::optim::Optimizer::LossClosure& closure) {
    return runtime("optimizer_step").step(optimizer, closure);
  }
  void optimizer_zero_grad(torch::optim::Optimizer& optimizer) { runtime("optimizer_zero_grad").zero_grad(optimizer); }
  /// Clips the gradients of `optimizer`'s parameters on the device (Lightning's clip_gradients), for an override of
  /// configure_gradient_clipping.
  void clip_gradients(torch::optim::Optimizer& optimizer, double gradient_clip_val,
                      ClipAlgorithm algorithm = ClipAlgorithm::norm) {
    runtime("clip_gradients").clip_gradients(optimizer, gradient_clip_val, algorithm);
  }

  /// Hyperparameters (Lightning's save_hyperparameters): written into every checkpoint under "hparams" and handed to
  /// the loggers' log_hyperparams when fit starts.
  void save_hyperparameters(StateDict hparams) { hparams_ = std::move(hparams); }
  const StateDict& hparams() const noexcept { return hparams_; }

  /// The Trainer's link to the module; not for users.
  void attach_runtime_(detail::ModuleRuntime* runtime) noexcept { runtime_ = runtime; }

 private:
  detail::ModuleRuntime& runtime(const char* what) const {
    if (!runtime_)
      throw std::logic_error(std::string("trainloop: ") + detail::type_name<Derived>() + "::" + what +
                             "() needs a running Trainer (call it from a step or a hook)");
    return *runtime_;
  }
  detail::ModuleRuntime* runtime_ = nullptr;
  bool automatic_optimization_ = true;
  StateDict hparams_;
};

namespace detail {
template <class M>
struct is_lightning_module : std::is_base_of<LightningModuleBase, M> {};
}  // namespace detail

TRAINLOOP_DETAIL_END
