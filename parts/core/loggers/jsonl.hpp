// trainloop: JSONLinesLogger: <save_dir>/<name>/version_<n>/metrics.jsonl, one JSON object per record, for jq and
// pandas (`pd.read_json(path, lines=True)`); hyperparameters in hparams.json.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
// Headers only the definitions use: a separately compiled TU does not parse them.
#if TRAINLOOP_DETAIL_DEFINE_API
#include <cstdio>
#endif

#include "parts/core/loggers/common.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
TRAINLOOP_DETAIL_API std::string json_string(const std::string& text);
// Numbers as Python's json.dumps writes floats ("3.0", "1e-08"); JSON has no NaN or infinity: they are written as
// null.
inline std::string json_number(double value) { return std::isfinite(value) ? format_number(value) : "null"; }
}  // namespace detail

/// Each record is a line {"step": 12, "epoch": 0, "time": 1732450000.123, "loss_step": 0.41, ...} ("time": Unix
/// seconds; "epoch" from the record's "epoch" entry, which the Trainer and log_metrics_to add). Metrics named "step"
/// or "time" are refused (they would repeat a key). Numbers are written as Python's json.dumps writes floats; NaN and
/// infinities as null (JSON has neither). Buffered, flushed at most `flush_interval` after a record and at finalize.
/// A metrics.jsonl already in the folder is continued; a fit resumed from a checkpoint continues its version and
/// keeps exactly the lines written before the checkpoint. Rank 0 only.
class JSONLinesLogger {
 public:
  using Options = VersionedLoggerOptions;
  TRAINLOOP_DETAIL_API JSONLinesLogger();
  explicit JSONLinesLogger(const Options& options) : run_(options, "JSONLinesLogger") {}
  JSONLinesLogger(JSONLinesLogger&&) = default;
  JSONLinesLogger& operator=(JSONLinesLogger&&) = default;
  TRAINLOOP_DETAIL_API ~JSONLinesLogger();

  void start() { open(); }
  /// The run folder (chosen, not yet created, until the first write).
  std::filesystem::path log_dir() { return run_.planned_dir(); }

  template <class T, class M>
  void setup(T&, M&, const std::string&) {
    run_.check();
  }
  /// hparams.json, written now or when the run folder opens.
  TRAINLOOP_DETAIL_API void log_hyperparams(const StateDict& params);
  TRAINLOOP_DETAIL_API void log_metrics(std::int64_t step, const std::map<std::string, double>& metrics);
  TRAINLOOP_DETAIL_API void finalize(const std::string&);
  TRAINLOOP_DETAIL_API void flush();

  /// For the Trainer's checkpoints (which flush the loggers first): the run's version and how many lines it holds.
  StateDict state_dict() const { return run_.state("lines", lines_); }
  /// Continues the checkpoint's run: its version folder, keeping the lines written before the checkpoint.
  TRAINLOOP_DETAIL_API void load_state_dict(const StateDict& state);

 private:
  TRAINLOOP_DETAIL_API bool open();
  TRAINLOOP_DETAIL_API void write_hparams();

  detail::VersionedRun run_;
  std::optional<StateDict> hparams_;
  std::string pending_;
  std::int64_t lines_ = 0;  // lines in the run: on disk and pending
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API JSONLinesLogger::JSONLinesLogger() : JSONLinesLogger(Options{}) {}

TRAINLOOP_DETAIL_API JSONLinesLogger::~JSONLinesLogger() {
  try {
    flush();
  } catch (...) {  // finalize reports write errors; a destructor must not throw
  }
}

namespace detail {
TRAINLOOP_DETAIL_API std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
      out += escaped;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}
}  // namespace detail
TRAINLOOP_DETAIL_API void JSONLinesLogger::log_hyperparams(const StateDict& params) {
  hparams_ = params;
  if (run_.is_open()) write_hparams();
}
TRAINLOOP_DETAIL_API void JSONLinesLogger::log_metrics(std::int64_t step, const std::map<std::string,
                                                       double>& metrics) {
  for (const char* reserved : {"step", "time"})
    if (metrics.count(reserved))
      throw std::invalid_argument(std::string("trainloop: JSONLinesLogger: a metric named '") + reserved +
                                  "' would repeat the record's own key; rename it");
  if (!open()) return;
  std::string line = "{\"step\": " + std::to_string(step);
  auto epoch = metrics.find("epoch");
  if (epoch != metrics.end()) line += ", \"epoch\": " + std::to_string(static_cast<std::int64_t>(epoch->second));
  line += ", \"time\": " + detail::format_number(std::round(detail::unix_seconds() * 1000) / 1000);
  for (const auto& [name, value] : metrics)
    if (name != "epoch") line += ", " + detail::json_string(name) + ": " + detail::json_number(value);
  pending_ += line + "}\n";
  ++lines_;
  if (run_.flush_due()) flush();
}
TRAINLOOP_DETAIL_API void JSONLinesLogger::finalize(const std::string&) {
  if (hparams_ && !run_.is_open()) open();
  flush();
}
TRAINLOOP_DETAIL_API void JSONLinesLogger::flush() {
  run_.flushed();
  if (!run_.is_open() || pending_.empty()) return;
  detail::append_to_file(run_.dir() / "metrics.jsonl", pending_, run_.who());
  pending_.clear();
}
TRAINLOOP_DETAIL_API void JSONLinesLogger::load_state_dict(const StateDict& state) {
  flush();
  run_.continue_from(state, "lines");
}
TRAINLOOP_DETAIL_API bool JSONLinesLogger::open() {
  if (run_.is_open()) return true;
  if (!run_.open()) return false;
  lines_ = detail::cut_back_file(run_.dir() / "metrics.jsonl", run_.records_to_keep(), detail::lines_prefix(), run_.who());
  if (hparams_) write_hparams();
  return true;
}
TRAINLOOP_DETAIL_API void JSONLinesLogger::write_hparams() {
  std::string json = "{";
  for (const auto& [key, value] : *hparams_) {
    json += (json.size() > 1 ? ", " : "") + detail::json_string(key) + ": ";
    if (const auto* s = std::get_if<std::string>(&value)) json += detail::json_string(*s);
    else if (const auto* d = std::get_if<double>(&value)) json += detail::json_number(*d);
    else json += std::to_string(std::get<std::int64_t>(value));
  }
  detail::write_file_atomically(run_.dir() / "hparams.json", json + "}\n", run_.who());
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
