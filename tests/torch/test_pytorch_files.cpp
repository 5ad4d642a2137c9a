// PyTorch's files from the C++ side (pytorch_files.hpp, lightning_checkpoint.hpp): state dicts under PyTorch's names,
// optimizer states in PyTorch's layout, a fit saved in Lightning's layout and resumed from it, and the errors. What
// Python's PyTorch reads and writes is checked against PyTorch itself in tests/tools/test_pytorch_interop.py.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <fstream>

#include "fixtures.hpp"
#include "temp_dir.hpp"

using namespace trainloop;

namespace {
struct Net : torch::nn::Module {
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  Net() {
    fc = register_module("fc", torch::nn::Linear(2, 3));
    bn = register_module("bn", torch::nn::BatchNorm1d(3));
  }
  torch::Tensor forward(const torch::Tensor& x) { return bn(fc(x)); }
};
bool same_state(const torch::nn::Module& a, const torch::nn::Module& b) {
  const auto x = trainloop::detail::ordered_state(a), y = trainloop::detail::ordered_state(b);
  if (x.size() != y.size()) return false;
  for (std::size_t i = 0; i < x.size(); ++i)
    if (x[i].first != y[i].first || !x[i].second.equal(y[i].second)) return false;
  return true;
}
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "(no CheckpointError)";
}
}  // namespace

TEST_CASE("state dicts: PyTorch's names and order, back bitwise; what strict, prefixes and dtypes do") {
  TempDir dir;
  const std::string path = dir.file("net.pt");
  torch::manual_seed(0);
  Net net;
  net.forward(torch::randn({8, 2}));  // BatchNorm's statistics and num_batches_tracked move
  save_state_dict(net, path);
  const c10::IValue file = load_pytorch_file(path);
  std::vector<std::string> keys;
  for (const auto& item : file.toGenericDict()) keys.push_back(item.key().toStringRef());
  CHECK(keys == std::vector<std::string>{"fc.weight", "fc.bias", "bn.weight", "bn.bias", "bn.running_mean",
                                         "bn.running_var", "bn.num_batches_tracked"});
  CHECK(file.toGenericDict().at("bn.num_batches_tracked").toTensor().item<std::int64_t>() == 1);

  SUBCASE("back into a fresh module, bitwise") {
    Net other;
    const LoadStateDictResult result = load_state_dict(other, path);
    CHECK(result.missing_keys.empty());
    CHECK(result.unexpected_keys.empty());
    CHECK(same_state(net, other));
  }
  SUBCASE("a different module: one error listing every difference, and the module left as it was") {
    struct Wider : torch::nn::Module {
      torch::nn::Linear fc{nullptr}, extra{nullptr};
      Wider() {
        fc = register_module("fc", torch::nn::Linear(2, 4));
        extra = register_module("extra", torch::nn::Linear(1, 1));
      }
    } wider;
    const torch::Tensor before = wider.fc->weight.clone();
    const std::string message = error_of([&] { load_state_dict(wider, path); });
    CHECK(message.find(path) != std::string::npos);
    CHECK(message.find("Missing key(s) in state_dict: \"extra.weight\", \"extra.bias\".") != std::string::npos);
    CHECK(message.find("Unexpected key(s) in state_dict: \"bn.weight\"") != std::string::npos);
    CHECK(message.find("size mismatch for fc.weight: copying a param with shape torch.Size([3, 2]) from checkpoint, "
                       "the shape in current model is torch.Size([4, 2]).") != std::string::npos);
    CHECK(wider.fc->weight.equal(before));
    // strict(false): the mismatched shape is still an error (PyTorch's rule); without it, the lists come back.
    torch::nn::Linear fc(2, 3);
    const LoadStateDictResult result =
        load_state_dict(*fc, path, LoadStateDictOptions().strict(false).strip_prefix("fc."));
    CHECK(result.missing_keys.empty());
    CHECK(result.unexpected_keys.size() == 5);
    CHECK(fc->weight.equal(net.fc->weight));
  }
  SUBCASE("prefixes and renames: DDP's module., a Lightning module's model.") {
    struct Wrapped : torch::nn::Module {
      std::shared_ptr<Net> model;
      Wrapped() { model = register_module("module", std::make_shared<Net>()); }
    } wrapped;
    save_state_dict(wrapped, path);  // "module.fc.weight", ...
    Net plain;
    load_state_dict(plain, path, LoadStateDictOptions().strip_prefix("model.").strip_prefix("module."));
    CHECK(same_state(*wrapped.model, plain));
    Net renamed;
    const auto result = load_state_dict(renamed, path, LoadStateDictOptions().strict(false).rename([](const std::string& k) {
      return k.find("bn.") != std::string::npos ? std::string() : k.substr(std::string("module.").size());
    }));
    CHECK(result.missing_keys.size() == 5);  // bn's five, dropped by the rename
    CHECK(renamed.fc->weight.equal(wrapped.model->fc->weight));
  }
  SUBCASE("dtypes: a mismatch is an error, or converted on request") {
    Net half;
    half.to(torch::kDouble);
    const std::string message = error_of([&] { load_state_dict(half, path); });
    CHECK(message.find("dtype mismatch for fc.weight: copying a param of dtype Float from checkpoint") != std::string::npos);
    load_state_dict(half, path, LoadStateDictOptions().convert_dtypes(true));
    CHECK(half.fc->weight.to(torch::kFloat).equal(net.fc->weight));
  }
}

TEST_CASE("optimizer states in PyTorch's layout: a LibTorch optimizer read back takes the same next step") {
  TempDir dir;
  const std::string path = dir.file("adam.pt");
  torch::manual_seed(3);
  auto run = [](torch::nn::Linear& model, torch::optim::Optimizer& optimizer, int steps) {
    for (int i = 0; i < steps; ++i) {
      optimizer.zero_grad();
      torch::mse_loss(model(torch::ones({4, 2}) * (i + 1)), torch::ones({4, 1})).backward();
      optimizer.step();
    }
  };
  torch::nn::Linear model(2, 1);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(0.05).betas({0.8, 0.99}).amsgrad(true));
  run(model, adam, 3);
  save_optimizer_state_dict(adam, path);
  const c10::IValue file = load_pytorch_file(path);
  const auto group = file.toGenericDict().at("param_groups").toList().get(0).toGenericDict();
  CHECK(group.at("lr").toDouble() == 0.05);
  CHECK(group.at("betas").toTupleRef().elements()[0].toDouble() == 0.8);
  CHECK(group.at("amsgrad").toBool());
  const auto state = file.toGenericDict().at("state").toGenericDict().at(0).toGenericDict();
  CHECK(state.at("step").toTensor().item<float>() == 3.0f);
  CHECK(state.contains("max_exp_avg_sq"));

  torch::nn::Linear copy(2, 1);
  { torch::NoGradGuard no_grad; for (std::size_t i = 0; i < 2; ++i) copy->parameters()[i].copy_(model->parameters()[i]); }
  torch::optim::Adam restored(copy->parameters(), torch::optim::AdamOptions(0.001));
  load_optimizer_state_dict(restored, path);
  CHECK(static_cast<torch::optim::AdamOptions&>(restored.param_groups()[0].options()).lr() == 0.05);
  run(model, adam, 1);
  run(copy, restored, 1);
  CHECK(copy->weight.equal(model->weight));
  CHECK(copy->bias.equal(model->bias));

  SUBCASE("another optimizer's file, or an optimizer trainloop does not map: errors naming file and key") {
    torch::optim::SGD sgd(copy->parameters(), torch::optim::SGDOptions(0.1));
    const std::string message = error_of([&] { load_optimizer_state_dict(sgd, path); });
    CHECK(message.find(path) != std::string::npos);
    CHECK(message.find("param_groups/0") != std::string::npos);
    CHECK(message.find("not a SGD optimizer's param group") != std::string::npos);
    torch::optim::LBFGS lbfgs(copy->parameters());
    CHECK(error_of([&] { save_optimizer_state_dict(lbfgs, path); }).find("Adam, AdamW, SGD, RMSprop, Adagrad") !=
          std::string::npos);
  }
}

TEST_CASE("bad files: our own checkpoint, not a zip, truncated, corrupted after we wrote it") {
  TempDir dir;
  torch::nn::Linear model(2, 1);
  save_weights(dir.file("ours.ckpt"), *model);
  CHECK(error_of([&] { load_pytorch_file(dir.file("ours.ckpt")); }).find("a trainloop (LibTorch archive) checkpoint") !=
        std::string::npos);
  std::ofstream(dir.file("text.pt")) << "hello\n";
  CHECK(error_of([&] { load_state_dict(*model, dir.file("text.pt")); }).find("not a zip archive") != std::string::npos);
  CHECK(error_of([&] { load_state_dict(*model, dir.file("missing.pt")); }).find("missing.pt") != std::string::npos);

  const std::string path = dir.file("state.pt");
  save_state_dict(*model, path);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(dir.file("truncated.pt"), std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  const std::string truncated = error_of([&] { load_state_dict(*model, dir.file("truncated.pt")); });
  CHECK(truncated.find("truncated.pt") != std::string::npos);
  std::string flipped = bytes;
  flipped[flipped.size() / 3] ^= 0x10;  // inside a tensor's bytes: only the integrity record can tell
  std::ofstream(dir.file("flipped.pt"), std::ios::binary).write(flipped.data(), static_cast<std::streamsize>(flipped.size()));
  CHECK(error_of([&] { load_state_dict(*model, dir.file("flipped.pt")); }).find("corrupt") != std::string::npos);
}

namespace {
struct Fit : LightningModule<Fit> {
  torch::nn::Linear fc{nullptr};
  Fit() {
    fc = register_module("fc", torch::nn::Linear(2, 1));
    save_hyperparameters({{"lr", 0.05}});
  }
  torch::Tensor training_step(Batch& b, std::int64_t) { return torch::mse_loss(fc(b.first), b.second); }
  OptimizerConfig configure_optimizers() {
    auto adam = std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(0.05));
    return OptimizerConfig(adam).scheduler(std::make_shared<ParamScheduler>(*adam, step_decay(0.05, 0.5, 1)));
  }
};
}  // namespace

TEST_CASE("a fit saved in Lightning's format resumes here as the uninterrupted fit (data without position or RNG)") {
  TempDir dir;
  const auto data = batches(3, 5);
  torch::manual_seed(7);
  Fit straight;
  Trainer(quiet().max_epochs(4)).fit(straight, data);

  torch::manual_seed(7);
  Fit first;
  ModelCheckpoint::Options lightning_files;
  lightning_files.dirpath = dir.file("checkpoints");
  lightning_files.save_last = true;
  lightning_files.format = CheckpointFormat::lightning;
  Trainer half(quiet().max_epochs(2), ModelCheckpoint(lightning_files));
  half.fit(first, data);
  const std::string path = dir.file("half.ckpt");
  half.save_checkpoint(path, CheckpointFormat::lightning);
  const c10::impl::GenericDict file = load_pytorch_file(path).toGenericDict();
  CHECK(file.at("epoch").toInt() == 2);
  CHECK(file.at("global_step").toInt() == 6);
  CHECK(file.at("pytorch-lightning_version").toStringRef() == "2.4.0");
  CHECK(file.at("callbacks").toGenericDict().contains("callback/trainloop::ModelCheckpoint"));
  // ModelCheckpoint wrote Lightning's layout too: its last.ckpt is what fit(..., "last") resumes from below.
  CHECK(trainloop::detail::is_pytorch_file(lightning_files.dirpath + "/last.ckpt"));

  Fit resumed;
  Trainer rest(quiet().max_epochs(4), ModelCheckpoint(lightning_files));
  rest.fit(resumed, data, "last");
  CHECK(rest.global_step() == 12);
  CHECK(rest.current_epoch() == 4);
  CHECK(resumed.fc->weight.equal(straight.fc->weight));
  CHECK(resumed.fc->bias.equal(straight.fc->bias));

  SUBCASE("a truncated Lightning file: fit refuses it, naming the file") {
    std::string bytes;
    {
      std::ifstream in(path, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    const std::string truncated = dir.file("truncated.ckpt");
    std::ofstream(truncated, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 100));
    Fit again;
    Trainer trainer(quiet().max_epochs(4));
    const std::string message = error_of([&] { trainer.fit(again, data, truncated); });
    CHECK(message.find(truncated) != std::string::npos);
    CHECK(message.find("truncated") != std::string::npos);
  }
  SUBCASE("weights only: no optimizer state, so fit refuses it and says why") {
    half.save_checkpoint(path, CheckpointFormat::lightning, true);
    Fit again;
    Trainer trainer(quiet().max_epochs(4));
    const std::string message = error_of([&] { trainer.fit(again, data, path); });
    CHECK(message.find("'optimizer_states' is missing") != std::string::npos);
  }
}
