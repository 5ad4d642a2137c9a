// trainloop: MLFlowLogger, writing MLflow's file store (what `mlflow ui --backend-store-uri ./mlruns` reads) directly:
//   mlruns/<experiment_id>/meta.yaml
//   mlruns/<experiment_id>/<run_id>/meta.yaml, metrics/<name>, params/<name>, tags/<name>, artifacts/
#pragma once
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>
// Headers only the definitions use: a separately compiled TU does not parse them.
#if TRAINLOOP_DETAIL_DEFINE_API
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <random>
#endif

TRAINLOOP_DETAIL_BEGIN

namespace detail {
/// A random (version 4) UUID as 32 lowercase hex digits, MLflow's run id.
TRAINLOOP_DETAIL_API std::string uuid4_hex();
// One UTF-8 code point at text[i]: its length, or 0 when the bytes there are not UTF-8.
TRAINLOOP_DETAIL_API std::size_t utf8_code_point(const std::string& text, std::size_t i, char32_t& cp);
// Python's \w for a code point beyond ASCII: letters and digits are, punctuation, symbols, marks, spaces and emoji
// are not. A table of the blocks and Latin-1 characters that are not word characters: close to Python's rule, which
// also excludes the combining marks of other scripts (Indic vowel signs, Hebrew and Arabic points) kept here.
TRAINLOOP_DETAIL_API bool is_unicode_word(char32_t cp);
/// The file name MLflow's rule gives a metric, param or tag name (mlflow/utils/validation.py): letters and digits
/// (Unicode's too), '_', '-', '.', ' ', ':' and '/' are kept, anything else becomes '_' (one per character); a name
/// that MLflow refuses as a path (empty, longer than 250, a leading '/', a leading "..", an empty, "." or ".." part,
/// so no "a//b", "x/./y" or trailing '/') is an error naming it. '/' nests: "train/loss" is metrics/train/loss.
TRAINLOOP_DETAIL_API std::string mlflow_key(const std::string& name, const std::string& kind);
inline std::string file_uri(const std::filesystem::path& path) { return "file://" + std::filesystem::absolute(path).lexically_normal().string(); }
// Creates the folders a nested name ("train/loss") needs below `base`.
TRAINLOOP_DETAIL_API void make_parent_dirs(const std::filesystem::path& path, const std::string& who);
}  // namespace detail

/// The run is created at the first write (status RUNNING = 1, start_time in ms), gets params from the
/// hyperparameters, metric lines `<timestamp_ms> <value> <step>` (appended, flushed at most `flush_interval` after
/// a record), and ends FINISHED (3) or FAILED (4) with its end_time at finalize, once (a failed write ends it FAILED,
/// and nothing written is written again); a record logged after finalize reopens it (RUNNING), as MLflow's
/// start_run(run_id) does, and the destructor ends a run left open. Names follow MLflow's rule (see mlflow_key);
/// two names that the rule maps to the same file are an error. The experiment is found by name among
/// mlruns/*/meta.yaml (names read as YAML scalars, as MLflow writes them) or created with the next free id;
/// experiment 0 "Default" is created when absent, as MLflow does. A fit resumed from a checkpoint continues the
/// checkpoint's run (same run id), each metric cut back to the lines written before the checkpoint. Rank 0 only.
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

  TRAINLOOP_DETAIL_API MLFlowLogger();
  TRAINLOOP_DETAIL_API explicit MLFlowLogger(Options options);
  MLFlowLogger(MLFlowLogger&&) = default;
  MLFlowLogger& operator=(MLFlowLogger&&) = default;
  TRAINLOOP_DETAIL_API ~MLFlowLogger();

  /// Creates the run now (idempotent).
  void start() { open(); }
  const std::string& run_id() const noexcept { return run_id_; }
  const std::string& experiment_id() const noexcept { return experiment_id_; }
  const std::filesystem::path& run_dir() const noexcept { return run_dir_; }

  /// Proves the tracking folder writable before any training; the run starts at the first write.
  template <class T, class M>
  void setup(T&, M&, const std::string&) {
    if (!started_ && detail::process_rank() == 0) detail::make_writable_dir(options_.tracking_dir, who);
  }
  /// Params, one file each, the value without a trailing newline (as Python's str() writes it: 3.0 stays "3.0").
  /// MLflow refuses to change a logged param, and so does this logger.
  TRAINLOOP_DETAIL_API void log_hyperparams(const StateDict& params);
  TRAINLOOP_DETAIL_API void log_metrics(std::int64_t step, const std::map<std::string, double>& metrics);
  /// "success" ends the run FINISHED, anything else FAILED; so does a write that fails here (its error is thrown
  /// after the run is marked). A run already ended is left as it is.
  TRAINLOOP_DETAIL_API void finalize(const std::string& status);
  /// Appends the lines waiting. A metric's lines leave the queue once written and a failing file does not stop the
  /// others, so a failure writes nothing twice and loses only what could not be written; the first error is thrown.
  TRAINLOOP_DETAIL_API void flush();

  /// For the Trainer's checkpoints (which flush the loggers first): the run and how many lines each metric holds.
  TRAINLOOP_DETAIL_API StateDict state_dict() const;
  /// Continues the checkpoint's run (when it is still in the tracking folder), each metric keeping the lines written
  /// before the checkpoint; a run this logger has open is ended first.
  TRAINLOOP_DETAIL_API void load_state_dict(const StateDict& state);

 private:
  enum Kind { metric, param, tag };
  struct Resume {
    std::string experiment_id, run_id;
    std::map<std::string, std::int64_t> lines;
  };
  static constexpr const char* who = "MLFlowLogger";

  // The file a name is written to, checked once per name; two names sharing a file are refused.
  TRAINLOOP_DETAIL_API const std::string& key_file(Kind kind, const std::string& name);

  // Starts the run the first time (rank 0 only): the checkpoint's when resuming and it still exists, else a new one.
  TRAINLOOP_DETAIL_API bool open();
  TRAINLOOP_DETAIL_API void write_params();
  TRAINLOOP_DETAIL_API void write_entry(const char* folder, const std::string& file, const std::string& value);
  // Each metric file keeps its first `lines[file]` lines (none: the file goes).
  TRAINLOOP_DETAIL_API void cut_metrics_back(const std::map<std::string, std::int64_t>& lines);
  TRAINLOOP_DETAIL_API static void write_experiment(const std::filesystem::path& root, const std::string& id,
                                                    const std::string& name);
  // An active experiment whose meta.yaml names options_.experiment_name, or a new one numbered after the largest id.
  TRAINLOOP_DETAIL_API std::string find_or_create_experiment(const std::filesystem::path& root);
  // Every field MLflow's FileStore reads; run_id and run_uuid both (MLflow 2 and 3), status an integer.
  TRAINLOOP_DETAIL_API void write_run_meta(Status status, std::optional<std::int64_t> end_time);

  Options options_;
  detail::FlushClock flush_clock_;
  detail::OwnershipFlag started_;
  bool finalized_ = false;
  std::string experiment_id_, run_id_;
  std::filesystem::path run_dir_;
  std::int64_t start_time_ = 0;
  std::optional<StateDict> params_;
  std::map<std::string, std::string> files_[3];        // per kind: name -> file under MLflow's rule
  std::map<std::string, std::string> pending_;         // metric file -> lines not yet on disk
  std::map<std::string, std::int64_t> lines_;          // metric file -> lines in the run (on disk and pending)
  std::optional<Resume> resume_;                       // the checkpoint's run, continued at the next write
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API MLFlowLogger::MLFlowLogger() : MLFlowLogger(Options{}) {}

TRAINLOOP_DETAIL_API MLFlowLogger::MLFlowLogger(Options options)
    : options_(std::move(options)), flush_clock_(options_.flush_interval) {
  for (const auto& [key, value] : options_.tags) key_file(tag, key);
}

TRAINLOOP_DETAIL_API MLFlowLogger::~MLFlowLogger() {
  if (!started_ || finalized_) return;
  try {
    finalize(std::uncaught_exceptions() > 0 ? "failed" : "success");
  } catch (...) {  // finalize reports write errors; a destructor must not throw
  }
}

namespace detail {
TRAINLOOP_DETAIL_API std::string uuid4_hex() {
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
TRAINLOOP_DETAIL_API std::size_t utf8_code_point(const std::string& text, std::size_t i, char32_t& cp) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  const std::size_t length = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 0;
  if (length == 0 || i + length > text.size()) return 0;
  cp = length == 1 ? lead : lead & (0x7F >> length);
  for (std::size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  return length;
}
TRAINLOOP_DETAIL_API bool is_unicode_word(char32_t cp) {
  static constexpr char32_t non_word[][2] = {
      {0x80, 0xA9},     {0xAB, 0xB1},     {0xB4, 0xB4},     {0xB6, 0xB8},     {0xBB, 0xBB},   {0xBF, 0xBF},
      {0xD7, 0xD7},     {0xF7, 0xF7},     {0x2C2, 0x2C5},   {0x2D2, 0x2DF},   {0x2E5, 0x2EB}, {0x2ED, 0x2ED},
      {0x2EF, 0x36F},   {0x37E, 0x37E},   {0x384, 0x385},   {0x387, 0x387},   {0x483, 0x489}, {0x55A, 0x55F},
      {0x589, 0x58A},   {0x5BE, 0x5BE},   {0x5C0, 0x5C0},   {0x5C3, 0x5C3},   {0x5F3, 0x5F4}, {0x600, 0x61F},
      {0x64B, 0x65F},   {0x66A, 0x66D},   {0x6D4, 0x6D4},   {0x964, 0x965},   {0xE3F, 0xE3F}, {0x1680, 0x1680},
      {0x2000, 0x206F}, {0x20A0, 0x20FF}, {0x2190, 0x245F}, {0x2500, 0x2775}, {0x2794, 0x2BFF}, {0x2E00, 0x2E7F},
      {0x3000, 0x3004}, {0x3008, 0x3020}, {0x3030, 0x3030}, {0x303D, 0x303F}, {0xD800, 0xF8FF}, {0xFE00, 0xFE0F},
      {0xFE10, 0xFE6F}, {0xFEFF, 0xFEFF}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF20}, {0xFF3B, 0xFF40}, {0xFF5B, 0xFF65},
      {0xFFE0, 0xFFFF}, {0x1F000, 0x1FAFF}, {0xE0000, 0x10FFFF}};
  for (const auto& range : non_word)
    if (cp >= range[0] && cp <= range[1]) return false;
  return true;
}
TRAINLOOP_DETAIL_API std::string mlflow_key(const std::string& name, const std::string& kind) {
  std::string key;
  for (std::size_t i = 0; i < name.size();) {
    char32_t cp = 0;
    const std::size_t length = utf8_code_point(name, i, cp);
    const bool ascii_word = length == 1 && (std::isalnum(static_cast<unsigned char>(cp)) || std::strchr("_-. :/", static_cast<int>(cp)));
    if (length > 1 ? is_unicode_word(cp) : ascii_word && cp != 0) key.append(name, i, length);
    else key += '_';
    i += length ? length : 1;
  }
  const auto refuse = [&](const std::string& why) {
    return std::invalid_argument("trainloop: MLFlowLogger: invalid " + kind + " name '" + name + "': " + why);
  };
  if (key.size() > 250) throw refuse("MLflow allows at most 250 characters");
  bool bad_path = key.empty() || key[0] == '/' || key.rfind("..", 0) == 0;
  for (std::size_t begin = 0; !bad_path && begin <= key.size();) {
    const std::size_t end = std::min(key.find('/', begin), key.size());
    const std::string part = key.substr(begin, end - begin);
    bad_path = part.empty() || part == "." || part == "..";
    begin = end + 1;
  }
  if (bad_path)
    throw refuse("MLflow stores names as file paths and refuses one that is empty, starts with '/' or '..', or has an "
                 "empty, '.' or '..' part (as in 'a//b', 'x/./y' or a trailing '/')");
  return key;
}
TRAINLOOP_DETAIL_API void make_parent_dirs(const std::filesystem::path& path, const std::string& who) {
  std::error_code error;
  std::filesystem::create_directories(path.parent_path(), error);
  if (error) throw log_dir_error(who, path.parent_path(), error.message());
}
}  // namespace detail
TRAINLOOP_DETAIL_API void MLFlowLogger::log_hyperparams(const StateDict& params) {
  for (const auto& [key, value] : params) key_file(param, key);
  params_ = params;
  if (started_) write_params();
}
TRAINLOOP_DETAIL_API void MLFlowLogger::log_metrics(std::int64_t step, const std::map<std::string, double>& metrics) {
  for (const auto& [name, value] : metrics) key_file(metric, name);
  if (!open()) return;
  if (finalized_) {  // a record after finalize: the run goes on
    finalized_ = false;
    write_run_meta(running, std::nullopt);
  }
  const std::string stamp = std::to_string(detail::unix_millis());
  for (const auto& [name, value] : metrics) {
    const std::string& file = key_file(metric, name);
    pending_[file] += stamp + " " + detail::format_number(value) + " " + std::to_string(step) + "\n";
    ++lines_[file];
  }
  if (flush_clock_.due()) flush();
}
TRAINLOOP_DETAIL_API void MLFlowLogger::finalize(const std::string& status) {
  if (!open() || finalized_) return;
  std::exception_ptr error;
  try {
    flush();
  } catch (...) {
    error = std::current_exception();
  }
  write_run_meta(status == "success" && !error ? finished : failed, detail::unix_millis());
  finalized_ = true;
  if (error) std::rethrow_exception(error);
}
TRAINLOOP_DETAIL_API void MLFlowLogger::flush() {
  flush_clock_.flushed();
  if (!started_) return;
  std::exception_ptr error;
  for (auto it = pending_.begin(); it != pending_.end();) {
    try {
      const std::filesystem::path path = run_dir_ / "metrics" / it->first;
      detail::make_parent_dirs(path, who);
      detail::append_to_file(path, it->second, who);
      it = pending_.erase(it);
    } catch (...) {
      if (!error) error = std::current_exception();
      ++it;
    }
  }
  if (error) std::rethrow_exception(error);
}
TRAINLOOP_DETAIL_API StateDict MLFlowLogger::state_dict() const {
  if (!started_) return {};
  StateDict state{{"experiment_id", experiment_id_}, {"run_id", run_id_}};
  for (const auto& [file, lines] : lines_) state["metric_lines/" + file] = lines;
  return state;
}
TRAINLOOP_DETAIL_API void MLFlowLogger::load_state_dict(const StateDict& state) {
  Resume resume;
  for (const auto& [key, value] : state) {
    const auto* text = std::get_if<std::string>(&value);
    if (key == "experiment_id" && text) resume.experiment_id = *text;
    else if (key == "run_id" && text) resume.run_id = *text;
    else if (key.rfind("metric_lines/", 0) == 0) resume.lines[key.substr(13)] = detail::state_int(state, key, who);
  }
  if (resume.run_id.size() != 32 || resume.run_id.find_first_not_of("0123456789abcdef") != std::string::npos ||
      resume.experiment_id.empty() || resume.experiment_id.find_first_of("/.") != std::string::npos)
    throw std::runtime_error("trainloop: MLFlowLogger: checkpoint state keys 'run_id'/'experiment_id' are missing or malformed");
  if (started_ && run_id_ != resume.run_id) {
    finalize("success");
    started_.reset();
  }
  resume_ = std::move(resume);
  if (started_) {  // the same run: cut it back now
    flush();
    cut_metrics_back(resume_->lines);
    resume_.reset();
  }
}
TRAINLOOP_DETAIL_API const std::string& MLFlowLogger::key_file(Kind kind, const std::string& name) {
  static const char* const kinds[] = {"metric", "param", "tag"};
  auto& known = files_[kind];
  auto it = known.find(name);
  if (it != known.end()) return it->second;
  std::string file = detail::mlflow_key(name, kinds[kind]);
  for (const auto& [other, other_file] : known)
    if (other_file == file)
      throw std::invalid_argument(std::string("trainloop: MLFlowLogger: the ") + kinds[kind] + " names '" + other +
                                  "' and '" + name + "' would both be written as '" + file +
                                  "' (MLflow's naming rule); rename one");
  return known.emplace(name, std::move(file)).first->second;
}
TRAINLOOP_DETAIL_API bool MLFlowLogger::open() {
  if (started_) return true;
  if (detail::process_rank() != 0) return false;
  const std::filesystem::path root = options_.tracking_dir;
  detail::make_writable_dir(root, who);
  if (!std::filesystem::exists(root / "0" / "meta.yaml")) write_experiment(root, "0", "Default");
  finalized_ = false;
  lines_.clear();
  if (resume_ && std::filesystem::exists(root / resume_->experiment_id / resume_->run_id / "meta.yaml")) {
    experiment_id_ = resume_->experiment_id;
    run_id_ = resume_->run_id;
    run_dir_ = root / experiment_id_ / run_id_;
    const auto start = detail::yaml_top_level_value(detail::read_file_text(run_dir_ / "meta.yaml"), "start_time");
    start_time_ = start ? std::atoll(start->c_str()) : detail::unix_millis();
    started_.set();
    cut_metrics_back(resume_->lines);
    write_run_meta(running, std::nullopt);
  } else {
    experiment_id_ = find_or_create_experiment(root);
    run_id_ = detail::uuid4_hex();
    run_dir_ = root / experiment_id_ / run_id_;
    for (const char* sub : {"metrics", "params", "tags", "artifacts"}) detail::make_writable_dir(run_dir_ / sub, who);
    start_time_ = detail::unix_millis();
    started_.set();
    write_run_meta(running, std::nullopt);
    const char* user = std::getenv("USER");
    std::map<std::string, std::string> tags{{"mlflow.user", user ? user : "unknown"}, {"mlflow.source.type", "LOCAL"}};
    if (!options_.run_name.empty()) tags["mlflow.runName"] = options_.run_name;
    for (const auto& [key, value] : options_.tags) tags[key] = value;
    for (const auto& [key, value] : tags) write_entry("tags", key_file(tag, key), value);
  }
  resume_.reset();
  if (params_) write_params();
  return true;
}
TRAINLOOP_DETAIL_API void MLFlowLogger::write_params() {
  for (const auto& [key, value] : *params_) {
    const std::string& file = key_file(param, key);
    const std::string text = detail::format_value(value);
    const std::filesystem::path path = run_dir_ / "params" / file;
    if (std::filesystem::exists(path) && detail::read_file_text(path) != text)
      throw std::invalid_argument("trainloop: MLFlowLogger: param '" + key + "' was logged as '" +
                                  detail::read_file_text(path) + "' in run " + run_id_ + "; MLflow does not allow "
                                  "changing it to '" + text + "'");
    write_entry("params", file, text);
  }
}
TRAINLOOP_DETAIL_API void MLFlowLogger::write_entry(const char* folder, const std::string& file,
                                                    const std::string& value) {
  const std::filesystem::path path = run_dir_ / folder / file;
  detail::make_parent_dirs(path, who);
  detail::write_file_atomically(path, value, who);
}
TRAINLOOP_DETAIL_API void MLFlowLogger::cut_metrics_back(const std::map<std::string, std::int64_t>& lines) {
  const std::filesystem::path metrics = run_dir_ / "metrics";
  std::vector<std::filesystem::path> files;
  std::error_code error;
  for (auto it = std::filesystem::recursive_directory_iterator(metrics, error);
       !error && it != std::filesystem::recursive_directory_iterator(); it.increment(error))
    if (it->is_regular_file()) files.push_back(it->path());
  lines_.clear();
  for (const auto& path : files) {
    const std::string file = path.lexically_relative(metrics).generic_string();
    auto wanted = lines.find(file);
    if (wanted == lines.end()) {  // born after the checkpoint
      std::filesystem::remove(path, error);
      continue;
    }
    const std::int64_t kept = detail::cut_back_file(path, wanted->second, detail::lines_prefix(), who);
    if (kept > 0) lines_[file] = kept;
    else std::filesystem::remove(path, error);  // MLflow cannot read an empty metric file
  }
}
TRAINLOOP_DETAIL_API void MLFlowLogger::write_experiment(const std::filesystem::path& root, const std::string& id,
                                                         const std::string& name) {
  detail::make_writable_dir(root / id, who);
  const std::string now = std::to_string(detail::unix_millis());
  detail::write_file_atomically(root / id / "meta.yaml",
                                "artifact_location: " + detail::file_uri(root / id) + "\ncreation_time: " + now +
                                    "\nexperiment_id: '" + id + "'\nlast_update_time: " + now +
                                    "\nlifecycle_stage: active\nname: " + detail::yaml_string(name) + "\n",
                                who);
}
TRAINLOOP_DETAIL_API std::string MLFlowLogger::find_or_create_experiment(const std::filesystem::path& root) {
  std::int64_t largest = 0;
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    const std::string id = entry.path().filename().string();
    if (!entry.is_directory() || id.empty() || id.size() > 18 || id.find_first_not_of("0123456789") != std::string::npos) continue;
    largest = std::max<std::int64_t>(largest, std::stoll(id));
    const std::string meta = detail::read_file_text(entry.path() / "meta.yaml");
    if (detail::yaml_top_level_value(meta, "name") == options_.experiment_name &&
        detail::yaml_top_level_value(meta, "lifecycle_stage").value_or("active") == "active")
      return id;
  }
  const std::string id = std::to_string(largest + 1);
  write_experiment(root, id, options_.experiment_name);
  return id;
}
TRAINLOOP_DETAIL_API void MLFlowLogger::write_run_meta(Status status, std::optional<std::int64_t> end_time) {
  const std::string meta =
      "artifact_uri: " + detail::file_uri(run_dir_ / "artifacts") + "\nend_time: " +
      (end_time ? std::to_string(*end_time) : std::string("null")) +
      "\nentry_point_name: ''\nexperiment_id: '" + experiment_id_ + "'\nlifecycle_stage: active\nrun_id: " + run_id_ +
      "\nrun_name: " + detail::yaml_string(options_.run_name) + "\nrun_uuid: " + run_id_ +
      "\nsource_name: ''\nsource_type: 4\nsource_version: ''\nstart_time: " + std::to_string(start_time_) +
      "\nstatus: " + std::to_string(static_cast<int>(status)) + "\ntags: []\nuser_id: " +
      detail::yaml_string(std::getenv("USER") ? std::getenv("USER") : "unknown") + "\n";
  detail::write_file_atomically(run_dir_ / "meta.yaml", meta, who);
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
