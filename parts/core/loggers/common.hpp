// trainloop: what every logger shares: the rank check (only rank 0 writes), run folders versioned like Lightning's
// (<save_dir>/<name>/version_<n>, the next free n), folder checks that fail before training with the path and the
// reason, numbers written so they read back exactly, whole-file writes that never leave a torn file, the flush clock.
// A logger is a callback with log_metrics(step, {name: value}); see hooks.hpp for what the Trainer calls.
#pragma once
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

#include <unistd.h>

TRAINLOOP_DETAIL_BEGIN

/// Options of the loggers that write in <save_dir>/<name>/version_<n> (CSVLogger, TensorBoardLogger, JSONLinesLogger).
struct VersionedLoggerOptions {
  std::string save_dir = "logs";
  std::string name = "lightning_logs";
  std::optional<std::int64_t> version;  ///< unset: the next free version_<n>, chosen when the logger starts
  std::chrono::duration<double> flush_interval = std::chrono::seconds(10);
};

namespace detail {
/// This process's rank in a distributed run, from the launcher's environment (torchrun's RANK, then LOCAL_RANK,
/// then SLURM_PROCID); 0 when alone. Loggers write only on rank 0.
inline int process_rank() {
  for (const char* name : {"RANK", "LOCAL_RANK", "SLURM_PROCID"})
    if (const char* value = std::getenv(name)) return std::atoi(value);
  return 0;
}

inline std::runtime_error log_dir_error(const std::string& who, const std::filesystem::path& dir, const std::string& why) {
  return std::runtime_error("trainloop: " + who + ": cannot write logs in '" + dir.string() + "': " + why);
}

/// Creates `dir` (and parents) and proves it writable by creating and removing a file, so a bad log folder is an
/// error at setup, before any training.
inline void make_writable_dir(const std::filesystem::path& dir, const std::string& who) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) throw log_dir_error(who, dir, error.message());
  if (!std::filesystem::is_directory(dir)) throw log_dir_error(who, dir, "a file is in the way");
  const std::filesystem::path probe = dir / (".trainloop-write-test-" + std::to_string(::getpid()));
  std::FILE* file = std::fopen(probe.c_str(), "w");
  if (!file) throw log_dir_error(who, dir, std::strerror(errno));
  std::fclose(file);
  std::filesystem::remove(probe, error);
}

/// Lightning's version rule: the next n after the largest existing version_<n> under `root` (0 when none).
inline std::int64_t next_version(const std::filesystem::path& root) {
  std::int64_t next = 0;
  std::error_code error;
  if (!std::filesystem::is_directory(root, error)) return 0;
  for (const auto& entry : std::filesystem::directory_iterator(root, error)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind("version_", 0) != 0) continue;
    const char* digits = name.c_str() + 8;
    std::int64_t n = 0;
    auto [end, ec] = std::from_chars(digits, name.c_str() + name.size(), n);
    if (ec == std::errc() && *end == '\0' && end != digits) next = std::max(next, n + 1);
  }
  return next;
}

/// The shortest text that reads back as the same double ("0.1", "3", "1e-08"); "nan", "inf", "-inf" otherwise.
inline std::string format_number(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char text[32];
  auto [end, ec] = std::to_chars(text, text + sizeof text, value);
  return ec == std::errc() ? std::string(text, end) : std::to_string(value);
}
inline std::string format_value(const StateValue& value) {
  if (const auto* i = std::get_if<std::int64_t>(&value)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&value)) return format_number(*d);
  return std::get<std::string>(value);
}

/// Writes a whole file through a temporary in the same folder and a rename: readers see the old or the new content.
inline void write_file_atomically(const std::filesystem::path& path, const std::string& content, const std::string& who) {
  const std::filesystem::path temporary = path.string() + ".tmp-" + std::to_string(::getpid());
  std::FILE* file = std::fopen(temporary.c_str(), "wb");
  if (!file) throw log_dir_error(who, path.parent_path(), std::string("cannot create ") + temporary.string() + ": " + std::strerror(errno));
  const bool written = std::fwrite(content.data(), 1, content.size(), file) == content.size();
  const bool closed = std::fclose(file) == 0;
  if (!written || !closed || std::rename(temporary.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(temporary.c_str());
    throw log_dir_error(who, path.parent_path(), "writing " + path.filename().string() + " failed: " + std::strerror(error));
  }
}
/// Appends to a file, creating it; errors name the file.
inline void append_to_file(const std::filesystem::path& path, const std::string& content, const std::string& who) {
  std::FILE* file = std::fopen(path.c_str(), "ab");
  if (!file) throw log_dir_error(who, path.parent_path(), "cannot open " + path.filename().string() + ": " + std::strerror(errno));
  const bool written = std::fwrite(content.data(), 1, content.size(), file) == content.size();
  if (std::fclose(file) != 0 || !written)
    throw log_dir_error(who, path.parent_path(), "writing " + path.filename().string() + " failed: " + std::strerror(errno));
}

/// A YAML scalar: numbers as numbers, strings double-quoted when YAML could read them as something else.
inline std::string yaml_scalar(const std::string& text, bool is_string) {
  if (!is_string) {
    if (text == "nan") return ".nan";
    if (text == "inf") return ".inf";
    if (text == "-inf") return "-.inf";
    return text;
  }
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') quoted += '\\';
    if (c == '\n') {
      quoted += "\\n";
      continue;
    }
    quoted += c;
  }
  return quoted + "\"";
}
/// Hyperparameters as a YAML mapping (Lightning's hparams.yaml); "{}" when there are none.
inline std::string hparams_yaml(const StateDict& params) {
  if (params.empty()) return "{}\n";
  std::string out;
  for (const auto& [key, value] : params)
    out += yaml_scalar(key, true) + ": " + yaml_scalar(format_value(value), std::holds_alternative<std::string>(value)) + "\n";
  return out;
}

inline double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}
inline std::int64_t unix_millis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// When buffered records must reach the disk: at most `interval` after the first one waiting.
class FlushClock {
 public:
  explicit FlushClock(std::chrono::duration<double> interval) : interval_(interval) {}
  bool due() const { return std::chrono::steady_clock::now() - last_ >= interval_; }
  void flushed() { last_ = std::chrono::steady_clock::now(); }

 private:
  std::chrono::duration<double> interval_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

/// "This logger owns an open run": false in a moved-from logger, so its destructor writes nothing.
class OwnershipFlag {
 public:
  OwnershipFlag() = default;
  OwnershipFlag(OwnershipFlag&& other) noexcept : value_(std::exchange(other.value_, false)) {}
  OwnershipFlag& operator=(OwnershipFlag&& other) noexcept {
    value_ = std::exchange(other.value_, false);
    return *this;
  }
  explicit operator bool() const noexcept { return value_; }
  void set() noexcept { value_ = true; }

 private:
  bool value_ = false;
};

/// The run folder of a logger that writes in <save_dir>/<name>/version_<n>: created on rank 0 at the first open()
/// (the version, unless given, is the next free one then), with the clock that bounds how long records wait.
class VersionedRun {
 public:
  VersionedRun(const VersionedLoggerOptions& options, const char* who)
      : options_(options), who_(who), flush_clock_(options.flush_interval) {}

  /// Creates the folder the first time; true when this logger writes (it is open, on rank 0).
  bool open() {
    if (open_) return true;
    if (process_rank() != 0) return false;
    dir_ = root() / ("version_" + std::to_string(version()));
    make_writable_dir(dir_, who_);
    open_.set();
    return true;
  }
  bool is_open() const noexcept { return static_cast<bool>(open_); }
  const std::filesystem::path& dir() const noexcept { return dir_; }
  std::int64_t version() {
    if (!options_.version) options_.version = next_version(root());
    return *options_.version;
  }
  const char* who() const noexcept { return who_; }
  bool flush_due() const { return flush_clock_.due(); }
  void flushed() { flush_clock_.flushed(); }

 private:
  std::filesystem::path root() const { return std::filesystem::path(options_.save_dir) / options_.name; }

  VersionedLoggerOptions options_;
  const char* who_;
  FlushClock flush_clock_;
  OwnershipFlag open_;  // false in a moved-from logger, so its destructor writes nothing
  std::filesystem::path dir_;
};
}  // namespace detail

TRAINLOOP_DETAIL_END
