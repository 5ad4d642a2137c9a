// What trainloop's checkpoint files cost against writing and reading the same content with LibTorch's archive by
// hand, the careful way (OutputArchive::save_to a temporary file, fsync, rename over the target, fsync the folder;
// InputArchive::load_from): the model and Adam's state of the Fashion-MNIST MLP (784-128-10), and of a model 16x its
// size. trainloop adds the integrity record (CRC-32C of the whole file) and the NaN check on save, reading the file
// whole and verifying it on load, and the model's key and shape checks.
//   checkpoint_io [--smoke]
#include <trainloop.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include <fcntl.h>
#include <unistd.h>

#include "bench_common.hpp"

namespace {
void fsync_path(const std::string& path, bool folder) {
  const int fd = ::open(path.c_str(), folder ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void run(const std::string& title, std::int64_t hidden, int rounds, const std::string& dir) {
  torch::nn::Sequential model(torch::nn::Linear(784, hidden), torch::nn::ReLU(), torch::nn::Linear(hidden, 10));
  auto adam = std::make_shared<torch::optim::Adam>(model->parameters());
  adam->zero_grad();
  model->forward(torch::randn({8, 784})).sum().backward();
  adam->step();
  const std::string ours = dir + "/trainloop.ckpt", theirs = dir + "/by_hand.pt";

  std::vector<bench::Variant> save{
      {"hand-written: save_to temp, fsync, rename, fsync", [&] {
         torch::serialize::OutputArchive archive;
         c10::Dict<std::string, torch::Tensor> weights;
         for (const auto& p : model->named_parameters()) weights.insert(p.key(), p.value().detach());
         archive.write("model", c10::IValue(weights));
         torch::serialize::OutputArchive nested;
         adam->save(nested);
         archive.write("optimizer_0", nested);
         archive.save_to(theirs + ".tmp");
         fsync_path(theirs + ".tmp", false);
         std::rename((theirs + ".tmp").c_str(), theirs.c_str());
         fsync_path(dir, true);
       }},
      {"trainloop::save_checkpoint", [&] { trainloop::save_checkpoint(ours, *model, {adam}); }}};
  bench::run_interleaved(title + ": save", save, rounds, 1e3, "ms");
  std::printf("  file size: %.1f KiB\n", static_cast<double>(std::filesystem::file_size(ours)) / 1024);

  std::vector<bench::Variant> load{
      {"hand-written: InputArchive load_from + copy", [&] {
         torch::serialize::InputArchive archive;
         archive.load_from(theirs);
         c10::IValue weights;
         archive.read("model", weights);
         torch::NoGradGuard no_grad;
         auto mine = model->named_parameters();
         for (const auto& e : weights.toGenericDict()) mine[e.key().toStringRef()].copy_(e.value().toTensor());
         torch::serialize::InputArchive nested;
         archive.read("optimizer_0", nested);
         adam->load(nested);
       }},
      {"trainloop::load_checkpoint (verified first)", [&] { trainloop::load_checkpoint(ours, *model, {adam}); }}};
  bench::run_interleaved(title + ": load", load, rounds, 1e3, "ms");
}
}  // namespace

int main(int argc, char** argv) {
  const bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  torch::set_num_threads(1);
  const std::string dir = (std::filesystem::temp_directory_path() / ("trainloop-bench-" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(dir);
  run("784-128-10 MLP + Adam", 128, smoke ? 1 : 30, dir);
  if (!smoke) run("784-2048-10 MLP + Adam", 2048, 15, dir);

  std::string block(64 << 20, 'x');
  const double gib = static_cast<double>(block.size()) / (1 << 30);
  std::vector<bench::Variant> crc{{"CRC-32C, tables (portable)",
                                   [&] {
                                     auto c = trainloop::detail::crc32c_update_portable(0, block.data(), block.size());
                                     bench::keep(c);
                                   },
                                   gib},
                                  {"CRC-32C as used (crc32 instruction on x86-64)",
                                   [&] {
                                     auto c = trainloop::detail::crc32c(block.data(), block.size());
                                     bench::keep(c);
                                   },
                                   gib}};
  bench::run_interleaved("integrity check throughput", crc, smoke ? 1 : 5, 1.0, "s/GiB");
  std::filesystem::remove_all(dir);
  return 0;
}
