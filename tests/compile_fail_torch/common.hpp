// Shared by the torch compile-fail tests: a batch type and data.
#pragma once
#include <trainloop.hpp>

#include <utility>
#include <vector>

using Batch = std::pair<torch::Tensor, torch::Tensor>;
inline std::vector<Batch> some_data() { return {{torch::randn({2, 2}), torch::randn({2, 1})}}; }
