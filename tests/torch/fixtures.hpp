// What many Trainer tests start from: options that keep the test's output its own, and small random regression data.
#pragma once
#include <trainloop.hpp>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

using Batch = std::pair<torch::Tensor, torch::Tensor>;

// CPU, no progress bar, no model summary.
inline trainloop::TrainerOptions quiet() {
  return trainloop::TrainerOptions().accelerator("cpu").enable_progress_bar(false).enable_model_summary(false);
}

// Same dtypes, shapes and values, element by element (bitwise), tensor by tensor.
inline bool bitwise_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i], b[i])) return false;
  return true;
}

// `n` batches of 4 examples: x [4, 2] and y [4, 1], standard normal, drawn after torch::manual_seed(seed).
inline std::vector<Batch> batches(int n, std::uint64_t seed) {
  torch::manual_seed(static_cast<std::int64_t>(seed));
  std::vector<Batch> data;
  for (int i = 0; i < n; ++i) data.emplace_back(torch::randn({4, 2}), torch::randn({4, 1}));
  return data;
}
