// trainloop: CSVLogger, Lightning's layout: <save_dir>/<name>/version_<n>/metrics.csv and hparams.yaml.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>
// Headers only the definitions use: a separately compiled TU does not parse them.
#if TRAINLOOP_DETAIL_DEFINE_API
#include <algorithm>
#endif

#include "parts/core/loggers/common.hpp"

TRAINLOOP_DETAIL_BEGIN

/// One row per record: "epoch", "step", then the metric names in the order they first appeared; empty cells where a
/// record has no value. "epoch" is the epoch column (the Trainer and log_metrics_to put the epoch in every record
/// under that name); a metric named "step" is refused. A name that appears later grows the header: the whole file is
/// then rewritten through a temporary file and a rename (readers never see a torn file); otherwise new rows are
/// appended. Rows reach the disk at most `flush_interval` after they were logged, and at finalize. A folder that
/// already holds a metrics.csv is continued, never overwritten; a fit resumed from a checkpoint continues the
/// checkpoint's version and keeps exactly the rows written before the checkpoint. Writes only on rank 0.
class CSVLogger {
 public:
  using Options = VersionedLoggerOptions;
  TRAINLOOP_DETAIL_API CSVLogger();
  explicit CSVLogger(const Options& options) : run_(options, "CSVLogger") {}
  CSVLogger(CSVLogger&&) = default;
  CSVLogger& operator=(CSVLogger&&) = default;
  TRAINLOOP_DETAIL_API ~CSVLogger();

  /// Creates the run folder now (idempotent).
  void start() { open(); }
  /// The run folder (chosen, not yet created, until the first write).
  std::filesystem::path log_dir() { return run_.planned_dir(); }
  std::int64_t version() { return run_.version(); }

  /// Proves the log folder writable before any training.
  template <class T, class M>
  void setup(T&, M&, const std::string&) {
    run_.check();
  }
  /// hparams.yaml, written now or when the run folder opens.
  TRAINLOOP_DETAIL_API void log_hyperparams(const StateDict& params);
  TRAINLOOP_DETAIL_API void log_metrics(std::int64_t step, const std::map<std::string, double>& metrics);
  TRAINLOOP_DETAIL_API void finalize(const std::string&);

  /// Writes the rows waiting.
  TRAINLOOP_DETAIL_API void flush();

  /// For the Trainer's checkpoints (which flush the loggers first): the run's version and how many rows it holds.
  StateDict state_dict() const { return run_.state("rows", rows_in_file_ + static_cast<std::int64_t>(rows_.size())); }
  /// Continues the checkpoint's run: its version folder, keeping the rows written before the checkpoint.
  TRAINLOOP_DETAIL_API void load_state_dict(const StateDict& state);

 private:
  // Opens the run folder; the first time, continues a metrics.csv already there (cut back to the checkpoint's rows
  // when resuming) and writes the hyperparameters.
  TRAINLOOP_DETAIL_API bool open();
  void write_hparams() { detail::write_file_atomically(run_.dir() / "hparams.yaml", detail::hparams_yaml(*hparams_), run_.who()); }

  // RFC 4180: fields with a comma, quote or line break are quoted, quotes doubled.
  TRAINLOOP_DETAIL_API static std::string field(const std::string& text);
  TRAINLOOP_DETAIL_API static std::vector<std::string> parse_header(const std::string& header);
  TRAINLOOP_DETAIL_API static std::string line(const std::vector<std::string>& fields);
  TRAINLOOP_DETAIL_API std::string cells(const std::map<std::string, std::string>& row) const;

  detail::VersionedRun run_;
  std::optional<StateDict> hparams_;
  std::vector<std::string> columns_{"epoch", "step"};
  std::vector<std::map<std::string, std::string>> rows_;  // rows not yet on disk
  std::size_t header_written_ = 0;
  std::int64_t rows_in_file_ = 0;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API CSVLogger::CSVLogger() : CSVLogger(Options{}) {}

TRAINLOOP_DETAIL_API CSVLogger::~CSVLogger() {
  try {
    flush();
  } catch (...) {  // a destructor must not throw; finalize reports write errors
  }
}

TRAINLOOP_DETAIL_API void CSVLogger::log_hyperparams(const StateDict& params) {
  hparams_ = params;
  if (run_.is_open()) write_hparams();
}
TRAINLOOP_DETAIL_API void CSVLogger::log_metrics(std::int64_t step, const std::map<std::string, double>& metrics) {
  if (metrics.count("step"))
    throw std::invalid_argument("trainloop: CSVLogger: a metric named 'step' would overwrite the step column; "
                                "rename it ('epoch' is the epoch column)");
  if (!open()) return;
  std::map<std::string, std::string> row{{"step", std::to_string(step)}};
  for (const auto& [name, value] : metrics)
    row[name] = name == "epoch" ? std::to_string(static_cast<std::int64_t>(value)) : detail::format_number(value);
  for (const auto& [name, text] : row)
    if (std::find(columns_.begin(), columns_.end(), name) == columns_.end()) columns_.push_back(name);
  rows_.push_back(std::move(row));
  if (run_.flush_due()) flush();
}
TRAINLOOP_DETAIL_API void CSVLogger::finalize(const std::string&) {
  if (hparams_ && !run_.is_open()) open();
  flush();
}
TRAINLOOP_DETAIL_API void CSVLogger::flush() {
  run_.flushed();
  if (!run_.is_open() || rows_.empty()) return;
  const std::filesystem::path path = run_.dir() / "metrics.csv";
  if (columns_.size() != header_written_) {  // the header grew (or the file is new): rewrite it all
    std::string content = line(columns_);
    const std::string old = detail::read_file_text(path);
    std::int64_t header_records = 0;
    std::size_t at = detail::records_prefix(old, 1, true, header_records);
    // Rows already written get empty cells for the new columns (columns are only ever added at the end).
    const std::string padding(columns_.size() - header_written_, ',');
    for (std::size_t end; at < old.size() && (end = old.find('\n', at)) != std::string::npos; at = end + 1)
      content += old.substr(at, end - at) + padding + "\n";
    for (const auto& row : rows_) content += cells(row);
    detail::write_file_atomically(path, content, run_.who());
    header_written_ = columns_.size();
  } else {
    std::string content;
    for (const auto& row : rows_) content += cells(row);
    detail::append_to_file(path, content, run_.who());
  }
  rows_in_file_ += static_cast<std::int64_t>(rows_.size());
  rows_.clear();
}
TRAINLOOP_DETAIL_API void CSVLogger::load_state_dict(const StateDict& state) {
  flush();
  run_.continue_from(state, "rows");
}
TRAINLOOP_DETAIL_API bool CSVLogger::open() {
  if (run_.is_open()) return true;
  if (!run_.open()) return false;
  const std::int64_t keep_rows = run_.records_to_keep();
  columns_ = {"epoch", "step"};
  header_written_ = 0;
  rows_in_file_ = 0;
  const std::filesystem::path path = run_.dir() / "metrics.csv";
  const std::string existing = detail::read_file_text(path);
  if (!existing.empty()) {
    std::int64_t header_records = 0;
    const std::size_t header_end = detail::records_prefix(existing, 1, true, header_records);
    if (header_records == 1) {
      columns_ = parse_header(existing.substr(0, header_end - 1));
      header_written_ = columns_.size();
      const std::string body = existing.substr(header_end);
      std::int64_t rows = 0;
      const std::size_t keep = detail::records_prefix(body, keep_rows, false, rows);
      if (header_end + keep != existing.size()) detail::truncate_file(path, header_end + keep, run_.who());
      rows_in_file_ = rows;
    }
  }
  if (hparams_) write_hparams();
  return true;
}
TRAINLOOP_DETAIL_API std::string CSVLogger::field(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}
TRAINLOOP_DETAIL_API std::vector<std::string> CSVLogger::parse_header(const std::string& header) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (std::size_t i = 0; i < header.size(); ++i) {
    const char c = header[i];
    if (quoted && c == '"' && i + 1 < header.size() && header[i + 1] == '"') fields.back() += header[++i];
    else if (c == '"') quoted = !quoted;
    else if (c == ',' && !quoted) fields.emplace_back();
    else fields.back() += c;
  }
  return fields;
}
TRAINLOOP_DETAIL_API std::string CSVLogger::line(const std::vector<std::string>& fields) {
  std::string out;
  for (std::size_t i = 0; i < fields.size(); ++i) out += (i ? "," : "") + field(fields[i]);
  return out + "\n";
}
TRAINLOOP_DETAIL_API std::string CSVLogger::cells(const std::map<std::string, std::string>& row) const {
  std::vector<std::string> fields;
  for (const auto& column : columns_) {
    auto it = row.find(column);
    fields.push_back(it == row.end() ? "" : it->second);
  }
  return line(fields);
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
