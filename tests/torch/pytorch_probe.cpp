// trainloop's side of the checks against Python's PyTorch (tests/tools/test_pytorch_interop.py drives it; files in
// torch.save's format both ways). One command per run:
//   copy IN OUT                 load_pytorch_file(IN), save_pytorch_file(OUT): Python -> C++ -> Python, bitwise
//   read IN                     load_pytorch_file(IN): prints "ok" or "error MESSAGE"
//   load_state KIND IN OUT      a KIND model (mlp, cnn, embedding) load_state_dict(IN), save_state_dict(OUT); or
//                               "error MESSAGE"
//   save_state KIND OUT         a KIND model after 3 training steps (BatchNorm's statistics move): save_state_dict(OUT),
//                               and OUT.io: {"input", "output"} (the model's output in eval mode)
//   tensors OUT                 tensors of every kind made in C++ (the same the test makes in Python): a transposed
//                               view, a slice sharing its storage, float16, bfloat16, int64, bool, a 0-dim double
//   optimizer NAME DATA OUT     NAME (adam, sgd) from DATA's {"state_dict", "x", "y", "steps", "lr"} on the mlp: the
//                               steps (MSE), then OUT: {"state_dict", "optimizer", "next_state_dict" (one step more)}
//   fit_lightning OUT           a Trainer fit (2 epochs of 3 full batches, Adam, a StepLR-like scheduler,
//                               hyperparameters), saved with CheckpointFormat::lightning; OUT.weights: weights only
//   resume_lightning CKPT OUT   fit(..., CKPT) for one more optimizer step on the batch the test gives (CKPT.data:
//                               {"x", "y"}); OUT: the state_dict after it, and {"epoch", "global_step"} as resumed
//   media DIR                   histograms, images and text to a TensorBoardLogger (DIR/tb) and an MLFlowLogger
//                               (DIR/mlruns), and the tensors they came from in DIR/inputs.pt
//                               (tests/tools/test_logger_media.py reads them with numpy, PIL and torchvision)
#include <trainloop.hpp>

#include <cstdio>
#include <iostream>
#include <string>

using namespace trainloop;

namespace {
// The architectures the Python side writes too (same names: Python's attribute names are the registered ones).
struct Mlp : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  Mlp() {
    fc1 = register_module("fc1", torch::nn::Linear(6, 8));
    fc2 = register_module("fc2", torch::nn::Linear(8, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::tanh(fc1(x))); }
};
struct Cnn : torch::nn::Module {
  torch::nn::Sequential features{nullptr};
  torch::nn::Linear head{nullptr};
  Cnn() {
    features = register_module("features", torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3)),
                                                                 torch::nn::BatchNorm2d(4), torch::nn::ReLU()));
    head = register_module("head", torch::nn::Linear(4 * 6 * 6, 2));
  }
  torch::Tensor forward(const torch::Tensor& x) { return head(features->forward(x).flatten(1)); }
};
struct Embedder : torch::nn::Module {
  torch::nn::Embedding embedding{nullptr};
  torch::nn::Linear out{nullptr};
  Embedder() {
    embedding = register_module("embedding", torch::nn::Embedding(10, 4));
    out = register_module("out", torch::nn::Linear(4, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) { return out(embedding(x)).squeeze(-1); }
};

template <class F>
auto with_model(const std::string& kind, F&& f) {
  if (kind == "mlp") return f(std::make_shared<Mlp>(), torch::randn({5, 6}));
  if (kind == "cnn") return f(std::make_shared<Cnn>(), torch::randn({5, 1, 8, 8}));
  if (kind == "embedding") return f(std::make_shared<Embedder>(), torch::randint(0, 10, {5, 3}));
  throw std::invalid_argument("unknown model kind " + kind);
}

c10::impl::GenericDict dict() { return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get()); }
c10::impl::GenericDict read_dict(const std::string& path) { return load_pytorch_file(path).toGenericDict(); }

// The module Lightning's side mirrors (tests/tools/test_pytorch_interop.py: LitMlp): an Mlp, Adam, a scheduler
// halving the rate every 2 steps (PyTorch's StepLR(step_size=2, gamma=0.5) stepped per step), hyperparameters.
struct LitMlp : LightningModule<LitMlp> {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  LitMlp() {
    fc1 = register_module("fc1", torch::nn::Linear(6, 8));
    fc2 = register_module("fc2", torch::nn::Linear(8, 3));
    save_hyperparameters({{"hidden", std::int64_t{8}}, {"lr", 0.01}});
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::tanh(fc1(x))); }
  torch::Tensor training_step(std::pair<torch::Tensor, torch::Tensor>& b, std::int64_t) {
    return torch::mse_loss(forward(b.first), b.second);
  }
  OptimizerConfig configure_optimizers() {
    auto adam = std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(0.01));
    auto schedule = std::make_shared<ParamScheduler>(*adam, step_decay(0.01, 0.5, 2));
    return OptimizerConfig(adam).scheduler(SchedulerConfig(schedule).interval(Interval::step));
  }
};
TrainerOptions quiet() {
  return TrainerOptions().accelerator("cpu").enable_progress_bar(false).enable_model_summary(false).num_sanity_val_steps(0);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string command = argv[1];
  auto arg = [&](int i) -> std::string {
    if (i >= argc) throw std::invalid_argument("missing argument " + std::to_string(i));
    return argv[i];
  };
  torch::manual_seed(0);
  try {
    if (command == "copy") {
      save_pytorch_file(arg(3), load_pytorch_file(arg(2)));
    } else if (command == "read") {
      load_pytorch_file(arg(2));
      std::cout << "ok\n";
    } else if (command == "load_state") {
      with_model(arg(2), [&](auto model, const torch::Tensor&) {
        load_state_dict(*model, arg(3));
        save_state_dict(*model, arg(4));
        return 0;
      });
    } else if (command == "save_state") {
      with_model(arg(2), [&](auto model, const torch::Tensor& input) {
        torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
        for (int i = 0; i < 3; ++i) {
          sgd.zero_grad();
          model->forward(input).pow(2).mean().backward();
          sgd.step();
        }
        model->eval();
        torch::NoGradGuard no_grad;
        c10::impl::GenericDict io = dict();
        io.insert("input", input);
        io.insert("output", model->forward(input));
        save_state_dict(*model, arg(3));
        save_pytorch_file(arg(3) + ".io", io);
        return 0;
      });
    } else if (command == "tensors") {
      const torch::Tensor base = torch::arange(24, torch::kFloat32).reshape({4, 6});
      c10::impl::GenericDict d = dict();
      d.insert("transposed", base.t());
      d.insert("sliced", base.slice(0, 1, 3).slice(1, 0, 6, 2));
      d.insert("shared", base);
      d.insert("half", (torch::arange(6, torch::kFloat32) / 7).reshape({3, 2}).to(torch::kHalf));
      d.insert("bfloat16", (torch::arange(5, torch::kFloat32) / 3).to(torch::kBFloat16));
      d.insert("int64", torch::tensor({std::int64_t{1}, std::int64_t{-2}, std::int64_t{1} << 40}));
      d.insert("bool", torch::tensor({true, false}));
      d.insert("scalar", torch::tensor(2.5, torch::kFloat64));
      save_pytorch_file(arg(2), d);
    } else if (command == "optimizer") {
      const c10::impl::GenericDict data = read_dict(arg(3));
      Mlp model;
      save_pytorch_file(arg(4) + ".tmp", data.at("state_dict"));
      load_state_dict(model, arg(4) + ".tmp");
      std::remove((arg(4) + ".tmp").c_str());
      const double lr = data.at("lr").toDouble();
      std::shared_ptr<torch::optim::Optimizer> optimizer;
      if (arg(2) == "adam") optimizer = std::make_shared<torch::optim::Adam>(model.parameters(), torch::optim::AdamOptions(lr));
      else optimizer = std::make_shared<torch::optim::SGD>(model.parameters(), torch::optim::SGDOptions(lr).momentum(0.9));
      const torch::Tensor x = data.at("x").toTensor(), y = data.at("y").toTensor();
      auto step = [&] {
        optimizer->zero_grad();
        torch::mse_loss(model.forward(x), y).backward();
        optimizer->step();
      };
      for (std::int64_t i = 0; i < data.at("steps").toInt(); ++i) step();
      c10::impl::GenericDict out = dict();
      out.insert("state_dict", pytorch_state_dict(model));
      out.insert("optimizer", pytorch_optimizer_state_dict(*optimizer));
      // Our file, read back into a fresh optimizer, continues as this one does.
      save_optimizer_state_dict(*optimizer, arg(4) + ".optimizer");
      step();
      out.insert("next_state_dict", pytorch_state_dict(model));
      save_pytorch_file(arg(4), out);
    } else if (command == "fit_lightning") {
      torch::manual_seed(1);
      std::vector<std::pair<torch::Tensor, torch::Tensor>> data;
      for (int i = 0; i < 3; ++i) data.emplace_back(torch::randn({16, 6}), torch::randn({16, 3}));
      LitMlp module;
      Trainer trainer(quiet().max_epochs(2));
      trainer.fit(module, data);
      trainer.save_checkpoint(arg(2), CheckpointFormat::lightning);
      trainer.save_checkpoint(arg(2) + ".weights", CheckpointFormat::lightning, true);
    } else if (command == "resume_lightning") {
      const c10::impl::GenericDict data = read_dict(arg(2) + ".data");
      std::vector<std::pair<torch::Tensor, torch::Tensor>> batches{{data.at("x").toTensor(), data.at("y").toTensor()}};
      LitMlp module;
      const std::int64_t next_step = data.at("global_step").toInt() + 1;
      Trainer trainer(quiet().max_epochs(100).max_steps(next_step));
      trainer.fit(module, batches, arg(2));
      c10::impl::GenericDict out = dict();
      out.insert("state_dict", pytorch_state_dict(module));
      out.insert("global_step", trainer.global_step());
      out.insert("epoch", trainer.current_epoch());
      out.insert("lr", trainer.optimizers().front().optimizer()->param_groups().front().options().get_lr());
      save_pytorch_file(arg(3), out);
    } else if (command == "media") {
      const std::string dir = arg(2);
      VersionedLoggerOptions tb_options;
      tb_options.save_dir = dir + "/tb";
      TensorBoardLogger tb(tb_options);
      MLFlowLogger::Options ml_options;
      ml_options.tracking_dir = dir + "/mlruns";
      MLFlowLogger ml(ml_options);
      c10::impl::GenericDict inputs = dict();
      // Weights-like values with exact zeros and values on TensorFlow edges; a tensor for chosen edges.
      const torch::Tensor weights = torch::cat({torch::randn({5000}) * 0.05, torch::zeros({10}),
                                                torch::tensor({1e-12f, -1.1e-12f, 3.0f})});
      const torch::Tensor chosen = torch::tensor({-1.0f, -0.75f, -0.5f, 0.0f, 0.2f, 0.5f, 1.0f, 2.0f, 0.99f});
      const std::vector<double> edges{-1, -0.5, 0, 0.5, 1};
      log_histogram(tb, "weights/fc/weight", weights, 3);
      log_histogram(tb, "chosen", chosen, 4, edges);
      const torch::Tensor gray = torch::rand({1, 28, 28});
      const torch::Tensor rgb = torch::randint(0, 256, {6, 3, 10, 12}, torch::kUInt8);
      GridOptions grid_options;
      grid_options.nrow = 4;
      const torch::Tensor grid = make_grid(rgb, grid_options);
      const torch::Tensor normalized_input = torch::randn({5, 1, 8, 8});
      GridOptions normalize;
      normalize.normalize = true;
      normalize.scale_each = true;
      normalize.pad_value = 0.5;
      const torch::Tensor normalized = make_grid(normalized_input, normalize);
      log_image(tb, "gray", gray, 5);
      log_image(tb, "grid", grid, 5);
      log_image(tb, "confusion", confusion_matrix_image(torch::tensor({{90, 7, 3}, {12, 80, 8}, {0, 1, 99}})), 6);
      log_text(tb, "note", "a *Markdown* note", 7);
      log_image(ml, "val/grid", grid, 5);
      log_text(ml, "note", "a *Markdown* note", 7);
      if (std::FILE* config = std::fopen((dir + "/config.yaml").c_str(), "wb")) {
        std::fputs("model:\n  lr: 0.001\n", config);
        std::fclose(config);
      }
      ml.log_artifact(dir + "/config.yaml", "configs");
      tb.finalize("success");
      ml.finalize("success");
      inputs.insert("weights", weights);
      inputs.insert("chosen", chosen);
      inputs.insert("gray", gray);
      inputs.insert("rgb", rgb);
      inputs.insert("grid", grid);
      inputs.insert("normalized_input", normalized_input);
      inputs.insert("normalized", normalized);
      save_pytorch_file(dir + "/inputs.pt", inputs);
    } else {
      std::cerr << "unknown command " << command << "\n";
      return 2;
    }
  } catch (const std::exception& error) {
    std::cout << "error " << error.what() << "\n";
    return 1;
  }
  return 0;
}
