// trainloop: histograms, images and text from tensors, for the loggers that show them (TensorBoard, MLflow):
// `histogram_of` counts a tensor where it lives (a device tensor sends only the counts), `encode_png` and `make_grid`
// make what add_image and torchvision's make_grid make, `confusion_matrix_image` draws a ConfusionMatrix, and
// log_histogram/log_image/log_text hand them to one logger or to every logger of a Trainer that shows them.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "parts/core/hooks.hpp"
#include "parts/core/loggers/media.hpp"

TRAINLOOP_DETAIL_BEGIN

/// The histogram of a tensor's values (as float64, numpy's `values.astype(float)`), as torch.utils.tensorboard's
/// add_histogram makes it (see trimmed_histogram), `edges` defaulting to TensorFlow's (bins="tensorflow"). A CPU
/// tensor is counted in one pass on the host; any other on its device (see histogram_on_device), the tensor never
/// leaving it. NaN and values beyond the edges count in no bucket (as in numpy); an empty tensor is an error naming
/// `tag`.
TRAINLOOP_DETAIL_API Histogram histogram_of(const torch::Tensor& values, const std::vector<double>& edges = tensorflow_bucket_edges(),
                                         const std::string& tag = "histogram");

/// An image tensor as PNG, as add_image(dataformats "CHW" or "HW") encodes it: [C, H, W] with 1, 3 or 4 channels, or
/// [H, W]; uint8 values as they are, any other type scaled by 255 in float32, clipped to [0, 255] and truncated (so
/// floats are expected in [0, 1]); one channel becomes RGB (as add_image does). zlib deflate, no filtering.
TRAINLOOP_DETAIL_API EncodedImage encode_png(const torch::Tensor& image);

/// torchvision.utils.make_grid's options and result: images [B, C, H, W] (one channel becomes three) laid out
/// `nrow` per row with `padding` pixels of `pad_value` around each; `normalize` maps [low, high] (value_range, or
/// the tensor's min and max, per image with scale_each) to [0, 1].
struct GridOptions {
  std::int64_t nrow = 8;
  std::int64_t padding = 2;
  bool normalize = false;
  std::optional<std::pair<double, double>> value_range;
  bool scale_each = false;
  double pad_value = 0.0;
};
TRAINLOOP_DETAIL_API torch::Tensor make_grid(const torch::Tensor& images, const GridOptions& options = {});

/// A confusion matrix ([K, K] counts, rows the true classes, columns the predicted ones, as ConfusionMatrix
/// computes it) drawn as an RGB uint8 [3, H, W] image: one square per cell, white to dark blue by the cell's share of
/// its row, with the count written in it (black on light cells, white on dark ones).
TRAINLOOP_DETAIL_API torch::Tensor confusion_matrix_image(const torch::Tensor& matrix);

namespace detail {
/// The histogram computed with tensor operations on the tensor's device (bucketize, or for TensorFlow's edges the
/// logarithm's estimate corrected against the edges, then bincount): the statistics and the counts come to the host
/// in one transfer. What histogram_of does for a device tensor; the tests hold it to the host pass on the CPU.
TRAINLOOP_DETAIL_API Histogram histogram_on_device(const torch::Tensor& values, const std::vector<double>& edges,
                                                   const std::string& tag);

template <class T>
using trainer_callbacks_t = decltype(std::declval<T&>().callbacks());

// Calls `f(logger)` on `target` when it is a logger that `Accepts`, else on each of the Trainer's loggers that does
// (on rank 0); `make()` builds what they take once, and only when one takes it.
template <template <class> class Accepts, class Target, class Make, class F>
void to_loggers(Target& target, Make&& make, F&& f) {
  if constexpr (Accepts<Target>::value) {
    f(target, make());
  } else {
    static_assert(is_detected_v<trainer_callbacks_t, Target>,
                  "trainloop: log_histogram/log_image/log_text take a logger that shows them (TensorBoardLogger, "
                  "MLFlowLogger) or a Trainer");
    if (!target.is_global_zero()) return;
    std::optional<std::decay_t<decltype(make())>> made;
    std::apply([&](auto&... callbacks) {
      auto one = [&](auto& callback) {
        if constexpr (Accepts<std::decay_t<decltype(callback)>>::value) {
          if (!made) made.emplace(make());
          f(callback, *made);
        }
      };
      (one(unwrap(callbacks)), ...);
    }, target.callbacks());
  }
}
template <class L>
struct accepts_histogram : std::bool_constant<is_detected_v<log_histogram_t, L, Histogram>> {};
template <class L>
struct accepts_image : std::bool_constant<is_detected_v<log_image_t, L, EncodedImage>> {};
template <class L>
struct accepts_text : std::bool_constant<is_detected_v<log_text_t, L>> {};
}  // namespace detail

/// A tensor's histogram (see histogram_of) to `target`: a logger that shows histograms, or a Trainer (its loggers that
/// do, on rank 0; CSV and JSON lines loggers have no place for one and are passed by). Lightning's
/// `logger.experiment.add_histogram(tag, values, step)`; with a Trainer, give `trainer.global_step()` as the step.
template <class Target>
void log_histogram(Target& target, const std::string& tag, const torch::Tensor& values, std::int64_t step,
                   const std::vector<double>& edges = tensorflow_bucket_edges()) {
  detail::to_loggers<detail::accepts_histogram>(target, [&] { return histogram_of(values, edges, tag); },
                                                [&](auto& logger, const Histogram& h) { logger.log_histogram(tag, h, step); });
}
/// An image tensor (see encode_png; make_grid for a batch) to a logger or a Trainer's loggers that show images.
template <class Target>
void log_image(Target& target, const std::string& tag, const torch::Tensor& image, std::int64_t step) {
  detail::to_loggers<detail::accepts_image>(target, [&] { return encode_png(image); },
                                            [&](auto& logger, const EncodedImage& png) { logger.log_image(tag, png, step); });
}
/// Text (Markdown in TensorBoard's Text dashboard) to a logger or a Trainer's loggers that show text.
template <class Target>
void log_text(Target& target, const std::string& tag, const std::string& text, std::int64_t step) {
  detail::to_loggers<detail::accepts_text>(target, [&] { return true; },
                                           [&](auto& logger, bool) { logger.log_text(tag, text, step); });
}

TRAINLOOP_DETAIL_END

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

TRAINLOOP_DETAIL_BEGIN
namespace detail {
// The bin of each value over TensorFlow's edges (-1: in none), as detail::tensorflow_bin finds one, in tensor
// operations: v_k+1 == v_k * 1.1 exactly (the edges are made so), k is estimated from a float32 logarithm and set
// right by exact comparisons with the edges.
inline torch::Tensor tensorflow_bins(const torch::Tensor& x) {
  const std::vector<double>& edges = tensorflow_bucket_edges();
  const std::int64_t p = static_cast<std::int64_t>(edges.size() / 2);  // positive edges; edges[p] is 0
  // table[k + 1] = v_k, table[0] = 0 (below v_0).
  const torch::Tensor table = torch::cat({torch::zeros({1}, torch::kFloat64),
                                          torch::tensor(std::vector<double>(edges.begin() + p + 1, edges.end()), torch::kFloat64)})
                                  .to(x.device());
  const torch::Tensor nan = torch::isnan(x);
  const torch::Tensor a = torch::where(nan, torch::zeros_like(x), x.abs());
  torch::Tensor k = ((torch::log(a.to(torch::kFloat32)) - std::log(1e-12)) / std::log(1.1)).floor_().clamp_(-1, p - 1).to(torch::kLong);
  torch::Tensor lo = table.index_select(0, k + 1);
  const torch::Tensor hi = torch::where(k < 0, torch::full_like(lo, edges[p + 1]), lo * 1.1);
  k = (k - a.lt(lo).to(torch::kLong) + a.ge(hi).to(torch::kLong)).clamp_(-1, p - 1);  // v_k <= a < v_k+1
  lo = table.index_select(0, k + 1);
  const torch::Tensor last = k == p - 1;
  // x >= 0: [0, v_0) is bin p, [v_k, v_k+1) bin p + 1 + k; the last edge closes the last bin, beyond it none.
  torch::Tensor positive = torch::where(k < 0, torch::full_like(k, p), k + p + 1);
  positive = torch::where(last, torch::where(a == edges.back(), torch::full_like(k, 2 * p - 1), torch::full_like(k, -1)), positive);
  // x < 0 lies in [-v_m, -v_m-1), bin p - 1 - m, with m = k when a == v_k, else k + 1 (and m = 0 below v_0).
  const torch::Tensor m = torch::where(k < 0, torch::zeros_like(k), k + a.ne(lo).to(torch::kLong));
  const torch::Tensor negative = torch::where(m >= p, torch::full_like(k, -1), p - 1 - m);
  return torch::where(nan, torch::full_like(k, -1), torch::where(x >= 0, positive, negative));
}
}  // namespace detail

TRAINLOOP_DETAIL_API Histogram histogram_of(const torch::Tensor& values, const std::vector<double>& edges, const std::string& tag) {
  if (!values.defined() || !values.device().is_cpu()) return detail::histogram_on_device(values, edges, tag);
  torch::NoGradGuard no_grad;
  const torch::Tensor flat = values.detach().reshape({-1});
  if (flat.scalar_type() == torch::kFloat32) {  // float32 values read as float64 exactly, one by one
    const torch::Tensor x = flat.contiguous();
    return histogram_of(x.data_ptr<float>(), static_cast<std::size_t>(x.numel()), edges, tag);
  }
  const torch::Tensor x = flat.to(torch::kFloat64).contiguous();
  return histogram_of(x.data_ptr<double>(), static_cast<std::size_t>(x.numel()), edges, tag);
}

TRAINLOOP_DETAIL_API Histogram detail::histogram_on_device(const torch::Tensor& values, const std::vector<double>& edges,
                                                           const std::string& tag) {
  check_histogram_edges(edges, tag);
  if (!values.defined() || values.numel() == 0) return trimmed_histogram(edges, {}, 0, 0, 0, 0, 0, tag);
  torch::NoGradGuard no_grad;
  const torch::Tensor x = values.detach().reshape({-1}).to(torch::kFloat64);
  const auto bins = static_cast<std::int64_t>(edges.size()) - 1;
  torch::Tensor index;  // the bin of each value + 1; 0 for none
  if (&edges == &tensorflow_bucket_edges()) {
    index = detail::tensorflow_bins(x) + 1;
  } else {
    // bucketize(right=true): the number of edges <= x, so bin j ([e_j, e_j+1)) is j + 1, below the edges 0, from the
    // last edge on bins + 1; the last edge itself belongs to the last bin (numpy), NaN to none.
    const torch::Tensor e = torch::tensor(edges, torch::TensorOptions().dtype(torch::kFloat64)).to(x.device());
    index = torch::bucketize(x, e, /*out_int32=*/false, /*right=*/true);
    index = torch::where(x == edges.back(), torch::full_like(index, bins), index);
    index = torch::where(torch::isnan(x), torch::zeros_like(index), index);
    index = torch::where(index > bins, torch::zeros_like(index), index);
  }
  const torch::Tensor counts = torch::bincount(index, {}, bins + 1).narrow(0, 1, bins);
  const torch::Tensor stats = torch::stack({x.min(), x.max(), x.sum(), x.dot(x)});
  const torch::Tensor host = torch::cat({stats, counts.to(torch::kFloat64)}).to(torch::kCPU).contiguous();
  const double* h = host.data_ptr<double>();
  return trimmed_histogram(edges, std::vector<double>(h + 4, h + 4 + bins), static_cast<double>(x.numel()), h[0], h[1], h[2],
                           h[3], tag);
}

namespace detail {
inline void png_chunk(std::string& out, const char* type, const std::string& data) {
  const auto be32 = [&](std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xFF);
  };
  be32(static_cast<std::uint32_t>(data.size()));
  const std::string body = std::string(type, 4) + data;
  out += body;
  be32(static_cast<std::uint32_t>(::crc32(0L, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
}
}  // namespace detail

TRAINLOOP_DETAIL_API EncodedImage encode_png(const torch::Tensor& image) {
  const auto shape = [&] {
    std::string s = "[";
    for (auto d : image.sizes()) s += (s.size() > 1 ? ", " : "") + std::to_string(d);
    return s + "]";
  };
  if (!image.defined() || (image.dim() != 2 && image.dim() != 3) || (image.dim() == 3 && image.size(0) != 1 &&
                                                                      image.size(0) != 3 && image.size(0) != 4) ||
      image.numel() == 0)
    throw std::invalid_argument("trainloop: encode_png: an image is [C, H, W] with C 1, 3 or 4, or [H, W]; got " +
                                (image.defined() ? shape() : std::string("an undefined tensor")));
  torch::NoGradGuard no_grad;
  torch::Tensor chw = image.detach().to(torch::kCPU);
  if (chw.dim() == 2) chw = chw.unsqueeze(0);
  if (chw.scalar_type() != torch::kUInt8) chw = (chw.to(torch::kFloat32) * 255).clamp(0, 255).to(torch::kUInt8);
  if (chw.size(0) == 1) chw = chw.expand({3, -1, -1});
  const torch::Tensor hwc = chw.permute({1, 2, 0}).contiguous();
  EncodedImage out{hwc.size(0), hwc.size(1), hwc.size(2), {}};
  const std::size_t row = static_cast<std::size_t>(out.width * out.channels);
  std::string raw;
  raw.reserve((row + 1) * static_cast<std::size_t>(out.height));
  const char* pixels = reinterpret_cast<const char*>(hwc.data_ptr<std::uint8_t>());
  for (std::int64_t y = 0; y < out.height; ++y) {
    raw += '\0';  // filter type None
    raw.append(pixels + static_cast<std::size_t>(y) * row, row);
  }
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  std::string deflated(size, '\0');
  if (compress2(reinterpret_cast<Bytef*>(&deflated[0]), &size, reinterpret_cast<const Bytef*>(raw.data()),
                static_cast<uLong>(raw.size()), Z_DEFAULT_COMPRESSION) != Z_OK)
    throw std::runtime_error("trainloop: encode_png: zlib could not compress a " + shape() + " image");
  deflated.resize(size);
  std::string header;
  for (std::int64_t v : {out.width, out.height})
    for (int shift = 24; shift >= 0; shift -= 8) header += static_cast<char>((v >> shift) & 0xFF);
  header += {8, static_cast<char>(out.channels == 4 ? 6 : 2), 0, 0, 0};  // 8 bits, RGB(A), deflate, no filter, no interlace
  out.png = "\x89PNG\r\n\x1a\n";
  detail::png_chunk(out.png, "IHDR", header);
  detail::png_chunk(out.png, "IDAT", deflated);
  detail::png_chunk(out.png, "IEND", "");
  return out;
}

TRAINLOOP_DETAIL_API torch::Tensor make_grid(const torch::Tensor& images, const GridOptions& options) {
  if (!images.defined() || images.dim() < 2 || images.dim() > 4)
    throw std::invalid_argument("trainloop: make_grid: images are [B, C, H, W], [C, H, W] or [H, W]");
  if (options.nrow < 1 || options.padding < 0) throw std::invalid_argument("trainloop: make_grid: nrow must be positive and padding not negative");
  torch::NoGradGuard no_grad;
  torch::Tensor t = images.detach();
  if (t.dim() == 2) t = t.unsqueeze(0);
  if (t.dim() == 3) {
    if (t.size(0) == 1) t = torch::cat({t, t, t}, 0);
    t = t.unsqueeze(0);
  }
  if (t.size(1) == 1) t = torch::cat({t, t, t}, 1);
  if (options.normalize) {
    t = t.clone();
    const auto normalize = [&](torch::Tensor img) {
      const double low = options.value_range ? options.value_range->first : img.min().item<double>();
      const double high = options.value_range ? options.value_range->second : img.max().item<double>();
      img.clamp_(low, high).sub_(low).div_(std::max(high - low, 1e-5));
    };
    if (options.scale_each)
      for (std::int64_t i = 0; i < t.size(0); ++i) normalize(t[i]);
    else
      normalize(t);
  }
  if (t.size(0) == 1) return t.squeeze(0);
  const std::int64_t count = t.size(0), columns = std::min(options.nrow, count), rows = (count + columns - 1) / columns;
  const std::int64_t height = t.size(2) + options.padding, width = t.size(3) + options.padding;
  torch::Tensor grid = torch::full({t.size(1), height * rows + options.padding, width * columns + options.padding},
                                   options.pad_value, t.options());
  for (std::int64_t k = 0; k < count; ++k)
    grid.narrow(1, (k / columns) * height + options.padding, height - options.padding)
        .narrow(2, (k % columns) * width + options.padding, width - options.padding)
        .copy_(t[k]);
  return grid;
}

namespace detail {
// Digits 0-9 in a 3x5 pixel font: five rows of three bits each, the top row first.
constexpr std::uint16_t digit_glyphs[10] = {0x7B6F, 0x2C97, 0x73E7, 0x73CF, 0x5BC9, 0x79CF, 0x79EF, 0x7249, 0x7BEF, 0x7BCF};
// Writes `text` (digits) into img [3, H, W] uint8 at (x, y), each font pixel `scale` pixels wide.
inline void draw_digits(torch::Tensor& img, const std::string& text, std::int64_t x, std::int64_t y, std::int64_t scale,
                        std::uint8_t value) {
  auto a = img.accessor<std::uint8_t, 3>();
  for (char c : text) {
    const std::uint16_t glyph = digit_glyphs[c - '0'];
    for (int r = 0; r < 5; ++r)
      for (int col = 0; col < 3; ++col) {
        if (!((glyph >> (14 - (r * 3 + col))) & 1)) continue;
        for (std::int64_t dy = 0; dy < scale; ++dy)
          for (std::int64_t dx = 0; dx < scale; ++dx)
            for (int ch = 0; ch < 3; ++ch) a[ch][y + r * scale + dy][x + col * scale + dx] = value;
      }
    x += 4 * scale;
  }
}
}  // namespace detail

TRAINLOOP_DETAIL_API torch::Tensor confusion_matrix_image(const torch::Tensor& matrix) {
  if (!matrix.defined() || matrix.dim() != 2 || matrix.size(0) != matrix.size(1) || matrix.size(0) == 0)
    throw std::invalid_argument("trainloop: confusion_matrix_image: the matrix must be [K, K] with K > 0");
  const torch::Tensor counts = matrix.detach().to(torch::kCPU).to(torch::kInt64).contiguous();
  const std::int64_t k = counts.size(0);
  const auto c = counts.accessor<std::int64_t, 2>();
  std::size_t digits = 1;
  for (std::int64_t i = 0; i < k; ++i)
    for (std::int64_t j = 0; j < k; ++j) digits = std::max(digits, std::to_string(c[i][j]).size());
  const std::int64_t scale = 2, cell = std::max<std::int64_t>(24, static_cast<std::int64_t>(digits) * 4 * scale + 6);
  torch::Tensor img = torch::full({3, k * cell + 1, k * cell + 1}, 160, torch::kUInt8);  // grey grid lines
  auto a = img.accessor<std::uint8_t, 3>();
  for (std::int64_t i = 0; i < k; ++i) {
    std::int64_t row_sum = 0;
    for (std::int64_t j = 0; j < k; ++j) row_sum += c[i][j];
    for (std::int64_t j = 0; j < k; ++j) {
      const double share = row_sum > 0 ? static_cast<double>(c[i][j]) / static_cast<double>(row_sum) : 0.0;
      // White (255, 255, 255) to dark blue (8, 48, 107), as matplotlib's "Blues" ends.
      const std::uint8_t rgb[3] = {static_cast<std::uint8_t>(255 - share * 247), static_cast<std::uint8_t>(255 - share * 207),
                                   static_cast<std::uint8_t>(255 - share * 148)};
      for (std::int64_t y = 1; y < cell; ++y)
        for (std::int64_t x = 1; x < cell; ++x)
          for (int ch = 0; ch < 3; ++ch) a[ch][i * cell + y][j * cell + x] = rgb[ch];
      const std::string text = std::to_string(c[i][j]);
      const std::int64_t w = static_cast<std::int64_t>(text.size()) * 4 * scale - scale;
      detail::draw_digits(img, text, j * cell + (cell - w) / 2 + 1, i * cell + (cell - 5 * scale) / 2 + 1, scale,
                          share > 0.5 ? 255 : 0);
    }
  }
  return img;
}
TRAINLOOP_DETAIL_END
#endif  // TRAINLOOP_DETAIL_DEFINE_API
