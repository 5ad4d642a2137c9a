// trainloop: TensorBoardLogger. Event files TensorBoard loads, written without TensorFlow or protobuf: TFRecord
// framing (length, masked CRC32C of the length, data, masked CRC32C of the data) around hand-encoded Event messages.
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include <unistd.h>

TRAINLOOP_DETAIL_BEGIN

namespace detail {
/// TFRecord's masking, so a CRC of data holding CRCs stays strong.
inline std::uint32_t masked_crc32c(const void* data, std::size_t size) {
  const std::uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

inline void put_le(std::string& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((value >> (8 * i)) & 0xFF);
}
/// One TFRecord: uint64 length, masked CRC of those 8 bytes, the data, masked CRC of the data (little-endian).
inline std::string tfrecord(const std::string& data) {
  std::string out;
  put_le(out, data.size(), 8);
  put_le(out, masked_crc32c(out.data(), 8), 4);
  out += data;
  put_le(out, masked_crc32c(data.data(), data.size()), 4);
  return out;
}

// The few protobuf encodings the Event messages need (wire types: 0 varint, 1 fixed64, 2 bytes, 5 fixed32).
namespace proto {
inline void varint(std::string& out, std::uint64_t value) {
  while (value >= 0x80) {
    out += static_cast<char>((value & 0x7F) | 0x80);
    value >>= 7;
  }
  out += static_cast<char>(value);
}
inline void key(std::string& out, int field, int wire_type) { varint(out, static_cast<std::uint64_t>(field << 3 | wire_type)); }
inline void bytes(std::string& out, int field, const std::string& value) {
  key(out, field, 2);
  varint(out, value.size());
  out += value;
}
inline void int64(std::string& out, int field, std::int64_t value) {
  key(out, field, 0);
  varint(out, static_cast<std::uint64_t>(value));
}
inline void float64(std::string& out, int field, double value) {
  std::uint64_t bits;
  std::memcpy(&bits, &value, 8);
  key(out, field, 1);
  put_le(out, bits, 8);
}
inline void float32(std::string& out, int field, float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, 4);
  key(out, field, 5);
  put_le(out, bits, 4);
}
}  // namespace proto

// tensorflow.Event: wall_time = 1 (double), step = 2 (int64), file_version = 3 (string), summary = 5 (Summary).
inline std::string event(double wall_time, std::int64_t step, const std::string* file_version, const std::string* summary) {
  std::string out;
  proto::float64(out, 1, wall_time);
  proto::int64(out, 2, step);
  if (file_version) proto::bytes(out, 3, *file_version);
  if (summary) proto::bytes(out, 5, *summary);
  return out;
}
// Summary.value = 1 (repeated Value); Value.tag = 1, Value.simple_value = 2 (float).
inline void scalar_value(std::string& summary, const std::string& tag, float value) {
  std::string v;
  proto::bytes(v, 1, tag);
  proto::float32(v, 2, value);
  proto::bytes(summary, 1, v);
}
// A text summary (the Text dashboard): Value.tag = 1, Value.tensor = 8 (TensorProto: dtype = 1 DT_STRING (7),
// tensor_shape = 2 (scalar: empty), string_val = 8), Value.metadata = 9 (SummaryMetadata.plugin_data = 1:
// PluginData.plugin_name = 1 "text").
inline void text_value(std::string& summary, const std::string& tag, const std::string& text) {
  std::string tensor;
  proto::int64(tensor, 1, 7);
  proto::bytes(tensor, 2, "");
  proto::bytes(tensor, 8, text);
  std::string plugin;
  proto::bytes(plugin, 1, "text");
  std::string metadata;
  proto::bytes(metadata, 1, plugin);
  std::string v;
  proto::bytes(v, 1, tag);
  proto::bytes(v, 8, tensor);
  proto::bytes(v, 9, metadata);
  proto::bytes(summary, 1, v);
}
}  // namespace detail

/// Writes `events.out.tfevents.<seconds>.<hostname>` in `<save_dir>/<name>/version_<n>/` (Lightning's layout): a first
/// event with file_version "brain.Event:2", then one event per record with a scalar summary (simple_value, float32)
/// per metric, wall_time in seconds and the step. Hyperparameters go in as a text summary ("hparams", a Markdown
/// table on the Text dashboard) and in hparams.yaml beside the events. Buffered; flushed at most `flush_interval`
/// after a record and at finalize. Rank 0 only.
class TensorBoardLogger {
 public:
  using Options = VersionedLoggerOptions;
  TensorBoardLogger() : TensorBoardLogger(Options{}) {}
  explicit TensorBoardLogger(const Options& options) : run_(options, "TensorBoardLogger") {}
  TensorBoardLogger(TensorBoardLogger&&) = default;
  TensorBoardLogger& operator=(TensorBoardLogger&&) = default;
  ~TensorBoardLogger() {
    try {
      flush();
    } catch (...) {  // finalize reports write errors; a destructor must not throw
    }
  }

  void start() { open(); }
  const std::filesystem::path& log_dir() const noexcept { return run_.dir(); }
  const std::filesystem::path& event_file() const noexcept { return file_; }

  template <class T, class M>
  void setup(T&, M&, const std::string&) {
    start();
  }
  void log_hyperparams(const StateDict& params) {
    if (!open()) return;
    detail::write_file_atomically(run_.dir() / "hparams.yaml", detail::hparams_yaml(params), run_.who());
    if (params.empty()) return;
    std::string table = "| name | value |\n|---|---|\n";
    for (const auto& [key, value] : params) table += "| " + key + " | " + detail::format_value(value) + " |\n";
    std::string summary;
    detail::text_value(summary, "hparams", table);
    pending_ += detail::tfrecord(detail::event(detail::unix_seconds(), 0, nullptr, &summary));
  }
  void log_metrics(std::int64_t step, const std::map<std::string, double>& metrics) {
    if (!open()) return;
    std::string summary;
    for (const auto& [name, value] : metrics) detail::scalar_value(summary, name, static_cast<float>(value));
    pending_ += detail::tfrecord(detail::event(detail::unix_seconds(), step, nullptr, &summary));
    if (run_.flush_due()) flush();
  }
  void finalize(const std::string&) { flush(); }
  void flush() {
    run_.flushed();
    if (!run_.is_open() || pending_.empty()) return;
    detail::append_to_file(file_, pending_, run_.who());
    pending_.clear();
  }

 private:
  // Opens the run folder and, the first time, the event file with its file_version event; false on other ranks.
  bool open() {
    if (run_.is_open()) return true;
    if (!run_.open()) return false;
    char host[256] = "localhost";
    ::gethostname(host, sizeof host - 1);
    file_ = run_.dir() / ("events.out.tfevents." + std::to_string(static_cast<std::int64_t>(detail::unix_seconds())) + "." + host);
    const std::string version = "brain.Event:2";
    pending_ += detail::tfrecord(detail::event(detail::unix_seconds(), 0, &version, nullptr));
    flush();
    return true;
  }

  detail::VersionedRun run_;
  std::filesystem::path file_;
  std::string pending_;  // whole records not yet on disk
};

TRAINLOOP_DETAIL_END
