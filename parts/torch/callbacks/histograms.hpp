// trainloop: weight and gradient histograms. A Trainer callback (Lightning users write one around
// logger.experiment.add_histogram; this is it) and Ignite's WeightsHistHandler and GradsHistHandler for the Engine.
// Tags are Ignite's: "weights/<name>" and "grads/<name>", the parameter's dots as slashes ("fc1/weight").
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "parts/torch/media.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
// Ignite's whitelist: empty takes every parameter, else those whose name starts with one of the entries.
inline bool whitelisted(const std::vector<std::string>& whitelist, const std::string& name) {
  if (whitelist.empty()) return true;
  for (const auto& prefix : whitelist)
    if (name.rfind(prefix, 0) == 0) return true;
  return false;
}
// Each named parameter's weights or gradients (none: skipped, as Ignite skips p.grad None) to `target`.
template <class Target>
void log_parameter_histograms(Target& target, const torch::nn::Module& model, const std::string& prefix, bool grads,
                              const std::vector<std::string>& whitelist, std::int64_t step) {
  for (const auto& item : model.named_parameters()) {
    if (!whitelisted(whitelist, item.key())) continue;
    const torch::Tensor values = grads ? item.value().grad() : item.value();
    if (!values.defined()) continue;
    std::string name = item.key();
    for (char& c : name)
      if (c == '.') c = '/';
    log_histogram(target, prefix + (grads ? "grads/" : "weights/") + name, values, step);
  }
}
}  // namespace detail

/// A Trainer callback: every `every_n_steps` optimizer steps (global_step % n == 0, the first step included), the
/// histograms of the module's weights and gradients, logged at on_before_optimizer_step: the gradients this step
/// applies (synchronised across ranks and, under mixed precision, unscaled) and the weights they apply to, at the
/// step's global_step, to every logger that shows histograms (rank 0 only). Several optimizers: once per step.
class ParameterHistograms {
 public:
  struct Options {
    std::int64_t every_n_steps = 100;
    bool weights = true;
    bool gradients = true;
    std::string prefix;                   ///< before "weights/" and "grads/" (Ignite's tag + "/")
    std::vector<std::string> whitelist;   ///< parameter names or prefixes; empty: all
  };
  ParameterHistograms() : ParameterHistograms(Options{}) {}
  explicit ParameterHistograms(Options options) : options_(std::move(options)) {
    if (options_.every_n_steps < 1) throw std::invalid_argument("trainloop: ParameterHistograms: every_n_steps must be positive");
  }

  template <class T, class M>
  void on_before_optimizer_step(T& trainer, M& module, torch::optim::Optimizer&) {
    const std::int64_t step = trainer.global_step();
    if (step % options_.every_n_steps != 0 || step == last_step_ || !trainer.is_global_zero()) return;
    last_step_ = step;
    if (options_.weights) detail::log_parameter_histograms(trainer, module, options_.prefix, false, options_.whitelist, step);
    if (options_.gradients) detail::log_parameter_histograms(trainer, module, options_.prefix, true, options_.whitelist, step);
  }

 private:
  Options options_;
  std::int64_t last_step_ = -1;
};

/// The options of WeightsHistHandler and GradsHistHandler.
struct HistHandlerOptions {
  std::string tag;                      ///< Ignite's tag: the names become "<tag>/weights/<name>"
  std::vector<std::string> whitelist;   ///< parameter names or prefixes; empty: all
  bool epoch_step = false;              ///< the step is the engine's epoch, not its iteration
};

namespace detail {
template <class Logger, bool Gradients>
class ParameterHistHandler {
 public:
  ParameterHistHandler(Logger& logger, const torch::nn::Module& model, HistHandlerOptions options)
      : logger_(&logger), model_(&model), options_(std::move(options)) {}

  template <class E>
  void operator()(E& engine) {
    const auto step = static_cast<std::int64_t>(options_.epoch_step ? engine.state.epoch : engine.state.iteration);
    log_parameter_histograms(*logger_, *model_, options_.tag.empty() ? "" : options_.tag + "/", Gradients,
                             options_.whitelist, step);
  }

 private:
  Logger* logger_;
  const torch::nn::Module* model_;
  HistHandlerOptions options_;
};
}  // namespace detail

/// Ignite's WeightsHistHandler, as an Engine handler: `on(Events::iteration_completed | every(100),
/// WeightsHistHandler(tb_logger, *model))` logs each parameter's histogram as "weights/<name>" at the engine's
/// iteration (Ignite takes the attribute of the event it runs on: give epoch_step for epoch events). The logger and
/// the model are held by reference.
template <class Logger>
struct WeightsHistHandler : detail::ParameterHistHandler<Logger, false> {
  WeightsHistHandler(Logger& logger, const torch::nn::Module& model, HistHandlerOptions options = {})
      : detail::ParameterHistHandler<Logger, false>(logger, model, std::move(options)) {}
};
/// Ignite's GradsHistHandler: the same for the gradients ("grads/<name>"; parameters without one are skipped).
template <class Logger>
struct GradsHistHandler : detail::ParameterHistHandler<Logger, true> {
  GradsHistHandler(Logger& logger, const torch::nn::Module& model, HistHandlerOptions options = {})
      : detail::ParameterHistHandler<Logger, true>(logger, model, std::move(options)) {}
};

TRAINLOOP_DETAIL_END
