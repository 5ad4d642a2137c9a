// trainloop's side of the comparisons with torchvision: transforms (tests/tools/test_transforms_torchvision.py) and
// ImageFolder with the image decoders (tests/tools/test_image_folder_torchvision.py). Reads commands from stdin, one
// per line (one process for all of them: LibTorch loads once). Transforms on images read from raw files:
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
// Image files (built with TRAINLOOP_WITH_IMAGE_IO=1; otherwise each answers "no-image-io"):
//   folder ROOT MODE OUT     ImageFolder(ROOT) in MODE (gray, rgb, rgba): every image's bytes (contiguous CHW) to OUT,
//                            OUT.index gets the classes (first line, tab-separated), then "label<TAB>C,H,W<TAB>path"
//                            per sample; stdout "folder N"
//   decode FILE MODE         read_image: stdout "ok C,H,W" or "error MESSAGE"
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
std::string shape_of(const torch::Tensor& t) {
  std::string shape;
  for (auto d : t.sizes()) shape += (shape.empty() ? "" : ",") + std::to_string(d);
  return shape;
}
#if TRAINLOOP_WITH_IMAGE_IO
ImageMode image_mode(const std::string& name) {
  if (name == "gray") return ImageMode::gray;
  if (name == "rgb") return ImageMode::rgb;
  if (name == "rgba") return ImageMode::rgba;
  throw std::invalid_argument("unknown image mode " + name);
}
#endif
// The image commands; an empty answer when the command is not one.
std::string run_image_command(const std::vector<std::string>& command) {
  if (command[0] != "folder" && command[0] != "decode") return "";
#if TRAINLOOP_WITH_IMAGE_IO
  if (command[0] == "decode") {
    try {
      return "ok " + shape_of(read_image(command.at(1), image_mode(command.at(2))));
    } catch (const ImageDecodeError& error) {
      return std::string("error ") + error.what();
    }
  }
  const ImageFolder folder(command.at(1), ImageFolderOptions().mode(image_mode(command.at(2))));
  std::ofstream pixels(command.at(3), std::ios::binary), index(command.at(3) + ".index");
  for (std::size_t i = 0; i < folder.classes().size(); ++i) index << (i ? "\t" : "") << folder.classes()[i];
  index << "\n";
  for (std::size_t i = 0; i < folder.size(); ++i) {
    const auto [image, label] = *folder.get(i);
    const torch::Tensor bytes = image.contiguous();
    pixels.write(static_cast<const char*>(bytes.data_ptr()), static_cast<std::streamsize>(bytes.nbytes()));
    index << label << "\t" << shape_of(image) << "\t" << folder.samples()[i].first << "\n";
  }
  return "folder " + std::to_string(folder.size());
#else
  return "no-image-io";
#endif
}

// Runs one command; returns the result's "dtype shape" line.
std::string run(const std::vector<std::string>& command) {
  if (std::string answer = run_image_command(command); !answer.empty()) return answer;
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
  return std::string(out.scalar_type() == torch::kByte ? "uint8 " : "float32 ") + shape_of(out);
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
