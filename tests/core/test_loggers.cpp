// The loggers' files, decoded: CSV (Lightning's layout), TensorBoard (TFRecord framing, every CRC, the protobuf
// fields), MLflow's file store, JSON lines; versions, bad folders, rank 0 only, and the Engine adapter.
#include <doctest/doctest.h>
// A torch-free TU asks for the loggers; the other core tests' TUs, linked into the same program, do not.
#define TRAINLOOP_WITH_LOGGERS 1
#include <trainloop.hpp>

#include <algorithm>
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

TEST_CASE("loggers refuse a bad folder at start, naming it") {
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

}

// Loggers write on rank 0 only, the rank being detail::process_rank(): the joined process group's, else the
// launcher's environment, read as the process group reads it (torchrun, Slurm, Open MPI).
TEST_CASE("loggers write nothing on a rank other than 0, whichever launcher or process group says so") {
  TempDir dir;
  auto writes_on = [&](const std::string& name) {
    CSVLogger::Options options;
    options.save_dir = dir.file(name);
    {
      CSVLogger logger(options);
      logger.log_metrics(1, {{"loss", 1.0}});
      logger.finalize("success");
    }
    return fs::exists(dir.file(name));
  };
  struct Env {
    std::vector<std::string> names;
    Env(std::initializer_list<std::pair<const char*, const char*>> values) {
      for (const auto& [name, value] : values) {
        ::setenv(name, value, 1);
        names.push_back(name);
      }
    }
    ~Env() {
      for (const auto& name : names) ::unsetenv(name.c_str());
    }
  };
  CHECK(trainloop::detail::process_rank() == 0);
  CHECK(writes_on("alone"));
  {
    Env torchrun{{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}};
    CHECK(trainloop::detail::process_rank() == 1);
    CHECK_FALSE(writes_on("torchrun_rank1"));
  }
  {
    Env mpirun{{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "3"}, {"MASTER_PORT", "29500"}};
    CHECK(trainloop::detail::process_rank() == 2);
    CHECK_FALSE(writes_on("mpirun_rank2"));
  }
  {  // variables that describe no valid job (no rendezvous address): a process of its own
    Env broken{{"RANK", "1"}, {"WORLD_SIZE", "2"}};
    CHECK(trainloop::detail::process_rank() == 0);
  }
  {  // a rank that is not 0 by the environment, but rank 0 of the group it joined (the group wins)
    Env torchrun{{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}};
    trainloop::detail::joined_rank() = 0;
    const bool wrote = writes_on("joined_rank0");
    trainloop::detail::joined_rank().reset();
    CHECK(wrote);
  }
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
  REQUIRE(records.size() == 5);  // file_version, hyperparameters, two records, the session's end
  auto first = parse(records[0]);
  CHECK(field(first, 3)->bytes == "brain.Event:2");
  double wall_time;
  std::memcpy(&wall_time, &field(first, 1)->integer, 8);
  CHECK(wall_time >= before - 1);
  CHECK(wall_time <= detail::unix_seconds() + 1);

  // The text summary of the hyperparameters (after the HParams session start): plugin "text", a DT_STRING tensor.
  auto hparams = parse(field(parse(records[1]), 5)->bytes);
  REQUIRE(hparams.size() == 2);
  auto value = parse(hparams[1].bytes);
  CHECK(field(value, 1)->bytes == "hparams");
  CHECK(field(parse(field(parse(field(value, 9)->bytes), 1)->bytes), 1)->bytes == "text");
  auto tensor = parse(field(value, 8)->bytes);
  CHECK(field(tensor, 1)->integer == 7);
  CHECK(field(tensor, 8)->bytes.find("| lr | 0.1 |") != std::string::npos);

  // Scalars: step, then one Summary.Value per metric with simple_value as float32.
  std::map<std::int64_t, std::map<std::string, float>> scalars;
  for (std::size_t i = 2; i + 1 < records.size(); ++i) {
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
  logger.log_metrics(1, {{"epoch", 0}, {"loss", 0.5}, {"bad@name", 2}});
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
  CHECK(fs::exists(logger.run_dir() / "metrics" / "bad_name"));  // '@' is not in MLflow's set
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
  logger.finalize("success");  // the evaluator's finalize waits for the outer run, which has no logging handler
  CHECK(lines_of(read_file((logger.log_dir() / "metrics.csv").string())) ==
        std::vector<std::string>{"epoch,step,val/acc", "1,2,0.3", "1,4,0.3"});
}

TEST_CASE("numbers are written as Python writes floats; YAML floats keep a dot so YAML 1.1 reads floats") {
  const std::vector<std::pair<double, std::string>> python = {
      {3.0, "3.0"},       {0.1, "0.1"},          {1e-8, "1e-08"},       {1e16, "1e+16"},          {1e15, "1000000000000000.0"},
      {0.0001, "0.0001"}, {0.00012, "0.00012"},  {1.5e-5, "1.5e-05"},   {-0.0, "-0.0"},           {0.0, "0.0"},
      {123.456, "123.456"}, {-2.5e300, "-2.5e+300"}, {1.0 / 3, "0.3333333333333333"}, {12345678.9, "12345678.9"}};
  for (const auto& case_ : python) {
    const double value = case_.first;
    const std::string& text = case_.second;
    CAPTURE(text);
    CHECK(detail::format_number(value) == text);
    CHECK(std::strtod(detail::format_number(value).c_str(), nullptr) == value);
  }
  CHECK(detail::yaml_number(1e-8) == "1.0e-08");
  CHECK(detail::yaml_number(1e16) == "1.0e+16");
  CHECK(detail::yaml_number(3.0) == "3.0");
  CHECK(detail::yaml_number(std::nan("")) == ".nan");
  CHECK(detail::yaml_number(-HUGE_VAL) == "-.inf");
  CHECK(detail::hparams_yaml({{"lr", 1e-8}, {"momentum", 3.0}, {"layers", std::int64_t{3}}, {"act", std::string("on")}}) ==
        "\"act\": \"on\"\n\"layers\": 3\n\"lr\": 1.0e-08\n\"momentum\": 3.0\n");
}

TEST_CASE("YAML scalars as MLflow writes them: plain, single-quoted, double-quoted, folded") {
  const std::string yaml = "artifact_location: file:///x\nname: 'on'\nother: 'it''s'\nquoted: \"a\\\"b\\u00e9\"\n"
                           "plain: hello world # comment\nlong: 'a name folded\n  over two lines'\nempty:\n";
  CHECK(detail::yaml_top_level_value(yaml, "name") == "on");
  CHECK(detail::yaml_top_level_value(yaml, "other") == "it's");
  CHECK(detail::yaml_top_level_value(yaml, "quoted") == "a\"b\xC3\xA9");
  CHECK(detail::yaml_top_level_value(yaml, "plain") == "hello world");
  CHECK(detail::yaml_top_level_value(yaml, "long") == "a name folded over two lines");
  CHECK(detail::yaml_top_level_value(yaml, "empty") == "");
  CHECK_FALSE(detail::yaml_top_level_value(yaml, "missing"));
  CHECK(detail::yaml_top_level_value("name: a\n   ", "name") == "a");  // trailing blanks at the end of the file
}

TEST_CASE("MLFlowLogger: names as MLflow stores them: '/' nests, its characters kept, bad paths and collisions refused") {
  TempDir dir;
  MLFlowLogger::Options options;
  options.tracking_dir = dir.file("mlruns");
  MLFlowLogger logger(options);
  logger.log_hyperparams({{"optimizer/lr", 3.0}, {"eps", 1e-8}, {"layers", std::int64_t{3}}});
  logger.log_metrics(1, {{"train/loss", 0.5}, {"val/acc", 0.25}, {"acc@1", 1.0}, {"x:y", 2.0}, {"a b", 3.0},
                         {"\xC3\xA9psilon", 4.0}, {"\xE6\x8D\x9F\xE5\xA4\xB1", 5.0}, {"loss\xF0\x9F\x94\xA5", 6.0}});
  logger.finalize("success");
  const fs::path metrics = logger.run_dir() / "metrics";
  CHECK(lines_of(read_file((metrics / "train" / "loss").string())).size() == 1);
  CHECK(has(read_file((metrics / "train" / "loss").string()), " 0.5 1"));
  CHECK(fs::exists(metrics / "val" / "acc"));
  CHECK(fs::exists(metrics / "acc_1"));                                  // '@' is not MLflow's
  CHECK(fs::exists(metrics / "x:y"));                                    // ':' is
  CHECK(fs::exists(metrics / "a b"));
  CHECK(fs::exists(metrics / "\xC3\xA9psilon"));                         // letters beyond ASCII are
  CHECK(fs::exists(metrics / "\xE6\x8D\x9F\xE5\xA4\xB1"));
  CHECK(fs::exists(metrics / "loss_"));                                  // an emoji is not: one '_' for it
  CHECK(read_file((logger.run_dir() / "params" / "optimizer" / "lr").string()) == "3.0");  // str(3.0)
  CHECK(read_file((logger.run_dir() / "params" / "eps").string()) == "1e-08");
  CHECK(read_file((logger.run_dir() / "params" / "layers").string()) == "3");

  // Names MLflow refuses are errors naming them, at the first log, before anything is written.
  for (const std::string bad : {"a//b", "loss/", "..", "x/./y", "/abs", "", "..a", "a/../b"}) {
    CAPTURE(bad);
    MLFlowLogger other(options);
    CHECK_THROWS_WITH_AS(other.log_metrics(1, {{bad, 1.0}}), contains("invalid metric name '" + bad + "'"), std::invalid_argument);
    CHECK(other.run_id().empty());
  }
  CHECK_THROWS_WITH_AS(MLFlowLogger(options).log_metrics(1, {{std::string(251, 'a'), 1.0}}), contains("at most 250"),
                       std::invalid_argument);
  // Two names that become one file: refused, not merged.
  MLFlowLogger clash(options);
  CHECK_THROWS_WITH_AS(clash.log_metrics(1, {{"acc@1", 1.0}, {"acc_1", 2.0}}),
                       contains("'acc@1' and 'acc_1' would both be written as 'acc_1'"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(MLFlowLogger(options).log_hyperparams({{"a#", 1.0}, {"a$", 2.0}}), contains("param names"),
                       std::invalid_argument);
  // MLflow refuses to change a logged param.
  MLFlowLogger changer(options);
  changer.log_hyperparams({{"lr", 0.1}});
  changer.start();
  CHECK_THROWS_WITH_AS(changer.log_hyperparams({{"lr", 0.2}}), contains("param 'lr' was logged as '0.1'"), std::invalid_argument);
}

TEST_CASE("MLFlowLogger: a name keeps exactly the characters MLflow's \\w accepts (Python's str.isalnum)") {
  // Each pair: a name (UTF-8) and what Python's re.sub of MLflow's rule gives, character by character.
  const std::pair<const char*, const char*> names[] = {
      {"\xE6\x8D\x9F\xE5\xA4\xB1", "\xE6\x8D\x9F\xE5\xA4\xB1"},  // 损失: Chinese letters (Lo)
      {"Gr\xC3\xB6\xC3\x9F" "e", "Gr\xC3\xB6\xC3\x9F" "e"},      // Größe: Latin-1 letters
      {"\xE0\xA4\xB9\xE0\xA4\xBE\xE0\xA4\xA8\xE0\xA4\xBF",        // हानि: the vowel signs are marks (Mc)
       "\xE0\xA4\xB9_\xE0\xA4\xA8_"},
      {"acc\xE2\x84\xA2", "acc_"},                                  // acc™: a symbol (So)
      {"\xD7\xA9\xD6\xB8", "\xD7\xA9_"},                            // a Hebrew letter and its point (Mn)
      {"e\xCC\x81", "e_"},                                           // a combining acute accent
      {"x\xC2\xB2", "x\xC2\xB2"},                                    // x²: a superscript digit (No) is a word character
      {"\xE2\x85\xAB", "\xE2\x85\xAB"},                              // Ⅻ: a letter number (Nl)
      {"\xC2\xBD", "\xC2\xBD"},                                        // ½ (No)
      {"\xD9\xA3", "\xD9\xA3"},                                        // Arabic-Indic digit three (Nd)
      {"loss\xE2\x80\x94val", "loss_val"},                           // an em dash (Pd)
  };
  for (const auto& name_and_key : names) {  // (no structured binding: CAPTURE's lambda cannot take one in C++17)
    const char* name = name_and_key.first;
    CAPTURE(name);
    CHECK(detail::mlflow_key(name, "metric") == name_and_key.second);
  }
  // Spot checks across the table: its first and last ranges, and code points just outside them.
  CHECK_FALSE(detail::is_unicode_word(0x80));
  CHECK(detail::is_unicode_word(0xAA));
  CHECK_FALSE(detail::is_unicode_word(0xAB));
  CHECK(detail::is_unicode_word(0x3134A));
  CHECK_FALSE(detail::is_unicode_word(0x3134B));
  CHECK_FALSE(detail::is_unicode_word(0x10FFFF));
}

TEST_CASE("MLFlowLogger: a failed write ends the run FAILED, once, and writes no line twice") {
  TempDir dir;
  MLFlowLogger::Options options;
  options.tracking_dir = dir.file("mlruns");
  options.flush_interval = std::chrono::hours(1);
  std::string run_dir;
  {
    MLFlowLogger logger(options);
    logger.start();
    run_dir = logger.run_dir().string();
    fs::create_directories(logger.run_dir() / "metrics" / "b");  // a folder where metric b's file must go
    logger.log_metrics(1, {{"a", 1.0}, {"b", 2.0}, {"c", 3.0}});
    CHECK_THROWS_WITH_AS(logger.flush(), contains("cannot open b"), std::runtime_error);
    CHECK_THROWS_WITH_AS(logger.finalize("success"), contains("cannot open b"), std::runtime_error);
    const std::string meta = read_file(run_dir + "/meta.yaml");
    CHECK(has(meta, "\nstatus: 4\n"));
    CHECK_FALSE(has(meta, "end_time: null"));
    logger.finalize("failed");  // once: nothing more happens
    CHECK(read_file(run_dir + "/meta.yaml") == meta);
  }  // the destructor leaves an ended run alone
  CHECK(lines_of(read_file(run_dir + "/metrics/a")).size() == 1);
  CHECK(lines_of(read_file(run_dir + "/metrics/c")).size() == 1);  // a failing file does not stop the others
  CHECK(has(read_file(run_dir + "/meta.yaml"), "\nstatus: 4\n"));
}

TEST_CASE("MLFlowLogger: experiments named as MLflow writes them are found; an evaluator's finalize waits for the outer run") {
  TempDir dir;
  const fs::path root = dir.file("mlruns");
  fs::create_directories(root / "0");
  fs::create_directories(root / "7");
  fs::create_directories(root / "9");
  std::ofstream(root / "0" / "meta.yaml") << "name: Default\nlifecycle_stage: active\n";
  std::ofstream(root / "7" / "meta.yaml") << "artifact_location: file:///x\nexperiment_id: '7'\nlifecycle_stage: active\nname: 'on'\n";
  std::ofstream(root / "9" / "meta.yaml") << "experiment_id: '9'\nlifecycle_stage: deleted\nname: '123'\n";
  MLFlowLogger::Options options;
  options.tracking_dir = root.string();
  options.experiment_name = "on";
  {
    MLFlowLogger logger(options);
    logger.start();
    CHECK(logger.experiment_id() == "7");
  }
  options.experiment_name = "123";  // only a deleted one has it: a new experiment
  MLFlowLogger numbered(options);
  numbered.start();
  CHECK(numbered.experiment_id() == "10");
  CHECK(detail::yaml_top_level_value(read_file((root / "10" / "meta.yaml").string()), "name") == "123");

  // log_metrics_to(..., finalize) on an evaluator: the run stays RUNNING between evaluations, ends with the trainer.
  options.experiment_name = "engines";
  MLFlowLogger logger(options);
  auto status = [&] { return *detail::yaml_top_level_value(read_file((logger.run_dir() / "meta.yaml").string()), "status"); };
  std::vector<std::string> seen;
  auto evaluator = make_engine<int>([](EngineCore& core, int x) { core.state.metrics["acc"] = x / 10.0; });
  auto trainer = make_engine<int>([](EngineCore&, int) {}, log_metrics_to(logger, {"train/", 0, nullptr, true}));
  auto evaluating = make_engine<int>([](EngineCore& core, int x) { core.state.metrics["acc"] = x / 10.0; },
                                     log_metrics_to(logger, {"val/", 0, &trainer, true}));
  trainer.on(Events::epoch_completed, [&](auto&) {
    evaluating.run(std::vector<int>{1, 2, 3}, RunOptions().max_epochs(1));
    seen.push_back(status());
  });
  trainer.run(std::vector<int>{1, 2}, RunOptions().max_epochs(2));
  CHECK(seen == std::vector<std::string>{"1", "1"});
  CHECK(status() == "3");
  CHECK(lines_of(read_file((logger.run_dir() / "metrics" / "val" / "acc").string())).size() == 2);
  // A record after finalize reopens the run, as MLflow's start_run(run_id) does.
  logger.log_metrics(5, {{"late", 1.0}});
  CHECK(status() == "1");
  CHECK(has(read_file((logger.run_dir() / "meta.yaml").string()), "end_time: null"));
  logger.finalize("success");
  CHECK(status() == "3");
  (void)evaluator;
}

TEST_CASE("CSV and JSON lines refuse metric names that would overwrite their own columns") {
  TempDir dir;
  CSVLogger::Options options;
  options.save_dir = dir.path.string();
  CHECK_THROWS_WITH_AS(CSVLogger(options).log_metrics(1, {{"step", 1.0}}), contains("CSVLogger: a metric named 'step'"),
                       std::invalid_argument);
  for (const char* name : {"step", "time"})
    CHECK_THROWS_WITH_AS(JSONLinesLogger(options).log_metrics(1, {{name, 1.0}}),
                         contains(std::string("JSONLinesLogger: a metric named '") + name + "'"), std::invalid_argument);
  JSONLinesLogger logger(options);
  logger.log_hyperparams({{"lr", 1e-8}, {"momentum", 3.0}});
  logger.finalize("success");
  CHECK(read_file((logger.log_dir() / "hparams.json").string()) == "{\"lr\": 1e-08, \"momentum\": 3.0}\n");
}

namespace {
template <class Logger>
Logger versioned_logger(const fs::path& dir) {
  typename Logger::Options options;
  options.save_dir = dir.string();
  options.flush_interval = std::chrono::hours(1);
  return Logger(options);
}
}  // namespace

TEST_CASE("loggers continue a checkpoint's run: same version, the rows before the checkpoint, then the new ones") {
  TempDir dir;
  StateDict csv_state, jsonl_state, tb_state, mlflow_state;
  MLFlowLogger::Options ml;
  ml.tracking_dir = dir.file("mlruns");
  {
    auto csv = versioned_logger<CSVLogger>(dir.path);
    auto jsonl = versioned_logger<JSONLinesLogger>(dir.file("j"));
    auto tb = versioned_logger<TensorBoardLogger>(dir.file("t"));
    MLFlowLogger mlflow(ml);
    auto log = [&](std::int64_t step, std::map<std::string, double> record) {
      csv.log_metrics(step, record);
      jsonl.log_metrics(step, record);
      tb.log_metrics(step, record);
      mlflow.log_metrics(step, record);
    };
    csv.log_hyperparams({{"lr", 0.1}});
    tb.log_hyperparams({{"lr", 0.1}});
    mlflow.log_hyperparams({{"lr", 0.1}});
    log(1, {{"epoch", 0}, {"loss", 1.0}});
    log(2, {{"epoch", 0}, {"loss", 0.5}});
    csv.flush();  // what the Trainer does before a checkpoint
    jsonl.flush();
    tb.flush();
    mlflow.flush();
    csv_state = csv.state_dict();  // the checkpoint: after step 2
    jsonl_state = jsonl.state_dict();
    tb_state = tb.state_dict();
    mlflow_state = mlflow.state_dict();
    log(3, {{"epoch", 1}, {"loss", 0.25}, {"new", 9.0}});  // logged after the checkpoint, then the process dies
    csv.flush();
    jsonl.flush();
    tb.flush();
    mlflow.flush();
  }
  CHECK(csv_state.at("rows") == StateValue(std::int64_t{2}));
  // A new process resumes from the checkpoint: new loggers (whose next free version would be 1) continue version 0.
  auto csv = versioned_logger<CSVLogger>(dir.path);
  auto jsonl = versioned_logger<JSONLinesLogger>(dir.file("j"));
  auto tb = versioned_logger<TensorBoardLogger>(dir.file("t"));
  MLFlowLogger mlflow(ml);
  csv.setup(csv, csv, "fit");
  csv.log_hyperparams({{"lr", 0.1}});
  tb.log_hyperparams({{"lr", 0.1}});
  mlflow.log_hyperparams({{"lr", 0.1}});
  csv.load_state_dict(csv_state);
  jsonl.load_state_dict(jsonl_state);
  tb.load_state_dict(tb_state);
  mlflow.load_state_dict(mlflow_state);
  for (std::int64_t step : {3, 4}) {
    const std::map<std::string, double> record{{"epoch", 1}, {"loss", 0.125 * static_cast<double>(5 - step)}, {"acc", 0.5}};
    csv.log_metrics(step, record);
    jsonl.log_metrics(step, record);
    tb.log_metrics(step, record);
    mlflow.log_metrics(step, record);
  }
  csv.finalize("success");
  jsonl.finalize("success");
  tb.finalize("success");
  mlflow.finalize("success");

  CHECK(csv.log_dir() == dir.path / "lightning_logs" / "version_0");
  CHECK_FALSE(fs::exists(dir.path / "lightning_logs" / "version_1"));
  // The header was "epoch,step,loss,new" after the lost row; the kept rows get empty cells for the new column.
  CHECK(lines_of(read_file((csv.log_dir() / "metrics.csv").string())) ==
        std::vector<std::string>{"epoch,step,loss,new,acc", "0,1,1.0,,", "0,2,0.5,,", "1,3,0.25,,0.5", "1,4,0.125,,0.5"});
  const auto json = lines_of(read_file((jsonl.log_dir() / "metrics.jsonl").string()));
  REQUIRE(json.size() == 4);
  CHECK(json[1].rfind("{\"step\": 2,", 0) == 0);
  CHECK(json[2].rfind("{\"step\": 3,", 0) == 0);
  CHECK_FALSE(has(json[2], "\"new\""));

  // TensorBoard: the same event file, the lost step-3 event gone, the hyperparameters not repeated.
  CHECK(tb.event_file().filename().string() == std::get<std::string>(tb_state.at("event_file")));
  const auto records = read_records(read_file(tb.event_file().string()));
  std::vector<std::int64_t> steps;
  int hparams = 0;
  for (const auto& record : records) {
    auto event = parse(record);
    if (!field(event, 5)) continue;
    for (const auto& v : parse(field(event, 5)->bytes))
      if (field(parse(v.bytes), 1)->bytes == "_hparams_/session_start_info") ++hparams;
    const auto first_value = parse(field(parse(field(event, 5)->bytes), 1)->bytes);
    if (const Field* scalar = field(first_value, 2); scalar && scalar->wire == 5)
      steps.push_back(static_cast<std::int64_t>(field(event, 2)->integer));
  }
  CHECK(steps == std::vector<std::int64_t>{1, 2, 3, 4});
  CHECK(hparams == 1);

  // MLflow: the same run id, each metric cut back to its lines at the checkpoint; a metric born after it is gone.
  CHECK(mlflow.run_id() == std::get<std::string>(mlflow_state.at("run_id")));
  const auto loss = lines_of(read_file((mlflow.run_dir() / "metrics" / "loss").string()));
  REQUIRE(loss.size() == 4);
  CHECK(has(loss[2], " 0.25 3"));
  CHECK_FALSE(fs::exists(mlflow.run_dir() / "metrics" / "new"));
  CHECK(has(read_file((mlflow.run_dir() / "meta.yaml").string()), "\nstatus: 3\n"));
}

TEST_CASE("MLFlowLogger: the run's name in meta.yaml and the mlflow.runName tag stay equal, across resumes too") {
  TempDir dir;
  const auto name_of = [](const MLFlowLogger& logger) {
    const std::string meta = read_file((logger.run_dir() / "meta.yaml").string());
    const std::string tag_file = (logger.run_dir() / "tags" / "mlflow.runName").string();
    const std::string tag = fs::exists(tag_file) ? read_file(tag_file) : "(no tag)";
    return std::make_pair(detail::yaml_top_level_value(meta, "run_name").value_or("(none)"), tag);
  };
  using Names = std::pair<std::string, std::string>;
  MLFlowLogger::Options ml;
  ml.tracking_dir = dir.file("mlruns");
  ml.run_name = "first";
  ml.tags = {{"team", "a"}};
  StateDict checkpoint;
  {
    MLFlowLogger logger(ml);
    logger.log_metrics(1, {{"loss", 1.0}});
    checkpoint = logger.state_dict();
    logger.finalize("success");
    CHECK(name_of(logger) == Names{"first", "first"});
  }
  const auto resume = [&](MLFlowLogger::Options options) {
    MLFlowLogger logger(std::move(options));
    logger.load_state_dict(checkpoint);
    logger.log_metrics(2, {{"loss", 0.5}});
    logger.finalize("success");
    CHECK(logger.run_id() == std::get<std::string>(checkpoint.at("run_id")));
    return std::make_pair(name_of(logger), read_file((logger.run_dir() / "tags" / "team").string()));
  };
  // Resumed under another name: meta.yaml and the tag both take it (MLflow's update_run renames both); tags are
  // applied again.
  ml.run_name = "second";
  ml.tags = {{"team", "b"}};
  CHECK(resume(ml) == std::make_pair(Names{"second", "second"}, std::string("b")));
  // Resumed with no name: the run keeps the one it has, in both places.
  ml.run_name.clear();
  CHECK(resume(ml) == std::make_pair(Names{"second", "second"}, std::string("b")));
  // A name given as the tag is the run's name; a tag and a run_name that differ are refused, as MLflow does.
  ml.tags = {{"mlflow.runName", "third"}, {"team", "c"}};
  CHECK(resume(ml) == std::make_pair(Names{"third", "third"}, std::string("c")));
  ml.run_name = "fourth";
  CHECK_THROWS_WITH_AS(MLFlowLogger{ml}, doctest::Contains("mlflow.runName 'third' differ"), std::invalid_argument);
}

TEST_CASE("TensorBoardLogger: the HParams plugin's session start and end, an escaped Markdown table, once per run") {
  TempDir dir;
  auto logger = versioned_logger<TensorBoardLogger>(dir.path);
  const StateDict params{{"lr", 0.5}, {"name", std::string("a|b\nc*d")}, {"layers", std::int64_t{3}}};
  logger.log_hyperparams(params);
  logger.log_metrics(1, {{"loss", 1.0}});
  logger.log_hyperparams(params);  // a second stage of the same run: not written again
  logger.finalize("failed");
  const auto records = read_records(read_file(logger.event_file().string()));
  std::map<std::string, std::vector<std::vector<Field>>> by_tag;  // tag -> the Summary.Values
  for (const auto& record : records) {
    auto event = parse(record);
    if (!field(event, 5)) continue;
    for (const auto& v : parse(field(event, 5)->bytes)) by_tag[field(parse(v.bytes), 1)->bytes].push_back(parse(v.bytes));
  }
  REQUIRE(by_tag["_hparams_/session_start_info"].size() == 1);
  REQUIRE(by_tag["hparams"].size() == 1);
  REQUIRE(by_tag["_hparams_/session_end_info"].size() == 1);
  // plugin "hparams"; content = HParamsPluginData{session_start_info = 3: {hparams = 1 (map entries), start_time = 5}}
  auto plugin = parse(field(parse(field(by_tag["_hparams_/session_start_info"][0], 9)->bytes), 1)->bytes);
  CHECK(field(plugin, 1)->bytes == "hparams");
  auto start = parse(field(parse(field(plugin, 2)->bytes), 3)->bytes);
  std::map<std::string, std::string> strings;
  std::map<std::string, double> numbers;
  for (const auto& entry : start) {
    if (entry.number != 1) continue;
    auto kv = parse(entry.bytes);
    auto value = parse(field(kv, 2)->bytes);
    if (const Field* s = field(value, 3)) strings[field(kv, 1)->bytes] = s->bytes;
    if (const Field* n = field(value, 2)) std::memcpy(&numbers[field(kv, 1)->bytes], &n->integer, 8);
  }
  CHECK(strings == std::map<std::string, std::string>{{"name", "a|b\nc*d"}});
  CHECK(numbers == std::map<std::string, double>{{"layers", 3.0}, {"lr", 0.5}});
  auto end_plugin = parse(field(parse(field(by_tag["_hparams_/session_end_info"][0], 9)->bytes), 1)->bytes);
  auto end = parse(field(parse(field(end_plugin, 2)->bytes), 4)->bytes);
  CHECK(field(end, 1)->integer == 2);  // STATUS_FAILURE
  const std::string table = field(parse(field(by_tag["hparams"][0], 8)->bytes), 8)->bytes;
  CHECK(has(table, "| name | a\\|b<br>c\\*d |"));
}

namespace {
double f64(std::uint64_t bits) {
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}
std::vector<double> packed(const Field* f) {
  std::vector<double> out;
  REQUIRE(f);
  CHECK(f->wire == 2);
  for (std::size_t at = 0; at + 8 <= f->bytes.size(); at += 8) out.push_back(f64(le(f->bytes, at, 8)));
  return out;
}
// The files below `dir`, as paths relative to it, sorted.
std::vector<std::string> files_under(const std::filesystem::path& dir) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir))
    if (entry.is_regular_file()) files.push_back(entry.path().lexically_relative(dir).generic_string());
  std::sort(files.begin(), files.end());
  return files;
}
}  // namespace

TEST_CASE("histograms: TensorFlow's default edges and torch.utils.tensorboard's trimming, from host values") {
  const auto& edges = tensorflow_bucket_edges();
  REQUIRE(edges.size() == 1549);
  CHECK(edges[774] == 0.0);
  CHECK(edges[775] == 1e-12);
  CHECK(edges[776] == 1e-12 * 1.1);
  CHECK(edges.front() == -edges.back());
  CHECK(edges.back() < 1e20);
  CHECK(edges.back() * 1.1 >= 1e20);
  CHECK(std::is_sorted(edges.begin(), edges.end()));

  // Chosen edges: bins [0,1) [1,2) [2,3] (the last closed); -1 and 7 fall outside.
  const std::vector<double> mine{0, 1, 2, 3};
  const double values[] = {1.0, 1.5, 3.0, 2.0, -1.0, 7.0};
  const Histogram h = histogram_of(values, 6, mine, "h");
  CHECK(h.num == 6);
  CHECK(h.min == -1.0);
  CHECK(h.max == 7.0);
  CHECK(h.sum == 13.5);
  CHECK(h.sum_squares == 1 + 2.25 + 9 + 4 + 1 + 49);
  // The first non-empty bin is [1,2): an empty bucket before it (limit 1), then [1,2) -> 2 and [2,3] -> 2.
  CHECK((h.bucket_limits == std::vector<double>{1, 2, 3}));
  CHECK((h.bucket_counts == std::vector<double>{0, 2, 2}));
  // A first bin that is not empty: a zero bucket whose limit is the first edge.
  const double low[] = {0.0, 0.5};
  const Histogram l = histogram_of(low, 2, mine, "l");
  CHECK((l.bucket_limits == std::vector<double>{0, 1}));
  CHECK((l.bucket_counts == std::vector<double>{0, 2}));
  // With TensorFlow's edges: 0 lies in [0, 1e-12); a positive value in the bucket whose right limit is above it.
  const double w[] = {0.0, 0.25, -0.25};
  const Histogram t = histogram_of(w, 3, edges, "t");
  double total = 0;
  for (double c : t.bucket_counts) total += c;
  CHECK(total == 3);
  CHECK(t.bucket_counts.front() == 0);
  CHECK(t.bucket_limits.front() <= -0.25);
  CHECK(t.bucket_limits.back() > 0.25);
  CHECK_THROWS_WITH_AS(histogram_of(values, 0, mine, "empty"), contains("histogram 'empty': the tensor has no element"),
                       std::invalid_argument);
  const double outside[] = {9.0};
  CHECK_THROWS_WITH_AS(histogram_of(outside, 1, mine, "far"), contains("histogram 'far': no value lies within"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(histogram_of(values, 6, {0, 2, 1}, "bad"), contains("strictly ascending (edge 2"), std::invalid_argument);
}

TEST_CASE("TensorBoardLogger: histograms, images and text as add_histogram, add_image and add_text write them") {
  TempDir dir;
  TensorBoardLogger::Options options;
  options.save_dir = dir.path.string();
  TensorBoardLogger logger(options);
  const double values[] = {1.0, 1.5, 3.0, 2.0};
  logger.log_histogram("weights/fc/weight", histogram_of(values, 4, {0, 1, 2, 3}, "w"), 7);
  const EncodedImage image{2, 3, 3, std::string("\x89PNG\r\n\x1a\n", 8) + "rest"};
  logger.log_image("predictions", image, 8);
  logger.log_text("notes", "**bold** text", 9);
  CHECK_THROWS_WITH_AS(logger.log_image("x", EncodedImage{1, 1, 3, "GIF89a"}, 1), contains("image 'x' is not a PNG"),
                       std::invalid_argument);
  logger.finalize("success");

  const auto records = read_records(read_file(logger.event_file().string()));
  REQUIRE(records.size() == 4);
  // Histogram: Event.step 7, Summary.Value{tag = 1, histo = 5}.
  auto event = parse(records[1]);
  CHECK(field(event, 2)->integer == 7);
  auto value = parse(parse(field(event, 5)->bytes)[0].bytes);
  CHECK(field(value, 1)->bytes == "weights/fc/weight");
  auto histo = parse(field(value, 5)->bytes);
  CHECK(f64(field(histo, 1)->integer) == 1.0);
  CHECK(f64(field(histo, 2)->integer) == 3.0);
  CHECK(f64(field(histo, 3)->integer) == 4.0);
  CHECK(f64(field(histo, 4)->integer) == 7.5);
  CHECK(f64(field(histo, 5)->integer) == 1 + 2.25 + 9 + 4);
  CHECK((packed(field(histo, 6)) == std::vector<double>{1, 2, 3}));
  CHECK((packed(field(histo, 7)) == std::vector<double>{0, 2, 2}));
  // Image: Summary.Value{tag, image = 4: height 1, width 2, colorspace 3, encoded_image_string 4}.
  event = parse(records[2]);
  CHECK(field(event, 2)->integer == 8);
  value = parse(parse(field(event, 5)->bytes)[0].bytes);
  CHECK(field(value, 1)->bytes == "predictions");
  auto img = parse(field(value, 4)->bytes);
  CHECK(field(img, 1)->integer == 2);
  CHECK(field(img, 2)->integer == 3);
  CHECK(field(img, 3)->integer == 3);
  CHECK(field(img, 4)->bytes == image.png);
  // Text: "<tag>/text_summary", plugin "text", a DT_STRING tensor of shape [1].
  event = parse(records[3]);
  value = parse(parse(field(event, 5)->bytes)[0].bytes);
  CHECK(field(value, 1)->bytes == "notes/text_summary");
  CHECK(field(parse(field(parse(field(value, 9)->bytes), 1)->bytes), 1)->bytes == "text");
  auto tensor = parse(field(value, 8)->bytes);
  CHECK(field(tensor, 1)->integer == 7);
  auto dim = parse(field(parse(field(tensor, 2)->bytes), 2)->bytes);
  CHECK(field(dim, 1)->integer == 1);
  CHECK(field(tensor, 8)->bytes == "**bold** text");
}

TEST_CASE("MLFlowLogger: artifacts, time-stepped images and text in MLflow's layout; MLflow's path rules") {
  TempDir dir;
  MLFlowLogger::Options options;
  options.tracking_dir = dir.file("mlruns");
  MLFlowLogger logger(options);
  {
    std::ofstream(dir.file("config.yaml")) << "lr: 0.1\n";
  }
  logger.log_artifact(dir.file("config.yaml"));
  logger.log_artifact(dir.file("config.yaml"), "configs/run");
  const std::string png = std::string("\x89PNG\r\n\x1a\n", 8) + "pixels";
  logger.log_image("val/predictions", EncodedImage{1, 1, 3, png}, 5);
  logger.log_image("val/predictions", EncodedImage{1, 1, 3, png + "2"}, 5);  // the same key and step: replaced
  logger.log_image(EncodedImage{1, 1, 3, png}, "plots/curve.png");
  logger.log_text("# notes", "notes.md");
  logger.log_text("samples", "a b c", 5);
  const auto artifacts = logger.run_dir() / "artifacts";
  const auto files = files_under(artifacts);
  REQUIRE(files.size() == 7);
  CHECK(files[0] == "config.yaml");
  CHECK(files[1] == "configs/run/config.yaml");
  // images/<key with '/' as '#'>%step%<step>%timestamp%<ms>%<uuid, first digit a letter g..z>[.png | %compressed.webp]
  CHECK(files[2].rfind("images/val#predictions%step%5%timestamp%", 0) == 0);
  CHECK(files[3].rfind("images/val#predictions%step%5%timestamp%", 0) == 0);
  const std::string stem = files[3].substr(0, files[3].size() - 4);
  CHECK(files[3].substr(files[3].size() - 4) == ".png");
  CHECK(files[2] == stem + "%compressed.webp");
  const std::string uuid = stem.substr(stem.rfind('%') + 1);
  CHECK(uuid.size() == 36);
  CHECK((uuid[0] >= 'g' && uuid[0] <= 'z'));
  CHECK(read_file((artifacts / files[3]).string()) == png + "2");
  CHECK(files[4] == "notes.md");
  CHECK(files[5] == "plots/curve.png");
  CHECK(files[6] == "text/samples/step_5.txt");
  CHECK(read_file((artifacts / "text/samples/step_5.txt").string()) == "a b c");
  CHECK(read_file((logger.run_dir() / "tags" / "mlflow.loggedImages").string()) == "True");
  CHECK(read_file((artifacts / "configs/run/config.yaml").string()) == "lr: 0.1\n");

  for (const char* bad : {"/abs", "a//b", "./a", "a/", "../up", "a/../b"})
    CHECK_THROWS_WITH_AS(logger.log_artifact(dir.file("config.yaml"), bad), contains(std::string("invalid artifact path '") + bad + "'"),
                         std::invalid_argument);
  CHECK_THROWS_WITH_AS(logger.log_artifact(dir.file("missing.bin")), contains("missing.bin' is not a file"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(logger.log_image("bad:key", EncodedImage{1, 1, 3, png}, 1), contains("image key 'bad:key' may only contain"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(logger.log_text("x", ""), contains("invalid artifact file ''"), std::invalid_argument);
  CHECK(files_under(artifacts).size() == 7);  // nothing written by the refused calls
  logger.finalize("success");
}

TEST_CASE("MLFlowLogger: a resumed run drops the images and texts stepped after its checkpoint and logs them once again") {
  TempDir dir;
  MLFlowLogger::Options options;
  options.tracking_dir = dir.file("mlruns");
  const std::string png = std::string("\x89PNG\r\n\x1a\n", 8);
  StateDict state;
  std::filesystem::path artifacts;
  {
    MLFlowLogger logger(options);
    logger.log_image("grid", EncodedImage{1, 1, 3, png}, 10);
    logger.log_text("notes", "ten", 10);
    logger.flush();
    state = logger.state_dict();  // the checkpoint, after step 10
    CHECK(state.at("media_step") == StateValue(std::int64_t{10}));
    logger.log_image("grid", EncodedImage{1, 1, 3, png}, 20);
    logger.log_text("notes", "twenty", 20);
    artifacts = logger.run_dir() / "artifacts";
    CHECK(files_under(artifacts).size() == 6);
  }
  MLFlowLogger resumed(options);
  resumed.load_state_dict(state);
  resumed.log_image("grid", EncodedImage{1, 1, 3, png}, 10);  // the resumed run logs step 10 again: replaced
  auto files = files_under(artifacts);
  REQUIRE(files.size() == 3);
  CHECK(files[0].find("%step%10%") != std::string::npos);
  CHECK(files[1].find("%step%10%") != std::string::npos);
  CHECK(files[2] == "text/notes/step_10.txt");
  resumed.log_image("grid", EncodedImage{1, 1, 3, png}, 20);
  CHECK(files_under(artifacts).size() == 5);
  resumed.finalize("success");
}
