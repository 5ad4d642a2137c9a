// trainloop: ImageFolder, torchvision's dataset of image files laid out one sub-folder per class. Same classes, same
// class indices, same files in the same order as torchvision's ImageFolder over the same folder; each example is
// (image, label): the decoded uint8 [C, H, W] image (parts/torch/data/image_io.hpp) after the dataset's transforms,
// and the class index. Needs TRAINLOOP_WITH_IMAGE_IO=1.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#if TRAINLOOP_WITH_IMAGE_IO
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "parts/torch/data/image_io.hpp"
#include "parts/torch/data/transforms.hpp"

TRAINLOOP_DETAIL_BEGIN

/// ImageFolder's options, as chainable setters.
class ImageFolderOptions {
 public:
  /// The channels every image is converted to (Pillow's convert): ImageMode::rgb (torchvision's default loader),
  /// ImageMode::gray or ImageMode::rgba.
  ImageFolderOptions& mode(ImageMode v) { return mode_ = v, *this; }
  /// The file name endings that count as images, compared case-insensitively (default .jpg, .jpeg, .png: the formats
  /// decoded here). Files with other endings are not samples, as in torchvision.
  ImageFolderOptions& extensions(std::vector<std::string> v) { return extensions_ = std::move(v), *this; }
  /// A file that cannot be read or decoded is skipped instead of failing the batch: the batch is collated from the
  /// other examples, the file is reported on stderr once and counted (ImageFolder::bad_files()).
  ImageFolderOptions& skip_bad_files(bool v) { return skip_bad_files_ = v, *this; }

  ImageMode mode() const { return mode_; }
  const std::vector<std::string>& extensions() const { return extensions_; }
  bool skip_bad_files() const { return skip_bad_files_; }

 private:
  ImageMode mode_ = ImageMode::rgb;
  std::vector<std::string> extensions_{".jpg", ".jpeg", ".png"};
  bool skip_bad_files_ = false;
};

namespace detail {
// What find_classes and make_dataset give in torchvision: sorted class folders, then each class's files.
struct ImageFolderIndex {
  std::vector<std::string> classes;
  std::map<std::string, std::int64_t> class_to_idx;
  std::vector<std::pair<std::string, std::int64_t>> samples;  // (path, class index)
};
TRAINLOOP_DETAIL_API ImageFolderIndex index_image_folder(const std::string& root, const std::vector<std::string>& extensions);
// The files an ImageFolder skipped, shared by its copies (a DataLoader works on its own copy, from several threads).
struct BadFiles {
  std::mutex mutex;
  std::vector<std::string> paths;
  std::atomic<std::int64_t> count{0};
  TRAINLOOP_DETAIL_API void record(const std::string& path, const std::string& error);
};
}  // namespace detail

/// torchvision's ImageFolder: `root/<class>/**/<file>` with the class folders sorted by name (their indices), the
/// files of each class found recursively (following symbolic links) and sorted by folder then name, and only the
/// files whose names end with one of the extensions. A class folder with no such file, or a root without class
/// folders, is an error, as in torchvision. `transform` is applied to each decoded image: a transforms::Compose or
/// any callable (Tensor) or (Tensor, torch::Generator&); in a DataLoader the generator is the example's own.
///
/// get may be called from several threads at once (a DataLoader's workers): it only reads the file list.
template <class Transform = transforms::Compose<>>
class ImageFolder {
 public:
  using Example = std::pair<torch::Tensor, std::int64_t>;

  explicit ImageFolder(const std::string& root, ImageFolderOptions options = {}, Transform transform = Transform())
      : root_(root), options_(std::move(options)), transform_(std::move(transform)),
        index_(std::make_shared<const detail::ImageFolderIndex>(detail::index_image_folder(root, options_.extensions()))),
        bad_(std::make_shared<detail::BadFiles>()) {}

  std::size_t size() const { return index_->samples.size(); }
  /// Example `index`: (transformed image, class index). std::nullopt only with skip_bad_files, for a bad file.
  std::optional<Example> get(std::size_t index, torch::Generator& generator) const {
    const auto& [path, label] = sample(index);
    torch::Tensor image;
    try {
      image = read_image(path, options_.mode());
    } catch (const ImageDecodeError& e) {
      if (!options_.skip_bad_files()) throw;
      bad_->record(path, e.what());
      return std::nullopt;
    }
    return Example{detail::apply_transform(transform_, std::move(image), generator), label};
  }
  /// Example `index`, with random transforms drawing from LibTorch's global generator (as torchvision's do).
  std::optional<Example> get(std::size_t index) const {
    torch::Generator global = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(global.mutex());
    return get(index, global);
  }

  /// The class names: the sub-folders of root, sorted.
  const std::vector<std::string>& classes() const { return index_->classes; }
  const std::map<std::string, std::int64_t>& class_to_idx() const { return index_->class_to_idx; }
  /// Every sample's (path, class index), in the dataset's order.
  const std::vector<std::pair<std::string, std::int64_t>>& samples() const { return index_->samples; }
  /// Every sample's class index (torchvision's targets).
  std::vector<std::int64_t> targets() const {
    std::vector<std::int64_t> out;
    out.reserve(size());
    for (const auto& sample : index_->samples) out.push_back(sample.second);
    return out;
  }
  const std::string& root() const { return root_; }
  const ImageFolderOptions& options() const { return options_; }
  const Transform& transform() const { return transform_; }
  /// Files skipped so far (skip_bad_files), by this dataset and its copies, each time one was read.
  std::int64_t bad_files() const { return bad_->count.load(); }
  /// The paths of the files skipped so far, each once.
  std::vector<std::string> bad_file_paths() const {
    std::lock_guard<std::mutex> lock(bad_->mutex);
    return bad_->paths;
  }

 private:
  const std::pair<std::string, std::int64_t>& sample(std::size_t index) const {
    if (index >= size())
      throw std::out_of_range("trainloop: ImageFolder " + root_ + ": index " + std::to_string(index) + " is out of range (" +
                              std::to_string(size()) + " samples)");
    return index_->samples[index];
  }

  std::string root_;
  ImageFolderOptions options_;
  Transform transform_;
  std::shared_ptr<const detail::ImageFolderIndex> index_;  // shared by copies: one scan of the folder
  std::shared_ptr<detail::BadFiles> bad_;
};

template <class Transform>
ImageFolder(const std::string&, ImageFolderOptions, Transform) -> ImageFolder<Transform>;
ImageFolder(const std::string&, ImageFolderOptions) -> ImageFolder<transforms::Compose<>>;
ImageFolder(const std::string&) -> ImageFolder<transforms::Compose<>>;

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API detail::ImageFolderIndex detail::index_image_folder(const std::string& root,
                                                                         const std::vector<std::string>& extensions) {
  namespace fs = std::filesystem;
  auto fail = [&](const std::string& what) { return std::invalid_argument("trainloop: ImageFolder " + root + ": " + what); };
  std::error_code error;
  // Directories as torchvision sees them: symbolic links followed, unreadable entries not directories.
  auto is_directory = [](const fs::directory_entry& entry) {
    std::error_code e;
    return entry.is_directory(e);
  };
  ImageFolderIndex index;
  for (fs::directory_iterator it(root, error), end; !error && it != end; it.increment(error))
    if (is_directory(*it)) index.classes.push_back(it->path().filename().string());
  if (error) throw fail("cannot list the folder: " + error.message());
  std::sort(index.classes.begin(), index.classes.end());
  if (index.classes.empty()) throw fail("found no class folder (one sub-folder per class is expected)");
  for (std::size_t i = 0; i < index.classes.size(); ++i) index.class_to_idx[index.classes[i]] = static_cast<std::int64_t>(i);

  std::vector<std::string> lowered;
  for (std::string e : extensions) {
    std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    lowered.push_back(std::move(e));
  }
  auto is_image = [&](std::string path) {  // torchvision lowers the whole path, then compares the ending
    std::transform(path.begin(), path.end(), path.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return std::any_of(lowered.begin(), lowered.end(), [&](const std::string& e) {
      return path.size() >= e.size() && path.compare(path.size() - e.size(), e.size(), e) == 0;
    });
  };
  std::vector<std::string> empty_classes;
  for (std::size_t label = 0; label < index.classes.size(); ++label) {
    // torchvision walks the class folder (links followed) and sorts (folder, name) pairs: collect, then sort.
    std::vector<std::pair<std::string, std::string>> files;
    const fs::path class_dir = fs::path(root) / index.classes[label];
    const auto options = fs::directory_options::follow_directory_symlink | fs::directory_options::skip_permission_denied;
    for (fs::recursive_directory_iterator it(class_dir, options, error), end; !error && it != end; it.increment(error)) {
      if (is_directory(*it)) continue;
      const std::string path = it->path().string();
      if (is_image(path)) files.emplace_back(it->path().parent_path().string(), it->path().filename().string());
    }
    if (error) throw fail("cannot list " + class_dir.string() + ": " + error.message());
    std::sort(files.begin(), files.end());
    if (files.empty()) empty_classes.push_back(index.classes[label]);
    for (auto& [folder, name] : files) index.samples.emplace_back(folder + "/" + name, static_cast<std::int64_t>(label));
  }
  if (!empty_classes.empty()) {
    std::string message = "found no valid file for the classes ";
    for (std::size_t i = 0; i < empty_classes.size(); ++i) message += (i ? ", " : "") + empty_classes[i];
    message += ". Supported extensions are:";
    for (const auto& e : extensions) message += " " + e;
    throw fail(message);
  }
  return index;
}

TRAINLOOP_DETAIL_API void detail::BadFiles::record(const std::string& path, const std::string& error) {
  const std::int64_t n = ++count;
  std::lock_guard<std::mutex> lock(mutex);
  if (std::find(paths.begin(), paths.end(), path) != paths.end()) return;  // reported the first time only
  paths.push_back(path);
  std::cerr << "trainloop: ImageFolder: skipping a bad file (" << n << " skipped so far): " << error << std::endl;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
#endif  // TRAINLOOP_WITH_IMAGE_IO
