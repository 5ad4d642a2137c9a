// trainloop: what loggers show beside scalars, as plain values: a histogram (what TensorBoard's HistogramProto holds,
// made as torch.utils.tensorboard makes it) and an encoded image. The torch side (parts/torch/media.hpp) makes them
// from tensors; the loggers that show them (TensorBoard, MLflow) take these, and CSV and JSON lines have no place for
// them (they declare no log_histogram/log_image, and the Trainer's helpers pass them by).
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>
// Headers only the definitions use: a separately compiled TU does not parse them.
#if TRAINLOOP_DETAIL_DEFINE_API
#include <stdexcept>
#endif

TRAINLOOP_DETAIL_BEGIN

/// A histogram as TensorBoard's HistogramProto holds it: the values' count, min, max, sum and sum of squares, and
/// buckets given by their right edges (`bucket_limits[i]`), bucket i holding the values in
/// [bucket_limits[i-1], bucket_limits[i]) (the last one closed on the right), as numpy.histogram counts them.
struct Histogram {
  double min = 0, max = 0, num = 0, sum = 0, sum_squares = 0;
  std::vector<double> bucket_limits;
  std::vector<double> bucket_counts;
};

/// An image ready for a logger: PNG bytes and what they hold (channels: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).
struct EncodedImage {
  std::int64_t height = 0, width = 0, channels = 0;
  std::string png;
};

/// TensorFlow's default histogram edges, which torch.utils.tensorboard uses for add_histogram(bins="tensorflow"):
/// 0, and +-v for v = 1e-12, 1.1e-12, ... (multiplying by 1.1 in double while v < 1e20), ascending: 1549 edges.
TRAINLOOP_DETAIL_API const std::vector<double>& tensorflow_bucket_edges();

/// torch.utils.tensorboard's make_histogram from per-bin counts: `counts[i]` values in [edges[i], edges[i+1]) (the
/// last bin closed; values outside the edges are in no bin), trimmed to the bins from the first to the last non-empty
/// one, with one empty bin before them so the first limit is the left edge of the data (or, when the first bin is
/// non-empty, a zero-count bucket whose limit is edges[0]). `num`, `min`, `max`, `sum`, `sum_squares` are the values'.
/// An empty tensor, or values that fall in no bin, are errors naming `tag` (as torch's "The input has no element" and
/// "The histogram is empty").
TRAINLOOP_DETAIL_API Histogram trimmed_histogram(const std::vector<double>& edges, const std::vector<double>& counts,
                                                 double num, double min, double max, double sum, double sum_squares,
                                                 const std::string& tag);
/// The same from values on the host, in one pass (sums in long double, so they round as an exact sum would).
TRAINLOOP_DETAIL_API Histogram histogram_of(const double* values, std::size_t size, const std::vector<double>& edges,
                                            const std::string& tag);
TRAINLOOP_DETAIL_API Histogram histogram_of(const float* values, std::size_t size, const std::vector<double>& edges,
                                            const std::string& tag);
/// Edges must be finite and strictly ascending, at least two (numpy.histogram's rule); the error names `tag`.
TRAINLOOP_DETAIL_API void check_histogram_edges(const std::vector<double>& edges, const std::string& tag);

namespace detail {
// The bins of values over TensorFlow's edges (numpy's: [e_i, e_i+1), the last closed), found without a binary search
// over 1549 edges and without branches on the data (weights' signs and gradients' zeros are unpredictable): the
// positive edges are v_k = 1e-12 * 1.1^k, and a table indexed by a value's binary exponent and the top 4 bits of its
// mantissa (ranges narrower than the edges' ratio 1.1, so at most one edge inside one) gives the last edge at or
// below the range's start; one exact comparison finishes.
class TensorflowBins {
 public:
  TRAINLOOP_DETAIL_API TensorflowBins();
  /// The bin of `v`, or -1 (NaN, beyond the edges).
  std::ptrdiff_t operator()(double v) const {
    const double a = std::fabs(v);
    if (!(a <= edge_[p_])) return -1;  // NaN, or beyond the last edge
    std::uint64_t bits;
    std::memcpy(&bits, &a, 8);
    const int row = std::max(static_cast<int>(bits >> 52) - first_exponent, 0);  // 0, subnormals: the first row
    std::ptrdiff_t k = start_[(row << 4) | static_cast<int>((bits >> 48) & 15)];
    k += edge_[k + 1] <= a;  // edge_[k] <= a < edge_[k + 1]
    const std::ptrdiff_t up = std::min(p_ + k, 2 * p_ - 1);    // [v_k-1, v_k) (k = 0: [0, v_0)); the last edge closes
    const std::ptrdiff_t down = p_ - k - (a != edge_[k]);      // [-v_m, -v_m-1) with a in (v_m-1, v_m]
    const std::ptrdiff_t negative = -static_cast<std::ptrdiff_t>(v < 0);  // all ones or zero: no branch on the sign
    return up ^ ((up ^ down) & negative);
  }

 private:
  static constexpr int first_exponent = 1023 - 41, exponents = 110;  // 2^-41 < 1e-12, 2^69 > 1e20
  std::vector<double> edge_;  // 0, v_0 .. v_p-1, +inf
  std::ptrdiff_t p_;          // positive edges
  std::int16_t start_[exponents * 16];
};
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API const std::vector<double>& tensorflow_bucket_edges() {
  static const std::vector<double> edges = [] {
    std::vector<double> positive;
    for (double v = 1e-12; v < 1e20; v *= 1.1) positive.push_back(v);
    std::vector<double> all;
    all.reserve(2 * positive.size() + 1);
    for (auto it = positive.rbegin(); it != positive.rend(); ++it) all.push_back(-*it);
    all.push_back(0.0);
    all.insert(all.end(), positive.begin(), positive.end());
    return all;
  }();
  return edges;
}

TRAINLOOP_DETAIL_API void check_histogram_edges(const std::vector<double>& edges, const std::string& tag) {
  if (edges.size() < 2)
    throw std::invalid_argument("trainloop: histogram '" + tag + "': at least two bucket edges are needed");
  for (std::size_t i = 0; i < edges.size(); ++i) {
    if (!std::isfinite(edges[i]) || (i > 0 && !(edges[i] > edges[i - 1])))
      throw std::invalid_argument("trainloop: histogram '" + tag + "': bucket edges must be finite and strictly ascending (edge " +
                                  std::to_string(i) + " is not)");
  }
}

TRAINLOOP_DETAIL_API Histogram trimmed_histogram(const std::vector<double>& edges, const std::vector<double>& counts,
                                                 double num, double min, double max, double sum, double sum_squares,
                                                 const std::string& tag) {
  if (num == 0) throw std::invalid_argument("trainloop: histogram '" + tag + "': the tensor has no element");
  if (counts.size() + 1 != edges.size())
    throw std::invalid_argument("trainloop: histogram '" + tag + "': " + std::to_string(counts.size()) +
                                " counts for " + std::to_string(edges.size()) + " edges");
  std::size_t first = counts.size(), last = 0;
  for (std::size_t i = 0; i < counts.size(); ++i)
    if (counts[i] > 0) first = std::min(first, i), last = i;
  if (first == counts.size())
    throw std::invalid_argument("trainloop: histogram '" + tag + "': no value lies within the bucket edges [" +
                                std::to_string(edges.front()) + ", " + std::to_string(edges.back()) + "] (NaN or out of range)");
  Histogram h{min, max, num, sum, sum_squares, {}, {}};
  // The bucket left of the first non-empty one: its right limit is the data's left edge.
  if (first == 0) {
    h.bucket_limits.push_back(edges[0]);
    h.bucket_counts.push_back(0);
  } else {
    h.bucket_limits.push_back(edges[first]);
    h.bucket_counts.push_back(counts[first - 1]);
  }
  for (std::size_t i = first; i <= last; ++i) {
    h.bucket_limits.push_back(edges[i + 1]);
    h.bucket_counts.push_back(counts[i]);
  }
  return h;
}

TRAINLOOP_DETAIL_API detail::TensorflowBins::TensorflowBins() {
  const std::vector<double>& edges = tensorflow_bucket_edges();
  p_ = static_cast<std::ptrdiff_t>(edges.size() / 2);  // edges[p] is 0
  edge_.assign(edges.begin() + p_, edges.end());
  edge_.push_back(HUGE_VAL);
  for (int key = 0; key < exponents * 16; ++key) {
    const double low = std::ldexp(1.0 + (key % 16) / 16.0, key / 16 + first_exponent - 1023);
    start_[key] = static_cast<std::int16_t>(std::upper_bound(edge_.begin(), edge_.begin() + p_ + 1, low) - edge_.begin() - 1);
  }
}

namespace detail {
// One pass: the statistics, and the count of each bin `bin(v)` gives (-1: none).
template <class T, class Bin>
Histogram count_histogram(const T* values, std::size_t size, const std::vector<double>& edges, const Bin& bin,
                          const std::string& tag) {
  std::vector<std::int64_t> counts(edges.size(), 0);  // counts[0]: in no bin
  double min = size ? static_cast<double>(values[0]) : 0, max = min;
  long double sum = 0, sum_squares = 0;
  bool nan = false;
  for (std::size_t i = 0; i < size; ++i) {
    const double v = static_cast<double>(values[i]);
    if (v != v) {
      nan = true;
      continue;
    }
    min = std::min(min, v);
    max = std::max(max, v);
    sum += v;
    sum_squares += static_cast<long double>(v) * v;
    ++counts[static_cast<std::size_t>(bin(v) + 1)];
  }
  if (nan) min = max = std::nan(""), sum = sum_squares = std::nan("");  // numpy's min, max and sums propagate NaN
  return trimmed_histogram(edges, std::vector<double>(counts.begin() + 1, counts.end()), static_cast<double>(size), min, max,
                           static_cast<double>(sum), static_cast<double>(sum_squares), tag);
}
template <class T>
Histogram histogram_of_values(const T* values, std::size_t size, const std::vector<double>& edges, const std::string& tag) {
  check_histogram_edges(edges, tag);
  if (&edges == &tensorflow_bucket_edges()) {
    static const TensorflowBins tensorflow_bins;
    return count_histogram(values, size, edges, tensorflow_bins, tag);
  }
  const auto last = static_cast<std::ptrdiff_t>(edges.size()) - 2;
  return count_histogram(values, size, edges, [&](double v) -> std::ptrdiff_t {
    if (!(v >= edges.front() && v <= edges.back())) return -1;
    // numpy: [edges[i], edges[i+1]); the last edge closes the last bin.
    return std::min<std::ptrdiff_t>(std::upper_bound(edges.begin(), edges.end(), v) - edges.begin() - 1, last);
  }, tag);
}
}  // namespace detail

TRAINLOOP_DETAIL_API Histogram histogram_of(const double* values, std::size_t size, const std::vector<double>& edges,
                                            const std::string& tag) {
  return detail::histogram_of_values(values, size, edges, tag);
}
TRAINLOOP_DETAIL_API Histogram histogram_of(const float* values, std::size_t size, const std::vector<double>& edges,
                                            const std::string& tag) {
  return detail::histogram_of_values(values, size, edges, tag);
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
