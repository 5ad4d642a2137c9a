// Compile-only check: instantiates the torch-facing parts of the header, so `-fsyntax-only` against another
// LibTorch (2.x, CUDA builds) or another language standard (C++20) proves they still compile there.
#include <trainloop.hpp>

#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

using Batch = std::pair<torch::Tensor, torch::Tensor>;

// A dataset of the user's type: raw uint8 images augmented per read, from the example's generator.
struct Pixels {
  torch::Tensor images;  // [N, 1, 6, 6] uint8
  std::int64_t size() const { return images.size(0); }
  std::pair<torch::Tensor, std::int64_t> get(std::size_t index, torch::Generator& generator) const {
    namespace T = trainloop::transforms;
    const auto augment = T::Compose(T::ToFloat{}, T::RandomCrop(4, 1), T::RandomHorizontalFlip{}, T::Normalize({0.5}, {0.5}),
                                    T::Resize(8), [](torch::Tensor x) { return T::hflip(T::pad(x, {1, 1, 1, 1}, 0, T::PaddingMode::reflect)); });
    return {augment(images[static_cast<std::int64_t>(index)], generator), static_cast<std::int64_t>(index)};
  }
};
struct Sequence {
  torch::Tensor tokens, label;
};
struct Sequences {
  std::int64_t size() const { return 4; }
  Sequence get(std::size_t index) const { return {torch::ones({static_cast<std::int64_t>(index) + 1}), torch::zeros({})}; }
};

struct Net : trainloop::LightningModule<Net> {
  torch::nn::Linear fc{nullptr};
  Net() { fc = register_module("fc", torch::nn::Linear(4, 2)); }
  torch::Tensor training_step(Batch& b, std::int64_t) {
    torch::Tensor loss = torch::nn::functional::cross_entropy(fc(b.first), b.second);
    log("loss", loss, trainloop::LogOptions().prog_bar(true).on_epoch(true));
    return loss;
  }
  void validation_step(Batch& b, std::int64_t) { log("val_loss", torch::nn::functional::cross_entropy(fc(b.first), b.second)); }
  void test_step(Batch& b, std::int64_t) { log("test_loss", torch::nn::functional::cross_entropy(fc(b.first), b.second)); }
  torch::Tensor predict_step(Batch& b, std::int64_t) { return fc(b.first); }
  trainloop::OptimizerConfig configure_optimizers() {
    auto adam = std::make_shared<torch::optim::Adam>(parameters());
    return trainloop::OptimizerConfig(adam).scheduler(std::make_shared<torch::optim::StepLR>(*adam, 1));
  }
  void on_train_epoch_end() {}
};

// Every overridable Lightning hook and the data hooks, so their call paths compile against each LibTorch too.
struct Overriding : Net {
  std::vector<Batch> data;
  std::vector<Batch>& train_dataloader() { return data; }
  std::vector<Batch> val_dataloader() { return data; }
  void configure_model() {}
  void prepare_data() {}
  void backward(torch::Tensor& loss) { loss.backward(); }
  void optimizer_zero_grad(std::int64_t, std::int64_t, torch::optim::Optimizer& o) { o.zero_grad(); }
  void optimizer_step(std::int64_t, std::int64_t, trainloop::LightningOptimizer& o, trainloop::OptimizerClosure& c) {
    o.step(c);
  }
  std::tuple<> configure_callbacks() { return {}; }
  void configure_gradient_clipping(torch::optim::Optimizer& o, double v, trainloop::ClipAlgorithm a) {
    clip_gradients(o, v, a);
  }
  void lr_scheduler_step(const trainloop::SchedulerConfig& s, std::optional<double>) { s.step(); }
  void on_validation_model_eval() { eval(); }
  void on_validation_model_train() { train(); }
  void on_validation_model_zero_grad() {}
  void on_save_checkpoint(trainloop::StateDict& c) { c["x"] = std::int64_t{1}; }
  void on_load_checkpoint(const trainloop::TensorDict&) {}
};

struct Callback {
  template <class T, class M>
  void on_train_batch_end(T&, M&, const torch::Tensor&, Batch&, std::int64_t) {}
  template <class E>
  void on_iteration_completed(E&) {}
};

// A section of the command line (trainloop::cli).
struct CliArgs {
  double lr = 0.1;
  std::vector<std::int64_t> sizes{1};
  std::optional<std::string> name;
  template <class F>
  void fields(F& f) {
    f("lr", lr, "x");
    f("sizes", sizes, "x");
    f("name", name, "x");
  }
};

inline torch::Tensor fc_free(const torch::Tensor& x) { return x.narrow(1, 0, 2); }

int main() {
  torch::nn::Linear model(4, 2);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1));
  auto engine = trainloop::make_engine([&](trainloop::EngineCore&, Batch& batch) {
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model(batch.first), batch.second);
    loss.backward();
    optimizer.step();
    return loss.detach();
  }, trainloop::Timer{}, trainloop::on(trainloop::Events::iteration_completed | trainloop::every(10), [](auto& e) {
    e.state.metrics["loss"] = e.output().template item<double>();
  }));
  std::vector<Batch> data{{torch::randn({8, 4}), torch::randint(2, {8})}};
  engine.run(data, trainloop::max_epochs(1));
  Net net;
  trainloop::Trainer trainer(trainloop::TrainerOptions().max_epochs(1).gradient_clip_val(1.0), Callback{});
  trainer.fit(net, data, data);
  Overriding overriding;
  trainer.fit(overriding);
  trainer.fit(overriding, "last.ckpt");
  trainer.validate(overriding);
  trainer.test(net, data);
  auto predictions = trainer.predict(net, data);

  trainloop::DataLoader loader(trainloop::TensorDataset(torch::randn({8, 4}), torch::randint(2, {8})),
                               trainloop::DataLoaderOptions().batch_size(4).shuffle(true).workers(1).prefetch_factor(1));
  trainer.fit(net, loader);
  loader.load_state_dict(loader.state_dict());
  trainloop::DataLoader pixels(Pixels{torch::zeros({4, 1, 6, 6}, torch::kByte)},
                               trainloop::DataLoaderOptions().batch_size(2).workers(2).shuffle(true));
  for (auto& [x, y] : pixels) x.add_(y.unsqueeze(1).unsqueeze(2).unsqueeze(3));
  trainloop::DataLoader structs(Sequences{}, trainloop::DataLoaderOptions().batch_size(2));
  trainloop::DataLoader padded(Sequences{}, trainloop::DataLoaderOptions().batch_size(2), [](std::vector<Sequence> examples) {
    return torch::nn::utils::rnn::pad_sequence({examples[0].tokens, examples[1].tokens}, /*batch_first=*/true);
  });
  Sequence first = *structs.begin();
  torch::Tensor padded_tokens = *padded.begin();
  trainloop::Precision precision(trainloop::ClassificationOptions().num_classes(2));
  trainloop::Recall recall(trainloop::ClassificationOptions().num_classes(2));
  auto f1 = 2 * precision * recall / (precision + recall);
  trainloop::ConfusionMatrix matrix(2);
  trainloop::RocAuc auc;
  trainloop::R2Score r2;
  auto evaluator = trainloop::make_engine([&](Batch& b) { return std::make_pair(fc_free(b.first), b.second); },
                                          trainloop::attach("f1", f1), trainloop::attach("cm", matrix));
  evaluator.run(data);
  auto miou = trainloop::mean_iou(matrix);
  (void)miou;
  trainloop::save_checkpoint("x.ckpt", net, {}, {{"loop", evaluator.state.state_dict()}});
  trainloop::load_checkpoint("x.ckpt", net, {}, torch::Device(torch::kCPU));
  trainloop::read_checkpoint_states("x.ckpt");
  torch::optim::SGD sgd(net.parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  trainloop::ParamScheduler warm(sgd, trainloop::with_warmup(trainloop::cosine_annealing(0.1, 0.0, 10), 0.0, 5));
  trainloop::ParamScheduler momentum(sgd, trainloop::linear_cyclical(0.8, 0.9, 4), trainloop::Param::momentum);
  trainloop::ReduceLROnPlateau plateau(sgd);
  plateau.step(1.0);
  trainloop::EarlyStopping::Options early;
  early.monitor = "val_loss";
  trainloop::Trainer guarded(trainloop::TrainerOptions().max_epochs(1), trainloop::EarlyStopping(early),
                             trainloop::TerminateOnNan{});
  guarded.fit(net, data, data);
  trainloop::ModelCheckpoint::Options every_step;
  every_step.every_n_train_steps = 1;
  every_step.save_last = true;
  trainloop::Trainer checkpointed(trainloop::TrainerOptions().max_epochs(2), trainloop::ModelCheckpoint(every_step),
                                  trainloop::Preemption());
  checkpointed.fit(net, loader, "last");
  trainloop::LearningRateMonitor::Options lr_options;
  lr_options.log_momentum = true;
  trainloop::Trainer monitored(trainloop::TrainerOptions().max_epochs(1).profiler(true),
                               trainloop::LearningRateMonitor(lr_options), trainloop::EMA(),
                               trainloop::GradientAccumulationScheduler({{0, 2}, {3, 1}}));
  monitored.fit(net, data, data);
  trainloop::EMA tracked;
  auto ema_engine = trainloop::make_engine<int>([](trainloop::EngineCore&, int) {}, tracked.track(net),
                                                trainloop::LearningRateMonitor().watch(sgd));
  ema_engine.run(std::vector<int>{1}, trainloop::RunOptions().max_epochs(1));
  { auto swapped = tracked.swap_into(net); }
  trainloop::Trainer logged(trainloop::TrainerOptions().max_epochs(1), trainloop::CSVLogger(),
                            trainloop::TensorBoardLogger(), trainloop::MLFlowLogger(), trainloop::JSONLinesLogger());
  logged.fit(net, data, data);
  trainloop::CSVLogger engine_csv;
  auto logging_engine = trainloop::make_engine<int>([](trainloop::EngineCore&, int) {},
                                                    trainloop::log_metrics_to(engine_csv, {"val/", 0, nullptr, true}));
  logging_engine.run(std::vector<int>{1}, trainloop::RunOptions().max_epochs(1));
  (void)auc;
  (void)r2;
#if TRAINLOOP_WITH_AMP
  {  // mixed precision: the autocast guard, the scaler's fused and fallback paths, the Trainer's policy
    trainloop::amp::Autocast autocast(torch::kCPU, torch::kBFloat16);
    trainloop::amp::GradScaler scaler(trainloop::amp::GradScalerOptions().growth_interval(10));
    scaler.scale(torch::ones({1})).backward();
    scaler.unscale_(sgd);
    scaler.step(sgd);
    scaler.update();
    scaler.load_state_dict(scaler.state_dict());
    trainloop::Trainer mixed(trainloop::TrainerOptions().max_epochs(1).precision("16-mixed").grad_scaler(
        trainloop::amp::GradScalerOptions().init_scale(1024)));
    mixed.fit(net, data, data);
    (void)mixed.grad_scaler();
  }
#endif
#if TRAINLOOP_WITH_DISTRIBUTED
  {  // data-parallel: the environment, the group, the gradient hooks, the Trainer's strategy
    namespace dist = trainloop::distributed;
    const dist::Environment env = dist::detect_environment([](const char*) -> const char* { return nullptr; });
    auto group = dist::init(dist::InitOptions().timeout(std::chrono::seconds(5)), env);
    dist::DistributedDataParallel ddp(net, group, dist::DDPOptions().find_unused_parameters(true));
    { auto no_sync = ddp.no_sync(); }
    ddp.wait();
    ddp.sync_buffers();
    torch::Tensor t = torch::ones({1});
    group->all_reduce(t, dist::ReduceOp::max);
    group->broadcast(t);
    group->barrier();
    trainloop::Trainer parallel(trainloop::TrainerOptions().max_epochs(1).strategy("ddp").devices(2).ddp(
        dist::DDPOptions().bucket_cap_mb(1)));
    parallel.fit(net, data, data);
    (void)(parallel.reduce_decision(true, false) && parallel.is_global_zero() && parallel.strategy().ddp() && parallel.strategy().process_group());
  }
#endif
  {  // The Tuner's searches, Ignite's FastaiLRFinder and the command line.
    trainloop::Trainer<> tuned;
    trainloop::Tuner tuner(tuned);
    trainloop::DataLoader loader(trainloop::TensorDataset(torch::randn({8, 4}), torch::zeros({8}, torch::kLong)),
                                 trainloop::DataLoaderOptions().batch_size(2));
    const trainloop::LRFinderResult found = tuner.lr_find(net, data, trainloop::LRFinderOptions().update_attr(false));
    (void)(found.suggestion().value_or(0.0) + static_cast<double>(tuner.scale_batch_size(net, loader) +
           tuner.scale_batch_size(net, [&](std::int64_t) -> std::vector<Batch>& { return data; })));
    torch::nn::Linear model(4, 2);
    torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1));
    trainloop::FastaiLRFinder finder;
    auto engine = trainloop::make_engine([&](trainloop::EngineCore&, Batch& b) { return model(b.first).sum(); }, std::ref(finder));
    { auto scope = finder.attach(engine, *model, sgd); engine.run(data); }
    CliArgs args;
    trainloop::cli::Parser parser("p");
    parser.section("model", args);
    const trainloop::cli::Run run = parser.parse(std::vector<std::string>{"--model.lr", "0.2"});
    trainloop::Trainer with_config(run.trainer, trainloop::CSVLogger(), trainloop::cli::SaveConfigCallback(run));
    with_config.fit(net, data);
  }
  {  // Histograms, images and text to the loggers; the histogram callback and Ignite's handlers; checkpoints to MLflow.
    trainloop::MLFlowLogger::Options mlflow;
    mlflow.log_model = trainloop::MLFlowLogger::LogModel::all;
    trainloop::Trainer media(trainloop::TrainerOptions().max_epochs(1), trainloop::TensorBoardLogger(),
                             trainloop::MLFlowLogger(mlflow), trainloop::CSVLogger(), trainloop::ParameterHistograms(),
                             trainloop::ModelCheckpoint());
    media.fit(net, data);
    const torch::Tensor grid = trainloop::make_grid(torch::rand({4, 1, 8, 8}), trainloop::GridOptions());
    trainloop::log_histogram(media, "w", torch::randn({10}), media.global_step());
    trainloop::log_image(media, "grid", grid, media.global_step());
    trainloop::log_image(media.callback<trainloop::TensorBoardLogger>(), "cm",
                         trainloop::confusion_matrix_image(torch::eye(3)), 0);
    trainloop::log_text(media, "note", "text", 0);
    media.callback<trainloop::MLFlowLogger>().log_artifact("x.txt", "dir");
    const trainloop::Histogram h = trainloop::histogram_of(torch::randn({10}), {-1.0, 0.0, 1.0});
    const trainloop::EncodedImage png = trainloop::encode_png(grid);
    (void)(h.num + static_cast<double>(png.png.size()));
    torch::nn::Linear model(4, 2);
    trainloop::TensorBoardLogger tb;
    trainloop::HistHandlerOptions by_epoch;
    by_epoch.epoch_step = true;
    auto engine = trainloop::make_engine<Batch>(
        [&](Batch& b) { model(b.first).sum().backward(); },
        trainloop::on(trainloop::Events::iteration_completed | trainloop::every(10), trainloop::WeightsHistHandler(tb, *model)),
        trainloop::on(trainloop::Events::epoch_completed, trainloop::GradsHistHandler(tb, *model, by_epoch)));
    engine.run(data);
  }
  trainloop::MnistSplit split = trainloop::read_mnist_split(trainloop::fashion_mnist_debian_dir, false);
  return static_cast<int>(split.labels.size(0) + trainloop::read_idx("x.idx").dim() +
                          static_cast<std::int64_t>(predictions.size()));
}
