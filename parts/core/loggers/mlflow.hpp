// trainloop: MLFlowLogger, writing MLflow's file store (what `mlflow ui --backend-store-uri ./mlruns` reads) directly:
//   mlruns/<experiment_id>/meta.yaml
//   mlruns/<experiment_id>/<run_id>/meta.yaml, metrics/<name>, params/<name>, tags/<name>, artifacts/
#pragma once
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

TRAINLOOP_DETAIL_BEGIN

namespace detail {
/// A random (version 4) UUID as 32 lowercase hex digits, MLflow's run id.
inline std::string uuid4_hex() {
  std::random_device device;
  std::mt19937_64 generator((static_cast<std::uint64_t>(device()) << 32) ^ device() ^
                            static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  unsigned char bytes[16];
  for (int i = 0; i < 16; i += 8) {
    const std::uint64_t r = generator();
    for (int k = 0; k < 8; ++k) bytes[i + k] = static_cast<unsigned char>(r >> (8 * k));
  }
  bytes[6] = static_cast<unsigned char>((bytes[6] & 0x0F) | 0x40);  // version 4
  bytes[8] = static_cast<unsigned char>((bytes[8] & 0x3F) | 0x80);  // RFC 4122 variant
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += hex[b >> 4];
    out += hex[b & 0x0F];
  }
  return out;
}
/// MLflow accepts metric, param and tag names of letters, digits, '_', '-', '.', '/' and ' '; others become '_'.
inline std::string mlflow_name(const std::string& name) {
  std::string out = name;
  for (char& c : out)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == '/' || c == ' ')) c = '_';
  return out;
}
inline std::string file_uri(const std::filesystem::path& path) { return "file://" + std::filesystem::absolute(path).lexically_normal().string(); }
inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}
}  // namespace detail

/// The run is created when the logger starts (status RUNNING = 1, start_time in ms), gets params from the
/// hyperparameters, metric lines `<timestamp_ms> <value> <step>` (appended, flushed at most `flush_interval` after
/// a record), and ends FINISHED (3) or FAILED (4) with its end_time at finalize. The experiment is found by name among
/// mlruns/*/meta.yaml or created with the next free id; experiment 0 "Default" is created when absent, as MLflow
/// does. Names with characters MLflow rejects are written with '_' in their place. Rank 0 only.
class MLFlowLogger {
 public:
  struct Options {
    std::string tracking_dir = "mlruns";
    std::string experiment_name = "Default";
    std::string run_name;  ///< empty: none (the UI shows the run id)
    std::map<std::string, std::string> tags;
    std::chrono::duration<double> flush_interval = std::chrono::seconds(10);
  };
  enum Status { running = 1, finished = 3, failed = 4 };

  MLFlowLogger() : MLFlowLogger(Options{}) {}
  explicit MLFlowLogger(Options options) : options_(std::move(options)), flush_clock_(options_.flush_interval) {}
  MLFlowLogger(MLFlowLogger&&) = default;
  MLFlowLogger& operator=(MLFlowLogger&&) = default;
  ~MLFlowLogger() {
    try {
      flush();
    } catch (...) {  // finalize reports write errors; a destructor must not throw
    }
  }

  void start() {
    if (started_ || detail::process_rank() != 0) return;
    const std::filesystem::path root = options_.tracking_dir;
    detail::make_writable_dir(root, "MLFlowLogger");
    if (!std::filesystem::exists(root / "0" / "meta.yaml")) write_experiment(root, "0", "Default");
    experiment_id_ = find_or_create_experiment(root);
    run_id_ = detail::uuid4_hex();
    run_dir_ = root / experiment_id_ / run_id_;
    for (const char* sub : {"metrics", "params", "tags", "artifacts"}) detail::make_writable_dir(run_dir_ / sub, "MLFlowLogger");
    start_time_ = detail::unix_millis();
    started_.set();
    write_run_meta(running, std::nullopt);
    const char* user = std::getenv("USER");
    std::map<std::string, std::string> tags{{"mlflow.user", user ? user : "unknown"}, {"mlflow.source.type", "LOCAL"}};
    if (!options_.run_name.empty()) tags["mlflow.runName"] = options_.run_name;
    for (const auto& [key, value] : options_.tags) tags[key] = value;
    for (const auto& [key, value] : tags)
      detail::write_file_atomically(run_dir_ / "tags" / detail::mlflow_name(key), value, "MLFlowLogger");
  }
  const std::string& run_id() const noexcept { return run_id_; }
  const std::string& experiment_id() const noexcept { return experiment_id_; }
  const std::filesystem::path& run_dir() const noexcept { return run_dir_; }

  template <class T, class M>
  void setup(T&, M&, const std::string&) {
    start();
  }
  /// Params, one file each, the value without a trailing newline.
  void log_hyperparams(const StateDict& params) {
    start();
    if (!started_) return;
    for (const auto& [key, value] : params)
      detail::write_file_atomically(run_dir_ / "params" / detail::mlflow_name(key), detail::format_value(value), "MLFlowLogger");
  }
  void log_metrics(std::int64_t step, const std::map<std::string, double>& metrics) {
    start();
    if (!started_) return;
    const std::string stamp = std::to_string(detail::unix_millis());
    for (const auto& [name, value] : metrics)
      pending_[detail::mlflow_name(name)] += stamp + " " + detail::format_number(value) + " " + std::to_string(step) + "\n";
    if (flush_clock_.due()) flush();
  }
  /// "success" ends the run FINISHED, anything else FAILED.
  void finalize(const std::string& status) {
    flush();
    if (started_) write_run_meta(status == "success" ? finished : failed, detail::unix_millis());
  }
  void flush() {
    flush_clock_.flushed();
    if (!started_) return;
    for (const auto& [name, lines] : pending_) detail::append_to_file(run_dir_ / "metrics" / name, lines, "MLFlowLogger");
    pending_.clear();
  }

 private:
  static void write_experiment(const std::filesystem::path& root, const std::string& id, const std::string& name) {
    detail::make_writable_dir(root / id, "MLFlowLogger");
    const std::string now = std::to_string(detail::unix_millis());
    detail::write_file_atomically(root / id / "meta.yaml",
                                  "artifact_location: " + detail::file_uri(root / id) + "\ncreation_time: " + now +
                                      "\nexperiment_id: '" + id + "'\nlast_update_time: " + now +
                                      "\nlifecycle_stage: active\nname: " + detail::yaml_scalar(name, true) + "\n",
                                  "MLFlowLogger");
  }
  // An experiment whose meta.yaml names options_.experiment_name, or a new one numbered after the largest id.
  std::string find_or_create_experiment(const std::filesystem::path& root) {
    const std::string wanted = "name: " + detail::yaml_scalar(options_.experiment_name, true) + "\n";
    const std::string wanted_plain = "name: " + options_.experiment_name + "\n";
    std::int64_t largest = 0;
    for (const auto& entry : std::filesystem::directory_iterator(root)) {
      const std::string id = entry.path().filename().string();
      if (!entry.is_directory() || id.empty() || id.find_first_not_of("0123456789") != std::string::npos) continue;
      largest = std::max<std::int64_t>(largest, std::stoll(id));
      const std::string meta = detail::read_text(entry.path() / "meta.yaml");
      if (meta.find("\n" + wanted) != std::string::npos || meta.find("\n" + wanted_plain) != std::string::npos) return id;
    }
    const std::string id = std::to_string(largest + 1);
    write_experiment(root, id, options_.experiment_name);
    return id;
  }
  // Every field MLflow's FileStore reads; run_id and run_uuid both (MLflow 2 and 3), status an integer.
  void write_run_meta(Status status, std::optional<std::int64_t> end_time) {
    const std::string meta =
        "artifact_uri: " + detail::file_uri(run_dir_ / "artifacts") + "\nend_time: " +
        (end_time ? std::to_string(*end_time) : std::string("null")) +
        "\nentry_point_name: ''\nexperiment_id: '" + experiment_id_ + "'\nlifecycle_stage: active\nrun_id: " + run_id_ +
        "\nrun_name: " + detail::yaml_scalar(options_.run_name, true) + "\nrun_uuid: " + run_id_ +
        "\nsource_name: ''\nsource_type: 4\nsource_version: ''\nstart_time: " + std::to_string(start_time_) +
        "\nstatus: " + std::to_string(static_cast<int>(status)) + "\ntags: []\nuser_id: " +
        detail::yaml_scalar(std::getenv("USER") ? std::getenv("USER") : "unknown", true) + "\n";
    detail::write_file_atomically(run_dir_ / "meta.yaml", meta, "MLFlowLogger");
  }

  Options options_;
  detail::FlushClock flush_clock_;
  detail::OwnershipFlag started_;
  std::string experiment_id_, run_id_;
  std::filesystem::path run_dir_;
  std::int64_t start_time_ = 0;
  std::map<std::string, std::string> pending_;  // metric file -> lines not yet on disk
};

TRAINLOOP_DETAIL_END
