// Examples' helper: the metrics CSV of --log-dir, opened before training so an unwritable folder fails at once,
// not after an epoch. (The loggers issue brings CSV, TensorBoard and MLflow loggers.)
#pragma once
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

// Opens `log_dir`/metrics.csv and writes `header`; with an empty log_dir, a stream that discards. Returns false (and
// says why on stderr) when the file cannot be written.
inline bool open_metrics_csv(const std::string& log_dir, const std::string& header, std::ofstream& csv) {
  if (log_dir.empty()) {
    csv.open("/dev/null");
    return true;
  }
  std::error_code error;
  std::filesystem::create_directories(log_dir, error);
  csv.open(log_dir + "/metrics.csv");
  if (error || !csv) {
    std::fprintf(stderr, "cannot write %s/metrics.csv%s%s\n", log_dir.c_str(), error ? ": " : "",
                 error ? error.message().c_str() : "");
    return false;
  }
  csv << header << '\n';
  return true;
}
