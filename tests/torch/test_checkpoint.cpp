// Checkpoint files: a full round trip (model, optimizer state, named states, RNG), and every kind of bad file or
// failed write, each with an error naming the file and the key, and nothing already saved lost.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <filesystem>

#include "temp_dir.hpp"

using namespace trainloop;

namespace {
void train_a_little(torch::nn::Linear& model, torch::optim::Optimizer& optimizer, int steps) {
  for (int i = 0; i < steps; ++i) {
    optimizer.zero_grad();
    torch::mse_loss(model(torch::ones({4, 2}) * i), torch::ones({4, 1})).backward();
    optimizer.step();
  }
}
}  // namespace

TEST_CASE("round trip: parameters, optimizer state, named states and the RNG come back exactly") {
  TempDir dir;
  const std::string path = dir.file("run.ckpt");
  torch::manual_seed(1);
  torch::nn::Linear model(2, 1);
  auto optimizer = std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  train_a_little(model, *optimizer, 3);
  const StateDict loop{{"epoch", std::int64_t{2}}, {"loss", 0.25}, {"note", std::string("mid-epoch")}};
  save_checkpoint(path, *model, {optimizer}, {{"loop", loop}, {"hparams", {{"lr", 0.1}}}});
  const torch::Tensor after_save = torch::randn({3});

  torch::manual_seed(99);
  torch::nn::Linear restored(2, 1);
  auto restored_optimizer =
      std::make_shared<torch::optim::SGD>(restored->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  const auto states = load_checkpoint(path, *restored, {restored_optimizer});
  CHECK(torch::equal(restored->weight, model->weight));
  CHECK(torch::equal(restored->bias, model->bias));
  CHECK((states.at("loop") == loop));
  CHECK(std::get<double>(states.at("hparams").at("lr")) == 0.1);
  CHECK(torch::equal(torch::randn({3}), after_save));  // the RNG continues where it was saved
  // Momentum buffers came back: the same further steps give the same parameters, bit for bit.
  train_a_little(model, *optimizer, 2);
  train_a_little(restored, *restored_optimizer, 2);
  CHECK(torch::equal(restored->weight, model->weight));
  CHECK_FALSE(std::filesystem::exists(path + ".tmp-" + std::to_string(::getpid())));  // no temporary left behind
}

TEST_CASE("bad files: missing, truncated, foreign, newer format, another model, another optimizer count") {
  TempDir dir;
  torch::nn::Linear model(2, 1);
  const torch::Tensor before = model->weight.clone();
  CHECK_THROWS_WITH_AS(load_checkpoint(dir.file("absent.ckpt"), *model),
                       contains("checkpoint '" + dir.file("absent.ckpt") + "': No such file or directory"), std::runtime_error);

  const std::string good = dir.file("good.ckpt");
  save_checkpoint(good, *model);
  const std::string cut = dir.file("cut.ckpt");
  std::filesystem::copy_file(good, cut);
  std::filesystem::resize_file(cut, std::filesystem::file_size(cut) / 2);
  CHECK_THROWS_WITH_AS(load_checkpoint(cut, *model), contains("'" + cut + "': not a readable checkpoint"), std::runtime_error);

  const std::string foreign = dir.file("foreign.pt");
  torch::save(torch::ones({2}), foreign);
  CHECK_THROWS_WITH_AS(load_checkpoint(foreign, *model),
                       contains("'" + foreign + "': not a trainloop checkpoint"), std::runtime_error);

  const std::string newer = dir.file("newer.ckpt");
  torch::serialize::OutputArchive future;
  future.write("trainloop_format_version", c10::IValue(std::int64_t{99}));
  future.write("trainloop_version", c10::IValue(std::string("9.0.0")));
  future.save_to(newer);
  CHECK_THROWS_WITH_AS(load_checkpoint(newer, *model),
                       contains("format version 99 (written by trainloop 9.0.0) is newer than this trainloop"),
                       std::runtime_error);

  torch::nn::Linear wider(3, 1);
  CHECK_THROWS_WITH_AS(load_checkpoint(good, *wider),
                       contains("key 'model/weight' has shape [1, 2], this model's has [1, 3]"), std::runtime_error);
  torch::nn::Sequential other(torch::nn::Linear(2, 1));
  CHECK_THROWS_WITH_AS(load_checkpoint(good, *other), contains("key 'model/bias' is not in this model"),
                       std::runtime_error);
  auto optimizer = std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1));
  CHECK_THROWS_WITH_AS(load_checkpoint(good, *model, {optimizer}),
                       contains("it holds 0 optimizer state(s), 1 optimizer(s) were given"), std::runtime_error);
  CHECK(torch::equal(model->weight, before));  // every rejected load left the model as it was
}

TEST_CASE("a failed write is an error naming the path, and the previous checkpoint stays intact") {
  TempDir dir;
  const std::string path = dir.file("last.ckpt");
  torch::nn::Linear model(2, 1);
  save_checkpoint(path, *model);
  const auto size_before = std::filesystem::file_size(path);
  {
    torch::NoGradGuard no_grad;
    model->weight.fill_(7);
  }
  // Inject a failure: a folder where the temporary file must go.
  std::filesystem::create_directory(path + ".tmp-" + std::to_string(::getpid()));
  CHECK_THROWS_WITH_AS(save_checkpoint(path, *model), contains("checkpoint '" + path + "': writing failed"),
                       std::runtime_error);
  CHECK(std::filesystem::file_size(path) == size_before);
  torch::nn::Linear reloaded(2, 1);
  load_checkpoint(path, *reloaded);
  CHECK_FALSE(torch::equal(reloaded->weight, model->weight));  // the old weights, not the 7s
  CHECK_THROWS_WITH_AS(save_checkpoint(dir.file("no/such/folder/x.ckpt"), *model), contains("no/such/folder/x.ckpt"),
                       std::runtime_error);
}

TEST_CASE("weights-only export loads into a plain torch::nn::Module") {
  TempDir dir;
  torch::nn::Sequential trained(torch::nn::Linear(2, 3), torch::nn::ReLU(), torch::nn::Linear(3, 1));
  save_weights(dir.file("weights.ckpt"), *trained);
  torch::nn::Sequential fresh(torch::nn::Linear(2, 3), torch::nn::ReLU(), torch::nn::Linear(3, 1));
  load_checkpoint(dir.file("weights.ckpt"), *fresh);
  const torch::Tensor x = torch::randn({5, 2});
  CHECK(torch::equal(fresh->forward(x), trained->forward(x)));
}
