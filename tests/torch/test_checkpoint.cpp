// Checkpoint files: a full round trip (model, optimizer state, named states, RNG), and every kind of bad file or
// failed write, each with an error naming the file and the key, and nothing already saved lost.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <filesystem>
#include <random>

#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "temp_dir.hpp"

using namespace trainloop;

namespace {
void train_a_little(torch::nn::Linear& model, torch::optim::Optimizer& optimizer, int steps) {
  for (int i = 0; i < steps; ++i) {
    optimizer.zero_grad();
    torch::mse_loss(model(torch::ones({4, 2}) * i), torch::ones({4, 1})).backward();
    optimizer.step();
  }
}
}  // namespace

TEST_CASE("round trip: parameters, optimizer state, named states and the RNG come back exactly") {
  TempDir dir;
  const std::string path = dir.file("run.ckpt");
  torch::manual_seed(1);
  torch::nn::Linear model(2, 1);
  auto optimizer = std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  train_a_little(model, *optimizer, 3);
  const StateDict loop{{"epoch", std::int64_t{2}}, {"loss", 0.25}, {"note", std::string("mid-epoch")}};
  save_checkpoint(path, *model, {optimizer}, {{"loop", loop}, {"hparams", {{"lr", 0.1}}}});
  const torch::Tensor after_save = torch::randn({3});

  torch::manual_seed(99);
  torch::nn::Linear restored(2, 1);
  auto restored_optimizer =
      std::make_shared<torch::optim::SGD>(restored->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  const auto states = load_checkpoint(path, *restored, {restored_optimizer});
  CHECK(torch::equal(restored->weight, model->weight));
  CHECK(torch::equal(restored->bias, model->bias));
  CHECK((states.at("loop") == loop));
  CHECK(std::get<double>(states.at("hparams").at("lr")) == 0.1);
  CHECK(torch::equal(torch::randn({3}), after_save));  // the RNG continues where it was saved
  // Momentum buffers came back: the same further steps give the same parameters, bit for bit.
  train_a_little(model, *optimizer, 2);
  train_a_little(restored, *restored_optimizer, 2);
  CHECK(torch::equal(restored->weight, model->weight));
  CHECK_FALSE(std::filesystem::exists(path + ".tmp-" + std::to_string(::getpid())));  // no temporary left behind
}

TEST_CASE("bad files: missing, truncated, foreign, newer format, another model, another optimizer count") {
  TempDir dir;
  torch::nn::Linear model(2, 1);
  const torch::Tensor before = model->weight.clone();
  CHECK_THROWS_WITH_AS(load_checkpoint(dir.file("absent.ckpt"), *model),
                       contains("checkpoint '" + dir.file("absent.ckpt") + "': No such file or directory"), std::runtime_error);

  const std::string good = dir.file("good.ckpt");
  save_checkpoint(good, *model);
  const std::string cut = dir.file("cut.ckpt");
  std::filesystem::copy_file(good, cut);
  std::filesystem::resize_file(cut, std::filesystem::file_size(cut) / 2);
  CHECK_THROWS_WITH_AS(load_checkpoint(cut, *model), contains("'" + cut + "': no trainloop integrity record"),
                       CheckpointError);

  const std::string foreign = dir.file("foreign.pt");
  torch::save(torch::ones({2}), foreign);
  CHECK_THROWS_WITH_AS(load_checkpoint(foreign, *model),
                       contains("'" + foreign + "': no trainloop integrity record"), CheckpointError);

  const std::string newer = dir.file("newer.ckpt");
  torch::serialize::OutputArchive future;
  future.write("trainloop_format_version", c10::IValue(std::int64_t{99}));
  future.write("trainloop_version", c10::IValue(std::string("9.0.0")));
  {
    trainloop::detail::AtomicCheckpointWriter writer(newer);  // a file a later trainloop could write: intact, newer format
    future.save_to([&](const void* data, std::size_t size) { return writer.write(data, size); });
    writer.commit();
  }
  CHECK_THROWS_WITH_AS(load_checkpoint(newer, *model),
                       contains("format version 99 (written by trainloop 9.0.0) is newer than this trainloop"),
                       std::runtime_error);

  torch::nn::Linear wider(3, 1);
  CHECK_THROWS_WITH_AS(load_checkpoint(good, *wider),
                       contains("key 'model/weight' has shape [1, 2], this model's has [1, 3]"), std::runtime_error);
  torch::nn::Sequential other(torch::nn::Linear(2, 1));
  CHECK_THROWS_WITH_AS(load_checkpoint(good, *other), contains("key 'model/bias' is not in this model"),
                       std::runtime_error);
  auto optimizer = std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1));
  CHECK_THROWS_WITH_AS(load_checkpoint(good, *model, {optimizer}),
                       contains("it holds 0 optimizer state(s), 1 optimizer(s) were given"), std::runtime_error);
  CHECK(torch::equal(model->weight, before));  // every rejected load left the model as it was
}

TEST_CASE("a failed write is an error naming the path, and the previous checkpoint stays intact") {
  TempDir dir;
  const std::string path = dir.file("last.ckpt");
  torch::nn::Linear model(2, 1);
  save_checkpoint(path, *model);
  const auto size_before = std::filesystem::file_size(path);
  {
    torch::NoGradGuard no_grad;
    model->weight.fill_(7);
  }
  // Inject a failure: a folder where the temporary file must go.
  std::filesystem::create_directory(path + ".tmp-" + std::to_string(::getpid()));
  CHECK_THROWS_WITH_AS(save_checkpoint(path, *model), contains("checkpoint '" + path + "': writing failed"),
                       std::runtime_error);
  CHECK(std::filesystem::file_size(path) == size_before);
  torch::nn::Linear reloaded(2, 1);
  load_checkpoint(path, *reloaded);
  CHECK_FALSE(torch::equal(reloaded->weight, model->weight));  // the old weights, not the 7s
  CHECK_THROWS_WITH_AS(save_checkpoint(dir.file("no/such/folder/x.ckpt"), *model), contains("no/such/folder/x.ckpt"),
                       std::runtime_error);
}

TEST_CASE("weights-only export loads into a plain torch::nn::Module") {
  TempDir dir;
  torch::nn::Sequential trained(torch::nn::Linear(2, 3), torch::nn::ReLU(), torch::nn::Linear(3, 1));
  save_weights(dir.file("weights.ckpt"), *trained);
  torch::nn::Sequential fresh(torch::nn::Linear(2, 3), torch::nn::ReLU(), torch::nn::Linear(3, 1));
  load_checkpoint(dir.file("weights.ckpt"), *fresh);
  const torch::Tensor x = torch::randn({5, 2});
  CHECK(torch::equal(fresh->forward(x), trained->forward(x)));
}

namespace {
// A checkpoint with some substance: a two-layer model, Adam's state, named states, tensor states.
std::string write_sample(const TempDir& dir, const std::string& name) {
  torch::manual_seed(3);
  torch::nn::Sequential model(torch::nn::Linear(8, 16), torch::nn::ReLU(), torch::nn::Linear(16, 2));
  auto adam = std::make_shared<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(0.01));
  for (int i = 0; i < 3; ++i) {
    adam->zero_grad();
    model->forward(torch::randn({4, 8})).sum().backward();
    adam->step();
  }
  const std::string path = dir.file(name);
  save_checkpoint(path, *model, {adam}, {{"loop", {{"epoch", std::int64_t{1}}}}}, true,
                  {{"callback/EMA", {{"w", torch::randn({16})}}}});
  return path;
}
void load_sample(const std::string& path) {
  torch::nn::Sequential model(torch::nn::Linear(8, 16), torch::nn::ReLU(), torch::nn::Linear(16, 2));
  auto adam = std::make_shared<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(0.01));
  std::map<std::string, TensorDict> tensors;
  load_checkpoint(path, *model, {adam}, std::nullopt, false, &tensors);
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
long peak_rss_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}
// Every damaged copy must fail with a CheckpointError naming it: never a crash, never a silent load.
void check_rejected(const std::string& path, const std::string& what) {
  CAPTURE(what);
  CHECK_THROWS_WITH_AS(load_sample(path), contains("checkpoint '" + path + "'"), CheckpointError);
}
}  // namespace

TEST_CASE("corruption: truncations, bit flips, edited archive sections and foreign zips are clear errors") {
  TempDir dir;
  const std::string good = write_sample(dir, "good.ckpt");
  load_sample(good);
  const std::string bytes = read_file(good);
  const std::string bad = dir.file("bad.ckpt");
  const long rss_before = peak_rss_kib();
  const unsigned seed = static_cast<unsigned>(std::random_device{}());
  MESSAGE("corruption seed ", seed);
  std::mt19937 random(seed);

  for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{21}, std::size_t{22}, std::size_t{100}}) {
    write_bytes(bad, bytes.substr(0, size));
    check_rejected(bad, "truncated to " + std::to_string(size));
  }
  for (int i = 0; i < 40; ++i) {
    const std::size_t size = random() % bytes.size();
    write_bytes(bad, bytes.substr(0, size));
    check_rejected(bad, "truncated to " + std::to_string(size));
  }
  write_bytes(bad, bytes + "appended");
  check_rejected(bad, "extended");
  for (int i = 0; i < 60; ++i) {
    std::string flipped = bytes;
    const std::size_t at = random() % flipped.size();
    flipped[at] = static_cast<char>(flipped[at] ^ (1 << (random() % 8)));
    write_bytes(bad, flipped);
    check_rejected(bad, "bit flipped at " + std::to_string(at));
  }
  // One-byte edits inside the archive's pickles and code records, and in the tensor data.
  for (const char* section : {"data.pkl", "constants.pkl", "code/", "version", "data/0"}) {
    const auto at = bytes.find(section);
    if (at == std::string::npos) continue;
    for (std::size_t offset : {std::size_t{40}, std::size_t{64}, std::size_t{90}}) {
      if (at + offset >= bytes.size()) continue;
      std::string edited = bytes;
      edited[at + offset] = static_cast<char>(edited[at + offset] + 1);
      write_bytes(bad, edited);
      check_rejected(bad, std::string("edited after ") + section);
    }
  }
  // Foreign zips: LibTorch's own file (no record), and one given a valid record: it passes the integrity check and is
  // refused as not a trainloop checkpoint.
  torch::save(torch::ones({3}), bad);
  check_rejected(bad, "torch::save file");
  {
    torch::serialize::OutputArchive other;
    other.write("weights", torch::ones({3}));
    trainloop::detail::AtomicCheckpointWriter writer(bad);
    other.save_to([&](const void* data, std::size_t size) { return writer.write(data, size); });
    writer.commit();
  }
  CHECK_THROWS_WITH_AS(load_sample(bad), contains("'" + bad + "': not a trainloop checkpoint"), CheckpointError);
  write_bytes(bad, std::string(4096, 'x'));
  check_rejected(bad, "not a zip");
  // Memory stayed bounded: nothing was parsed from a damaged file.
  CHECK(peak_rss_kib() - rss_before < 200 * 1024);
  load_sample(good);  // the original is untouched throughout
}

TEST_CASE("a full disk or a file-size limit is an exception naming the path; the old file stays, no temporary") {
  TempDir dir;
  // Runs f in a child process (its own mount namespace, limits and signals); returns its exit code.
  auto in_child = [](auto f) {
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      torch::set_num_threads(1);  // OpenMP's thread pool does not survive fork(): stay on this thread
      _exit(f());
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  };
  // The child's checks: a small checkpoint fits; a large one into the same path fails cleanly.
  auto fill_and_check = [](const std::string& path, const char* expected_error) -> int {
    try {
      torch::nn::Linear small(2, 1);
      save_weights(path, *small);
      torch::nn::Linear large(300, 300);
      try {
        save_weights(path, *large);
        return 10;  // it should not fit
      } catch (const CheckpointError& error) {
        const std::string message = error.what();
        if (message.find("'" + path + "': writing failed, the previous file is untouched") == std::string::npos) return 11;
        if (message.find(expected_error) == std::string::npos) return 12;
      }
      torch::nn::Linear reloaded(2, 1);
      load_checkpoint(path, *reloaded);
      if (!torch::equal(reloaded->weight, small->weight)) return 13;
      const std::string folder = path.substr(0, path.rfind('/'));
      for (const auto& entry : std::filesystem::directory_iterator(folder))
        if (entry.path().string().find(".tmp-") != std::string::npos) return 14;
      return 0;
    } catch (...) {
      return 15;
    }
  };

  SUBCASE("ulimit -f: EFBIG, and SIGXFSZ does not kill the process") {
    const std::string path = dir.file("limited.ckpt");
    const int code = in_child([&] {
      rlimit limit{64 * 1024, 64 * 1024};
      if (setrlimit(RLIMIT_FSIZE, &limit) != 0) return 20;
      return fill_and_check(path, "File too large");
    });
    CHECK(code == 0);
  }
  SUBCASE("a full tmpfs: ENOSPC") {
    const std::string mount_point = dir.file("small_disk");
    std::filesystem::create_directory(mount_point);
    const int code = in_child([&] {
      if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
          mount("tmpfs", mount_point.c_str(), "tmpfs", 0, "size=128k") != 0)
        return 77;  // not root, or no mount namespaces here
      return fill_and_check(mount_point + "/last.ckpt", "No space left on device");
    });
    if (code == 77) MESSAGE("skipped: cannot mount a tmpfs here (needs root and mount namespaces)");
    else CHECK(code == 0);
  }
}

TEST_CASE("temporaries of dead writers are removed at the folder's next write; a live writer's are kept") {
  TempDir dir;
  const pid_t dead = fork();
  if (dead == 0) _exit(0);
  waitpid(dead, nullptr, 0);
  const std::string stale = dir.file("last.ckpt.tmp-" + std::to_string(dead));
  const std::string live = dir.file("other.ckpt.tmp-" + std::to_string(getppid()));
  write_bytes(stale, "torn");
  write_bytes(live, "in progress");
  torch::nn::Linear model(2, 1);
  save_weights(dir.file("model.ckpt"), *model);
  CHECK_FALSE(std::filesystem::exists(stale));
  CHECK(std::filesystem::exists(live));
}

TEST_CASE("a state holding NaN is refused, and the finite file already there is kept") {
  TempDir dir;
  const std::string path = dir.file("last.ckpt");
  torch::nn::Linear model(2, 1);
  save_weights(path, *model);
  const torch::Tensor finite = model->weight.clone();
  {
    torch::NoGradGuard no_grad;
    model->weight[0][1] = std::numeric_limits<float>::quiet_NaN();
  }
  CHECK_THROWS_WITH_AS(save_weights(path, *model), contains("'" + path + "': not written: 'model/weight' holds NaN or inf"),
                       NonFiniteStateError);
  torch::nn::Linear reloaded(2, 1);
  load_checkpoint(path, *reloaded);
  CHECK(torch::equal(reloaded->weight, finite));
  // Logged values may be NaN (they are data): only weights and callback tensors are checked.
  torch::nn::Linear fine(2, 1);
  save_checkpoint(path, *fine, {}, {}, true, {{"trainer/callback_metrics", {{"loss", torch::tensor(NAN)}}}});
}

TEST_CASE("the integrity record keeps the file a valid zip: CRC-32C vectors, and the record's layout") {
  CHECK(trainloop::detail::crc32c("123456789", 9) == 0xE3069283u);
  const std::string zeros(32, '\0');
  CHECK(trainloop::detail::crc32c(zeros.data(), zeros.size()) == 0x8A9136AAu);  // RFC 3720, B.4
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[static_cast<std::size_t>(i)] = static_cast<char>(i);
  CHECK(trainloop::detail::crc32c(ascending.data(), ascending.size()) == 0x46DD794Eu);
  CHECK(trainloop::detail::crc32c_update(trainloop::detail::crc32c("1234", 4), "56789", 5) == 0xE3069283u);  // streaming

  TempDir dir;
  torch::nn::Linear model(2, 1);
  save_weights(dir.file("w.ckpt"), *model);
  const std::string bytes = read_file(dir.file("w.ckpt"));
  const std::string record = bytes.substr(bytes.size() - trainloop::detail::integrity_record_size);
  CHECK(record.rfind("trainloop-checkpoint crc32c=", 0) == 0);
  const char* end_record = bytes.data() + bytes.size() - trainloop::detail::integrity_record_size - trainloop::detail::zip_end_record_size;
  CHECK(std::string(end_record, 4) == std::string("PK\x05\x06", 4));
  CHECK(trainloop::detail::zip_comment_length(end_record) == trainloop::detail::integrity_record_size);  // the zip's comment: any reader skips it
}
