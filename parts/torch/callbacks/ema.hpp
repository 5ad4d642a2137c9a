// trainloop: an exponential moving average of the weights (EMA), as timm's ModelEma, Ignite's EMAHandler and
// Lightning's EMAWeightAveraging keep it: after each optimizer step, ema = decay_t * ema + (1 - decay_t) * weights.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cstdint>
#include <exception>
#include <optional>
#include <utility>
#include <stdexcept>
#include <string>
#include <vector>

#include "parts/torch/checkpoint.hpp"

TRAINLOOP_DETAIL_BEGIN

/// EMA of a model's floating-point parameters (buffers such as BatchNorm statistics are copied, not averaged, unless
/// average_buffers). With warmup, the decay of the n-th update is min(decay, (1 + n) / (10 + n)), so early averages
/// are not dominated by the random initial weights (TensorFlow's num_updates rule).
///
/// As a Trainer callback it updates after every `every_n_steps`-th optimizer step, swaps the averaged weights in for
/// validation (on_validation_epoch_start ... on_validation_epoch_end, so checkpoints written at on_validation_end hold
/// the trained weights) and, with copy_to_model_at_end, leaves the averaged weights in the model when fit ends. Its
/// tensors and update count go in checkpoints, so a resumed fit continues the same average.
///
/// As an Engine handler: `EMA(options).track(model)` updates at each iteration_completed; evaluate with
/// `{ auto swapped = ema.swap_into(model); evaluator.run(...); }`.
class EMA {
 public:
  struct Options {
    double decay = 0.999;
    bool warmup = true;
    std::int64_t every_n_steps = 1;
    bool swap_for_validation = true;
    bool copy_to_model_at_end = true;
    bool average_buffers = false;
  };
  EMA() : EMA(Options{}) {}
  TRAINLOOP_DETAIL_API explicit EMA(Options options);
  TRAINLOOP_DETAIL_API EMA& track(torch::nn::Module& model);

  /// The decay the next update uses.
  TRAINLOOP_DETAIL_API double current_decay() const;
  std::int64_t updates() const noexcept { return updates_; }
  /// The averaged tensors, named like the model's parameters and buffers.
  TRAINLOOP_DETAIL_API TensorDict averaged() const;

  /// Starts the average at the model's current weights.
  TRAINLOOP_DETAIL_API void reset(torch::nn::Module& model);
  /// One update from the model's weights (no host sync: the decay is a host number).
  TRAINLOOP_DETAIL_API void update(torch::nn::Module& model);
  /// Copies the averaged weights into the model.
  void copy_to(torch::nn::Module& model) const { restore(model, averaged()); }
  /// Puts the averaged weights in the model until the returned guard goes out of scope.
  class Swap {
   public:
    Swap(const EMA& ema, torch::nn::Module& model) : model_(&model), backup_(copy_of(model)) { ema.copy_to(model); }
    Swap(Swap&& other) noexcept : model_(std::exchange(other.model_, nullptr)), backup_(std::move(other.backup_)) {}
    Swap(const Swap&) = delete;
    Swap& operator=(const Swap&) = delete;
    Swap& operator=(Swap&&) = delete;
    ~Swap() {
      if (model_) restore(*model_, backup_);
    }

   private:
    torch::nn::Module* model_;
    TensorDict backup_;
  };
  Swap swap_into(torch::nn::Module& model) const { return Swap(*this, model); }

  // --- checkpoint state ---
  StateDict state_dict() const { return {{"updates", updates_}, {"last_step", last_step_}}; }
  TRAINLOOP_DETAIL_API void load_state_dict(const StateDict& state);
  TensorDict tensor_state() const { return averaged(); }
  TRAINLOOP_DETAIL_API void load_tensor_state(const TensorDict& tensors);

  // --- Trainer callback hooks ---
  template <class T, class M>
  void setup(T&, M& module, const std::string& stage) {
    if (stage == "fit" && !loaded_) reset(module);  // before a resume loads the saved average into these tensors
  }
  template <class T, class M>
  void on_fit_start(T& trainer, M&) {
    if (!loaded_) last_step_ = trainer.global_step();
    loaded_ = false;
  }
  template <class T, class M, class O, class B>
  void on_train_batch_end(T& trainer, M& module, const O&, B&, std::int64_t) {
    const std::int64_t step = trainer.global_step();
    if (step == last_step_ || step % options_.every_n_steps != 0) return;  // no optimizer step, or not this one
    last_step_ = step;
    update(module);
  }
  template <class T, class M>
  void on_validation_epoch_start(T& trainer, M& module) {
    if (options_.swap_for_validation && trainer.fitting() && !shadow_.empty()) {
      trained_weights_ = copy_of(module);
      swapped_model_ = &module;
      copy_to(module);
    }
  }
  template <class T, class M>
  void on_validation_epoch_end(T&, M&) {
    put_trained_weights_back();
  }
  template <class T, class M>
  void on_fit_end(T&, M& module) {
    if (options_.copy_to_model_at_end && !shadow_.empty()) copy_to(module);
  }

  // --- Engine handler hooks (with track(); a Trainer callback also receives the training Engine's events) ---
  template <class E>
  void on_started(E&) {
    if (!tracked_) return;
    if (!loaded_) reset(*tracked_);
    loaded_ = false;
  }
  template <class E>
  void on_exception_raised(E&, std::exception_ptr) {
    put_trained_weights_back();  // validation failed inside fit: the trained weights go back
  }
  template <class E>
  void on_iteration_completed(E& engine) {
    if (tracked_ && engine.state.iteration % static_cast<std::uint64_t>(options_.every_n_steps) == 0) update(*tracked_);
  }

 private:
  TRAINLOOP_DETAIL_API static TensorDict copy_of(torch::nn::Module& model);
  TRAINLOOP_DETAIL_API static void restore(torch::nn::Module& model, const TensorDict& weights);
  TRAINLOOP_DETAIL_API void put_trained_weights_back();
  // Finds the model's tensor for each averaged one once, so an update is two _foreach calls and no name lookups.
  // (Module::to and load_checkpoint change parameters in place, so these handles stay the model's.)
  TRAINLOOP_DETAIL_API void pair_with(torch::nn::Module& model);
  TRAINLOOP_DETAIL_API static bool is_parameter(const torch::nn::Module& model, const std::string& name);

  Options options_;
  torch::nn::Module* tracked_ = nullptr;
  std::vector<std::string> names_;
  std::vector<torch::Tensor> shadow_;
  std::vector<bool> averaged_;  // floating-point parameters (and buffers with average_buffers); the rest is copied
  // The same tensors split for update(), with the paired model's tensors beside them (handles, not copies).
  std::vector<torch::Tensor> averaged_shadow_, averaged_weights_, copied_shadow_, copied_weights_;
  const torch::nn::Module* paired_model_ = nullptr;
  std::int64_t updates_ = 0, last_step_ = 0;
  bool loaded_ = false;  // a checkpoint's average was loaded: the fit start must not overwrite it
  TensorDict trained_weights_;                   // while validation runs on the average...
  torch::nn::Module* swapped_model_ = nullptr;  // ...in this model
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API EMA::EMA(Options options) : options_(options) {
  if (!(options_.decay > 0 && options_.decay < 1)) throw std::invalid_argument("trainloop: EMA: decay must be in (0, 1)");
  if (options_.every_n_steps < 1) throw std::invalid_argument("trainloop: EMA: every_n_steps must be at least 1");
}

TRAINLOOP_DETAIL_API EMA& EMA::track(torch::nn::Module& model) {
  tracked_ = &model;
  return *this;
}
TRAINLOOP_DETAIL_API double EMA::current_decay() const {
  if (!options_.warmup) return options_.decay;
  const double n = static_cast<double>(updates_);
  return std::min(options_.decay, (1 + n) / (10 + n));
}
TRAINLOOP_DETAIL_API TensorDict EMA::averaged() const {
  TensorDict tensors;
  for (std::size_t i = 0; i < names_.size(); ++i) tensors[names_[i]] = shadow_[i];
  return tensors;
}
TRAINLOOP_DETAIL_API void EMA::reset(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  names_.clear();
  shadow_.clear();
  averaged_.clear();
  for (auto& [name, tensor] : detail::named_tensors(model)) {
    names_.push_back(name);
    shadow_.push_back(tensor.detach().clone());
    averaged_.push_back(tensor.is_floating_point() && (options_.average_buffers || is_parameter(model, name)));
  }
  updates_ = 0;
  pair_with(model);
}
TRAINLOOP_DETAIL_API void EMA::update(torch::nn::Module& model) {
  if (shadow_.empty()) reset(model);
  if (&model != paired_model_) pair_with(model);
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < copied_shadow_.size(); ++i) copied_shadow_[i].copy_(copied_weights_[i]);
  const double decay = current_decay();
  if (!averaged_shadow_.empty()) {
    at::_foreach_mul_(averaged_shadow_, decay);  // one fused kernel per op on CUDA, a loop on CPU
    at::_foreach_add_(averaged_shadow_, averaged_weights_, 1.0 - decay);
  }
  ++updates_;
}
TRAINLOOP_DETAIL_API void EMA::load_state_dict(const StateDict& state) {
  auto get = [&](const char* key) {
    auto it = state.find(key);
    if (it == state.end() || !std::holds_alternative<std::int64_t>(it->second))
      throw std::invalid_argument(std::string("trainloop: EMA state: key '") + key + "' is missing");
    return std::get<std::int64_t>(it->second);
  };
  updates_ = get("updates");
  last_step_ = get("last_step");
}
TRAINLOOP_DETAIL_API void EMA::load_tensor_state(const TensorDict& tensors) {
  for (std::size_t i = 0; i < names_.size(); ++i) {
    auto it = tensors.find(names_[i]);
    if (it == tensors.end()) throw std::invalid_argument("trainloop: EMA state: tensor '" + names_[i] + "' is missing");
    if (it->second.sizes() != shadow_[i].sizes())
      throw std::invalid_argument("trainloop: EMA state: tensor '" + names_[i] + "' has shape " +
                                  c10::str(it->second.sizes()) + ", the model's has " + c10::str(shadow_[i].sizes()));
    shadow_[i].copy_(it->second);
  }
  loaded_ = true;
}
TRAINLOOP_DETAIL_API TensorDict EMA::copy_of(torch::nn::Module& model) {
  TensorDict copy;
  for (auto& [name, tensor] : detail::named_tensors(model)) copy[name] = tensor.detach().clone();
  return copy;
}
TRAINLOOP_DETAIL_API void EMA::restore(torch::nn::Module& model, const TensorDict& weights) {
  torch::NoGradGuard no_grad;
  auto current = detail::named_tensors(model);
  for (const auto& [name, tensor] : weights) current.at(name).copy_(tensor);
}
TRAINLOOP_DETAIL_API void EMA::put_trained_weights_back() {
  if (!swapped_model_) return;
  restore(*swapped_model_, trained_weights_);
  trained_weights_.clear();
  swapped_model_ = nullptr;
}
TRAINLOOP_DETAIL_API void EMA::pair_with(torch::nn::Module& model) {
  const auto current = detail::named_tensors(model);
  averaged_shadow_.clear();
  averaged_weights_.clear();
  copied_shadow_.clear();
  copied_weights_.clear();
  for (std::size_t i = 0; i < names_.size(); ++i) {
    auto it = current.find(names_[i]);
    if (it == current.end()) throw std::runtime_error("trainloop: EMA: the model no longer has '" + names_[i] + "'");
    (averaged_[i] ? averaged_shadow_ : copied_shadow_).push_back(shadow_[i]);
    (averaged_[i] ? averaged_weights_ : copied_weights_).push_back(it->second.detach());
  }
  paired_model_ = &model;
}
TRAINLOOP_DETAIL_API bool EMA::is_parameter(const torch::nn::Module& model, const std::string& name) {
  return model.named_parameters().find(name) != nullptr;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
