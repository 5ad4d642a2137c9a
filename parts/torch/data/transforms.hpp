// trainloop: image transforms for datasets' get(), since LibTorch has none of torchvision's. Functional forms
// (to_float, pad, crop, hflip, normalize, resize) compute what torchvision's tensor functions compute, bitwise; the
// random ones (RandomCrop, RandomHorizontalFlip) draw their parameters from the example's generator exactly as
// torchvision draws them from the global one, so a generator seeded s gives torchvision's result after
// torch.manual_seed(s). Images are [..., C, H, W] tensors (uint8 or floating point) unless a function says otherwise.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "parts/core/hooks.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
template <class T>
using transform_takes_generator_t = decltype(std::declval<const T&>()(std::declval<torch::Tensor>(), std::declval<torch::Generator&>()));
// A transform's call: with the example's generator when it takes one.
template <class T>
torch::Tensor apply_transform(const T& transform, torch::Tensor image, torch::Generator& generator) {
  if constexpr (is_detected_v<transform_takes_generator_t, T>) return transform(std::move(image), generator);
  else return transform(std::move(image));
}
}  // namespace detail

namespace transforms {
/// Where an image's channels are: first (C, H, W: tensors, torchvision's layout) or last (H, W, C: decoded files).
enum class Layout { CHW, HWC };
/// torchvision's padding modes: a constant fill, the edge value repeated, reflection without or with the edge.
enum class PaddingMode { constant, edge, reflect, symmetric };
}  // namespace transforms

namespace detail {
// Throws naming `function` unless `image` has at least two dimensions (H, W).
TRAINLOOP_DETAIL_API void check_image(const torch::Tensor& image, const char* function);
// Source rows (or columns) of a padded axis of `size`, -before..size+after, for the modes that copy values.
TRAINLOOP_DETAIL_API torch::Tensor padded_positions(std::int64_t size, std::int64_t before, std::int64_t after,
                                                    transforms::PaddingMode mode);
}  // namespace detail

namespace transforms {

/// uint8 image (CHW, or HWC moved to CHW) to float32 in [0, 1]: x / 255, as torchvision's to_tensor and
/// convert_image_dtype. A floating-point image is only moved to CHW.
TRAINLOOP_DETAIL_API torch::Tensor to_float(const torch::Tensor& image, Layout layout = Layout::CHW);
/// Mirrors left to right (the last dimension).
TRAINLOOP_DETAIL_API torch::Tensor hflip(const torch::Tensor& image);
/// Pads the last two dimensions by (left, top, right, bottom), as torchvision's pad with four numbers.
TRAINLOOP_DETAIL_API torch::Tensor pad(const torch::Tensor& image, std::array<std::int64_t, 4> left_top_right_bottom,
                                       double fill = 0, PaddingMode mode = PaddingMode::constant);
/// The region at (top, left) of height x width; parts outside the image are zeros, as torchvision's crop.
TRAINLOOP_DETAIL_API torch::Tensor crop(const torch::Tensor& image, std::int64_t top, std::int64_t left,
                                        std::int64_t height, std::int64_t width);
/// (image - mean[c]) / std[c] per channel, in the image's floating-point dtype.
TRAINLOOP_DETAIL_API torch::Tensor normalize(const torch::Tensor& image, const std::vector<double>& mean,
                                             const std::vector<double>& std);
/// Bilinear resize (align_corners false, no antialias: torchvision's tensor default) to {height, width}, or with one
/// number, the shorter edge to it keeping the aspect ratio. uint8 is resized in float32 and rounded back.
TRAINLOOP_DETAIL_API torch::Tensor resize(const torch::Tensor& image, const std::vector<std::int64_t>& size);

/// torchvision's ToTensor / ConvertImageDtype(float): see to_float.
struct ToFloat {
  Layout layout = Layout::CHW;
  torch::Tensor operator()(const torch::Tensor& image) const { return to_float(image, layout); }
};
/// torchvision's Normalize. The per-channel constants are made once, here, for float32 images.
class Normalize {
 public:
  TRAINLOOP_DETAIL_API Normalize(std::vector<double> mean, std::vector<double> deviation);
  TRAINLOOP_DETAIL_API torch::Tensor operator()(const torch::Tensor& image) const;
  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& std() const { return std_; }

 private:
  std::vector<double> mean_, std_;
  torch::Tensor float_mean_, float_std_;  // [C, 1, 1] float32
};
/// torchvision's Resize (bilinear, antialias off): {height, width}, or the shorter edge.
struct Resize {
  std::vector<std::int64_t> size;
  explicit Resize(std::vector<std::int64_t> size_) : size(std::move(size_)) {}
  explicit Resize(std::int64_t shorter_edge) : size{shorter_edge} {}
  torch::Tensor operator()(const torch::Tensor& image) const { return resize(image, size); }
};
/// torchvision's RandomHorizontalFlip(p): flips when a uniform draw from the generator is below p.
struct RandomHorizontalFlip {
  double p = 0.5;
  TRAINLOOP_DETAIL_API torch::Tensor operator()(const torch::Tensor& image, torch::Generator& generator) const;
};
/// torchvision's RandomCrop(size, padding, pad_if_needed, fill, padding_mode): pads, then crops height x width at a
/// position drawn from the generator (the row first, then the column, as torchvision).
struct RandomCrop {
  std::int64_t height, width;
  std::array<std::int64_t, 4> padding{};  // left, top, right, bottom
  bool pad_if_needed = false;
  double fill = 0;
  PaddingMode padding_mode = PaddingMode::constant;
  /// A square crop, with the same padding on every side.
  explicit RandomCrop(std::int64_t size, std::int64_t padding_ = 0) : RandomCrop(size, size, padding_) {}
  RandomCrop(std::int64_t height_, std::int64_t width_, std::int64_t padding_)
      : height(height_), width(width_), padding{padding_, padding_, padding_, padding_} {}
  TRAINLOOP_DETAIL_API torch::Tensor operator()(const torch::Tensor& image, torch::Generator& generator) const;
};

/// Transforms applied in order; each is a callable (Tensor) or, when it draws random numbers, (Tensor, Generator&),
/// user lambdas included. Call it from a dataset's get(index, generator).
template <class... Transform>
class Compose {
 public:
  explicit Compose(Transform... transforms) : transforms_(std::move(transforms)...) {}
  torch::Tensor operator()(torch::Tensor image, torch::Generator& generator) const {
    std::apply([&](const auto&... t) { ((image = ::trainloop::detail::apply_transform(t, std::move(image), generator)), ...); }, transforms_);
    return image;
  }

 private:
  std::tuple<Transform...> transforms_;
};

}  // namespace transforms

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
namespace detail {
TRAINLOOP_DETAIL_API void check_image(const torch::Tensor& image, const char* function) {
  if (!image.defined() || image.dim() < 2)
    throw std::invalid_argument(std::string("trainloop: transforms::") + function + ": expected an image [..., H, W], got " +
                                (image.defined() ? "shape " + c10::str(image.sizes()) : std::string("an undefined tensor")));
}
TRAINLOOP_DETAIL_API torch::Tensor padded_positions(std::int64_t size, std::int64_t before, std::int64_t after, transforms::PaddingMode mode) {
  std::vector<std::int64_t> positions;
  positions.reserve(static_cast<std::size_t>(size + before + after));
  for (std::int64_t i = -before; i < size + after; ++i) {
    std::int64_t j = i;
    if (mode == transforms::PaddingMode::edge) {
      j = std::min(std::max(i, std::int64_t{0}), size - 1);
    } else if (mode == transforms::PaddingMode::reflect) {
      if (i < 0) j = -i;
      else if (i >= size) j = 2 * (size - 1) - i;
    } else {  // symmetric
      if (i < 0) j = -i - 1;
      else if (i >= size) j = 2 * size - 1 - i;
    }
    if (j < 0 || j >= size)
      throw std::invalid_argument("trainloop: transforms::pad: padding of " + std::to_string(std::max(before, after)) +
                                  " is too large for a side of " + std::to_string(size) + " in this mode");
    positions.push_back(j);
  }
  return torch::tensor(positions, torch::kLong);
}
}  // namespace detail


namespace transforms {
TRAINLOOP_DETAIL_API torch::Tensor to_float(const torch::Tensor& image, Layout layout) {
  if (!image.defined() || image.dim() != 3)
    throw std::invalid_argument(std::string("trainloop: transforms::to_float: expected an image of 3 dimensions (") +
                                (layout == Layout::CHW ? "C, H, W" : "H, W, C") + "), got " +
                                (image.defined() ? "shape " + c10::str(image.sizes()) : std::string("an undefined tensor")));
  torch::Tensor chw = layout == Layout::HWC ? image.permute({2, 0, 1}).contiguous() : image;
  if (chw.is_floating_point()) return chw;
  if (chw.scalar_type() != torch::kByte)
    throw std::invalid_argument("trainloop: transforms::to_float: expected uint8 or floating point, got " +
                                std::string(c10::toString(chw.scalar_type())));
  return chw.to(torch::kFloat).div(255);
}

TRAINLOOP_DETAIL_API torch::Tensor hflip(const torch::Tensor& image) {
  detail::check_image(image, "hflip");
  return image.flip({-1});
}

TRAINLOOP_DETAIL_API torch::Tensor pad(const torch::Tensor& image, std::array<std::int64_t, 4> p, double fill, PaddingMode mode) {
  detail::check_image(image, "pad");
  for (std::int64_t side : p)
    if (side < 0) throw std::invalid_argument("trainloop: transforms::pad: padding must not be negative, got " + std::to_string(side));
  if (p == std::array<std::int64_t, 4>{}) return image;
  if (mode == PaddingMode::constant) return torch::constant_pad_nd(image, {p[0], p[2], p[1], p[3]}, fill);
  const std::int64_t h = image.size(-2), w = image.size(-1);
  // Copies of existing values, by index: exact for every dtype (torchvision computes them in float and casts back).
  return image.index_select(-2, detail::padded_positions(h, p[1], p[3], mode))
      .index_select(-1, detail::padded_positions(w, p[0], p[2], mode));
}

TRAINLOOP_DETAIL_API torch::Tensor crop(const torch::Tensor& image, std::int64_t top, std::int64_t left, std::int64_t height,
                                        std::int64_t width) {
  detail::check_image(image, "crop");
  if (height < 0 || width < 0)
    throw std::invalid_argument("trainloop: transforms::crop: size " + std::to_string(height) + "x" + std::to_string(width) + " is negative");
  const std::int64_t h = image.size(-2), w = image.size(-1), bottom = top + height, right = left + width;
  if (top >= 0 && left >= 0 && bottom <= h && right <= w) return image.slice(-2, top, bottom).slice(-1, left, right);
  // Outside the image: the part inside, padded with zeros (torchvision's rule).
  const std::array<std::int64_t, 4> outside{std::max(-left + std::min<std::int64_t>(0, right), std::int64_t{0}),
                                            std::max(-top + std::min<std::int64_t>(0, bottom), std::int64_t{0}),
                                            std::max(right - w, std::int64_t{0}), std::max(bottom - h, std::int64_t{0})};
  torch::Tensor inside = image.slice(-2, std::max<std::int64_t>(top, 0), std::max<std::int64_t>(std::min(bottom, h), 0))
                             .slice(-1, std::max<std::int64_t>(left, 0), std::max<std::int64_t>(std::min(right, w), 0));
  return pad(inside, outside);
}

TRAINLOOP_DETAIL_API torch::Tensor normalize(const torch::Tensor& image, const std::vector<double>& mean, const std::vector<double>& std) {
  if (!image.defined() || image.dim() < 3)
    throw std::invalid_argument("trainloop: transforms::normalize: expected an image [..., C, H, W], got " +
                                (image.defined() ? "shape " + c10::str(image.sizes()) : std::string("an undefined tensor")));
  if (!image.is_floating_point())
    throw std::invalid_argument("trainloop: transforms::normalize: expected a floating-point image, got " +
                                std::string(c10::toString(image.scalar_type())) + " (apply ToFloat first)");
  const std::int64_t channels = image.size(-3);
  auto per_channel = [&](const std::vector<double>& v, const char* name) {
    if (static_cast<std::int64_t>(v.size()) != channels && v.size() != 1)
      throw std::invalid_argument(std::string("trainloop: transforms::normalize: ") + name + " has " + std::to_string(v.size()) +
                                  " values for an image of " + std::to_string(channels) + " channels");
    return torch::tensor(v, torch::kDouble).to(image.scalar_type()).view({-1, 1, 1});
  };
  const torch::Tensor m = per_channel(mean, "mean"), s = per_channel(std, "std");
  if ((s == 0).any().item<bool>()) throw std::invalid_argument("trainloop: transforms::normalize: std has a zero, which would divide by zero");
  return image.sub(m).div(s);
}

TRAINLOOP_DETAIL_API Normalize::Normalize(std::vector<double> mean, std::vector<double> deviation)
    : mean_(std::move(mean)), std_(std::move(deviation)) {
  if (mean_.empty() || (mean_.size() != std_.size() && mean_.size() != 1 && std_.size() != 1))
    throw std::invalid_argument("trainloop: transforms::Normalize: " + std::to_string(mean_.size()) + " means and " +
                                std::to_string(std_.size()) + " deviations do not match");
  for (double s : std_)
    if (s == 0) throw std::invalid_argument("trainloop: transforms::Normalize: std has a zero, which would divide by zero");
  float_mean_ = torch::tensor(mean_, torch::kDouble).to(torch::kFloat).view({-1, 1, 1});
  float_std_ = torch::tensor(std_, torch::kDouble).to(torch::kFloat).view({-1, 1, 1});
}

TRAINLOOP_DETAIL_API torch::Tensor Normalize::operator()(const torch::Tensor& image) const {
  const auto fits = [&](const std::vector<double>& v) { return v.size() == 1 || static_cast<std::int64_t>(v.size()) == image.size(-3); };
  if (image.defined() && image.dim() >= 3 && image.scalar_type() == torch::kFloat && fits(mean_) && fits(std_))
    return image.sub(float_mean_).div(float_std_);
  return normalize(image, mean_, std_);  // other dtypes, and the errors
}

TRAINLOOP_DETAIL_API torch::Tensor resize(const torch::Tensor& image, const std::vector<std::int64_t>& size) {
  if (!image.defined() || image.dim() < 3)
    throw std::invalid_argument("trainloop: transforms::resize: expected an image [..., C, H, W], got " +
                                (image.defined() ? "shape " + c10::str(image.sizes()) : std::string("an undefined tensor")));
  if (size.empty() || size.size() > 2 || size.front() < 1 || size.back() < 1)
    throw std::invalid_argument("trainloop: transforms::resize: size must be {height, width} or {shorter edge}, positive");
  const std::int64_t h = image.size(-2), w = image.size(-1);
  std::int64_t new_h = size.front(), new_w = size.back();
  if (size.size() == 1) {  // the shorter edge to size[0]; the longer one truncated, as torchvision's int(...)
    const std::int64_t shorter = std::min(h, w), longer = std::max(h, w);
    const auto new_longer = static_cast<std::int64_t>(static_cast<double>(size[0] * longer) / static_cast<double>(shorter));
    new_h = w <= h ? new_longer : size[0];
    new_w = w <= h ? size[0] : new_longer;
  }
  if (new_h == h && new_w == w) return image;
  torch::Tensor x = image.is_floating_point() ? image : image.to(torch::kFloat);
  const bool batched = x.dim() == 4;
  if (x.dim() > 4) throw std::invalid_argument("trainloop: transforms::resize: expected [C, H, W] or [N, C, H, W], got " + c10::str(image.sizes()));
  if (!batched) x = x.unsqueeze(0);
  namespace F = torch::nn::functional;
  x = F::interpolate(x, F::InterpolateFuncOptions().size(std::vector<std::int64_t>{new_h, new_w}).mode(torch::kBilinear).align_corners(false));
  if (!batched) x = x.squeeze(0);
  if (image.is_floating_point()) return x;
  return x.round().to(image.scalar_type());
}

TRAINLOOP_DETAIL_API torch::Tensor RandomHorizontalFlip::operator()(const torch::Tensor& image, torch::Generator& generator) const {
  // torchvision: torch.rand(1) < p, compared in float32.
  return torch::rand({1}, generator).item<float>() < static_cast<float>(p) ? hflip(image) : image;
}

TRAINLOOP_DETAIL_API torch::Tensor RandomCrop::operator()(const torch::Tensor& image, torch::Generator& generator) const {
  detail::check_image(image, "RandomCrop");
  torch::Tensor x = pad(image, padding, fill, padding_mode);
  // torchvision pads both sides by the shortfall, the width first.
  if (pad_if_needed && x.size(-1) < width) {
    const std::int64_t by = width - x.size(-1);
    x = pad(x, {by, 0, by, 0}, fill, padding_mode);
  }
  if (pad_if_needed && x.size(-2) < height) {
    const std::int64_t by = height - x.size(-2);
    x = pad(x, {0, by, 0, by}, fill, padding_mode);
  }
  const std::int64_t h = x.size(-2), w = x.size(-1);
  if (h < height || w < width)
    throw std::invalid_argument("trainloop: transforms::RandomCrop: the crop " + std::to_string(height) + "x" + std::to_string(width) +
                                " is larger than the (padded) image " + std::to_string(h) + "x" + std::to_string(w));
  if (h == height && w == width) return x;
  const std::int64_t top = torch::randint(0, h - height + 1, {1}, generator).item<std::int64_t>();
  const std::int64_t left = torch::randint(0, w - width + 1, {1}, generator).item<std::int64_t>();
  return crop(x, top, left, height, width);
}
}  // namespace transforms
#endif

TRAINLOOP_DETAIL_END
