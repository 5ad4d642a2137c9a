// Moving a model between Python and C++ (README: "Moving models between C++ and Python"): an MLP whose weights come
// from Python (mlp.py init: torch.save(model.state_dict())), fine-tuned here on Fashion-MNIST with the Trainer, saved
// back in PyTorch's format (and as a Lightning checkpoint), with its outputs on test images for Python to compare.
//
//   python3 mlp.py init start.pt
//   python_interop start.pt OUT_DIR [--epochs N] [--smoke] [--data DIR]
//   python3 mlp.py check OUT_DIR/finetuned.pt OUT_DIR/outputs.pt
//
// OUT_DIR receives finetuned.pt (the state_dict: Python's model.load_state_dict(torch.load(...)) takes it),
// finetuned.ckpt (Lightning's layout: MyLightningModule.load_from_checkpoint, Trainer.fit(ckpt_path=...)) and
// outputs.pt ({"images", "labels", "logits"}: 256 test images and this model's outputs).
#include <trainloop.hpp>

#include <cstdio>
#include <filesystem>
#include <string>

using namespace trainloop;
using ImageBatch = TensorBatch<2>;

// Registered names are PyTorch's attribute names: fc1.weight, fc1.bias, fc2.weight, fc2.bias, as in mlp.py.
struct Mlp : LightningModule<Mlp> {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  Mlp() {
    fc1 = register_module("fc1", torch::nn::Linear(784, 128));
    fc2 = register_module("fc2", torch::nn::Linear(128, 10));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x.flatten(1)))); }
  torch::Tensor training_step(ImageBatch& batch, std::int64_t) {
    torch::Tensor loss = torch::nn::functional::cross_entropy(forward(batch.first), batch.second);
    log("loss", loss, LogOptions().prog_bar(true));
    return loss;
  }
  void validation_step(ImageBatch& batch, std::int64_t) {
    log("val_acc", forward(batch.first).argmax(1).eq(batch.second).to(torch::kFloat32).mean(), LogOptions().prog_bar(true));
  }
  std::shared_ptr<torch::optim::Adam> configure_optimizers() {
    return std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(1e-3));
  }
};

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s START_STATE_DICT OUT_DIR [--epochs N] [--smoke] [--data DIR]\n", argv[0]);
    return 2;
  }
  const std::string start = argv[1], out = argv[2];
  std::string data_dir = fashion_mnist_debian_dir;
  std::int64_t epochs = 1;
  bool smoke = false;
  for (int i = 3; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--smoke") smoke = true;
    else if (arg == "--epochs" && i + 1 < argc) epochs = std::stoll(argv[++i]);
    else if (arg == "--data" && i + 1 < argc) data_dir = argv[++i];
    else return std::fprintf(stderr, "unknown argument %s\n", arg.c_str()), 2;
  }
  try {
    torch::manual_seed(0);
    Mlp model;
    load_state_dict(model, start);  // Python's names; strict: every key, each shape and dtype checked first
    std::printf("loaded %s (PyTorch's state_dict)\n", start.c_str());

    MnistSplit train = read_mnist_split(data_dir, true), test = read_mnist_split(data_dir, false);
    DataLoader train_batches(TensorDataset(train.images, train.labels), DataLoaderOptions().batch_size(64).shuffle(true).seed(0));
    DataLoader test_batches(TensorDataset(test.images, test.labels), DataLoaderOptions().batch_size(1000));
    TrainerOptions options = TrainerOptions().max_epochs(epochs).accelerator("cpu");
    if (smoke) options.limit_train_batches(20).limit_val_batches(2);
    Trainer trainer(options);
    trainer.fit(model, train_batches, test_batches);

    std::filesystem::create_directories(out);
    save_state_dict(model, out + "/finetuned.pt");
    trainer.save_checkpoint(out + "/finetuned.ckpt", CheckpointFormat::lightning);
    model.eval();
    torch::NoGradGuard no_grad;
    // Copies: a view would carry its whole storage (all 10,000 test images) into the file, as torch.save does.
    const torch::Tensor images = test.images.slice(0, 0, 256).clone(), labels = test.labels.slice(0, 0, 256).clone();
    c10::impl::GenericDict outputs(c10::StringType::get(), c10::AnyType::get());
    outputs.insert("images", images);
    outputs.insert("labels", labels);
    outputs.insert("logits", model.forward(images));
    save_pytorch_file(out + "/outputs.pt", outputs);
    std::printf("wrote %s/finetuned.pt, finetuned.ckpt (Lightning) and outputs.pt\n", out.c_str());
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s\n", error.what());
    return 1;
  }
  return 0;
}
