// trainloop: glibc allocator tuning. glibc's dynamic mmap threshold makes every step of a small CPU model map and
// unmap the same few-hundred-KB buffers (measured: a 784-128-10 MLP step, 0.86 ms with glibc's defaults, 0.53 ms with
// the thresholds pinned). The Trainer pins them by default (TrainerOptions().tune_malloc(false) turns it off);
// benchmarks call this too, so the hand-written loops they compare against run with the same allocator state.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

TRAINLOOP_DETAIL_BEGIN

/// Pins glibc's malloc thresholds (process-wide): mmap threshold 32 MiB, trim threshold 256 MiB, top pad 64 MiB.
/// Returns false (and changes nothing) on other C libraries. Only the first call acts: each mallopt call also
/// consolidates the heap, which every later fit() would pay for in slower allocations.
inline bool tune_glibc_malloc() noexcept {
#if defined(__GLIBC__)
  static const bool tuned = [] {
    const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
    const bool trim_ok = mallopt(M_TRIM_THRESHOLD, 256 << 20) == 1;
    return mallopt(M_TOP_PAD, 64 << 20) == 1 && mmap_ok && trim_ok;
  }();
  return tuned;
#else
  return false;
#endif
}

TRAINLOOP_DETAIL_END
