// Batches per second of trainloop's DataLoader against LibTorch's stock loaders over the same Fashion-MNIST data
// (shuffled, batch 64, one epoch per round, interleaved, median): torch::data::make_data_loader over the same
// tensors, and over the stock torch::data::datasets::MNIST (which reads the uncompressed IDX files).
//
//   loader_throughput [--smoke] [--data DIR]
#include <trainloop.hpp>
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bench_common.hpp"

using namespace trainloop;

namespace {
// torch::data::datasets::MNIST reads plain IDX files: unpack the .gz ones into a scratch folder.
void gunzip(const std::string& from, const std::string& to) {
  gzFile in = gzopen(from.c_str(), "rb");
  if (!in) throw std::runtime_error("cannot open " + from);
  std::ofstream out(to, std::ios::binary);
  std::vector<char> buffer(1 << 16);
  int got = 0;
  while ((got = gzread(in, buffer.data(), static_cast<unsigned>(buffer.size()))) > 0) out.write(buffer.data(), got);
  gzclose(in);
}
}  // namespace

int main(int argc, char** argv) {
  bool smoke = false;
  std::string dir = fashion_mnist_debian_dir;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) smoke = true;
    else if (std::strcmp(argv[i], "--data") == 0 && i + 1 < argc) dir = argv[++i];
  }
  torch::set_num_threads(1);
  tune_glibc_malloc();
  MnistSplit split = read_mnist_split(dir, /*train=*/true);
  if (smoke) split = {split.images.slice(0, 0, 2000), split.labels.slice(0, 0, 2000)};
  const std::int64_t batch_size = 64;
  const double batches = std::ceil(double(split.labels.size(0)) / batch_size);

  DataLoader<2> ours(TensorDataset(split.images, split.labels), DataLoaderOptions().batch_size(batch_size).shuffle(true));
  auto stock_tensors = torch::data::make_data_loader<torch::data::samplers::RandomSampler>(
      torch::data::datasets::TensorDataset(split.images)
          .map(torch::data::transforms::Stack<torch::data::TensorExample>()),
      torch::data::DataLoaderOptions().batch_size(batch_size));
  // (TensorDataset holds one tensor in LibTorch; its batches carry images only, which only favours it.)

  const auto scratch = std::filesystem::temp_directory_path() / ("trainloop-bench-mnist-" + std::to_string(::getpid()));
  std::filesystem::create_directories(scratch);
  for (const char* name : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"})
    gunzip(dir + "/" + name + ".gz", (scratch / name).string());
  auto stock_mnist_dataset = torch::data::datasets::MNIST(scratch.string(), torch::data::datasets::MNIST::Mode::kTrain);
  const double mnist_batches = std::ceil(double(stock_mnist_dataset.size().value()) / batch_size);
  auto stock_mnist = torch::data::make_data_loader<torch::data::samplers::RandomSampler>(
      std::move(stock_mnist_dataset).map(torch::data::transforms::Stack<>()),
      torch::data::DataLoaderOptions().batch_size(batch_size));

  std::int64_t checksum = 0;
  std::vector<bench::Variant> variants{
      {"torch::data loader over the same tensors (baseline)",
       [&] {
         for (auto& b : *stock_tensors) checksum += b.data.size(0);
       },
       batches},
      {"trainloop::DataLoader",
       [&] {
         for (auto b : ours) checksum += b.first.size(0);
       },
       batches},
      {"trainloop::DataLoader, prefetch(2)", [&, prefetching = std::make_shared<DataLoader<2>>(
                                                     TensorDataset(split.images, split.labels),
                                                     DataLoaderOptions().batch_size(batch_size).shuffle(true).prefetch(2))] {
         for (auto b : *prefetching) checksum += b.first.size(0);
       },
       batches},
      {"torch::data::datasets::MNIST (stock, whole 60k)",
       [&] {
         for (auto& b : *stock_mnist) checksum += b.data.size(0);
       },
       mnist_batches},
  };
  bench::run_interleaved("loader_throughput: Fashion-MNIST, batch 64, shuffled (time per batch)", variants,
                         smoke ? 2 : 9, 1e6, "us/batch");
  const double base = bench::median(variants[0].seconds_per_unit);
  std::printf("  batches/s: torch::data %.0f, trainloop %.0f (%.1fx), trainloop+prefetch %.0f, stock MNIST %.0f\n",
              1 / base, 1 / bench::median(variants[1].seconds_per_unit),
              base / bench::median(variants[1].seconds_per_unit), 1 / bench::median(variants[2].seconds_per_unit),
              1 / bench::median(variants[3].seconds_per_unit));
  std::filesystem::remove_all(scratch);
  return checksum > 0 ? 0 : 1;
}
