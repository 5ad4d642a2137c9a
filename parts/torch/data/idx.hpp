// trainloop: IDX files (the MNIST format), plain or gzip-compressed, and the MNIST / Fashion-MNIST splits.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

TRAINLOOP_DETAIL_BEGIN

namespace detail {
// zlib reads gzip and plain files alike; this owns the handle and reports errors with the file's path.
class GzFile {
 public:
  TRAINLOOP_DETAIL_API GzFile(const std::string& path, const std::string& hint);
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;
  ~GzFile() { gzclose(file_); }

  // Reads exactly `size` bytes; `what` names them in the error when the file ends early or is corrupt.
  TRAINLOOP_DETAIL_API void read_exactly(void* out, std::size_t size, const std::string& what);
  TRAINLOOP_DETAIL_API bool at_end();

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

TRAINLOOP_DETAIL_API std::uint32_t read_big_endian_u32(const unsigned char* p);
}  // namespace detail

/// Reads an IDX file (plain or .gz) into a CPU tensor of its own dtype and shape. Errors name the path: missing file,
/// wrong magic number, unknown type code, truncated or corrupt data, trailing bytes. `hint` is added to the error
/// when the file cannot be opened (for example, which package provides it).
TRAINLOOP_DETAIL_API torch::Tensor read_idx(const std::string& path, const std::string& hint = "");

/// Where Debian's dataset-fashion-mnist package puts Fashion-MNIST.
inline constexpr const char* fashion_mnist_debian_dir = "/usr/share/datasets/fashion-mnist";

/// One split of MNIST or Fashion-MNIST: images as float [N, 1, 28, 28] scaled to [0, 1], labels as int64 [N].
struct MnistSplit {
  torch::Tensor images;
  torch::Tensor labels;
};

/// Reads `train-*` or `t10k-*` IDX files (`.gz` preferred, plain accepted) from `dir`, checks that images and labels
/// agree, and scales the images to [0, 1].
TRAINLOOP_DETAIL_API MnistSplit read_mnist_split(const std::string& dir, bool train,
                                                 const std::string& hint = "for Fashion-MNIST install Debian's dataset-fashion-mnist " "package: apt-get install dataset-fashion-mnist");

/// Standardises images in place: (x - mean) / std, with the split's conventional constants below.
TRAINLOOP_DETAIL_API MnistSplit normalized(MnistSplit split, double mean, double std);
inline constexpr double fashion_mnist_mean = 0.2860, fashion_mnist_std = 0.3530;  // over the training images
inline constexpr double mnist_mean = 0.1307, mnist_std = 0.3081;

/// Fashion-MNIST's train (60,000) or test (10,000) split, from Debian's dataset-fashion-mnist by default; with
/// `normalize`, standardised with the training set's mean and deviation.
TRAINLOOP_DETAIL_API MnistSplit fashion_mnist(bool train, const std::string& dir = fashion_mnist_debian_dir,
                                              bool normalize = false);
/// MNIST's train or test split from `dir` (the four IDX files, plain or .gz).
TRAINLOOP_DETAIL_API MnistSplit mnist(bool train, const std::string& dir, bool normalize = false);

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API detail::GzFile::GzFile(const std::string& path, const std::string& hint) : path_(path) {
  errno = 0;
  file_ = gzopen(path.c_str(), "rb");
  if (!file_) {
    const int error = errno;
    throw std::runtime_error("trainloop: cannot open '" + path + "': " +
                             (error ? std::strerror(error) : "out of memory") + (hint.empty() ? "" : " (" + hint + ")"));
  }
  gzbuffer(file_, 1 << 17);
}

namespace detail {
TRAINLOOP_DETAIL_API void GzFile::read_exactly(void* out, std::size_t size, const std::string& what) {
  auto* bytes = static_cast<unsigned char*>(out);
  std::size_t done = 0;
  while (done < size) {
    const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(size - done, 1u << 30));
    const int got = gzread(file_, bytes + done, chunk);
    if (got < 0) {
      int code = 0;
      const char* message = gzerror(file_, &code);
      throw std::runtime_error("trainloop: '" + path_ + "' is corrupt while reading " + what + ": " + message);
    }
    if (got == 0)
      throw std::runtime_error("trainloop: '" + path_ + "' is truncated: " + what + " needs " +
                               std::to_string(size) + " bytes, the file ends after " + std::to_string(done));
    done += static_cast<std::size_t>(got);
  }
}
TRAINLOOP_DETAIL_API bool GzFile::at_end() {
  unsigned char probe = 0;
  return gzread(file_, &probe, 1) == 0;
}
TRAINLOOP_DETAIL_API std::uint32_t read_big_endian_u32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}
}  // namespace detail
TRAINLOOP_DETAIL_API torch::Tensor read_idx(const std::string& path, const std::string& hint) {
  detail::GzFile file(path, hint);
  std::array<unsigned char, 4> magic{};
  file.read_exactly(magic.data(), magic.size(), "the magic number");
  if (magic[0] != 0 || magic[1] != 0)
    throw std::runtime_error("trainloop: '" + path + "' is not an IDX file (its magic number does not start with two zero bytes)");
  torch::ScalarType dtype;
  std::size_t element_size;
  switch (magic[2]) {
    case 0x08: dtype = torch::kUInt8, element_size = 1; break;
    case 0x09: dtype = torch::kInt8, element_size = 1; break;
    case 0x0B: dtype = torch::kInt16, element_size = 2; break;
    case 0x0C: dtype = torch::kInt32, element_size = 4; break;
    case 0x0D: dtype = torch::kFloat32, element_size = 4; break;
    case 0x0E: dtype = torch::kFloat64, element_size = 8; break;
    default:
      throw std::runtime_error("trainloop: '" + path + "' has an unknown IDX type code " + std::to_string(magic[2]));
  }
  const unsigned rank = magic[3];
  if (rank == 0) throw std::runtime_error("trainloop: '" + path + "' declares 0 dimensions");
  std::vector<unsigned char> header(4u * rank);
  file.read_exactly(header.data(), header.size(), "the dimensions");
  std::vector<std::int64_t> shape(rank);
  std::size_t count = 1;
  for (unsigned i = 0; i < rank; ++i) {
    shape[i] = detail::read_big_endian_u32(&header[4u * i]);
    count *= static_cast<std::size_t>(shape[i]);
  }
  torch::Tensor tensor = torch::empty(shape, torch::TensorOptions().dtype(dtype));
  file.read_exactly(tensor.data_ptr(), count * element_size, "the data");
  if (!file.at_end())
    throw std::runtime_error("trainloop: '" + path + "' has bytes after the data its header declares");
  if (element_size > 1) {  // IDX is big-endian; swap to the host order
    auto* bytes = static_cast<unsigned char*>(tensor.data_ptr());
    for (std::size_t i = 0; i < count; ++i) std::reverse(bytes + i * element_size, bytes + (i + 1) * element_size);
  }
  return tensor;
}
TRAINLOOP_DETAIL_API MnistSplit read_mnist_split(const std::string& dir, bool train, const std::string& hint) {
  const std::string prefix = dir + "/" + (train ? "train" : "t10k");
  auto read_either = [&](const std::string& stem) {
    const std::string gz = stem + ".gz";
    std::FILE* probe = std::fopen(gz.c_str(), "rb");
    if (probe) {
      std::fclose(probe);
      return read_idx(gz, hint);
    }
    std::FILE* plain = std::fopen(stem.c_str(), "rb");
    if (plain) {
      std::fclose(plain);
      return read_idx(stem, hint);
    }
    return read_idx(gz, hint);  // neither exists: report the .gz name with the hint
  };
  const std::string images_path = prefix + "-images-idx3-ubyte";
  const std::string labels_path = prefix + "-labels-idx1-ubyte";
  torch::Tensor images = read_either(images_path);
  torch::Tensor labels = read_either(labels_path);
  if (images.dim() != 3 || images.scalar_type() != torch::kUInt8)
    throw std::runtime_error("trainloop: '" + images_path + "' should hold uint8 images [N, rows, cols], found shape " +
                             c10::str(images.sizes()));
  if (labels.dim() != 1 || labels.scalar_type() != torch::kUInt8)
    throw std::runtime_error("trainloop: '" + labels_path + "' should hold uint8 labels [N], found shape " +
                             c10::str(labels.sizes()));
  if (images.size(0) != labels.size(0))
    throw std::runtime_error("trainloop: '" + images_path + "' has " + std::to_string(images.size(0)) +
                             " images but '" + labels_path + "' has " + std::to_string(labels.size(0)) + " labels");
  return {images.unsqueeze(1).to(torch::kFloat32).div_(255.0), labels.to(torch::kInt64)};
}
TRAINLOOP_DETAIL_API MnistSplit normalized(MnistSplit split, double mean, double std) {
  split.images = split.images.sub(mean).div_(std);
  return split;
}
TRAINLOOP_DETAIL_API MnistSplit fashion_mnist(bool train, const std::string& dir, bool normalize) {
  MnistSplit split = read_mnist_split(dir, train);
  return normalize ? normalized(std::move(split), fashion_mnist_mean, fashion_mnist_std) : split;
}
TRAINLOOP_DETAIL_API MnistSplit mnist(bool train, const std::string& dir, bool normalize) {
  MnistSplit split = read_mnist_split(dir, train, "download MNIST's four IDX files into that folder");
  return normalize ? normalized(std::move(split), mnist_mean, mnist_std) : split;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
