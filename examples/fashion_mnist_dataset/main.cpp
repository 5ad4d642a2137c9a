// Fashion-MNIST through a dataset of your own type: the images stay raw uint8 (47 MB instead of 188 MB as float),
// and every read decodes and augments one example: to float, a random crop of the image padded by 2, a random
// horizontal flip, normalisation. Two worker threads build the batches while the CNN trains on the last ones; each
// example's randomness comes from its own generator, so the run is the same with any number of workers, and a resumed
// run reads exactly the batches the interrupted one would have.
//
//   fashion_mnist_dataset [--epochs N] [--workers N] [--smoke] [--data DIR] [--min-accuracy A]
#include <trainloop.hpp>

#include <cstdio>
#include <string>

#include "../common/augmented_cnn.hpp"

using namespace trainloop;

// The user's dataset: size() and get(index, generator), the names the DataLoader looks for.
struct FashionMnistImages {
  torch::Tensor images;  // [N, 28, 28] uint8, as in the IDX file
  torch::Tensor labels;  // [N] uint8
  bool augment = false;

  std::int64_t size() const { return images.size(0); }
  std::pair<torch::Tensor, std::int64_t> get(std::size_t index, torch::Generator& generator) const {
    static const transforms::Normalize normalize({fashion_mnist_mean}, {fashion_mnist_std});
    const auto i = static_cast<std::int64_t>(index);
    torch::Tensor image = transforms::to_float(images[i].unsqueeze(0));  // [1, 28, 28] in [0, 1]
    if (augment) {
      image = transforms::RandomCrop(28, /*padding=*/2)(image, generator);
      image = transforms::RandomHorizontalFlip{0.5}(image, generator);
    }
    return {normalize(image), labels[i].item<std::int64_t>()};
  }
};

FashionMnistImages read_split(const std::string& dir, bool train, bool augment) {
  const std::string prefix = dir + (train ? "/train" : "/t10k");
  return {read_idx(prefix + "-images-idx3-ubyte.gz"), read_idx(prefix + "-labels-idx1-ubyte.gz"), augment};
}

int main(int argc, char** argv) {
  std::string data_dir = fashion_mnist_debian_dir;
  std::int64_t epochs = 4, workers = 2;
  bool smoke = false;
  double min_accuracy = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--smoke") smoke = true;
    else if (arg == "--epochs" && i + 1 < argc) epochs = std::stoll(argv[++i]);
    else if (arg == "--workers" && i + 1 < argc) workers = std::stoll(argv[++i]);
    else if (arg == "--data" && i + 1 < argc) data_dir = argv[++i];
    else if (arg == "--min-accuracy" && i + 1 < argc) min_accuracy = std::stod(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--epochs N] [--workers N] [--smoke] [--data DIR] [--min-accuracy A]\n", argv[0]);
      return 2;
    }
  }
  try {
    torch::manual_seed(0);
    DataLoader train(read_split(data_dir, true, /*augment=*/true),
                     DataLoaderOptions().batch_size(64).shuffle(true).seed(0).workers(workers));
    DataLoader test(read_split(data_dir, false, /*augment=*/false), DataLoaderOptions().batch_size(1000).workers(workers));
    AugmentedCnn model;
    TrainerOptions options = TrainerOptions().max_epochs(epochs).accelerator("auto");
    if (smoke) options.fast_dev_run(5);
    Trainer trainer(options);
    trainer.fit(model, train);
    const double accuracy = trainer.test(model, test).at("test_acc");
    std::printf("test accuracy: %.2f%% after %lld steps, %lld worker threads reading raw uint8 images\n", 100 * accuracy,
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
