// Fashion-MNIST from a folder of image files, as torchvision's ImageFolder reads it: one sub-folder per class
// (tools/make_image_folder.py writes them), each file decoded by libpng or libjpeg-turbo in the DataLoader's worker
// threads, then augmented (a random crop of the image padded by 2, a random horizontal flip) and normalised. The same
// CNN and augmentation as examples/fashion_mnist_dataset, which reads the same pixels from the IDX files in memory:
// the two reach the same accuracy. Needs TRAINLOOP_WITH_IMAGE_IO=1.
//
//   /usr/bin/python3 tools/make_image_folder.py /tmp/fmnist/train
//   /usr/bin/python3 tools/make_image_folder.py /tmp/fmnist/test --split test
//   image_folder --train /tmp/fmnist/train --test /tmp/fmnist/test [--epochs N] [--workers N] [--smoke] [--min-accuracy A]
#include <trainloop.hpp>

#include <cstdio>
#include <string>

#include "../common/augmented_cnn.hpp"

using namespace trainloop;

int main(int argc, char** argv) {
  std::string train_dir, test_dir;
  std::int64_t epochs = 4, workers = 2;
  bool smoke = false;
  double min_accuracy = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--smoke") smoke = true;
    else if (arg == "--epochs" && i + 1 < argc) epochs = std::stoll(argv[++i]);
    else if (arg == "--workers" && i + 1 < argc) workers = std::stoll(argv[++i]);
    else if (arg == "--train" && i + 1 < argc) train_dir = argv[++i];
    else if (arg == "--test" && i + 1 < argc) test_dir = argv[++i];
    else if (arg == "--min-accuracy" && i + 1 < argc) min_accuracy = std::stod(argv[++i]);
    else train_dir.clear(), i = argc;
  }
  if (train_dir.empty() || test_dir.empty()) {
    std::fprintf(stderr, "usage: %s --train DIR --test DIR [--epochs N] [--workers N] [--smoke] [--min-accuracy A]\n", argv[0]);
    return 2;
  }
  try {
    torch::manual_seed(0);
    const auto gray = ImageFolderOptions().mode(ImageMode::gray);
    const transforms::Normalize normalize({fashion_mnist_mean}, {fashion_mnist_std});
    // Decoded uint8 [1, 28, 28] -> float in [0, 1] -> crop and flip (training only) -> normalised.
    ImageFolder train_images(train_dir, gray,
                             transforms::Compose(transforms::ToFloat{}, transforms::RandomCrop(28, /*padding=*/2),
                                                 transforms::RandomHorizontalFlip{0.5}, normalize));
    ImageFolder test_images(test_dir, gray, transforms::Compose(transforms::ToFloat{}, normalize));
    std::printf("%zu training images in %zu classes (%s ... %s), %zu test images\n", train_images.size(),
                train_images.classes().size(), train_images.classes().front().c_str(), train_images.classes().back().c_str(),
                test_images.size());
    DataLoader train(std::move(train_images), DataLoaderOptions().batch_size(64).shuffle(true).seed(0).workers(workers));
    DataLoader test(std::move(test_images), DataLoaderOptions().batch_size(1000).workers(workers));
    AugmentedCnn model;
    TrainerOptions options = TrainerOptions().max_epochs(epochs).accelerator("auto");
    if (smoke) options.fast_dev_run(5);
    Trainer trainer(options);
    trainer.fit(model, train);
    const double accuracy = trainer.test(model, test).at("test_acc");
    std::printf("test accuracy: %.2f%% after %lld steps, %lld worker threads decoding image files\n", 100 * accuracy,
                static_cast<long long>(trainer.global_step()), static_cast<long long>(workers));
    if (accuracy < min_accuracy) {
      std::fprintf(stderr, "test accuracy %.4f is below the required %.4f\n", accuracy, min_accuracy);
      return 1;
    }
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s\n", error.what());
    return 1;
  }
}
