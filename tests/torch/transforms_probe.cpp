// Applies trainloop's transforms to images read from raw files, for tests/tools/test_transforms_torchvision.py, which
// runs torchvision on the same images and parameters and compares. Reads commands from stdin, one per line (one
// process for all of them: LibTorch loads once):
//   OP IN OUT DTYPE SHAPE [ARGS...]
// DTYPE is uint8 or float32, SHAPE comma-separated (3,17,23). OUT receives the result's raw bytes; stdout a line with
// its dtype and shape, in the commands' order. OPs and ARGS:
//   to_float_chw | to_float_hwc | hflip
//   pad LEFT TOP RIGHT BOTTOM FILL MODE        (MODE: constant, edge, reflect, symmetric)
//   crop TOP LEFT HEIGHT WIDTH
//   normalize MEAN,... STD,...
//   resize H[,W]
//   random_crop SEED SIZE PADDING              (a generator seeded SEED)
//   random_hflip SEED P
#include <trainloop.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

using namespace trainloop;

namespace {
template <class T>
std::vector<T> list(const std::string& text) {
  std::vector<T> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(static_cast<T>(std::stod(item)));
  return out;
}
transforms::PaddingMode mode(const std::string& name) {
  if (name == "constant") return transforms::PaddingMode::constant;
  if (name == "edge") return transforms::PaddingMode::edge;
  if (name == "reflect") return transforms::PaddingMode::reflect;
  if (name == "symmetric") return transforms::PaddingMode::symmetric;
  throw std::invalid_argument("unknown padding mode " + name);
}
// Runs one command; returns the result's "dtype shape" line.
std::string run(const std::vector<std::string>& command) {
  if (command.size() < 5) throw std::invalid_argument("a command needs OP IN OUT DTYPE SHAPE");
  const std::string& op = command[0];
  const std::vector<std::string> args(command.begin() + 5, command.end());
  std::ifstream in(command[1], std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto scalar = command[3] == "uint8" ? torch::kByte : torch::kFloat;
  const torch::Tensor image = torch::from_blob(const_cast<char*>(bytes.data()), list<std::int64_t>(command[4]), scalar).clone();
  auto number = [&](std::size_t i) { return std::stod(args.at(i)); };
  auto integer = [&](std::size_t i) { return static_cast<std::int64_t>(std::stoll(args.at(i))); };

  torch::Tensor out;
  if (op == "to_float_chw") out = transforms::to_float(image);
  else if (op == "to_float_hwc") out = transforms::to_float(image, transforms::Layout::HWC);
  else if (op == "hflip") out = transforms::hflip(image);
  else if (op == "pad") out = transforms::pad(image, {integer(0), integer(1), integer(2), integer(3)}, number(4), mode(args.at(5)));
  else if (op == "crop") out = transforms::crop(image, integer(0), integer(1), integer(2), integer(3));
  else if (op == "normalize") out = transforms::Normalize(list<double>(args.at(0)), list<double>(args.at(1)))(image);
  else if (op == "resize") out = transforms::resize(image, list<std::int64_t>(args.at(0)));
  else if (op == "random_crop" || op == "random_hflip") {
    torch::Generator generator = torch::make_generator<torch::CPUGeneratorImpl>(static_cast<std::uint64_t>(integer(0)));
    if (op == "random_crop") out = transforms::RandomCrop(integer(1), integer(2))(image, generator);
    else out = transforms::RandomHorizontalFlip{number(1)}(image, generator);
  } else {
    throw std::invalid_argument("unknown op " + op);
  }
  out = out.contiguous();
  std::ofstream(command[2], std::ios::binary).write(static_cast<const char*>(out.data_ptr()), static_cast<std::streamsize>(out.nbytes()));
  std::string shape;
  for (auto d : out.sizes()) shape += (shape.empty() ? "" : ",") + std::to_string(d);
  return std::string(out.scalar_type() == torch::kByte ? "uint8 " : "float32 ") + shape;
}
}  // namespace

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    std::vector<std::string> command;
    std::stringstream words(line);
    for (std::string word; words >> word;) command.push_back(word);
    if (command.empty()) continue;
    try {
      std::printf("%s\n", run(command).c_str());
    } catch (const std::exception& error) {
      std::fprintf(stderr, "%s: %s\n", line.c_str(), error.what());
      return 1;
    }
  }
  return 0;
}
