// trainloop: JSONLinesLogger: <save_dir>/<name>/version_<n>/metrics.jsonl, one JSON object per record, for jq and
// pandas (`pd.read_json(path, lines=True)`); hyperparameters in hparams.json.
#pragma once
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

TRAINLOOP_DETAIL_BEGIN

namespace detail {
inline std::string json_string(const std::string& text) {
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
// JSON has no NaN or infinity: they are written as null.
inline std::string json_number(double value) { return std::isfinite(value) ? format_number(value) : "null"; }
}  // namespace detail

/// Each record is a line {"step": 12, "epoch": 0, "time": 1732450000.123, "loss_step": 0.41, ...} ("time": Unix
/// seconds). NaN and infinities are written as null (JSON has neither). Buffered, flushed at most `flush_interval`
/// after a record and at finalize. Rank 0 only.
class JSONLinesLogger {
 public:
  using Options = VersionedLoggerOptions;
  JSONLinesLogger() : JSONLinesLogger(Options{}) {}
  explicit JSONLinesLogger(const Options& options) : run_(options, "JSONLinesLogger") {}
  JSONLinesLogger(JSONLinesLogger&&) = default;
  JSONLinesLogger& operator=(JSONLinesLogger&&) = default;
  ~JSONLinesLogger() {
    try {
      flush();
    } catch (...) {  // finalize reports write errors; a destructor must not throw
    }
  }

  void start() { run_.open(); }
  const std::filesystem::path& log_dir() const noexcept { return run_.dir(); }

  template <class T, class M>
  void setup(T&, M&, const std::string&) {
    start();
  }
  void log_hyperparams(const StateDict& params) {
    if (!run_.open()) return;
    std::string json = "{";
    for (const auto& [key, value] : params) {
      json += (json.size() > 1 ? ", " : "") + detail::json_string(key) + ": ";
      if (const auto* s = std::get_if<std::string>(&value)) json += detail::json_string(*s);
      else if (const auto* d = std::get_if<double>(&value)) json += detail::json_number(*d);
      else json += std::to_string(std::get<std::int64_t>(value));
    }
    detail::write_file_atomically(run_.dir() / "hparams.json", json + "}\n", run_.who());
  }
  void log_metrics(std::int64_t step, const std::map<std::string, double>& metrics) {
    if (!run_.open()) return;
    std::string line = "{\"step\": " + std::to_string(step);
    auto epoch = metrics.find("epoch");
    if (epoch != metrics.end()) line += ", \"epoch\": " + std::to_string(static_cast<std::int64_t>(epoch->second));
    line += ", \"time\": " + detail::format_number(std::round(detail::unix_seconds() * 1000) / 1000);
    for (const auto& [name, value] : metrics)
      if (name != "epoch") line += ", " + detail::json_string(name) + ": " + detail::json_number(value);
    pending_ += line + "}\n";
    if (run_.flush_due()) flush();
  }
  void finalize(const std::string&) { flush(); }
  void flush() {
    run_.flushed();
    if (!run_.is_open() || pending_.empty()) return;
    detail::append_to_file(run_.dir() / "metrics.jsonl", pending_, run_.who());
    pending_.clear();
  }

 private:
  detail::VersionedRun run_;
  std::string pending_;
};

TRAINLOOP_DETAIL_END
