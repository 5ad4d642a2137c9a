// The training run that tests/torch/test_resume.cpp kills and resumes, in the shape of a real one: a small MLP with
// dropout (it draws random numbers), Adam, a per-step cosine schedule, a shuffling DataLoader, validation every half
// epoch, EarlyStopping, EMA of the weights, Preemption, and a ModelCheckpoint writing last.ckpt after every step.
//   trainloop_resume_child DIR FINGERPRINT [--resume [FILE]] [--kill POINT:N] [--announce FILE] [--epochs N] [--precision P]
//                          [--workers N] [--stream]
// --kill sends itself SIGKILL at the Nth occurrence of POINT:
//   step        right after the step's checkpoint (end of on_train_batch_end)
//   save        while the step's checkpoint is being written (a thread watches for the temporary file)
//   val_start   inside a validation (on_validation_start), before its results
//   val_end     right after a validation (its on_validation_end, EarlyStopping's check done)
//   epoch_end   right after the epoch's checkpoint in on_train_epoch_end
//   fit_start   while resuming: after the checkpoint was restored, before any batch
// --resume continues from "last" (DIR/last.ckpt, found on disk) or FILE; --epochs sets max_epochs (default 4);
// --precision P sets TrainerOptions().precision(P), or with "bf16-scaled" bf16 autocast plus a forced loss scaler and
// batches that overflow it (steps skipped, the scale backed off and grown). --workers N reads the training examples
// through a dataset of the user's type instead of a TensorDataset, with N worker threads and random augmentation
// (noise and a flip drawn from each example's generator). --stream reads them as fixed-size records from files written
// to DIR/records (a StreamLoader with two workers, a shuffle buffer, and noise drawn per record). --announce creates FILE after step 3 and slows training down
// (20 ms a step), so a test can send SIGTERM to a running fit. At the end, everything a resumed run must reproduce
// goes to FINGERPRINT as text, bit for bit: parameters, Adam's state, EMA, learning rates, counters, EarlyStopping,
// the loader's position and the values callbacks monitor, and what the four loggers wrote (CSV, JSON lines without
// times, TensorBoard's scalars, MLflow's metric lines without timestamps): a resumed run continues their runs and
// keeps exactly the records written before its checkpoint. The Trainer saves a checkpoint after fit returns.
#include <trainloop.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace trainloop;
using Batch = TensorBatch<2>;

struct Net : LightningModule<Net> {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout dropout{nullptr};
  std::shared_ptr<torch::optim::Adam> optimizer;
  bool inject_inf = false;  // --precision bf16-scaled: batches whose first input is over 1.5 get an inf loss
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 16));
    dropout = register_module("dropout", torch::nn::Dropout(0.3));
    fc2 = register_module("fc2", torch::nn::Linear(16, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(dropout(torch::relu(fc1(x)))); }
  torch::Tensor training_step(Batch& b, std::int64_t) {
    auto loss = torch::nn::functional::cross_entropy(forward(b.first), b.second);
    log("train_loss", loss, LogOptions().on_epoch(true));
    if (inject_inf && b.first[0][0].item<double>() > 1.5) return loss * std::numeric_limits<double>::infinity();
    return loss;
  }
  void validation_step(Batch& b, std::int64_t) {
    log("val_loss", torch::nn::functional::cross_entropy(forward(b.first), b.second));
  }
  OptimizerConfig configure_optimizers() {
    optimizer = std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(0.02));
    auto schedule = std::make_shared<ParamScheduler>(*optimizer, cosine_annealing(0.02, 0.002, 30));
    return OptimizerConfig(optimizer).scheduler(SchedulerConfig(schedule).interval(Interval::step));
  }
};

// Where to die: a point and its occurrence.
struct KillPlan {
  std::string point;
  int at = 0;
  int seen = 0;
  bool hit(const char* here) { return point == here && ++seen == at; }
};
inline void die() { std::raise(SIGKILL); }

// Plain callback: runs before the checkpointing ones.
struct KillBefore {
  KillPlan* plan;
  std::string dir;
  template <class T, class M>
  void on_validation_start(T& trainer, M&) {
    if (trainer.fitting() && !trainer.sanity_checking() && plan->hit("val_start")) die();
  }
  template <class T, class M>
  void on_fit_start(T&, M&) {
    if (plan->hit("fit_start")) die();
  }
  template <class T, class M, class O, class B>
  void on_train_batch_end(T&, M&, const O&, B&, std::int64_t) {
    if (!plan->hit("save")) return;
    // ModelCheckpoint writes next: die while its temporary file exists (or 50 ms on, whatever was reached).
    const std::string temporary = dir + "/last.ckpt.tmp-" + std::to_string(::getpid());
    std::thread([temporary] {
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
      while (!std::filesystem::exists(temporary) && std::chrono::steady_clock::now() < until) {
      }
      die();
    }).detach();
  }
};
// Checkpointing callback placed after ModelCheckpoint: runs once its checkpoint is written.
struct KillAfter {
  static constexpr bool trainloop_checkpointing_callback = true;
  KillPlan* plan;
  template <class T, class M, class O, class B>
  void on_train_batch_end(T&, M&, const O&, B&, std::int64_t) {
    if (plan->hit("step")) die();
  }
  template <class T, class M>
  void on_validation_end(T& trainer, M&) {
    if (trainer.fitting() && !trainer.sanity_checking() && plan->hit("val_end")) die();
  }
  template <class T, class M>
  void on_train_epoch_end(T&, M&) {
    if (plan->hit("epoch_end")) die();
  }
};

struct Announce {
  std::string file;
  template <class T, class M, class O, class B>
  void on_train_batch_end(T& trainer, M&, const O&, B&, std::int64_t) {
    if (file.empty()) return;
    if (trainer.global_step() == 3) std::fclose(std::fopen(file.c_str(), "w"));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
};

// Every tensor as hex of its bytes, so equal text means bitwise equal.
std::string hex(const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
  const auto* bytes = static_cast<const unsigned char*>(t.data_ptr());
  std::string out = c10::str(t.scalar_type(), t.sizes(), " ");
  char pair[3];
  for (std::size_t i = 0; i < t.nbytes(); ++i) {
    std::snprintf(pair, sizeof pair, "%02x", bytes[i]);
    out += pair;
  }
  return out;
}
std::string text(const StateDict& state) {
  std::string out;
  for (const auto& [key, value] : state) {
    out += " " + key + "=";
    if (const auto* i = std::get_if<std::int64_t>(&value)) out += std::to_string(*i);
    else if (const auto* d = std::get_if<double>(&value)) out += hex(torch::tensor(*d, torch::kFloat64));
    else out += std::get<std::string>(value);
  }
  return out;
}

// What the loggers wrote, without wall times (which differ between runs).
std::string file_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
std::uint64_t varint(const std::string& s, std::size_t& at) {
  std::uint64_t v = 0;
  for (int shift = 0;; shift += 7) {
    const auto b = static_cast<unsigned char>(s.at(at++));
    v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
    if (!(b & 0x80)) return v;
  }
}
// Calls f(field, wire, varint_or_fixed, bytes) for each field of a protobuf message.
template <class F>
void fields(const std::string& m, F&& f) {
  for (std::size_t at = 0; at < m.size();) {
    const std::uint64_t key = varint(m, at);
    const int wire = static_cast<int>(key & 7);
    std::uint64_t number = 0;
    std::string bytes;
    if (wire == 0) number = varint(m, at);
    else if (wire == 1 || wire == 5) std::memcpy(&number, m.data() + at, wire == 1 ? 8 : 4), at += wire == 1 ? 8 : 4;
    else if (wire == 2) {
      const auto n = varint(m, at);
      bytes = m.substr(at, n);
      at += n;
    }
    f(static_cast<int>(key >> 3), wire, number, bytes);
  }
}
template <class T>
void write_logs(std::ofstream& out, T& trainer) {
  const std::filesystem::path csv = trainer.template callback<CSVLogger>().log_dir();
  out << "csv\n" << file_text(csv / "metrics.csv");
  std::string jsonl = file_text(trainer.template callback<JSONLinesLogger>().log_dir() / "metrics.jsonl");
  for (std::size_t at; (at = jsonl.find(", \"time\": ")) != std::string::npos;)
    jsonl.erase(at, std::min(jsonl.find(',', at + 2), jsonl.find('}', at + 2)) - at);
  out << "jsonl\n" << jsonl;
  const std::string events = file_text(trainer.template callback<TensorBoardLogger>().event_file());
  int session_starts = 0;
  for (std::size_t at = 0; at + 12 <= events.size();) {
    std::uint64_t length = 0;
    std::memcpy(&length, events.data() + at, 8);
    std::uint64_t step = 0;
    fields(events.substr(at + 12, length), [&](int field, int, std::uint64_t number, const std::string& bytes) {
      if (field == 2) step = number;
      if (field != 5) return;
      fields(bytes, [&](int, int, std::uint64_t, const std::string& value) {
        std::string tag;
        std::uint64_t bits = 0;
        bool scalar = false;
        fields(value, [&](int f, int, std::uint64_t n, const std::string& b) {
          if (f == 1) tag = b;
          if (f == 2) bits = n, scalar = true;
        });
        if (scalar) out << "tb " << step << " " << tag << " " << bits << "\n";
        if (tag == "_hparams_/session_start_info") ++session_starts;
      });
    });
    at += 12 + length + 4;
  }
  out << "tb session starts " << session_starts << "\n";
  const std::filesystem::path run = trainer.template callback<MLFlowLogger>().run_dir();
  std::vector<std::filesystem::path> metrics;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(run / "metrics"))
    if (entry.is_regular_file()) metrics.push_back(entry.path());
  std::sort(metrics.begin(), metrics.end());
  for (const auto& path : metrics) {
    std::istringstream lines(file_text(path));
    for (std::string line; std::getline(lines, line);) out << "mlflow " << path.filename().string() << line.substr(line.find(' ')) << "\n";
  }
}

// The training examples as a user's dataset: each read augmented with noise and a flip from the example's generator.
struct AugmentedDataset {
  torch::Tensor x, y;
  std::int64_t size() const { return x.size(0); }
  std::pair<torch::Tensor, std::int64_t> get(std::size_t index, torch::Generator& generator) const {
    const auto i = static_cast<std::int64_t>(index);
    const torch::Tensor noisy = x[i] + 0.1 * torch::randn({4}, generator);
    return {transforms::RandomHorizontalFlip{0.5}(noisy.view({1, 1, 4}), generator).view({4}), y[i].item<std::int64_t>()};
  }
};

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const std::string dir = argv[1], fingerprint = argv[2];
  KillPlan plan;
  std::string resume_from, announce;
  std::int64_t epochs = 4;
  std::string precision = "32";
  std::int64_t workers = -1;  // -1: a TensorDataset
  bool stream = false;
  for (int i = 3; i < argc; ++i) {
    if (std::strcmp(argv[i], "--kill") == 0 && i + 1 < argc) {
      const std::string spec = argv[++i];
      plan.point = spec.substr(0, spec.find(':'));
      plan.at = std::stoi(spec.substr(spec.find(':') + 1));
    } else if (std::strcmp(argv[i], "--resume") == 0) {
      resume_from = i + 1 < argc && argv[i + 1][0] != '-' ? argv[++i] : "last";
    } else if (std::strcmp(argv[i], "--announce") == 0 && i + 1 < argc) {
      announce = argv[++i];
    } else if (std::strcmp(argv[i], "--epochs") == 0 && i + 1 < argc) {
      epochs = std::stoll(argv[++i]);
    } else if (std::strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
      workers = std::stoll(argv[++i]);
    } else if (std::strcmp(argv[i], "--stream") == 0) {
      stream = true;
    } else if (std::strcmp(argv[i], "--precision") == 0 && i + 1 < argc) {
      precision = argv[++i];
    } else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  torch::manual_seed(123);
  const torch::Tensor x = torch::randn({96, 4});
  const torch::Tensor y = (x.sum(1) > 0).to(torch::kLong) + (x.select(1, 0) > 1).to(torch::kLong);
  const torch::Tensor val_x = torch::randn({32, 4});
  const torch::Tensor val_y = (val_x.sum(1) > 0).to(torch::kLong) + (val_x.select(1, 0) > 1).to(torch::kLong);
  // Trains on the loader made below (a TensorDataset's, or the user dataset's) and writes the fingerprint.
  auto train = [&](auto& loader) -> int {
    DataLoader val_loader(TensorDataset(val_x, val_y), DataLoaderOptions().batch_size(16));
    Net net;  // initialised from the same seed in every process; a resume overwrites it from the checkpoint anyway

    ModelCheckpoint::Options every_step;
    every_step.dirpath = dir;
    every_step.every_n_train_steps = 1;
    every_step.save_top_k = 0;
    every_step.save_last = true;
    Preemption::Options on_signal;
    on_signal.path = dir + "/preempted.ckpt";
    EarlyStopping::Options early;
    early.monitor = "val_loss";
    early.patience = 3;
    early.min_delta = 0.01;
    EMA::Options ema;
    ema.decay = 0.9;
    ema.copy_to_model_at_end = false;  // the trained weights stay in the model, so after_fit.ckpt resumes training
    VersionedLoggerOptions logs;
    logs.save_dir = dir + "/logs";
    MLFlowLogger::Options mlflow;
    mlflow.tracking_dir = dir + "/mlruns";
    TrainerOptions options = TrainerOptions().barebones(true).accelerator("cpu").max_epochs(epochs).val_check_interval(0.5)
                                 .num_sanity_val_steps(1).deterministic(true).seed(0).log_every_n_steps(1);
#if TRAINLOOP_WITH_AMP
    if (precision == "bf16-scaled") {  // bf16 autocast with the loss scaler forced on: skips, back-offs and growth
      options.precision("bf16-mixed").grad_scaler(amp::GradScalerOptions().init_scale(1 << 20).growth_interval(3));
      net.inject_inf = true;
    } else {
      options.precision(precision);
    }
#else
    options.precision(precision);
#endif
    Trainer trainer(options,
                    KillBefore{&plan, dir}, EarlyStopping(early), EMA(ema), Announce{announce},
                    ModelCheckpoint(every_step), KillAfter{&plan}, Preemption(on_signal), CSVLogger(logs),
                    JSONLinesLogger(logs), TensorBoardLogger(logs), MLFlowLogger(mlflow));
    trainer.fit(net, loader, val_loader, resume_from);
    trainer.save_checkpoint(dir + "/after_fit.ckpt");

    std::ofstream out(fingerprint);
    for (const auto& p : net.named_parameters()) out << "param " << p.key() << " " << hex(p.value()) << "\n";
    for (const auto& group : net.optimizer->param_groups()) out << "lr " << hex(torch::tensor(group.options().get_lr(), torch::kFloat64)) << "\n";
    for (const auto& p : net.parameters()) {
      const auto& state = static_cast<const torch::optim::AdamParamState&>(
          *net.optimizer->state().at(c10::guts::to_string(p.unsafeGetTensorImpl())));
      out << "adam step=" << state.step() << " " << hex(state.exp_avg()) << " " << hex(state.exp_avg_sq()) << "\n";
    }
    for (const auto& [name, tensor] : trainer.template callback<EMA>().tensor_state()) out << "ema " << name << " " << hex(tensor) << "\n";
    out << "ema_state" << text(trainer.template callback<EMA>().state_dict()) << "\n";
    out << "early_stopping" << text(trainer.template callback<EarlyStopping>().state_dict()) << "\n";
    out << "loader" << text(loader.state_dict()) << "\n";
    out << "counters epoch=" << trainer.current_epoch() << " step=" << trainer.global_step()
        << " batches=" << trainer.total_batches() << " skipped=" << trainer.skipped_steps() << "\n";
#if TRAINLOOP_WITH_AMP
    if (auto* scaler = trainer.grad_scaler()) out << "grad_scaler" << text(scaler->state_dict()) << "\n";
#endif
    for (const auto& [name, value] : trainer.callback_metrics()) out << "metric " << name << " " << hex(value) << "\n";
    out << "rng " << hex(torch::randn({4})) << "\n";
    write_logs(out, trainer);
    return out.good() ? 0 : 1;
  };
  const DataLoaderOptions train_options = DataLoaderOptions().batch_size(8).shuffle(true).seed(7);
  if (stream) {  // the examples as 24-byte records (4 floats, an int64 label) in three files of 40, 0 and 56 records
    const std::string records = dir + "/records";
    std::filesystem::create_directories(records);
    std::vector<std::string> files;
    std::int64_t next = 0;
    for (std::int64_t count : {40, 0, 56}) {
      files.push_back(records + "/part" + std::to_string(files.size()) + ".bin");
      std::ofstream out(files.back(), std::ios::binary);
      for (std::int64_t i = next; i < next + count; ++i) {
        const std::int64_t label = y[i].item<std::int64_t>();
        out.write(static_cast<const char*>(x[i].contiguous().data_ptr()), 16).write(reinterpret_cast<const char*>(&label), 8);
      }
      next += count;
    }
    auto parse = [](const std::string& record, torch::Generator& generator) {
      torch::Tensor features = torch::from_blob(const_cast<char*>(record.data()), {4}, torch::kFloat).clone();
      std::int64_t label = 0;
      std::memcpy(&label, record.data() + 16, 8);
      return std::make_pair(features + 0.1 * torch::randn({4}, generator), label);
    };
    StreamLoader loader(files, FixedSizeRecords(24), parse, StreamLoaderOptions().batch_size(8).workers(2).shuffle_buffer(20).seed(7));
    return train(loader);
  }
  if (workers >= 0) {
    DataLoader loader(AugmentedDataset{x, y}, DataLoaderOptions(train_options).workers(workers));
    return train(loader);
  }
  DataLoader loader(TensorDataset(x, y), train_options);
  return train(loader);
}
