// The loggers' files, decoded: CSV (Lightning's layout), TensorBoard (TFRecord framing, every CRC, the protobuf
// fields), MLflow's file store, JSON lines; versions, bad folders, rank 0 only, and the Engine adapter.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "../torch/temp_dir.hpp"

using namespace trainloop;
namespace fs = std::filesystem;

namespace {
bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}
std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}
}  // namespace

TEST_CASE("CSVLogger: Lightning's folders and versions, a header that grows, empty cells, hparams.yaml") {
  TempDir dir;
  CSVLogger::Options options;
  options.save_dir = dir.path.string();
  options.name = "exp";
  options.flush_interval = std::chrono::hours(1);  // only finalize flushes, so the rewrite path is exercised
  {
    CSVLogger logger(options);
    logger.start();
    CHECK(logger.log_dir() == dir.path / "exp" / "version_0");
    logger.log_hyperparams({{"lr", 0.001}, {"layers", std::int64_t{3}}, {"name", std::string("cnn: small")}});
    logger.log_metrics(1, {{"epoch", 0}, {"loss", 0.5}});
    logger.flush();
    logger.log_metrics(2, {{"epoch", 0}, {"loss", 0.25}});
    logger.flush();  // appended
    logger.log_metrics(2, {{"epoch", 0}, {"val_acc", 0.75}, {"a,b", 1e-8}});
    logger.finalize("success");  // the header grew: rewritten
  }
  const fs::path run = dir.path / "exp" / "version_0";
  CHECK(lines_of(read_file((run / "metrics.csv").string())) ==
        std::vector<std::string>{"epoch,step,loss,\"a,b\",val_acc", "0,1,0.5,,", "0,2,0.25,,", "0,2,,1e-08,0.75"});
  CHECK(read_file((run / "hparams.yaml").string()) == "\"layers\": 3\n\"lr\": 0.001\n\"name\": \"cnn: small\"\n");
  CHECK(files_in(run) == std::vector<std::string>{"hparams.yaml", "metrics.csv"});  // no temporary left behind

  // The next logger takes the next free version; an explicit version is used as given.
  CSVLogger second(options);
  second.start();
  CHECK(second.log_dir() == dir.path / "exp" / "version_1");
  fs::create_directories(dir.path / "exp" / "version_7");
  CSVLogger third(options);
  CHECK(third.version() == 8);
}

TEST_CASE("loggers refuse a bad folder at start, naming it; other ranks write nothing") {
  TempDir dir;
  {
    std::ofstream blocker(dir.file("blocker"));
  }
  CSVLogger::Options csv;
  csv.save_dir = dir.file("blocker");
  CHECK_THROWS_WITH_AS(CSVLogger(csv).start(), contains("trainloop: CSVLogger: cannot write logs in '" + dir.file("blocker") + "/lightning_logs/version_0'"),
                       std::runtime_error);
  TensorBoardLogger::Options tb;
  tb.save_dir = "/proc/trainloop-cannot-write-here";
  CHECK_THROWS_WITH_AS(TensorBoardLogger(tb).start(), contains("TensorBoardLogger: cannot write logs in '/proc/trainloop-cannot-write-here"),
                       std::runtime_error);
  MLFlowLogger::Options ml;
  ml.tracking_dir = dir.file("blocker") + "/mlruns";
  CHECK_THROWS_WITH_AS(MLFlowLogger(ml).start(), contains("MLFlowLogger: cannot write logs in"), std::runtime_error);

  ::setenv("RANK", "1", 1);
  CSVLogger::Options quiet;
  quiet.save_dir = dir.file("rank1");
  {
    CSVLogger other_rank(quiet);
    other_rank.log_metrics(1, {{"loss", 1.0}});
    other_rank.finalize("success");
  }
  ::unsetenv("RANK");
  CHECK_FALSE(fs::exists(dir.file("rank1")));
}

namespace {
// A reader of what TensorBoardLogger writes, independent of it: TFRecord framing with CRC checks, then protobuf.
std::uint32_t crc32c_reference(const std::string& data) {  // bit by bit, the textbook definition
  std::uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}
std::uint32_t unmask(std::uint32_t masked) {
  const std::uint32_t rotated = masked - 0xA282EAD8u;
  return (rotated >> 17) | (rotated << 15);
}
std::uint64_t le(const std::string& s, std::size_t at, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[at + i])) << (8 * i);
  return v;
}
std::vector<std::string> read_records(const std::string& file) {
  std::vector<std::string> records;
  std::size_t at = 0;
  while (at < file.size()) {
    REQUIRE(at + 12 <= file.size());
    const std::uint64_t length = le(file, at, 8);
    CHECK(unmask(static_cast<std::uint32_t>(le(file, at + 8, 4))) == crc32c_reference(file.substr(at, 8)));
    REQUIRE(at + 12 + length + 4 <= file.size());
    const std::string data = file.substr(at + 12, length);
    CHECK(unmask(static_cast<std::uint32_t>(le(file, at + 12 + length, 4))) == crc32c_reference(data));
    records.push_back(data);
    at += 12 + length + 4;
  }
  return records;
}
struct Field {
  int number, wire;
  std::uint64_t integer = 0;  // varint, fixed64, fixed32
  std::string bytes;
};
std::vector<Field> parse(const std::string& message) {
  std::vector<Field> fields;
  std::size_t at = 0;
  auto varint = [&] {
    std::uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      const auto b = static_cast<unsigned char>(message.at(at++));
      v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (at < message.size()) {
    const std::uint64_t key = varint();
    Field f{static_cast<int>(key >> 3), static_cast<int>(key & 7), 0, {}};
    if (f.wire == 0) f.integer = varint();
    else if (f.wire == 1) f.integer = le(message, at, 8), at += 8;
    else if (f.wire == 5) f.integer = le(message, at, 4), at += 4;
    else if (f.wire == 2) {
      const auto n = varint();
      f.bytes = message.substr(at, n);
      at += n;
    } else FAIL("unexpected wire type");
    fields.push_back(f);
  }
  return fields;
}
const Field* field(const std::vector<Field>& fields, int number) {
  for (const auto& f : fields)
    if (f.number == number) return &f;
  return nullptr;
}
}  // namespace

TEST_CASE("CRC32C matches its standard test vectors") {
  CHECK(detail::crc32c("123456789", 9) == 0xE3069283u);
  std::string zeros(32, '\0'), ones(32, '\xFF'), ascending;
  for (int i = 0; i < 32; ++i) ascending += static_cast<char>(i);
  CHECK(detail::crc32c(zeros.data(), 32) == 0x8A9136AAu);  // RFC 3720, B.4
  CHECK(detail::crc32c(ones.data(), 32) == 0x62A8AB43u);
  CHECK(detail::crc32c(ascending.data(), 32) == 0x46DD794Eu);
  CHECK(crc32c_reference("123456789") == 0xE3069283u);
}

TEST_CASE("CRC32C: the table and the CPU-instruction paths agree with the bit-by-bit definition, in pieces too") {
  std::string data;
  std::uint32_t state = 12345;
  for (int i = 0; i < 1000; ++i) data += static_cast<char>((state = state * 1103515245u + 12345u) >> 24);
  for (std::size_t length : {0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 100, 999, 1000}) {
    CAPTURE(length);
    const std::string piece = data.substr(0, length);
    const std::uint32_t expected = crc32c_reference(piece);
    CHECK(detail::crc32c(piece.data(), piece.size()) == expected);
    CHECK(detail::crc32c_update_portable(0, piece.data(), piece.size()) == expected);
    const std::size_t half = length / 3;  // streaming: any split gives the same CRC
    CHECK(detail::crc32c_update(detail::crc32c(piece.data(), half), piece.data() + half, length - half) == expected);
  }
}

TEST_CASE("TensorBoardLogger: events TensorBoard reads: framing, CRCs, file_version, scalars, text hparams") {
  TempDir dir;
  TensorBoardLogger::Options options;
  options.save_dir = dir.path.string();
  TensorBoardLogger logger(options);
  const double before = detail::unix_seconds();
  logger.start();
  logger.log_hyperparams({{"lr", 0.1}});
  logger.log_metrics(5, {{"epoch", 0}, {"loss", 0.123456789}});
  logger.log_metrics(10, {{"epoch", 1}, {"loss", 0.0625}, {"val/acc", 0.9}});
  logger.finalize("success");
  const std::string name = logger.event_file().filename().string();
  CHECK(name.rfind("events.out.tfevents.", 0) == 0);
  CHECK(logger.event_file().parent_path() == dir.path / "lightning_logs" / "version_0");

  const auto records = read_records(read_file(logger.event_file().string()));
  REQUIRE(records.size() == 4);
  auto first = parse(records[0]);
  CHECK(field(first, 3)->bytes == "brain.Event:2");
  double wall_time;
  std::memcpy(&wall_time, &field(first, 1)->integer, 8);
  CHECK(wall_time >= before - 1);
  CHECK(wall_time <= detail::unix_seconds() + 1);

  // The text summary of the hyperparameters: plugin "text", a DT_STRING tensor.
  auto hparams = parse(field(parse(records[1]), 5)->bytes);
  auto value = parse(field(hparams, 1)->bytes);
  CHECK(field(value, 1)->bytes == "hparams");
  CHECK(field(parse(field(parse(field(value, 9)->bytes), 1)->bytes), 1)->bytes == "text");
  auto tensor = parse(field(value, 8)->bytes);
  CHECK(field(tensor, 1)->integer == 7);
  CHECK(field(tensor, 8)->bytes.find("| lr | 0.1 |") != std::string::npos);

  // Scalars: step, then one Summary.Value per metric with simple_value as float32.
  std::map<std::int64_t, std::map<std::string, float>> scalars;
  for (std::size_t i = 2; i < records.size(); ++i) {
    auto event = parse(records[i]);
    const auto step = static_cast<std::int64_t>(field(event, 2)->integer);
    for (const auto& v : parse(field(event, 5)->bytes)) {
      auto parts = parse(v.bytes);
      const auto bits = static_cast<std::uint32_t>(field(parts, 2)->integer);
      CHECK(field(parts, 2)->wire == 5);
      float f;
      std::memcpy(&f, &bits, 4);
      scalars[step][field(parts, 1)->bytes] = f;
    }
  }
  CHECK(scalars[5]["loss"] == doctest::Approx(0.123456789).epsilon(1e-7));
  CHECK(scalars[5]["epoch"] == 0);
  CHECK(scalars[10]["val/acc"] == doctest::Approx(0.9).epsilon(1e-7));
  CHECK(scalars[10]["loss"] == 0.0625f);
  CHECK(read_file((logger.log_dir() / "hparams.yaml").string()) == "\"lr\": 0.1\n");
}

TEST_CASE("MLFlowLogger: the file store's layout and the rules MLflow enforces") {
  TempDir dir;
  MLFlowLogger::Options options;
  options.tracking_dir = dir.file("mlruns");
  options.experiment_name = "fashion";
  options.run_name = "cnn";
  MLFlowLogger logger(options);
  const std::int64_t before = detail::unix_millis();
  logger.start();
  logger.log_hyperparams({{"lr", 0.01}, {"optimizer", std::string("adam")}});
  logger.log_metrics(1, {{"epoch", 0}, {"loss", 0.5}, {"bad:name", 2}});
  logger.log_metrics(2, {{"epoch", 0}, {"loss", 0.25}});
  const fs::path root = dir.file("mlruns");
  // Running: status 1, no end time yet.
  CHECK(has(read_file((logger.run_dir() / "meta.yaml").string()), "\nstatus: 1\n"));
  CHECK(has(read_file((logger.run_dir() / "meta.yaml").string()), "\nend_time: null\n"));
  logger.finalize("success");

  // Experiment 0 "Default" exists; ours is a new one, 1.
  CHECK(has(read_file((root / "0" / "meta.yaml").string()), "\nname: \"Default\"\n"));
  CHECK(logger.experiment_id() == "1");
  const std::string experiment = read_file((root / "1" / "meta.yaml").string());
  CHECK(has(experiment, "artifact_location: file://" + (root / "1").string() + "\n"));
  CHECK(has(experiment, "experiment_id: '1'\n"));
  CHECK(has(experiment, "lifecycle_stage: active\n"));

  // The run: id = 32 lowercase hex (uuid4) = folder name; experiment_id a string equal to the parent folder.
  const std::string& id = logger.run_id();
  REQUIRE(id.size() == 32);
  CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(id[12] == '4');
  CHECK(logger.run_dir() == root / "1" / id);
  std::map<std::string, std::string> meta;
  for (const auto& line : lines_of(read_file((logger.run_dir() / "meta.yaml").string()))) {
    const auto colon = line.find(": ");
    if (colon != std::string::npos) meta[line.substr(0, colon)] = line.substr(colon + 2);
  }
  CHECK(meta["run_id"] == id);
  CHECK(meta["run_uuid"] == id);
  CHECK(meta["experiment_id"] == "'1'");
  CHECK(meta["status"] == "3");
  CHECK(meta["lifecycle_stage"] == "active");
  CHECK(meta["artifact_uri"] == "file://" + (logger.run_dir() / "artifacts").string());
  CHECK(std::stoll(meta["start_time"]) >= before);
  CHECK(std::stoll(meta["end_time"]) >= std::stoll(meta["start_time"]));
  CHECK(meta["run_name"] == "\"cnn\"");
  CHECK(files_in(logger.run_dir()) == std::vector<std::string>{"artifacts", "meta.yaml", "metrics", "params", "tags"});
  CHECK(fs::is_empty(logger.run_dir() / "artifacts"));

  // Metrics: "<ms> <value> <step>" lines; params and tags without a trailing newline; names MLflow accepts.
  const auto loss = lines_of(read_file((logger.run_dir() / "metrics" / "loss").string()));
  REQUIRE(loss.size() == 2);
  std::int64_t ms;
  double value;
  std::int64_t step;
  std::istringstream(loss[1]) >> ms >> value >> step;
  CHECK(loss[1] == std::to_string(ms) + " 0.25 2");
  CHECK(ms >= before);
  CHECK(fs::exists(logger.run_dir() / "metrics" / "bad_name"));
  CHECK(read_file((logger.run_dir() / "params" / "lr").string()) == "0.01");
  CHECK(read_file((logger.run_dir() / "params" / "optimizer").string()) == "adam");
  CHECK(read_file((logger.run_dir() / "tags" / "mlflow.runName").string()) == "cnn");

  // A second run of the same experiment finds it by name; a failure marks the run FAILED (4).
  MLFlowLogger again(options);
  again.start();
  CHECK(again.experiment_id() == "1");
  again.finalize("failed");
  CHECK(has(read_file((again.run_dir() / "meta.yaml").string()), "\nstatus: 4\n"));
}

TEST_CASE("JSONLinesLogger: one object per record, null for non-finite values") {
  TempDir dir;
  JSONLinesLogger::Options options;
  options.save_dir = dir.path.string();
  JSONLinesLogger logger(options);
  logger.log_hyperparams({{"lr", 0.5}, {"name", std::string("a \"quoted\" name")}});
  logger.log_metrics(3, {{"epoch", 1}, {"loss", 0.75}, {"bad", std::nan("")}});
  logger.finalize("success");
  const auto lines = lines_of(read_file((logger.log_dir() / "metrics.jsonl").string()));
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].rfind("{\"step\": 3, \"epoch\": 1, \"time\": ", 0) == 0);
  CHECK(has(lines[0], ", \"bad\": null, \"loss\": 0.75}"));
  CHECK(read_file((logger.log_dir() / "hparams.json").string()) == "{\"lr\": 0.5, \"name\": \"a \\\"quoted\\\" name\"}\n");
}

TEST_CASE("an Engine hands its metrics to a logger at epoch ends, at another engine's step") {
  TempDir dir;
  CSVLogger::Options options;
  options.save_dir = dir.path.string();
  CSVLogger logger(options);
  auto trainer = make_engine<int>([](EngineCore&, int) {});
  auto evaluator = make_engine<int>([](EngineCore& core, int x) { core.state.metrics["acc"] = x / 10.0; },
                                    log_metrics_to(logger, {"val/", 0, &trainer, true}));
  trainer.on(Events::epoch_completed, [&](auto&) { evaluator.run(std::vector<int>{1, 2, 3}, RunOptions().max_epochs(1)); });
  trainer.run(std::vector<int>{1, 2}, RunOptions().max_epochs(2));
  CHECK(lines_of(read_file((logger.log_dir() / "metrics.csv").string())) ==
        std::vector<std::string>{"epoch,step,val/acc", "1,2,0.3", "1,4,0.3"});
}
