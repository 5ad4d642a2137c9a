// trainloop: mixed precision (TRAINLOOP_WITH_AMP=1). An autocast guard, a GradScaler (LibTorch has neither in C++),
// and the policy through which the Trainer uses them for precision("16-mixed") and precision("bf16-mixed").
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

// LibTorch 2.4 replaced the per-device autocast functions (set_cpu_enabled, set_autocast_gpu_dtype, ...) by ones
// taking the device type, and deprecated the old ones (a -Werror build breaks on them).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define TRAINLOOP_DETAIL_AUTOCAST_BY_DEVICE 1
#else
#define TRAINLOOP_DETAIL_AUTOCAST_BY_DEVICE 0
#endif
// The fused scaler kernels exist for CUDA in every LibTorch; for CPU from LibTorch 2.x (the header of its CPU kernel
// tells). Elsewhere the scaler computes the same numbers with ordinary tensor ops.
#if __has_include(<ATen/ops/_amp_update_scale_cpu_dispatch.h>)
#define TRAINLOOP_DETAIL_AMP_CPU_KERNELS 1
#else
#define TRAINLOOP_DETAIL_AMP_CPU_KERNELS 0
#endif

#include "parts/core/state.hpp"
#include "parts/torch/precision.hpp"  // the precision setting (it includes this part at its end)

TRAINLOOP_DETAIL_BEGIN

namespace detail {
[[noreturn]] inline void autocast_unsupported(c10::DeviceType device_type) {
  throw std::invalid_argument("trainloop: autocast is not available for device type " +
                              c10::DeviceTypeName(device_type, /*lower_case=*/true) + " in this LibTorch");
}
#if TRAINLOOP_DETAIL_AUTOCAST_BY_DEVICE
inline void check_autocast_device(c10::DeviceType device_type) {
  if (!at::autocast::is_autocast_available(device_type)) autocast_unsupported(device_type);
}
inline bool autocast_enabled(c10::DeviceType d) { return at::autocast::is_autocast_enabled(d); }
inline void set_autocast_enabled(c10::DeviceType d, bool on) { at::autocast::set_autocast_enabled(d, on); }
inline at::ScalarType autocast_dtype(c10::DeviceType d) { return at::autocast::get_autocast_dtype(d); }
inline void set_autocast_dtype(c10::DeviceType d, at::ScalarType t) { at::autocast::set_autocast_dtype(d, t); }
#else
inline void check_autocast_device(c10::DeviceType device_type) {
  if (device_type != c10::kCPU && device_type != c10::kCUDA && device_type != c10::kXPU) autocast_unsupported(device_type);
}
inline bool autocast_enabled(c10::DeviceType d) {
  return d == c10::kCPU ? at::autocast::is_cpu_enabled() : d == c10::kXPU ? at::autocast::is_xpu_enabled() : at::autocast::is_enabled();
}
inline void set_autocast_enabled(c10::DeviceType d, bool on) {
  if (d == c10::kCPU) at::autocast::set_cpu_enabled(on);
  else if (d == c10::kXPU) at::autocast::set_xpu_enabled(on);
  else at::autocast::set_enabled(on);
}
inline at::ScalarType autocast_dtype(c10::DeviceType d) {
  return d == c10::kCPU   ? at::autocast::get_autocast_cpu_dtype()
         : d == c10::kXPU ? at::autocast::get_autocast_xpu_dtype()
                          : at::autocast::get_autocast_gpu_dtype();
}
inline void set_autocast_dtype(c10::DeviceType d, at::ScalarType t) {
  if (d == c10::kCPU) at::autocast::set_autocast_cpu_dtype(t);
  else if (d == c10::kXPU) at::autocast::set_autocast_xpu_dtype(t);
  else at::autocast::set_autocast_gpu_dtype(t);
}
#endif
}  // namespace detail

namespace amp {

/// Runs the ops of its scope in lower precision where that is safe, as Python's `with torch.autocast(...)`: matmuls and
/// convolutions in `dtype`, reductions and losses in fp32; parameters and their gradients stay fp32. On entry it saves
/// the thread's autocast state and sets its own; on exit it restores the saved state, and the outermost guard clears
/// the cache of casted weights. Autocast state is per thread: take the guard on the thread that runs forward. Wrap
/// the forward pass and the loss, not backward or the optimizer step.
class Autocast {
 public:
  /// `dtype`: at::kHalf or at::kBFloat16 (CPU autocast takes bf16 only before LibTorch 2.4).
  Autocast(c10::DeviceType device_type, at::ScalarType dtype, bool enabled = true, bool cache_enabled = true)
      : device_type_(device_type) {
    detail::check_autocast_device(device_type);
    if (dtype != at::kHalf && dtype != at::kBFloat16)
      throw std::invalid_argument(std::string("trainloop: amp::Autocast: dtype ") + c10::toString(dtype) +
                                  " is not a lower-precision float; use at::kHalf or at::kBFloat16");
#if !TRAINLOOP_DETAIL_AUTOCAST_BY_DEVICE
    if (device_type == c10::kCPU && dtype != at::kBFloat16)
      throw std::invalid_argument("trainloop: amp::Autocast: CPU autocast in LibTorch " TORCH_VERSION
                                  " supports only at::kBFloat16 (fp16 on CPU needs LibTorch 2.4 or later)");
#endif
    previous_enabled_ = detail::autocast_enabled(device_type);
    previous_dtype_ = detail::autocast_dtype(device_type);
    previous_cache_enabled_ = at::autocast::is_autocast_cache_enabled();
    detail::set_autocast_enabled(device_type, enabled);
    detail::set_autocast_dtype(device_type, dtype);
    at::autocast::increment_nesting();
    at::autocast::set_autocast_cache_enabled(cache_enabled);
  }
  /// The device type's current autocast dtype (fp16 on CUDA, bf16 on CPU unless changed).
  explicit Autocast(c10::DeviceType device_type, bool enabled = true)
      : Autocast(device_type, (detail::check_autocast_device(device_type), detail::autocast_dtype(device_type)), enabled) {}
  ~Autocast() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    detail::set_autocast_enabled(device_type_, previous_enabled_);
    detail::set_autocast_dtype(device_type_, previous_dtype_);
    at::autocast::set_autocast_cache_enabled(previous_cache_enabled_);
  }
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  c10::DeviceType device_type_;
  bool previous_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kBFloat16;
  bool previous_cache_enabled_ = true;
};

/// GradScaler's settings; the defaults are PyTorch's.
struct GradScalerOptions {
  GradScalerOptions& init_scale(double v) { return init_scale_ = v, *this; }
  GradScalerOptions& growth_factor(double v) { return growth_factor_ = v, *this; }
  GradScalerOptions& backoff_factor(double v) { return backoff_factor_ = v, *this; }
  GradScalerOptions& growth_interval(std::int64_t v) { return growth_interval_ = v, *this; }
  /// false: scale() returns the loss as is, step() always steps, update() does nothing.
  GradScalerOptions& enabled(bool v) { return enabled_ = v, *this; }
  double init_scale() const { return init_scale_; }
  double growth_factor() const { return growth_factor_; }
  double backoff_factor() const { return backoff_factor_; }
  std::int64_t growth_interval() const { return growth_interval_; }
  bool enabled() const { return enabled_; }
  void validate() const {
    auto fail = [](const std::string& what) { return std::invalid_argument("trainloop: amp::GradScalerOptions()." + what); };
    if (!(init_scale_ > 0)) throw fail("init_scale(s): s must be positive");
    if (!(growth_factor_ > 1)) throw fail("growth_factor(f): f must be greater than 1");
    if (!(backoff_factor_ > 0 && backoff_factor_ < 1)) throw fail("backoff_factor(f): f must be in (0, 1)");
    if (growth_interval_ < 1) throw fail("growth_interval(n): n must be at least 1");
  }

 private:
  double init_scale_ = 65536.0;
  double growth_factor_ = 2.0;
  double backoff_factor_ = 0.5;
  std::int64_t growth_interval_ = 2000;
  bool enabled_ = true;
};

}  // namespace amp

namespace detail {
inline bool amp_fused_kernels(const torch::Device& device) {
  return device.is_cuda() || (TRAINLOOP_DETAIL_AMP_CPU_KERNELS && device.is_cpu());
}
// What at::_amp_foreach_non_finite_check_and_unscale_ does, from ordinary tensor ops, with the same numbers:
// found_inf (float, one element) becomes 1 when any gradient holds an inf or NaN (checked before scaling), and every
// gradient is multiplied by inv_scale (float, one element) in its own precision. No host read.
inline void amp_unscale_fallback(const std::vector<torch::Tensor>& grads, torch::Tensor& found_inf,
                                 const torch::Tensor& inv_scale) {
  // A tensor holds an inf or NaN exactly when its max or min is one (max and min propagate NaN): two reductions
  // without temporaries, where isfinite(g).all() makes several full-size ones.
  std::vector<torch::Tensor> extremes;
  extremes.reserve(2 * grads.size());
  for (const auto& g : grads) {
    if (g.numel() == 0) continue;
    extremes.push_back(g.amax().reshape({1}));
    extremes.push_back(g.amin().reshape({1}));
    g.mul_(inv_scale);  // a handle to the gradient: the in-place op writes it
  }
  if (extremes.empty()) return;
  found_inf.masked_fill_(torch::isfinite(torch::cat(extremes)).all().logical_not(), 1.0);
}
// What at::_amp_update_scale_ does, from ordinary tensor ops, with the same numbers: after an inf/NaN the scale is
// multiplied by backoff and the growth tracker reset; otherwise the tracker counts clean steps and, at
// growth_interval, the scale grows (when the grown value is finite) and the tracker restarts. Products in double,
// stored as float, as the kernel does.
inline void amp_update_scale_fallback(torch::Tensor& scale, torch::Tensor& growth_tracker, const torch::Tensor& found_inf,
                                      double growth_factor, double backoff_factor, std::int64_t growth_interval) {
  const torch::Tensor found = found_inf != 0;
  const torch::Tensor scale64 = scale.to(torch::kFloat64);
  const torch::Tensor backed_off = (scale64 * backoff_factor).to(torch::kFloat32);
  const torch::Tensor grown = (scale64 * growth_factor).to(torch::kFloat32);
  const torch::Tensor successful = growth_tracker + 1;
  const torch::Tensor grow_now = successful == growth_interval;
  const torch::Tensor kept_or_grown = torch::where(grow_now & torch::isfinite(grown), grown, scale);
  scale.copy_(torch::where(found, backed_off, kept_or_grown));
  growth_tracker.copy_(torch::where(found | grow_now, torch::zeros_like(successful), successful));
}
}  // namespace detail

namespace amp {

/// Dynamic loss scaling for fp16 training, as PyTorch's torch.amp.GradScaler: `scale(loss)` before backward,
/// optionally `unscale_(optimizer)` (before clipping or reading gradients), `step(optimizer)` (skipped when any of its
/// gradients is inf or NaN), and `update()` once per iteration. The scale and growth tracker are device tensors, the
/// inf/NaN check and the unscaling run on the device (fused kernels where LibTorch has them); the one host read is the
/// 4-byte found-inf flag step() needs to decide whether to call optimizer.step() (as PyTorch's does for its C++-side
/// optimizers): a skipped step must leave the optimizer's host-side counters (Adam's `step`) untouched, which no
/// device-side select can undo.
class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions options = GradScalerOptions()) : options_(options) { options_.validate(); }

  bool is_enabled() const noexcept { return options_.enabled(); }
  const GradScalerOptions& options() const noexcept { return options_; }
  /// Data-parallel training: reduces (max) each optimizer's found-inf flag across ranks in unscale_, so every rank
  /// skips the same steps and keeps the same scale even when a rank's gradients differ from the others'.
  void set_found_inf_reducer(std::function<void(torch::Tensor&)> reducer) { found_inf_reducer_ = std::move(reducer); }

  /// `outputs * scale`; the scale tensor is created on the outputs' device the first time.
  torch::Tensor scale(const torch::Tensor& outputs) {
    if (!is_enabled()) return outputs;
    if (!scale_.defined()) {
      scale_ = torch::full({1}, options_.init_scale(), torch::TensorOptions().dtype(torch::kFloat32).device(outputs.device()));
      growth_tracker_ = torch::full({1}, init_growth_tracker_, torch::TensorOptions().dtype(torch::kInt32).device(outputs.device()));
    }
    return outputs * scale_.to(outputs.device(), /*non_blocking=*/true);
  }

  /// Divides `optimizer`'s gradients by the scale, in place, and records whether any is inf/NaN. At most once per
  /// optimizer between update()s, and before step().
  void unscale_(torch::optim::Optimizer& optimizer) {
    if (!is_enabled()) return;
    check_scaled("unscale_");
    PerOptimizer& state = per_optimizer_[&optimizer];
    if (state.stage == Stage::unscaled)
      throw std::logic_error("trainloop: GradScaler::unscale_(optimizer) was already called on this optimizer since the last update()");
    if (state.stage == Stage::stepped)
      throw std::logic_error("trainloop: GradScaler::unscale_(optimizer) is being called after step(optimizer); call it before");
    const torch::Tensor inv_scale = scale_.to(torch::kFloat64).reciprocal().to(torch::kFloat32);
    // Gradients grouped by device and dtype: the fused kernel takes one of each per call.
    std::map<std::pair<std::string, at::ScalarType>, std::vector<torch::Tensor>> groups;
    std::size_t index = 0;
    for (auto& group : optimizer.param_groups())
      for (auto& p : group.params()) {
        torch::Tensor g = p.grad();
        ++index;
        if (!g.defined()) continue;
        if (g.scalar_type() == at::kHalf)
          throw std::invalid_argument("trainloop: GradScaler::unscale_: parameter " + std::to_string(index - 1) +
                                      " of the optimizer has an fp16 gradient; keep the parameters fp32 (autocast "
                                      "lowers the precision of the ops, not of the weights)");
        groups[{g.device().str(), g.scalar_type()}].push_back(g.is_sparse() ? g._values() : g);
      }
    state.found_inf.clear();
    std::map<std::string, torch::Tensor> found_by_device;
    for (auto& [key, grads] : groups) {
      const torch::Device device = grads.front().device();
      auto [it, added] = found_by_device.try_emplace(key.first);
      if (added) it->second = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
      const torch::Tensor inv = inv_scale.to(device, /*non_blocking=*/true);
      if (detail::amp_fused_kernels(device)) at::_amp_foreach_non_finite_check_and_unscale_(grads, it->second, inv);
      else detail::amp_unscale_fallback(grads, it->second, inv);
    }
    for (auto& entry : found_by_device) state.found_inf.push_back(entry.second);
    if (found_inf_reducer_) {  // one flag for all devices, agreed across ranks
      torch::Tensor any = torch::zeros({1}, scale_.options());
      for (const auto& f : state.found_inf) any = torch::maximum(any, f.to(scale_.device(), /*non_blocking=*/true));
      found_inf_reducer_(any);
      state.found_inf = {any};
    }
    state.stage = Stage::unscaled;
  }

  /// Unscales (unless unscale_ did) and steps `optimizer`, unless one of its gradients is inf/NaN. Returns whether it
  /// stepped.
  bool step(torch::optim::Optimizer& optimizer) {
    return step(optimizer, [&] { optimizer.step(); });
  }
  /// The same, with `do_step` doing the step (a hook that calls optimizer.step() itself).
  template <class DoStep>
  bool step(torch::optim::Optimizer& optimizer, DoStep&& do_step) {
    if (!is_enabled()) {
      do_step();
      return true;
    }
    check_scaled("step");
    PerOptimizer& state = per_optimizer_[&optimizer];
    if (state.stage == Stage::stepped)
      throw std::logic_error("trainloop: GradScaler::step(optimizer) was already called on this optimizer since the last update()");
    if (state.stage == Stage::ready) unscale_(optimizer);
    float found = 0;
    for (const auto& f : state.found_inf) found += f.item<float>();  // the step's one host read (see the class)
    state.stage = Stage::stepped;
    if (found != 0) return false;
    do_step();
    return true;
  }

  /// Once per iteration, after the step(s): backs the scale off after an inf/NaN in any optimizer's gradients, grows it
  /// after growth_interval clean iterations. On the device; resets the per-optimizer bookkeeping.
  void update() {
    if (!is_enabled()) return;
    check_scaled("update");
    torch::Tensor found;
    for (const auto& entry : per_optimizer_)
      for (const auto& f : entry.second.found_inf) {
        const torch::Tensor here = f.to(scale_.device(), /*non_blocking=*/true);
        found = found.defined() ? found + here : here.clone();
      }
    if (!found.defined())
      throw std::logic_error("trainloop: GradScaler::update(): no optimizer was unscaled or stepped since the last update()");
    const auto& o = options_;
    if (detail::amp_fused_kernels(scale_.device()))
      at::_amp_update_scale_(scale_, growth_tracker_, found, o.growth_factor(), o.backoff_factor(), o.growth_interval());
    else
      detail::amp_update_scale_fallback(scale_, growth_tracker_, found, o.growth_factor(), o.backoff_factor(), o.growth_interval());
    per_optimizer_.clear();
  }
  /// Sets the scale (PyTorch's update(new_scale)), and resets the per-optimizer bookkeeping.
  void update(double new_scale) {
    if (!is_enabled()) return;
    check_scaled("update");
    scale_.fill_(new_scale);
    per_optimizer_.clear();
  }
  /// Whether unscale_(optimizer) (or step) ran since the last update().
  bool unscaled(const torch::optim::Optimizer& optimizer) const {
    auto it = per_optimizer_.find(&optimizer);
    return it != per_optimizer_.end() && it->second.stage != Stage::ready;
  }
  /// Whether update() has work: some optimizer was unscaled or stepped since the last one.
  bool pending_update() const noexcept { return !per_optimizer_.empty(); }
  /// Whether some optimizer was stepped since the last update().
  bool stepped_since_update() const noexcept {
    for (const auto& entry : per_optimizer_)
      if (entry.second.stage == Stage::stepped) return true;
    return false;
  }

  /// The current scale (a host read), or init_scale before the first scale(); 1 when disabled.
  double get_scale() const {
    if (!is_enabled()) return 1.0;
    return scale_.defined() ? scale_.item<double>() : options_.init_scale();
  }
  /// The scale as a device tensor (undefined before the first scale()): no host read.
  const torch::Tensor& scale_tensor() const noexcept { return scale_; }

  /// PyTorch's keys and values: scale, growth_factor, backoff_factor, growth_interval, _growth_tracker. Empty when
  /// disabled.
  StateDict state_dict() const {
    if (!is_enabled()) return {};
    return {{"scale", get_scale()},
            {"growth_factor", options_.growth_factor()},
            {"backoff_factor", options_.backoff_factor()},
            {"growth_interval", options_.growth_interval()},
            {"_growth_tracker", growth_tracker_.defined() ? static_cast<std::int64_t>(growth_tracker_.item<int>())
                                                          : init_growth_tracker_}};
  }
  void load_state_dict(const StateDict& state) {
    if (!is_enabled()) return;
    if (state.empty())
      throw std::invalid_argument("trainloop: GradScaler::load_state_dict: the state is empty (saved from a disabled GradScaler?)");
    auto get = [&](const char* key) -> const StateValue& {
      auto it = state.find(key);
      if (it == state.end()) throw std::invalid_argument(std::string("trainloop: GradScaler::load_state_dict: key '") + key + "' is missing");
      return it->second;
    };
    auto number = [&](const char* key) {
      const StateValue& v = get(key);
      if (const double* d = std::get_if<double>(&v)) return *d;
      if (const std::int64_t* i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
      throw std::invalid_argument(std::string("trainloop: GradScaler::load_state_dict: key '") + key + "' is not a number");
    };
    GradScalerOptions loaded = options_;
    loaded.init_scale(number("scale"))
        .growth_factor(number("growth_factor"))
        .backoff_factor(number("backoff_factor"))
        .growth_interval(static_cast<std::int64_t>(number("growth_interval")));
    loaded.validate();
    options_ = loaded;  // its init_scale is the saved scale: a scaler not yet used starts from it
    init_growth_tracker_ = static_cast<std::int64_t>(number("_growth_tracker"));
    if (scale_.defined()) {
      scale_.fill_(options_.init_scale());
      growth_tracker_.fill_(init_growth_tracker_);
    }
  }

 private:
  enum class Stage { ready, unscaled, stepped };
  struct PerOptimizer {
    Stage stage = Stage::ready;
    std::vector<torch::Tensor> found_inf;  // one per device holding the optimizer's gradients
  };
  void check_scaled(const char* what) const {
    if (!scale_.defined())
      throw std::logic_error(std::string("trainloop: GradScaler::") + what +
                             "(): no loss was scaled yet; call scale(loss) and backward() on the result first");
  }

  GradScalerOptions options_;
  std::int64_t init_growth_tracker_ = 0;
  torch::Tensor scale_, growth_tracker_;
  std::map<const torch::optim::Optimizer*, PerOptimizer> per_optimizer_;
  std::function<void(torch::Tensor&)> found_inf_reducer_;
};

/// The Trainer's precision policy under TRAINLOOP_WITH_AMP (DESIGN.md §6): autocast around the forward passes for
/// "16-mixed"/"bf16-mixed", and a GradScaler for "16-mixed" (or for bf16 when asked).
class MixedPrecision {
 public:
  /// Called when a stage starts: `device` is where the module runs. "16-mixed" on a device that cannot autocast to
  /// fp16 fails here, before any op.
  template <class Options>
  void setup(const Options& options, const torch::Device& device) {
    setup(parse_precision(options.precision()), options.grad_scaler(), device);
  }
  void setup(TrainingPrecision precision, const std::optional<GradScalerOptions>& scaler, const torch::Device& device) {
    precision_ = precision;
    device_type_ = device.type();
    if (precision == TrainingPrecision::full32) {
      if (scaler && scaler->enabled())
        throw std::invalid_argument("trainloop: TrainerOptions().grad_scaler(...) needs mixed precision; set "
                                    "precision(\"16-mixed\") or precision(\"bf16-mixed\")");
      scaler_.reset();
      return;
    }
    dtype_ = precision == TrainingPrecision::fp16_mixed ? at::kHalf : at::kBFloat16;
#if !TRAINLOOP_DETAIL_AUTOCAST_BY_DEVICE
    if (device_type_ == c10::kCPU && dtype_ == at::kHalf)
      throw std::invalid_argument("trainloop: TrainerOptions().precision(\"16-mixed\") on CPU: CPU autocast in LibTorch " TORCH_VERSION
                                  " supports only bfloat16; use precision(\"bf16-mixed\"), or a CUDA device");
#endif
    detail::check_autocast_device(device_type_);
    const bool wants_scaler = scaler ? scaler->enabled() : precision == TrainingPrecision::fp16_mixed;
    if (!wants_scaler) {
      scaler_.reset();
      return;
    }
    // The scaler lives across stages and fits; a new one only when the configured options change (its own options
    // take a loaded checkpoint's scale, so they are not what to compare).
    const GradScalerOptions wanted = scaler.value_or(GradScalerOptions());
    if (!scaler_ || !same_options(configured_, wanted)) scaler_.emplace(wanted);
    configured_ = wanted;
  }

  std::optional<Autocast> forward_guard() const {
    if (precision_ == TrainingPrecision::full32) return std::nullopt;
    return std::optional<Autocast>(std::in_place, device_type_, dtype_);
  }
  // A backward after a step in the same batch (manual optimisation: backward, step, backward, step) starts a new
  // scaler iteration: the scale is updated first, so the step to come unscales with the scale its gradients got.
  torch::Tensor scale_loss(const torch::Tensor& loss) {
    if (!scaler_) return loss;
    if (scaler_->stepped_since_update()) scaler_->update();
    return scaler_->scale(loss);
  }
  void unscale(torch::optim::Optimizer& optimizer) {
    if (scaler_ && scaler_->scale_tensor().defined() && !scaler_->unscaled(optimizer)) scaler_->unscale_(optimizer);
  }
  template <class Step>
  bool step(torch::optim::Optimizer& optimizer, Step&& step) {
    if (!scaler_) {
      step();
      return true;
    }
    return scaler_->step(optimizer, std::forward<Step>(step));
  }
  void update() {
    if (scaler_ && scaler_->pending_update()) scaler_->update();
  }
  bool scaling() const noexcept { return scaler_.has_value(); }
  GradScaler* grad_scaler() noexcept { return scaler_ ? &*scaler_ : nullptr; }
  StateDict state_dict() const { return scaler_ ? scaler_->state_dict() : StateDict{}; }
  void load_state_dict(const StateDict& state) {
    if (scaler_) scaler_->load_state_dict(state);
  }

 private:
  static bool same_options(const GradScalerOptions& a, const GradScalerOptions& b) {
    return a.init_scale() == b.init_scale() && a.growth_factor() == b.growth_factor() &&
           a.backoff_factor() == b.backoff_factor() && a.growth_interval() == b.growth_interval();
  }
  TrainingPrecision precision_ = TrainingPrecision::full32;
  c10::DeviceType device_type_ = c10::kCPU;
  at::ScalarType dtype_ = at::kBFloat16;
  std::optional<GradScaler> scaler_;
  GradScalerOptions configured_;  // what scaler_ was made from
};

}  // namespace amp

namespace detail {
using PrecisionPolicy = amp::MixedPrecision;
}  // namespace detail

TRAINLOOP_DETAIL_END
