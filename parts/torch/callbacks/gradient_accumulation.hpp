// trainloop: GradientAccumulationScheduler (Lightning's): how many batches add up to one optimizer step, by epoch.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>

TRAINLOOP_DETAIL_BEGIN

/// `GradientAccumulationScheduler({{0, 8}, {4, 4}, {8, 1}})`: 8 batches per step in epochs 0-3, 4 in 4-7, then 1
/// (epochs before the first key: 1). It sets Trainer::accumulate_grad_batches at each epoch start (and when a fit
/// resumes), so it replaces TrainerOptions().accumulate_grad_batches, which must stay 1. Automatic optimisation only.
/// A Trainer callback only: the Engine has no notion of accumulation (the step function owns it).
class GradientAccumulationScheduler {
 public:
  // The initializer-list form keeps `GradientAccumulationScheduler({{2, 8}})` unambiguous.
  TRAINLOOP_DETAIL_API GradientAccumulationScheduler(
      std::initializer_list<std::pair<const std::int64_t, std::int64_t>> scheduling);
  TRAINLOOP_DETAIL_API explicit GradientAccumulationScheduler(std::map<std::int64_t, std::int64_t> scheduling);
  /// Batches per optimizer step in `epoch` (0-based).
  TRAINLOOP_DETAIL_API std::int64_t factor_for(std::int64_t epoch) const;

  template <class T, class M>
  void on_train_start(T& trainer, M& module) {
    if (trainer.options().accumulate_grad_batches() != 1)
      throw std::invalid_argument("trainloop: GradientAccumulationScheduler and TrainerOptions().accumulate_grad_batches(" +
                                  std::to_string(trainer.options().accumulate_grad_batches()) +
                                  ") both set the accumulation; keep one");
    if (!module.automatic_optimization())
      throw std::invalid_argument("trainloop: GradientAccumulationScheduler needs automatic optimisation (manual "
                                  "optimisation accumulates in training_step)");
    trainer.accumulate_grad_batches(factor_for(trainer.current_epoch()));
  }
  template <class T, class M>
  void on_train_epoch_start(T& trainer, M&) {
    trainer.accumulate_grad_batches(factor_for(trainer.current_epoch()));
  }

 private:
  std::map<std::int64_t, std::int64_t> scheduling_;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API GradientAccumulationScheduler::GradientAccumulationScheduler(
    std::initializer_list<std::pair<const std::int64_t, std::int64_t>> scheduling)
    : GradientAccumulationScheduler(std::map<std::int64_t, std::int64_t>(scheduling)) {}

TRAINLOOP_DETAIL_API GradientAccumulationScheduler::GradientAccumulationScheduler(
    std::map<std::int64_t, std::int64_t> scheduling)
    : scheduling_(std::move(scheduling)) {
  if (scheduling_.empty()) throw std::invalid_argument("trainloop: GradientAccumulationScheduler: the schedule is empty");
  for (const auto& [epoch, factor] : scheduling_) {
    if (epoch < 0)
      throw std::invalid_argument("trainloop: GradientAccumulationScheduler: epoch " + std::to_string(epoch) +
                                  " is negative (epochs count from 0)");
    if (factor < 1)
      throw std::invalid_argument("trainloop: GradientAccumulationScheduler: the factor at epoch " +
                                  std::to_string(epoch) + " is " + std::to_string(factor) + "; it must be at least 1");
  }
}

TRAINLOOP_DETAIL_API std::int64_t GradientAccumulationScheduler::factor_for(std::int64_t epoch) const {
  auto it = scheduling_.upper_bound(epoch);
  return it == scheduling_.begin() ? 1 : std::prev(it)->second;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
