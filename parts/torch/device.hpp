// trainloop: devices. Parsing the Trainer's accelerator option, and moving batches of any common shape to a device.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <map>
#include <stdexcept>
#include <type_traits>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "parts/core/hooks.hpp"

TRAINLOOP_DETAIL_BEGIN

/// "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N", "mps". Errors name the option and the reason.
TRAINLOOP_DETAIL_API torch::Device parse_accelerator(const std::string& accelerator);

namespace detail {
template <class T>
struct is_pair : std::false_type {};
template <class A, class B>
struct is_pair<std::pair<A, B>> : std::true_type {};
template <class T>
struct is_tuple : std::false_type {};
template <class... T>
struct is_tuple<std::tuple<T...>> : std::true_type {};
template <class T>
struct is_vector : std::false_type {};
template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};
template <class T>
struct is_map : std::false_type {};
template <class K, class V, class C, class A>
struct is_map<std::map<K, V, C, A>> : std::true_type {};
template <class K, class V, class H, class E, class A>
struct is_map<std::unordered_map<K, V, H, E, A>> : std::true_type {};
template <class T>
struct is_example : std::false_type {};
template <class D, class L>
struct is_example<torch::data::Example<D, L>> : std::true_type {};
template <class T>
using example_target_t = decltype(std::declval<T&>().target);  // absent in Example<D, NoTarget>

/// Moves every tensor in a batch (tensors, pairs, tuples, vectors, maps, torch::data::Example, nested) to `device`.
/// A tensor already there is returned as is, without a dispatch: on CPU the transfer costs nothing.
template <class T>
T to_device(T value, const torch::Device& device) {
  if constexpr (std::is_same_v<T, torch::Tensor>) {
    if (!value.defined() || value.device() == device) return value;
    return value.to(device, /*non_blocking=*/true);
  } else if constexpr (is_pair<T>::value) {
    value.first = to_device(std::move(value.first), device);
    value.second = to_device(std::move(value.second), device);
    return value;
  } else if constexpr (is_tuple<T>::value) {
    std::apply([&](auto&... e) { ((e = to_device(std::move(e), device)), ...); }, value);
    return value;
  } else if constexpr (is_vector<T>::value) {
    for (auto& e : value) e = to_device(std::move(e), device);
    return value;
  } else if constexpr (is_map<T>::value) {
    for (auto& entry : value) entry.second = to_device(std::move(entry.second), device);
    return value;
  } else if constexpr (is_example<T>::value) {
    value.data = to_device(std::move(value.data), device);
    if constexpr (is_detected_v<example_target_t, T>) value.target = to_device(std::move(value.target), device);
    return value;
  } else {
    return value;  // holds no tensor
  }
}

// The default random generators: the CPU's, and one per visible CUDA device (none without CUDA). Checkpoints save and
// restore them; the sanity check isolates them.
inline at::Generator cpu_generator() { return at::detail::getDefaultCPUGenerator(); }
TRAINLOOP_DETAIL_API std::size_t cuda_generator_count();
TRAINLOOP_DETAIL_API at::Generator cuda_generator(std::size_t device);
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API torch::Device parse_accelerator(const std::string& accelerator) {
  auto fail = [&](const std::string& why) {
    return std::invalid_argument("trainloop: TrainerOptions().accelerator(\"" + accelerator + "\"): " + why);
  };
  if (accelerator == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (accelerator == "cpu") return torch::Device(torch::kCPU);
  if (accelerator == "mps") return torch::Device(torch::kMPS);
  if (accelerator.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available()) throw fail("CUDA is not available in this process (torch::cuda::is_available() is false)");
    torch::Device device(torch::kCUDA, 0);
    try {
      device = torch::Device(accelerator == "cuda" ? std::string("cuda:0") : accelerator);
    } catch (const std::exception&) {
      throw fail("not a device; write \"cuda\" or \"cuda:N\"");
    }
    const auto count = static_cast<int>(torch::cuda::device_count());
    if (device.index() >= count)
      throw fail("this machine has " + std::to_string(count) + " CUDA device(s), numbered from 0");
    return device;
  }
  throw fail("unknown accelerator; use \"auto\", \"cpu\", \"cuda\", \"cuda:N\" or \"mps\"");
}
namespace detail {
TRAINLOOP_DETAIL_API std::size_t cuda_generator_count() {
  // device_count() is a size_t in LibTorch 1.x, a DeviceIndex in 2.x
  return torch::cuda::is_available() ? static_cast<std::size_t>(torch::cuda::device_count()) : 0;
}
TRAINLOOP_DETAIL_API at::Generator cuda_generator(std::size_t device) {
  return at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
}
}  // namespace detail
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
