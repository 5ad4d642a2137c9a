// trainloop: what every logger shares: the rank check (only rank 0 writes), run folders versioned like Lightning's
// (<save_dir>/<name>/version_<n>, the next free n), folder checks that fail before training with the path and the
// reason, numbers written so they read back exactly, whole-file writes that never leave a torn file, the flush clock.
// A logger is a callback with log_metrics(step, {name: value}); see hooks.hpp for what the Trainer calls.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
// Headers only the definitions use: a separately compiled TU does not parse them.
#if TRAINLOOP_DETAIL_DEFINE_API
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <unistd.h>
#endif

#include "parts/core/launch_environment.hpp"
#include "parts/core/state.hpp"

TRAINLOOP_DETAIL_BEGIN

/// Options of the loggers that write in <save_dir>/<name>/version_<n> (CSVLogger, TensorBoardLogger, JSONLinesLogger).
struct VersionedLoggerOptions {
  std::string save_dir = "logs";
  std::string name = "lightning_logs";
  std::optional<std::int64_t> version;  ///< unset: the next free version_<n>, chosen when the logger starts
  std::chrono::duration<double> flush_interval = std::chrono::seconds(10);
};

namespace detail {

TRAINLOOP_DETAIL_API std::runtime_error log_dir_error(const std::string& who, const std::filesystem::path& dir,
                                                      const std::string& why);

/// Creates `dir` (and parents) and proves it writable by creating and removing a file, so a bad log folder is an
/// error at setup, before any training.
TRAINLOOP_DETAIL_API void make_writable_dir(const std::filesystem::path& dir, const std::string& who);

/// Lightning's version rule: the next n after the largest existing version_<n> under `root` (0 when none).
TRAINLOOP_DETAIL_API std::int64_t next_version(const std::filesystem::path& root);

/// A double as Python's repr() writes it (what Lightning's CSV, MLflow's metric files and json.dumps produce): the
/// shortest text that reads back as the same double, with a ".0" on whole numbers ("3.0", "0.1", "1e-08", "1e+16",
/// fixed notation for exponents -4..15); "nan", "inf", "-inf" otherwise.
TRAINLOOP_DETAIL_API std::string format_number(double value);
/// A double as a YAML float that YAML 1.1 readers (PyYAML's safe_load) and 1.2 readers both read as a float: YAML 1.1
/// needs a dot ("1.0e-08", not "1e-08"), and spells the non-finite values .nan, .inf, -.inf.
TRAINLOOP_DETAIL_API std::string yaml_number(double value);
TRAINLOOP_DETAIL_API std::string format_value(const StateValue& value);

/// Writes a whole file through a temporary in the same folder and a rename: readers see the old or the new content.
TRAINLOOP_DETAIL_API void write_file_atomically(const std::filesystem::path& path, const std::string& content,
                                                const std::string& who);
/// Appends to a file, creating it; errors name the file.
TRAINLOOP_DETAIL_API void append_to_file(const std::filesystem::path& path, const std::string& content,
                                         const std::string& who);

/// The whole content of a file; empty when it does not exist.
TRAINLOOP_DETAIL_API std::string read_file_text(const std::filesystem::path& path);
/// The length of the first `records` complete records of `text` (records end at '\n'; with `csv_quotes`, not inside
/// a double-quoted CSV field), and in `found` how many that is: a torn last record never counts.
TRAINLOOP_DETAIL_API std::size_t records_prefix(const std::string& text, std::int64_t records, bool csv_quotes,
                                                std::int64_t& found);
/// Cuts a file to its first `size` bytes (a logger continuing a run from a checkpoint drops what came after it).
TRAINLOOP_DETAIL_API void truncate_file(const std::filesystem::path& path, std::size_t size, const std::string& who);
/// Cuts the file at `path` back to its first `records` records, as `prefix(text, records, found)` measures them, and
/// returns how many it kept (none for a missing file).
template <class Prefix>
std::int64_t cut_back_file(const std::filesystem::path& path, std::int64_t records, Prefix&& prefix, const std::string& who) {
  const std::string text = read_file_text(path);
  std::int64_t kept = 0;
  const std::size_t size = prefix(text, records, kept);
  if (size != text.size()) truncate_file(path, size, who);
  return kept;
}
/// An integer entry of a logger's checkpoint state; the error names the key.
TRAINLOOP_DETAIL_API std::int64_t state_int(const StateDict& state, const std::string& key, const std::string& who);

/// A string as a double-quoted YAML scalar (always quoted: "on", "3" and "null" stay strings).
TRAINLOOP_DETAIL_API std::string yaml_string(const std::string& text);
/// A value as YAML: ints as ints, doubles as floats (see yaml_number), strings double-quoted.
TRAINLOOP_DETAIL_API std::string yaml_value(const StateValue& value);
/// Hyperparameters as a YAML mapping (Lightning's hparams.yaml); "{}" when there are none.
TRAINLOOP_DETAIL_API std::string hparams_yaml(const StateDict& params);
/// The value of the top-level key `key` in a YAML mapping written by PyYAML (plain, 'single' or "double" quoted,
/// folded over indented continuation lines); nullopt when the key is absent.
TRAINLOOP_DETAIL_API std::optional<std::string> yaml_top_level_value(const std::string& yaml, const std::string& key);

TRAINLOOP_DETAIL_API double unix_seconds();
TRAINLOOP_DETAIL_API std::int64_t unix_millis();

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
  TRAINLOOP_DETAIL_API OwnershipFlag& operator=(OwnershipFlag&& other) noexcept;
  explicit operator bool() const noexcept { return value_; }
  void set() noexcept { value_ = true; }
  void reset() noexcept { value_ = false; }

 private:
  bool value_ = false;
};

/// The run folder of a logger that writes in <save_dir>/<name>/version_<n>. setup() only proves <save_dir>/<name>
/// writable (a bad folder fails before training); the version folder is created at the first write (the version,
/// unless given, is the next free one then), so a fit resumed from a checkpoint can still continue the checkpoint's
/// run. Also the clock that bounds how long records wait.
class VersionedRun {
 public:
  VersionedRun(const VersionedLoggerOptions& options, const char* who)
      : options_(options), who_(who), flush_clock_(options.flush_interval) {}

  /// Creates <save_dir>/<name> and proves it writable (rank 0 only).
  TRAINLOOP_DETAIL_API void check() const;
  /// Creates the folder the first time; true when this logger writes (it is open, on rank 0).
  TRAINLOOP_DETAIL_API bool open();
  /// A logger's checkpoint state: the open run's version and how many records it holds (under `count_key`); empty
  /// when nothing was opened.
  TRAINLOOP_DETAIL_API StateDict state(const char* count_key, std::int64_t records) const;
  /// Continues the run a checkpoint's state names: later writes go to its version, opened at the next write, which
  /// keeps the `count_key` records the checkpoint saw (see records_to_keep).
  TRAINLOOP_DETAIL_API void continue_from(const StateDict& state, const char* count_key);
  /// How many records the opening run keeps: the checkpoint's count once after continue_from, else all.
  std::int64_t records_to_keep() { return std::exchange(keep_, INT64_MAX); }
  bool is_open() const noexcept { return static_cast<bool>(open_); }
  /// The run folder: where it is, or will be once something is written.
  std::filesystem::path planned_dir() { return open_ ? dir_ : root() / ("version_" + std::to_string(version())); }
  const std::filesystem::path& dir() const noexcept { return dir_; }
  TRAINLOOP_DETAIL_API std::int64_t version();
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
  std::int64_t keep_ = INT64_MAX;  // records the next opened run keeps
};
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
namespace detail {
TRAINLOOP_DETAIL_API std::runtime_error log_dir_error(const std::string& who, const std::filesystem::path& dir,
                                                      const std::string& why) {
  return std::runtime_error("trainloop: " + who + ": cannot write logs in '" + dir.string() + "': " + why);
}
TRAINLOOP_DETAIL_API void make_writable_dir(const std::filesystem::path& dir, const std::string& who) {
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
TRAINLOOP_DETAIL_API std::int64_t next_version(const std::filesystem::path& root) {
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
TRAINLOOP_DETAIL_API std::string format_number(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char text[40];
  const auto written = std::to_chars(text, text + sizeof text, value, std::chars_format::scientific);
  std::string scientific(text, written.ptr);  // "-d.ddde+XX", shortest round trip
  const bool negative = scientific[0] == '-';
  const std::size_t e = scientific.find('e');
  const int exponent = std::atoi(scientific.c_str() + e + 1);
  std::string digits;
  for (std::size_t i = negative ? 1 : 0; i < e; ++i)
    if (scientific[i] != '.') digits += scientific[i];
  const int n = static_cast<int>(digits.size());
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) out += "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
    else if (n <= exponent + 1) out += digits + std::string(static_cast<std::size_t>(exponent + 1 - n), '0') + ".0";
    else out += digits.substr(0, static_cast<std::size_t>(exponent + 1)) + "." + digits.substr(static_cast<std::size_t>(exponent + 1));
  } else {
    out += digits.substr(0, 1) + (n > 1 ? "." + digits.substr(1) : std::string());
    char suffix[16];
    std::snprintf(suffix, sizeof suffix, "e%c%02d", exponent < 0 ? '-' : '+', exponent < 0 ? -exponent : exponent);
    out += suffix;
  }
  return out;
}
TRAINLOOP_DETAIL_API std::string yaml_number(double value) {
  if (std::isnan(value)) return ".nan";
  if (std::isinf(value)) return value > 0 ? ".inf" : "-.inf";
  std::string text = format_number(value);
  const std::size_t e = text.find('e');
  if (e != std::string::npos && text.find('.') == std::string::npos) text.insert(e, ".0");
  return text;
}
TRAINLOOP_DETAIL_API std::string format_value(const StateValue& value) {
  if (const auto* i = std::get_if<std::int64_t>(&value)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&value)) return format_number(*d);
  return std::get<std::string>(value);
}
TRAINLOOP_DETAIL_API void write_file_atomically(const std::filesystem::path& path, const std::string& content,
                                                const std::string& who) {
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
TRAINLOOP_DETAIL_API void append_to_file(const std::filesystem::path& path, const std::string& content,
                                         const std::string& who) {
  std::FILE* file = std::fopen(path.c_str(), "ab");
  if (!file) throw log_dir_error(who, path.parent_path(), "cannot open " + path.filename().string() + ": " + std::strerror(errno));
  const bool written = std::fwrite(content.data(), 1, content.size(), file) == content.size();
  if (std::fclose(file) != 0 || !written)
    throw log_dir_error(who, path.parent_path(), "writing " + path.filename().string() + " failed: " + std::strerror(errno));
}
TRAINLOOP_DETAIL_API std::string read_file_text(const std::filesystem::path& path) {
  std::string text;
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) return text;
  char buffer[65536];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, file)) > 0;) text.append(buffer, n);
  std::fclose(file);
  return text;
}
TRAINLOOP_DETAIL_API std::size_t records_prefix(const std::string& text, std::int64_t records, bool csv_quotes,
                                                std::int64_t& found) {
  found = 0;
  std::size_t end = 0;
  bool quoted = false;
  for (std::size_t i = 0; i < text.size() && found < records; ++i) {
    if (csv_quotes && text[i] == '"') quoted = !quoted;
    else if (text[i] == '\n' && !quoted) ++found, end = i + 1;
  }
  return end;
}
TRAINLOOP_DETAIL_API void truncate_file(const std::filesystem::path& path, std::size_t size, const std::string& who) {
  if (::truncate(path.c_str(), static_cast<off_t>(size)) != 0)
    throw log_dir_error(who, path.parent_path(), "cannot cut " + path.filename().string() + " back to the checkpoint: " + std::strerror(errno));
}
// cut_back_file's record counter for line-based files (JSON lines, MLflow metrics); only definitions use it.
TRAINLOOP_DETAIL_API auto lines_prefix() {
  return [](const std::string& text, std::int64_t records, std::int64_t& found) { return records_prefix(text, records, false, found); };
}
TRAINLOOP_DETAIL_API std::int64_t state_int(const StateDict& state, const std::string& key, const std::string& who) {
  auto it = state.find(key);
  if (it == state.end() || !std::holds_alternative<std::int64_t>(it->second))
    throw std::runtime_error("trainloop: " + who + ": checkpoint state key '" + key + "' is missing or not an integer");
  return std::get<std::int64_t>(it->second);
}
TRAINLOOP_DETAIL_API std::string yaml_string(const std::string& text) {
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
TRAINLOOP_DETAIL_API std::string yaml_value(const StateValue& value) {
  if (const auto* i = std::get_if<std::int64_t>(&value)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&value)) return yaml_number(*d);
  return yaml_string(std::get<std::string>(value));
}
TRAINLOOP_DETAIL_API std::string hparams_yaml(const StateDict& params) {
  if (params.empty()) return "{}\n";
  std::string out;
  for (const auto& [key, value] : params) out += yaml_string(key) + ": " + yaml_value(value) + "\n";
  return out;
}
TRAINLOOP_DETAIL_API std::optional<std::string> yaml_top_level_value(const std::string& yaml, const std::string& key) {
  std::size_t at = 0;
  while (at < yaml.size()) {
    std::size_t end = yaml.find('\n', at);
    if (end == std::string::npos) end = yaml.size();
    if (yaml.compare(at, key.size() + 1, key + ":") == 0) {
      // The scalar's text: this line's rest and the indented lines after it, folded with single spaces.
      std::string text = yaml.substr(at + key.size() + 1, end - at - key.size() - 1);
      while (end < yaml.size() && end + 1 < yaml.size() && yaml[end + 1] == ' ') {
        std::size_t next = yaml.find('\n', end + 1);
        if (next == std::string::npos) next = yaml.size();
        const std::size_t first = std::min(yaml.find_first_not_of(' ', end + 1), next);
        text += " " + yaml.substr(first, next - first);
        end = next;
      }
      const std::size_t begin = text.find_first_not_of(' ');
      if (begin == std::string::npos) return std::string();
      text = text.substr(begin);
      std::string value;
      if (text[0] == '\'') {  // single-quoted: '' is a quote
        for (std::size_t i = 1; i < text.size(); ++i) {
          if (text[i] != '\'') value += text[i];
          else if (i + 1 < text.size() && text[i + 1] == '\'') value += text[++i];
          else break;
        }
        return value;
      }
      if (text[0] == '"') {  // double-quoted: backslash escapes
        for (std::size_t i = 1; i < text.size() && text[i] != '"'; ++i) {
          if (text[i] != '\\' || i + 1 >= text.size()) {
            value += text[i];
            continue;
          }
          const char c = text[++i];
          if (c == 'n') value += '\n';
          else if (c == 't') value += '\t';
          else if (c == 'x' || c == 'u' || c == 'U') {  // a code point, written back as UTF-8
            const std::size_t width = c == 'x' ? 2 : c == 'u' ? 4 : 8;
            const unsigned long cp = std::strtoul(text.substr(i + 1, width).c_str(), nullptr, 16);
            i += width;
            if (cp < 0x80) value += static_cast<char>(cp);
            else if (cp < 0x800) value += {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
            else if (cp < 0x10000)
              value += {static_cast<char>(0xE0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
                        static_cast<char>(0x80 | (cp & 0x3F))};
            else
              value += {static_cast<char>(0xF0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
                        static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
          } else value += c;
        }
        return value;
      }
      const std::size_t comment = text.find(" #");  // plain: up to a comment, trailing spaces dropped
      value = text.substr(0, comment);
      return value.substr(0, value.find_last_not_of(' ') + 1);
    }
    at = end + 1;
  }
  return std::nullopt;
}
TRAINLOOP_DETAIL_API double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}
TRAINLOOP_DETAIL_API std::int64_t unix_millis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}
TRAINLOOP_DETAIL_API OwnershipFlag& OwnershipFlag::operator=(OwnershipFlag&& other) noexcept {
  value_ = std::exchange(other.value_, false);
  return *this;
}
TRAINLOOP_DETAIL_API void VersionedRun::check() const {
  if (!open_ && process_rank() == 0) make_writable_dir(root(), who_);
}
TRAINLOOP_DETAIL_API bool VersionedRun::open() {
  if (open_) return true;
  if (process_rank() != 0) return false;
  dir_ = planned_dir();
  make_writable_dir(dir_, who_);
  open_.set();
  return true;
}
TRAINLOOP_DETAIL_API StateDict VersionedRun::state(const char* count_key, std::int64_t records) const {
  if (!open_) return {};
  return {{"version", *options_.version}, {count_key, records}};
}
TRAINLOOP_DETAIL_API void VersionedRun::continue_from(const StateDict& state, const char* count_key) {
  const std::int64_t version = state_int(state, "version", who_);
  keep_ = state_int(state, count_key, who_);
  options_.version = version;
  open_.reset();
  dir_.clear();
}
TRAINLOOP_DETAIL_API std::int64_t VersionedRun::version() {
  if (!options_.version) options_.version = next_version(root());
  return *options_.version;
}
}  // namespace detail
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
