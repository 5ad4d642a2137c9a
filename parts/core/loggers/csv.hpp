// trainloop: CSVLogger, Lightning's layout: <save_dir>/<name>/version_<n>/metrics.csv and hparams.yaml.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

TRAINLOOP_DETAIL_BEGIN

/// One row per record: "epoch", "step", then the metric names in the order they first appeared; empty cells where a
/// record has no value. A name that appears later grows the header: the whole file is then rewritten through a
/// temporary file and a rename (readers never see a torn file); otherwise new rows are appended. Rows reach the disk
/// at most `flush_interval` after they were logged, and at finalize. Writes only on rank 0.
class CSVLogger {
 public:
  using Options = VersionedLoggerOptions;
  CSVLogger() : CSVLogger(Options{}) {}
  explicit CSVLogger(const Options& options) : run_(options, "CSVLogger") {}
  CSVLogger(CSVLogger&&) = default;
  CSVLogger& operator=(CSVLogger&&) = default;
  ~CSVLogger() {
    try {
      flush();
    } catch (...) {  // a destructor must not throw; finalize reports write errors
    }
  }

  /// Creates the run folder (idempotent). The Trainer calls it at setup, so a bad folder fails before training.
  void start() { run_.open(); }
  const std::filesystem::path& log_dir() const noexcept { return run_.dir(); }
  std::int64_t version() { return run_.version(); }

  template <class T, class M>
  void setup(T&, M&, const std::string&) {
    start();
  }
  void log_hyperparams(const StateDict& params) {
    if (!run_.open()) return;
    detail::write_file_atomically(run_.dir() / "hparams.yaml", detail::hparams_yaml(params), run_.who());
  }
  void log_metrics(std::int64_t step, const std::map<std::string, double>& metrics) {
    if (!run_.open()) return;
    std::map<std::string, std::string> row{{"step", std::to_string(step)}};
    for (const auto& [name, value] : metrics)
      row[name] = name == "epoch" ? std::to_string(static_cast<std::int64_t>(value)) : detail::format_number(value);
    for (const auto& [name, text] : row)
      if (std::find(columns_.begin(), columns_.end(), name) == columns_.end()) columns_.push_back(name);
    rows_.push_back(std::move(row));
    if (run_.flush_due()) flush();
  }
  void finalize(const std::string&) { flush(); }

  /// Writes the rows waiting.
  void flush() {
    run_.flushed();
    if (!run_.is_open() || rows_.size() == rows_written_) return;
    const std::filesystem::path path = run_.dir() / "metrics.csv";
    if (columns_.size() != header_written_) {  // the header grew (or the file is new): rewrite it all
      std::string content = line(columns_);
      for (const auto& row : rows_) content += cells(row);
      detail::write_file_atomically(path, content, run_.who());
      header_written_ = columns_.size();
    } else {
      std::string content;
      for (std::size_t i = rows_written_; i < rows_.size(); ++i) content += cells(rows_[i]);
      detail::append_to_file(path, content, run_.who());
    }
    rows_written_ = rows_.size();
  }

 private:
  // RFC 4180: fields with a comma, quote or line break are quoted, quotes doubled.
  static std::string field(const std::string& text) {
    if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
    std::string quoted = "\"";
    for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
    return quoted + "\"";
  }
  static std::string line(const std::vector<std::string>& fields) {
    std::string out;
    for (std::size_t i = 0; i < fields.size(); ++i) out += (i ? "," : "") + field(fields[i]);
    return out + "\n";
  }
  std::string cells(const std::map<std::string, std::string>& row) const {
    std::vector<std::string> fields;
    for (const auto& column : columns_) {
      auto it = row.find(column);
      fields.push_back(it == row.end() ? "" : it->second);
    }
    return line(fields);
  }

  detail::VersionedRun run_;
  std::vector<std::string> columns_{"epoch", "step"};
  std::vector<std::map<std::string, std::string>> rows_;
  std::size_t rows_written_ = 0, header_written_ = 0;
};

TRAINLOOP_DETAIL_END
