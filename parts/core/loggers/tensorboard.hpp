// trainloop: TensorBoardLogger. Event files TensorBoard loads, written without TensorFlow or protobuf: TFRecord
// framing (length, masked CRC32C of the length, data, masked CRC32C of the data) around hand-encoded Event messages.
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
#include <array>
#include <cstdio>
#include <cstring>
#include <memory>

#include <unistd.h>
#endif

#include "parts/core/crc32c.hpp"
#include "parts/core/loggers/common.hpp"
#include "parts/core/loggers/media.hpp"
#include "parts/core/state.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
/// TFRecord's masking, so a CRC of data holding CRCs stays strong.
TRAINLOOP_DETAIL_API std::uint32_t masked_crc32c(const void* data, std::size_t size);

TRAINLOOP_DETAIL_API void put_le(std::string& out, std::uint64_t value, int bytes);
/// One TFRecord: uint64 length, masked CRC of those 8 bytes, the data, masked CRC of the data (little-endian).
TRAINLOOP_DETAIL_API std::string tfrecord(const std::string& data);

// The few protobuf encodings the Event messages need (wire types: 0 varint, 1 fixed64, 2 bytes, 5 fixed32).
namespace proto {
TRAINLOOP_DETAIL_API void varint(std::string& out, std::uint64_t value);
inline void key(std::string& out, int field, int wire_type) { varint(out, static_cast<std::uint64_t>(field << 3 | wire_type)); }
TRAINLOOP_DETAIL_API void bytes(std::string& out, int field, const std::string& value);
TRAINLOOP_DETAIL_API void int64(std::string& out, int field, std::int64_t value);
TRAINLOOP_DETAIL_API void float64(std::string& out, int field, double value);
TRAINLOOP_DETAIL_API void float32(std::string& out, int field, float value);
// A repeated double, packed (wire type 2: the length, then 8 bytes each).
TRAINLOOP_DETAIL_API void packed_doubles(std::string& out, int field, const std::vector<double>& values);
}  // namespace proto

// tensorflow.Event: wall_time = 1 (double), step = 2 (int64), file_version = 3 (string), summary = 5 (Summary).
TRAINLOOP_DETAIL_API std::string event(double wall_time, std::int64_t step, const std::string* file_version,
                                       const std::string* summary);
// Summary.value = 1 (repeated Value); Value.tag = 1, Value.simple_value = 2 (float).
TRAINLOOP_DETAIL_API void scalar_value(std::string& summary, const std::string& tag, float value);
// A Summary.Value carrying only plugin data (how the HParams plugin's summaries are written): Value.tag = 1,
// Value.metadata = 9 (SummaryMetadata.plugin_data = 1: PluginData.plugin_name = 1, content = 2).
TRAINLOOP_DETAIL_API void plugin_value(std::string& summary, const std::string& tag, const std::string& plugin,
                                       const std::string& content, const std::string* tensor = nullptr);
// A text summary (the Text dashboard): Value.tensor = 8 (TensorProto: dtype = 1 DT_STRING (7), tensor_shape = 2
// (scalar: empty), string_val = 8), plugin "text".
TRAINLOOP_DETAIL_API void text_value(std::string& summary, const std::string& tag, const std::string& text);
// A Summary.Value of `tag` holding `message` in `field` (histo = 5, image = 4).
TRAINLOOP_DETAIL_API void message_value(std::string& summary, const std::string& tag, int field, const std::string& message);
// A histogram (the Histograms and Distributions dashboards), as torch.utils.tensorboard's add_histogram writes it:
// Value.histo = 5 (HistogramProto: min = 1, max = 2, num = 3, sum = 4, sum_squares = 5, bucket_limit = 6 and
// bucket = 7, packed doubles).
TRAINLOOP_DETAIL_API void histogram_value(std::string& summary, const std::string& tag, const Histogram& histogram);
// An image (the Images dashboard), as add_image writes it: Value.image = 4 (Summary.Image: height = 1, width = 2,
// colorspace = 3 (the channels), encoded_image_string = 4 (PNG)).
TRAINLOOP_DETAIL_API void image_value(std::string& summary, const std::string& tag, const EncodedImage& image);
// Text as add_text writes it: tag "<tag>/text_summary", a DT_STRING tensor of shape [1], plugin "text".
TRAINLOOP_DETAIL_API void text_summary_value(std::string& summary, const std::string& tag, const std::string& text);
// Text shown as itself in the Text dashboard's Markdown, inside a table cell: Markdown's specials escaped, line
// breaks as <br>.
TRAINLOOP_DETAIL_API std::string markdown_cell(const std::string& text);
// The HParams plugin's session start (HParamsPluginData.session_start_info = 3; version 0 is the default): the
// hyperparameters as a map<string, google.protobuf.Value> (SessionStartInfo.hparams = 1; number_value = 2,
// string_value = 3) and start_time_secs = 5. Without an experiment summary, TensorBoard builds the HParams table from
// every run's session start and offers every scalar tag as a metric column.
TRAINLOOP_DETAIL_API void hparams_session_start(std::string& summary, const StateDict& params, double start_time);
// The session's end (HParamsPluginData.session_end_info = 4: status = 1 (1 success, 2 failure), end_time_secs = 2).
TRAINLOOP_DETAIL_API void hparams_session_end(std::string& summary, bool success, double end_time);
// The length of the first `records` whole TFRecords of an event file (a torn last one never counts).
TRAINLOOP_DETAIL_API std::size_t tfrecords_prefix(const std::string& file, std::int64_t records, std::int64_t& found);
}  // namespace detail

/// Writes `events.out.tfevents.<seconds>.<hostname>` in `<save_dir>/<name>/version_<n>/` (Lightning's layout): a first
/// event with file_version "brain.Event:2", then one event per record with a scalar summary (simple_value, float32)
/// per metric, wall_time in seconds and the step. The hyperparameters go in once per run: to the HParams dashboard
/// (a session start; finalize adds the session's end and status), to the Text dashboard ("hparams", an escaped
/// Markdown table) and to hparams.yaml beside the events. Buffered; flushed at most `flush_interval` after a record
/// and at finalize. A fit resumed from a checkpoint continues its version and event file, cut back to the events
/// written before the checkpoint (so steps continue and TensorBoard needs no purge). Rank 0 only.
class TensorBoardLogger {
 public:
  using Options = VersionedLoggerOptions;
  TRAINLOOP_DETAIL_API TensorBoardLogger();
  explicit TensorBoardLogger(const Options& options) : run_(options, "TensorBoardLogger") {}
  TensorBoardLogger(TensorBoardLogger&&) = default;
  TensorBoardLogger& operator=(TensorBoardLogger&&) = default;
  TRAINLOOP_DETAIL_API ~TensorBoardLogger();

  void start() { open(); }
  /// The run folder (chosen, not yet created, until the first write).
  std::filesystem::path log_dir() { return run_.planned_dir(); }
  const std::filesystem::path& event_file() const noexcept { return file_; }

  template <class T, class M>
  void setup(T&, M&, const std::string&) {
    run_.check();
  }
  TRAINLOOP_DETAIL_API void log_hyperparams(const StateDict& params);
  TRAINLOOP_DETAIL_API void log_metrics(std::int64_t step, const std::map<std::string, double>& metrics);
  /// A histogram (make one from a tensor with trainloop::histogram), as add_histogram writes it.
  TRAINLOOP_DETAIL_API void log_histogram(const std::string& tag, const Histogram& histogram, std::int64_t step);
  /// A PNG image (make one from a tensor with trainloop::encode_png), as add_image writes it.
  TRAINLOOP_DETAIL_API void log_image(const std::string& tag, const EncodedImage& image, std::int64_t step);
  /// Markdown text for the Text dashboard, as add_text writes it (shown under "<tag>/text_summary").
  TRAINLOOP_DETAIL_API void log_text(const std::string& tag, const std::string& text, std::int64_t step);
  TRAINLOOP_DETAIL_API void finalize(const std::string& status);
  TRAINLOOP_DETAIL_API void flush();

  /// For the Trainer's checkpoints (which flush the loggers first): the run's version, event file and how many
  /// events it holds.
  TRAINLOOP_DETAIL_API StateDict state_dict() const;
  /// Continues the checkpoint's run: its version folder and event file, keeping the events written before it.
  TRAINLOOP_DETAIL_API void load_state_dict(const StateDict& state);

 private:
  // Opens the run folder and, the first time, its event file: the checkpoint's (cut back to its events) when
  // resuming, else a new one with its file_version event. Then the hyperparameters; false on other ranks.
  TRAINLOOP_DETAIL_API bool open();
  // hparams.yaml every time; the events once per run.
  TRAINLOOP_DETAIL_API void write_hparams();
  TRAINLOOP_DETAIL_API void add_event(std::int64_t step, const std::string& summary);
  // One event of one summary value, made by `value(summary)`, flushed when due.
  template <class Value>
  void log_value(std::int64_t step, Value&& value) {
    if (!open()) return;
    std::string summary;
    value(summary);
    add_event(step, summary);
    if (run_.flush_due()) flush();
  }

  detail::VersionedRun run_;
  std::filesystem::path file_;
  std::optional<StateDict> hparams_;
  bool hparams_written_ = false;
  std::string pending_;  // whole records not yet on disk
  std::int64_t records_ = 0;  // events in the file: on disk and pending
  std::string resume_file_;   // resuming: the checkpoint's event file in its folder
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API TensorBoardLogger::TensorBoardLogger() : TensorBoardLogger(Options{}) {}

TRAINLOOP_DETAIL_API TensorBoardLogger::~TensorBoardLogger() {
  try {
    flush();
  } catch (...) {  // finalize reports write errors; a destructor must not throw
  }
}

namespace detail {
TRAINLOOP_DETAIL_API std::uint32_t masked_crc32c(const void* data, std::size_t size) {
  const std::uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}
TRAINLOOP_DETAIL_API void put_le(std::string& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((value >> (8 * i)) & 0xFF);
}
TRAINLOOP_DETAIL_API std::string tfrecord(const std::string& data) {
  std::string out;
  put_le(out, data.size(), 8);
  put_le(out, masked_crc32c(out.data(), 8), 4);
  out += data;
  put_le(out, masked_crc32c(data.data(), data.size()), 4);
  return out;
}
namespace proto {
TRAINLOOP_DETAIL_API void varint(std::string& out, std::uint64_t value) {
  while (value >= 0x80) {
    out += static_cast<char>((value & 0x7F) | 0x80);
    value >>= 7;
  }
  out += static_cast<char>(value);
}
TRAINLOOP_DETAIL_API void bytes(std::string& out, int field, const std::string& value) {
  key(out, field, 2);
  varint(out, value.size());
  out += value;
}
TRAINLOOP_DETAIL_API void int64(std::string& out, int field, std::int64_t value) {
  key(out, field, 0);
  varint(out, static_cast<std::uint64_t>(value));
}
TRAINLOOP_DETAIL_API void float64(std::string& out, int field, double value) {
  std::uint64_t bits;
  std::memcpy(&bits, &value, 8);
  key(out, field, 1);
  put_le(out, bits, 8);
}
TRAINLOOP_DETAIL_API void float32(std::string& out, int field, float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, 4);
  key(out, field, 5);
  put_le(out, bits, 4);
}
TRAINLOOP_DETAIL_API void packed_doubles(std::string& out, int field, const std::vector<double>& values) {
  key(out, field, 2);
  varint(out, values.size() * 8);
  std::string packed(values.size() * 8, '\0');
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::uint64_t bits;
    std::memcpy(&bits, &values[i], 8);
    for (int b = 0; b < 8; ++b) packed[8 * i + b] = static_cast<char>((bits >> (8 * b)) & 0xFF);  // little-endian
  }
  out += packed;
}
}  // namespace proto
TRAINLOOP_DETAIL_API std::string event(double wall_time, std::int64_t step, const std::string* file_version,
                                       const std::string* summary) {
  std::string out;
  proto::float64(out, 1, wall_time);
  proto::int64(out, 2, step);
  if (file_version) proto::bytes(out, 3, *file_version);
  if (summary) proto::bytes(out, 5, *summary);
  return out;
}
TRAINLOOP_DETAIL_API void scalar_value(std::string& summary, const std::string& tag, float value) {
  std::string v;
  proto::bytes(v, 1, tag);
  proto::float32(v, 2, value);
  proto::bytes(summary, 1, v);
}
TRAINLOOP_DETAIL_API void plugin_value(std::string& summary, const std::string& tag, const std::string& plugin,
                                       const std::string& content, const std::string* tensor) {
  std::string plugin_data;
  proto::bytes(plugin_data, 1, plugin);
  if (!content.empty()) proto::bytes(plugin_data, 2, content);
  std::string metadata;
  proto::bytes(metadata, 1, plugin_data);
  std::string v;
  proto::bytes(v, 1, tag);
  if (tensor) proto::bytes(v, 8, *tensor);
  proto::bytes(v, 9, metadata);
  proto::bytes(summary, 1, v);
}
TRAINLOOP_DETAIL_API void text_value(std::string& summary, const std::string& tag, const std::string& text) {
  std::string tensor;
  proto::int64(tensor, 1, 7);
  proto::bytes(tensor, 2, "");
  proto::bytes(tensor, 8, text);
  plugin_value(summary, tag, "text", "", &tensor);
}
TRAINLOOP_DETAIL_API void message_value(std::string& summary, const std::string& tag, int field, const std::string& message) {
  std::string v;
  proto::bytes(v, 1, tag);
  proto::bytes(v, field, message);
  proto::bytes(summary, 1, v);
}
TRAINLOOP_DETAIL_API void histogram_value(std::string& summary, const std::string& tag, const Histogram& histogram) {
  std::string h;
  proto::float64(h, 1, histogram.min);
  proto::float64(h, 2, histogram.max);
  proto::float64(h, 3, histogram.num);
  proto::float64(h, 4, histogram.sum);
  proto::float64(h, 5, histogram.sum_squares);
  proto::packed_doubles(h, 6, histogram.bucket_limits);
  proto::packed_doubles(h, 7, histogram.bucket_counts);
  message_value(summary, tag, 5, h);
}
TRAINLOOP_DETAIL_API void image_value(std::string& summary, const std::string& tag, const EncodedImage& image) {
  std::string i;
  proto::int64(i, 1, image.height);
  proto::int64(i, 2, image.width);
  proto::int64(i, 3, image.channels);
  proto::bytes(i, 4, image.png);
  message_value(summary, tag, 4, i);
}
TRAINLOOP_DETAIL_API void text_summary_value(std::string& summary, const std::string& tag, const std::string& text) {
  std::string dim;
  proto::int64(dim, 1, 1);
  std::string shape;
  proto::bytes(shape, 2, dim);
  std::string tensor;
  proto::int64(tensor, 1, 7);
  proto::bytes(tensor, 2, shape);
  proto::bytes(tensor, 8, text);
  plugin_value(summary, tag + "/text_summary", "text", "", &tensor);
}
TRAINLOOP_DETAIL_API std::string markdown_cell(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\n') out += "<br>";
    else if (c == '\r') continue;
    else {
      if (std::strchr("\\|*_`[]<>#~", c)) out += '\\';
      out += c;
    }
  }
  return out;
}
TRAINLOOP_DETAIL_API void hparams_session_start(std::string& summary, const StateDict& params, double start_time) {
  std::string info;
  for (const auto& [key, value] : params) {
    std::string v;
    if (const auto* s = std::get_if<std::string>(&value)) proto::bytes(v, 3, *s);
    else if (const auto* d = std::get_if<double>(&value)) proto::float64(v, 2, *d);
    else proto::float64(v, 2, static_cast<double>(std::get<std::int64_t>(value)));
    std::string entry;
    proto::bytes(entry, 1, key);
    proto::bytes(entry, 2, v);
    proto::bytes(info, 1, entry);
  }
  proto::float64(info, 5, start_time);
  std::string data;
  proto::bytes(data, 3, info);
  plugin_value(summary, "_hparams_/session_start_info", "hparams", data);
}
TRAINLOOP_DETAIL_API void hparams_session_end(std::string& summary, bool success, double end_time) {
  std::string info;
  proto::int64(info, 1, success ? 1 : 2);
  proto::float64(info, 2, end_time);
  std::string data;
  proto::bytes(data, 4, info);
  plugin_value(summary, "_hparams_/session_end_info", "hparams", data);
}
TRAINLOOP_DETAIL_API std::size_t tfrecords_prefix(const std::string& file, std::int64_t records, std::int64_t& found) {
  found = 0;
  std::size_t at = 0;
  while (found < records && at + 12 <= file.size()) {
    std::uint64_t length = 0;
    for (int i = 0; i < 8; ++i) length |= static_cast<std::uint64_t>(static_cast<unsigned char>(file[at + i])) << (8 * i);
    if (length > file.size() - at - 12 || file.size() - at - 12 - length < 4) break;
    at += 12 + length + 4;
    ++found;
  }
  return at;
}
}  // namespace detail
TRAINLOOP_DETAIL_API void TensorBoardLogger::log_hyperparams(const StateDict& params) {
  hparams_ = params;
  if (run_.is_open()) write_hparams();
}
TRAINLOOP_DETAIL_API void TensorBoardLogger::log_metrics(std::int64_t step, const std::map<std::string,
                                                         double>& metrics) {
  log_value(step, [&](std::string& summary) {
    for (const auto& [name, value] : metrics) detail::scalar_value(summary, name, static_cast<float>(value));
  });
}
TRAINLOOP_DETAIL_API void TensorBoardLogger::log_histogram(const std::string& tag, const Histogram& histogram,
                                                           std::int64_t step) {
  if (histogram.bucket_limits.size() != histogram.bucket_counts.size())
    throw std::invalid_argument("trainloop: TensorBoardLogger: histogram '" + tag + "' has " +
                                std::to_string(histogram.bucket_limits.size()) + " bucket limits and " +
                                std::to_string(histogram.bucket_counts.size()) + " counts");
  log_value(step, [&](std::string& summary) { detail::histogram_value(summary, tag, histogram); });
}
TRAINLOOP_DETAIL_API void TensorBoardLogger::log_image(const std::string& tag, const EncodedImage& image, std::int64_t step) {
  if (image.png.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0 || image.channels < 1 || image.channels > 4)
    throw std::invalid_argument("trainloop: TensorBoardLogger: image '" + tag + "' is not a PNG of 1 to 4 channels");
  log_value(step, [&](std::string& summary) { detail::image_value(summary, tag, image); });
}
TRAINLOOP_DETAIL_API void TensorBoardLogger::log_text(const std::string& tag, const std::string& text, std::int64_t step) {
  log_value(step, [&](std::string& summary) { detail::text_summary_value(summary, tag, text); });
}
TRAINLOOP_DETAIL_API void TensorBoardLogger::finalize(const std::string& status) {
  if (hparams_ && !run_.is_open()) open();
  if (hparams_written_) {
    std::string summary;
    detail::hparams_session_end(summary, status == "success", detail::unix_seconds());
    add_event(0, summary);
  }
  flush();
}
TRAINLOOP_DETAIL_API void TensorBoardLogger::flush() {
  run_.flushed();
  if (!run_.is_open() || pending_.empty()) return;
  detail::append_to_file(file_, pending_, run_.who());
  pending_.clear();
}
TRAINLOOP_DETAIL_API StateDict TensorBoardLogger::state_dict() const {
  StateDict state = run_.state("events", records_);
  if (!state.empty()) {
    state["event_file"] = file_.filename().string();
    state["hparams_written"] = std::int64_t{hparams_written_ ? 1 : 0};
  }
  return state;
}
TRAINLOOP_DETAIL_API void TensorBoardLogger::load_state_dict(const StateDict& state) {
  const bool hparams_written = detail::state_int(state, "hparams_written", run_.who()) != 0;
  auto file = state.find("event_file");
  if (file == state.end() || !std::holds_alternative<std::string>(file->second) ||
      std::get<std::string>(file->second).find('/') != std::string::npos)
    throw std::runtime_error("trainloop: TensorBoardLogger: checkpoint state key 'event_file' is missing or not a file name");
  flush();
  run_.continue_from(state, "events");
  hparams_written_ = hparams_written;
  resume_file_ = std::get<std::string>(file->second);
}
TRAINLOOP_DETAIL_API bool TensorBoardLogger::open() {
  if (run_.is_open()) return true;
  if (!run_.open()) return false;
  records_ = 0;
  const std::int64_t keep = run_.records_to_keep();
  if (!resume_file_.empty() && std::filesystem::exists(run_.dir() / resume_file_)) {
    file_ = run_.dir() / resume_file_;
    records_ = detail::cut_back_file(file_, keep, detail::tfrecords_prefix, run_.who());
  } else {
    char host[256] = "localhost";
    ::gethostname(host, sizeof host - 1);
    file_ = run_.dir() / ("events.out.tfevents." + std::to_string(static_cast<std::int64_t>(detail::unix_seconds())) + "." + host);
    hparams_written_ = false;
    const std::string version = "brain.Event:2";
    pending_ += detail::tfrecord(detail::event(detail::unix_seconds(), 0, &version, nullptr));
    ++records_;
    flush();
  }
  resume_file_.clear();
  if (hparams_) write_hparams();
  return true;
}
TRAINLOOP_DETAIL_API void TensorBoardLogger::write_hparams() {
  detail::write_file_atomically(run_.dir() / "hparams.yaml", detail::hparams_yaml(*hparams_), run_.who());
  if (hparams_written_) return;
  hparams_written_ = true;
  std::string summary;
  detail::hparams_session_start(summary, *hparams_, detail::unix_seconds());
  if (!hparams_->empty()) {
    std::string table = "| name | value |\n|---|---|\n";
    for (const auto& [key, value] : *hparams_)
      table += "| " + detail::markdown_cell(key) + " | " + detail::markdown_cell(detail::format_value(value)) + " |\n";
    detail::text_value(summary, "hparams", table);
  }
  add_event(0, summary);
}
TRAINLOOP_DETAIL_API void TensorBoardLogger::add_event(std::int64_t step, const std::string& summary) {
  pending_ += detail::tfrecord(detail::event(detail::unix_seconds(), step, nullptr, &summary));
  ++records_;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
