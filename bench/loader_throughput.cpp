// Part 1, data in memory: batches per second of trainloop's DataLoader against LibTorch's stock loaders over the same
// Fashion-MNIST data (shuffled, batch 64, one epoch per round, interleaved, median): torch::data::make_data_loader
// over the same tensors, and over the stock torch::data::datasets::MNIST (which reads the uncompressed IDX files).
// Part 2, a dataset whose get() does real work (decode-like: an uint8 image to float, padded, randomly cropped,
// flipped and normalised, repeated to take ~0.2 ms and ~2 ms): examples per second of trainloop's DataLoader with
// workers(0|1|2), torch::data's loader with the same dataset and workers, and PyTorch's DataLoader(num_workers=0|1|2)
// over the same work in Python (Debian's /usr/bin/python3, run from here). Then the hand-off: the time to take a batch
// a worker has ready.
// Part 3 (built with TRAINLOOP_WITH_IMAGE_IO=1, for each --image-folder given): images per second from a folder of
// image files, decode + RandomCrop (padding 4) + horizontal flip + to float + normalise + collate into batches of 64,
// through ImageFolder and the DataLoader with workers(1|2); against the decoder alone (each file read and decoded by
// TurboJPEG or libpng in a bare loop, one thread: the physical limit of one core) and torchvision's ImageFolder in
// PyTorch's DataLoader with the same transforms and num_workers. Every folder is read as RGB (torchvision's default).
//
//   tools/make_image_folder.py /tmp/png28 --limit 10000
//   tools/make_image_folder.py /tmp/jpeg28 --format jpeg --limit 10000
//   tools/make_image_folder.py /tmp/jpeg224 --format jpeg --size 224 --mode RGB --limit 2000
//   loader_throughput [--smoke] [--data DIR] [--in-memory-only] [--images-only] [--image-folder DIR]...
#include <trainloop.hpp>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
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

// The decode-like work of one example: `repeats` times an uint8 image [3, 64, 64] to float, padded by 4 and cropped
// to 56 x 56 at a random place, flipped with probability 0.5, normalised.
struct DecodeLike {
  torch::Tensor images;  // [N, 3, 64, 64] uint8
  std::int64_t repeats = 1;
  torch::Tensor work(std::int64_t index, torch::Generator& generator) const {
    static const transforms::Normalize normalize({0.5, 0.5, 0.5}, {0.25, 0.25, 0.25});
    torch::Tensor x;
    for (std::int64_t r = 0; r < repeats; ++r) {
      x = transforms::to_float(images[index]);
      x = transforms::RandomCrop(56, 4)(x, generator);
      x = normalize(transforms::RandomHorizontalFlip{0.5}(x, generator));
    }
    return x;
  }
};
// trainloop's way: the example's generator.
struct DecodeLikeDataset {
  DecodeLike decode;
  std::int64_t size() const { return decode.images.size(0); }
  std::pair<torch::Tensor, std::int64_t> get(std::size_t index, torch::Generator& generator) const {
    return {decode.work(static_cast<std::int64_t>(index), generator), static_cast<std::int64_t>(index)};
  }
};
// torch::data's way: a Dataset subclass; it has no generator to give, so the work draws from a thread-local one.
struct DecodeLikeTorchData : torch::data::datasets::Dataset<DecodeLikeTorchData> {
  DecodeLike decode;
  explicit DecodeLikeTorchData(DecodeLike d) : decode(std::move(d)) {}
  torch::data::Example<> get(std::size_t index) override {
    thread_local torch::Generator generator = torch::make_generator<torch::CPUGeneratorImpl>(1);
    return {decode.work(static_cast<std::int64_t>(index), generator), torch::tensor(static_cast<std::int64_t>(index))};
  }
  c10::optional<std::size_t> size() const override { return static_cast<std::size_t>(decode.images.size(0)); }
};

// PyTorch's DataLoader over the same work, written with the same LibTorch ops (torchvision's tensor functions are
// these ops plus Python overhead). Prints the median examples/s over `epochs` epochs after one warm-up.
const char* pytorch_script = R"(
import sys, time, statistics, torch
from torch.utils.data import Dataset, DataLoader
n, repeats, batch, workers, epochs = map(int, sys.argv[1:6])
torch.set_num_threads(1)
torch.manual_seed(0)
images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8)
mean = torch.tensor([0.5, 0.5, 0.5]).view(-1, 1, 1)
std = torch.tensor([0.25, 0.25, 0.25]).view(-1, 1, 1)
class DecodeLike(Dataset):
    def __len__(self):
        return n
    def __getitem__(self, i):
        for _ in range(repeats):
            x = images[i].to(torch.float32).div(255)
            x = torch.constant_pad_nd(x, [4, 4, 4, 4], 0.0)
            top = torch.randint(0, 72 - 56 + 1, (1,)).item()
            left = torch.randint(0, 72 - 56 + 1, (1,)).item()
            x = x[:, top:top + 56, left:left + 56]
            if torch.rand(1) < 0.5:
                x = x.flip(-1)
            x = x.sub(mean).div(std)
        return x, i
extra = dict(prefetch_factor=2, persistent_workers=True) if workers > 0 else {}
loader = DataLoader(DecodeLike(), batch_size=batch, shuffle=True, num_workers=workers, **extra)
rates = []
for epoch in range(epochs + 1):
    start = time.perf_counter()
    for x, y in loader:
        pass
    if epoch > 0:
        rates.append(n / (time.perf_counter() - start))
print(statistics.median(rates))
)";

// Runs a Python script with Debian's interpreter and returns the number on its last line (0 when Python, torch or
// torchvision is missing, or the script fails).
double run_python(const char* script_text, const std::string& arguments) {
  const auto script = std::filesystem::temp_directory_path() / ("trainloop-bench-loader-" + std::to_string(::getpid()) + ".py");
  std::ofstream(script) << script_text;
  const std::string command = "/usr/bin/python3 " + script.string() + " " + arguments + " 2>&1";
  double rate = 0;
  if (FILE* pipe = popen(command.c_str(), "r")) {
    char line[512] = {};
    while (std::fgets(line, sizeof line, pipe)) rate = std::atof(line);
    if (pclose(pipe) != 0) rate = 0;
  }
  std::filesystem::remove(script);
  return rate;
}
double pytorch_examples_per_second(std::int64_t n, std::int64_t repeats, std::int64_t batch, int workers, int epochs) {
  return run_python(pytorch_script, std::to_string(n) + " " + std::to_string(repeats) + " " + std::to_string(batch) + " " +
                                        std::to_string(workers) + " " + std::to_string(epochs));
}

// Median time of one get() with `repeats`, for calibrating the work.
double seconds_per_get(const DecodeLike& decode) {
  auto generator = torch::make_generator<torch::CPUGeneratorImpl>(3);
  std::vector<double> times;
  std::int64_t elements = 0;
  for (int i = 0; i < 60; ++i) {
    const auto start = std::chrono::steady_clock::now();
    elements += decode.work(i % decode.images.size(0), generator).numel();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  bench::keep(elements);
  return bench::median(times);
}

// Part 2 at one size of work: examples/s of every loader and worker count.
void user_dataset_throughput(bool smoke, double target_seconds, std::int64_t n) {
  const std::int64_t batch = 32;
  torch::manual_seed(0);
  DecodeLike decode{torch::randint(0, 256, {n, 3, 64, 64}, torch::kByte), 1};
  decode.repeats = std::max<std::int64_t>(1, std::llround(target_seconds / seconds_per_get(decode)));
  const double get_ms = 1e3 * seconds_per_get(decode);

  std::vector<std::unique_ptr<DataLoader<DecodeLikeDataset>>> ours;
  using StockLoader = decltype(torch::data::make_data_loader<torch::data::samplers::RandomSampler>(
      DecodeLikeTorchData(decode).map(torch::data::transforms::Stack<>()), torch::data::DataLoaderOptions()));
  std::vector<StockLoader> stock;
  std::vector<bench::Variant> variants;
  std::int64_t checksum = 0;
  for (int workers = 0; workers <= 2; ++workers) {
    ours.push_back(std::make_unique<DataLoader<DecodeLikeDataset>>(
        DecodeLikeDataset{decode}, DataLoaderOptions().batch_size(batch).shuffle(true).workers(workers)));
    stock.push_back(torch::data::make_data_loader<torch::data::samplers::RandomSampler>(
        DecodeLikeTorchData(decode).map(torch::data::transforms::Stack<>()),
        torch::data::DataLoaderOptions().batch_size(batch).workers(static_cast<std::size_t>(workers))));
  }
  for (int workers = 0; workers <= 2; ++workers) {
    variants.push_back({"torch::data, workers " + std::to_string(workers), [&, workers] {
                          for (auto& b : *stock[static_cast<std::size_t>(workers)]) checksum += b.data.size(0);
                        }, static_cast<double>(n)});
    variants.push_back({"trainloop::DataLoader, workers(" + std::to_string(workers) + ")", [&, workers] {
                          for (auto b : *ours[static_cast<std::size_t>(workers)]) checksum += b.first.size(0);
                        }, static_cast<double>(n)});
  }
  char title[200];
  std::snprintf(title, sizeof title, "loader_throughput: a user dataset, get() %.2f ms (%lld repeats), batch 32 (time per example)",
                get_ms, static_cast<long long>(decode.repeats));
  bench::run_interleaved(title, variants, smoke ? 1 : 5, 1e6, "us/example");
  auto rate = [&](std::size_t i) { return 1 / bench::median(variants[i].seconds_per_unit); };
  double python[3] = {};
  for (int workers = 0; workers <= 2; ++workers)
    python[workers] = pytorch_examples_per_second(n, decode.repeats, batch, workers, smoke ? 1 : 3);
  std::printf("  examples/s by workers 0 / 1 / 2:\n");
  std::printf("    trainloop    %8.0f %8.0f %8.0f   (1 -> 2 workers: %.2fx)\n", rate(1), rate(3), rate(5), rate(5) / rate(3));
  std::printf("    torch::data  %8.0f %8.0f %8.0f   (trainloop ahead: %.2fx %.2fx %.2fx)\n", rate(0), rate(2), rate(4),
              rate(1) / rate(0), rate(3) / rate(2), rate(5) / rate(4));
  std::printf("    PyTorch      %8.0f %8.0f %8.0f   (trainloop ahead: %.2fx %.2fx %.2fx)%s\n", python[0], python[1], python[2],
              rate(1) / python[0], rate(3) / python[1], rate(5) / python[2],
              python[0] > 0 ? "" : "  [/usr/bin/python3 with torch not found]");
  std::fflush(stdout);
  if (checksum <= 0) std::abort();
}

// The hand-off: taking a batch a worker has already built (the lock, the move, the wake-up), in microseconds.
void hand_off(bool smoke) {
  DataLoader loader(TensorDataset(torch::randn({64 * 16, 8}), torch::zeros({64 * 16})),
                    DataLoaderOptions().batch_size(64).workers(2).prefetch_factor(8));
  std::vector<double> per_batch;
  std::int64_t rows = 0;
  for (int round = 0; round < (smoke ? 2 : 50); ++round) {
    auto it = loader.begin();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // every batch of the epoch is ready
    const auto start = std::chrono::steady_clock::now();
    for (std::int64_t b = 0; b < 16; ++b, ++it) {
      rows += (*it).first.size(0);
    }
    per_batch.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 16);
  }
  std::printf("\nloader_throughput: hand-off of a ready batch from a worker: %.2f us (median of %zu epochs)\n",
              1e6 * bench::median(per_batch), per_batch.size());
  bench::keep(rows);
}
#if TRAINLOOP_WITH_IMAGE_IO
// --- part 3: image folders ---------------------------------------------------------------------------------------
const char* torchvision_script = R"(
import sys, time, statistics, torch
import torchvision.transforms as T
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
root, size, workers, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1)
transform = T.Compose([T.PILToTensor(), T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(),
                       T.ConvertImageDtype(torch.float32), T.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])])
data = ImageFolder(root, transform=transform)
loader = DataLoader(data, batch_size=64, shuffle=True, num_workers=workers, prefetch_factor=2, persistent_workers=True)
rates = []
for epoch in range(epochs + 1):
    start = time.perf_counter()
    for x, y in loader:
        pass
    if epoch > 0:
        rates.append(len(data) / (time.perf_counter() - start))
print(statistics.median(rates))
)";

// torchvision's images/s over `root` (0 when Python or torchvision is missing).
double torchvision_images_per_second(const std::string& root, std::int64_t size, int workers, int epochs) {
  return run_python(torchvision_script, root + " " + std::to_string(size) + " " + std::to_string(workers) + " " + std::to_string(epochs));
}

// The decoder alone: each file read and decoded by TurboJPEG or libpng into one reused buffer, as RGB.
struct BareDecoder {
  std::vector<std::string> paths;
  std::vector<std::uint8_t> bytes, pixels;
  tjhandle turbo = tjInitDecompress();
  ~BareDecoder() { tjDestroy(turbo); }

  void decode_all() {
    for (const auto& path : paths) {
      trainloop::detail::read_file_into(path, bytes);
      if (bytes[0] == 0xFF) {
        int width = 0, height = 0, subsampling = 0, colorspace = 0;
        tjDecompressHeader3(turbo, bytes.data(), bytes.size(), &width, &height, &subsampling, &colorspace);
        pixels.resize(static_cast<std::size_t>(width) * height * 3);
        if (tjDecompress2(turbo, bytes.data(), bytes.size(), pixels.data(), width, 0, height, TJPF_RGB, 0) != 0)
          throw std::runtime_error(path + ": " + tjGetErrorStr2(turbo));
      } else {
        png_image image{};
        image.version = PNG_IMAGE_VERSION;
        if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) throw std::runtime_error(path + ": " + image.message);
        image.format = PNG_FORMAT_RGB;
        pixels.resize(PNG_IMAGE_SIZE(image));
        if (!png_image_finish_read(&image, nullptr, pixels.data(), 0, nullptr)) throw std::runtime_error(path + ": " + image.message);
      }
    }
    bench::keep(pixels);
  }
};

void run_folder(const std::string& root, int rounds, int python_epochs) {
  const ImageFolder probe(root);
  const std::int64_t size = probe.get(0)->first.size(-1);
  const auto images = static_cast<double>(probe.size());
  auto folder = [&] {
    return ImageFolder(root, ImageFolderOptions(),
                       transforms::Compose(transforms::RandomCrop(size, 4), transforms::RandomHorizontalFlip{0.5},
                                           transforms::ToFloat{}, transforms::Normalize({0.5, 0.5, 0.5}, {0.25, 0.25, 0.25})));
  };
  BareDecoder bare;
  for (const auto& sample : probe.samples()) bare.paths.push_back(sample.first);
  DataLoader one(folder(), DataLoaderOptions().batch_size(64).shuffle(true).workers(1));
  DataLoader two(folder(), DataLoaderOptions().batch_size(64).shuffle(true).workers(2));
  auto epoch = [](auto& loader) {
    std::int64_t seen = 0;
    for (auto& [x, y] : loader) seen += y.size(0);
    bench::keep(seen);
  };
  std::vector<bench::Variant> variants{
      {"decoder alone (read + decode, 1 thread)", [&] { bare.decode_all(); }, images},
      {"trainloop ImageFolder + DataLoader workers(1)", [&] { epoch(one); }, images},
      {"trainloop ImageFolder + DataLoader workers(2)", [&] { epoch(two); }, images},
  };
  bench::run_interleaved(root + ": " + std::to_string(probe.size()) + " images of " + std::to_string(size) + "x" +
                             std::to_string(size) + ", batch 64",
                         variants, rounds, 1e6, "us/image");
  auto rate = [&](std::size_t i) { return 1 / bench::median(variants[i].seconds_per_unit); };
  const double python1 = torchvision_images_per_second(root, size, 1, python_epochs);
  const double python2 = torchvision_images_per_second(root, size, 2, python_epochs);
  std::printf("  images/s: decoder alone %.0f | trainloop workers(1) %.0f, workers(2) %.0f | torchvision num_workers=1 %.0f, "
              "num_workers=2 %.0f\n",
              rate(0), rate(1), rate(2), python1, python2);
  std::printf("  trainloop ahead of torchvision: %.2fx (1 worker), %.2fx (2 workers)%s; decoder alone / trainloop workers(1): %.2fx\n",
              python1 > 0 ? rate(1) / python1 : 0.0, python2 > 0 ? rate(2) / python2 : 0.0,
              python1 > 0 ? "" : " [/usr/bin/python3 with torchvision not found]", rate(0) / rate(1));
  std::fflush(stdout);
}
#endif  // TRAINLOOP_WITH_IMAGE_IO
}  // namespace

int main(int argc, char** argv) {
  bool smoke = false, in_memory_only = false, images_only = false;
  std::string dir = fashion_mnist_debian_dir;
  std::vector<std::string> image_folders;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) smoke = true;
    else if (std::strcmp(argv[i], "--in-memory-only") == 0) in_memory_only = true;
    else if (std::strcmp(argv[i], "--images-only") == 0) images_only = true;
    else if (std::strcmp(argv[i], "--data") == 0 && i + 1 < argc) dir = argv[++i];
    else if (std::strcmp(argv[i], "--image-folder") == 0 && i + 1 < argc) image_folders.push_back(argv[++i]);
  }
  torch::set_num_threads(1);  // the loaders' threads are the parallelism measured (PyTorch's workers: 1 thread each)
  tune_glibc_malloc();        // as the Trainer does by default (without it, glibc maps and unmaps every batch's buffers)
  if (!image_folders.empty()) {
#if TRAINLOOP_WITH_IMAGE_IO
    for (const auto& folder : image_folders) run_folder(folder, smoke ? 1 : 5, smoke ? 1 : 3);
#else
    std::fprintf(stderr, "loader_throughput: built without TRAINLOOP_WITH_IMAGE_IO: --image-folder is not available\n");
    return 2;
#endif
  }
  if (images_only) return 0;
  MnistSplit split = read_mnist_split(dir, /*train=*/true);
  if (smoke) split = {split.images.slice(0, 0, 2000), split.labels.slice(0, 0, 2000)};
  const std::int64_t batch_size = 64;
  const double batches = std::ceil(double(split.labels.size(0)) / batch_size);

  DataLoader ours(TensorDataset(split.images, split.labels), DataLoaderOptions().batch_size(batch_size).shuffle(true));
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
      {"trainloop::DataLoader, workers(1)", [&, prefetching = std::make_shared<DataLoader<TensorDataset<2>>>(
                                                     TensorDataset(split.images, split.labels),
                                                     DataLoaderOptions().batch_size(batch_size).shuffle(true).workers(1).prefetch_factor(2))] {
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
  std::printf("  batches/s: torch::data %.0f, trainloop %.0f (%.1fx), trainloop+worker %.0f, stock MNIST %.0f\n",
              1 / base, 1 / bench::median(variants[1].seconds_per_unit),
              base / bench::median(variants[1].seconds_per_unit), 1 / bench::median(variants[2].seconds_per_unit),
              1 / bench::median(variants[3].seconds_per_unit));
  std::filesystem::remove_all(scratch);
  if (in_memory_only) return checksum > 0 ? 0 : 1;

  user_dataset_throughput(smoke, 0.2e-3, smoke ? 64 : 2048);
  if (!smoke) user_dataset_throughput(smoke, 2e-3, 512);  // the smoke keeps the code working, once is enough
  hand_off(smoke);
  return checksum > 0 ? 0 : 1;
}
