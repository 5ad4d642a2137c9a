// IDX reading (the MNIST format), plain and gzip, and its errors; the real Fashion-MNIST files when installed.
#include <doctest/doctest.h>
#include <trainloop.hpp>
#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "temp_dir.hpp"

namespace {
std::vector<unsigned char> idx_bytes(unsigned char type_code, const std::vector<std::uint32_t>& dims,
                                     const std::vector<unsigned char>& payload) {
  std::vector<unsigned char> bytes{0, 0, type_code, static_cast<unsigned char>(dims.size())};
  for (std::uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<unsigned char>(d >> shift));
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  return bytes;
}
void write_plain(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}
void write_gz(const std::string& path, const std::vector<unsigned char>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  gzclose(f);
}
}  // namespace

TEST_CASE("read_idx: uint8 and big-endian int32 / float32, plain and gzip") {
  TempDir dir;
  const std::vector<unsigned char> pixels{0, 1, 2, 253, 254, 255};
  write_plain(dir.file("u8.idx"), idx_bytes(0x08, {2, 3}, pixels));
  write_gz(dir.file("u8.idx.gz"), idx_bytes(0x08, {2, 3}, pixels));
  for (const char* name : {"u8.idx", "u8.idx.gz"}) {
    torch::Tensor t = trainloop::read_idx(dir.file(name));
    CHECK((t.scalar_type() == torch::kUInt8));
    CHECK(t.sizes().vec() == std::vector<std::int64_t>{2, 3});
    CHECK(t[1][2].item<int>() == 255);
    CHECK(t[0][1].item<int>() == 1);
  }
  // int32 258 and -2, float32 1.5 (0x3FC00000), all big-endian on disk.
  write_gz(dir.file("i32.gz"), idx_bytes(0x0C, {2}, {0, 0, 1, 2, 0xFF, 0xFF, 0xFF, 0xFE}));
  torch::Tensor ints = trainloop::read_idx(dir.file("i32.gz"));
  CHECK((ints.scalar_type() == torch::kInt32));
  CHECK(ints[0].item<int>() == 258);
  CHECK(ints[1].item<int>() == -2);
  write_plain(dir.file("f32"), idx_bytes(0x0D, {1}, {0x3F, 0xC0, 0, 0}));
  CHECK(trainloop::read_idx(dir.file("f32"))[0].item<float>() == 1.5f);
}

TEST_CASE("read_idx: every bad file gets an error naming its path") {
  TempDir dir;
  CHECK_THROWS_WITH_AS(trainloop::read_idx(dir.file("absent.gz"), "install the package"),
                       contains("cannot open '" + dir.file("absent.gz") +
                                         "': No such file or directory (install the package)"),
                       std::runtime_error);
  write_plain(dir.file("magic"), {0x1f, 0x00, 0x08, 0x01, 0, 0, 0, 1, 7});
  CHECK_THROWS_WITH_AS(trainloop::read_idx(dir.file("magic")),
                       contains("'" + dir.file("magic") + "' is not an IDX file"), std::runtime_error);
  write_plain(dir.file("type"), idx_bytes(0x07, {1}, {1}));
  CHECK_THROWS_WITH_AS(trainloop::read_idx(dir.file("type")), doctest::Contains("unknown IDX type code 7"),
                       std::runtime_error);
  write_gz(dir.file("short.gz"), idx_bytes(0x08, {4, 4}, {1, 2, 3}));
  CHECK_THROWS_WITH_AS(trainloop::read_idx(dir.file("short.gz")),
                       contains("'" + dir.file("short.gz") +
                                         "' is truncated: the data needs 16 bytes, the file ends after 3"),
                       std::runtime_error);
  write_plain(dir.file("long"), idx_bytes(0x08, {2}, {1, 2, 3}));
  CHECK_THROWS_WITH_AS(trainloop::read_idx(dir.file("long")), doctest::Contains("has bytes after the data"),
                       std::runtime_error);
  // A gzip stream cut in half: zlib notices, and so do we.
  write_gz(dir.file("cut.gz"), idx_bytes(0x08, {64}, std::vector<unsigned char>(64, 9)));
  std::filesystem::resize_file(dir.file("cut.gz"), std::filesystem::file_size(dir.file("cut.gz")) / 2);
  CHECK_THROWS_WITH_AS(trainloop::read_idx(dir.file("cut.gz")), contains(dir.file("cut.gz")),
                       std::runtime_error);
}

TEST_CASE("read_mnist_split: scales images, checks images against labels, names the package when absent") {
  TempDir dir;
  write_gz(dir.file("train-images-idx3-ubyte.gz"), idx_bytes(0x08, {2, 2, 2}, {0, 255, 51, 102, 0, 0, 0, 255}));
  write_plain(dir.file("train-labels-idx1-ubyte"), idx_bytes(0x08, {2}, {3, 9}));  // plain files are accepted too
  trainloop::MnistSplit split = trainloop::read_mnist_split(dir.path.string(), /*train=*/true);
  CHECK(split.images.sizes().vec() == std::vector<std::int64_t>{2, 1, 2, 2});
  CHECK((split.images.scalar_type() == torch::kFloat32));
  CHECK(split.images[0][0][0][1].item<float>() == 1.0f);
  CHECK(split.images[0][0][1][0].item<float>() == doctest::Approx(0.2));
  CHECK((split.labels.scalar_type() == torch::kInt64));
  CHECK(split.labels[1].item<std::int64_t>() == 9);

  write_gz(dir.file("t10k-images-idx3-ubyte.gz"), idx_bytes(0x08, {3, 2, 2}, std::vector<unsigned char>(12, 1)));
  write_gz(dir.file("t10k-labels-idx1-ubyte.gz"), idx_bytes(0x08, {2}, {1, 2}));
  CHECK_THROWS_WITH_AS(trainloop::read_mnist_split(dir.path.string(), false),
                       contains("has 3 images but '" + dir.file("t10k-labels-idx1-ubyte") + "' has 2 labels"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(trainloop::read_mnist_split(dir.file("nowhere"), true),
                       doctest::Contains("apt-get install dataset-fashion-mnist"), std::runtime_error);
}

TEST_CASE("the real Fashion-MNIST files, when Debian's dataset-fashion-mnist is installed") {
  if (!std::filesystem::exists(std::string(trainloop::fashion_mnist_debian_dir) + "/t10k-labels-idx1-ubyte.gz")) {
    MESSAGE("dataset-fashion-mnist is not installed; skipped");
    return;
  }
  trainloop::MnistSplit test = trainloop::read_mnist_split(trainloop::fashion_mnist_debian_dir, false);
  CHECK(test.images.sizes().vec() == std::vector<std::int64_t>{10000, 1, 28, 28});
  CHECK(test.labels.sizes().vec() == std::vector<std::int64_t>{10000});
  // Fashion-MNIST's test set is balanced: 1000 of each of the 10 classes.
  CHECK(torch::bincount(test.labels).eq(1000).all().item<bool>());
  CHECK(test.images.min().item<float>() == 0.0f);
  CHECK(test.images.max().item<float>() == 1.0f);
}
