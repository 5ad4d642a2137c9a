// trainloop: the Trainer's precision setting, and the trivial ("32") precision policy. Mixed precision itself lives in
// amp.hpp, compiled only under TRAINLOOP_WITH_AMP; this part is always there so a build without it can say so.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <stdexcept>
#include <string>

#include "parts/core/state.hpp"

TRAINLOOP_DETAIL_BEGIN

/// TrainerOptions().precision(...): full fp32, or autocast to fp16 (with loss scaling) or bf16 for the forward passes.
enum class TrainingPrecision { full32, fp16_mixed, bf16_mixed };

/// Lightning's names: "32" / "32-true", "16-mixed" (or "16"), "bf16-mixed" (or "bf16").
TRAINLOOP_DETAIL_API TrainingPrecision parse_precision(const std::string& value);

namespace detail {
// The precision seam the Trainer calls (DESIGN.md §6). "32": no autocast, no loss scaling, every step taken; the calls
// compile to nothing. amp::MixedPrecision (amp.hpp) is the other policy.
struct FullPrecision {
  struct NoGuard {};
  struct NoScaler;  // what grad_scaler() points to: nothing
  NoScaler* grad_scaler() const noexcept { return nullptr; }
  template <class Options>
  void setup(const Options&, const torch::Device&) {}
  NoGuard forward_guard() const { return {}; }
  const torch::Tensor& scale_loss(const torch::Tensor& loss) const { return loss; }
  void unscale(torch::optim::Optimizer&) {}
  template <class Step>
  bool step(torch::optim::Optimizer&, Step&& step) {
    step();
    return true;
  }
  void update() {}
  bool scaling() const { return false; }
  StateDict state_dict() const { return {}; }
  void load_state_dict(const StateDict&) {}
};
#if !TRAINLOOP_WITH_AMP
using PrecisionPolicy = FullPrecision;
#endif
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API TrainingPrecision parse_precision(const std::string& value) {
  auto fail = [&](const std::string& why) {
    return std::invalid_argument("trainloop: TrainerOptions().precision(\"" + value + "\"): " + why);
  };
  TrainingPrecision precision;
  if (value == "32" || value == "32-true") precision = TrainingPrecision::full32;
  else if (value == "16-mixed" || value == "16") precision = TrainingPrecision::fp16_mixed;
  else if (value == "bf16-mixed" || value == "bf16") precision = TrainingPrecision::bf16_mixed;
  else if (value == "16-true" || value == "bf16-true" || value == "64" || value == "64-true")
    throw fail("trainloop trains with fp32 weights; use \"32\", \"16-mixed\" or \"bf16-mixed\"");
  else
    throw fail("unknown precision; use \"32\" (or \"32-true\"), \"16-mixed\" (or \"16\"), \"bf16-mixed\" (or \"bf16\")");
  if (precision != TrainingPrecision::full32 && !with_amp)
    throw fail("mixed precision is compiled out; define TRAINLOOP_WITH_AMP=1 before including trainloop.hpp (CMake: "
               "-DTRAINLOOP_WITH_AMP=ON)");
  return precision;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END

#if TRAINLOOP_WITH_AMP  // mixed precision, whose policy is then detail::PrecisionPolicy
#include "parts/torch/amp.hpp"
#endif
