// Exact resume, tested as a crash harness would: a real training process (tests/torch/resume_child.cpp) is killed
// with SIGKILL at chosen and random moments (after a step's checkpoint, during a save, inside and right after a
// mid-epoch validation, at an epoch's end, while resuming, and after random delays), resumed in a fresh process from
// "last", and its end state (parameters, Adam's state, EMA, learning rates, counters, EarlyStopping, the loader's
// position, monitored values, the RNG) is compared bit for bit with an uninterrupted run's.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <chrono>
#include <cstdlib>
#include <csignal>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "child_process.hpp"
#include "temp_dir.hpp"

namespace {
using child_process::exited_ok;
using child_process::killed;
// The training child (resume_child.cpp), run with `args`.
pid_t start_child(const std::vector<std::string>& args) {
  std::vector<std::string> argv{child_process::program_from("TRAINLOOP_RESUME_CHILD")};
  argv.insert(argv.end(), args.begin(), args.end());
  return child_process::start(argv);
}
int wait_child(pid_t pid) { return child_process::wait(pid); }
int run_child(const std::vector<std::string>& args) { return wait_child(start_child(args)); }

// No temporary file outlives the run that resumed after the kills.
void check_no_temporaries(const std::string& dir) {
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    CAPTURE(entry.path().string());
    CHECK(entry.path().string().find(".tmp-") == std::string::npos);
  }
}

struct Reference {
  TempDir dir;
  std::string fingerprint;
  std::chrono::milliseconds duration{};  // of a whole uninterrupted run, start-up included
  Reference() {
    const std::string out = dir.file("reference.txt");
    const auto start = std::chrono::steady_clock::now();
    REQUIRE(exited_ok(run_child({dir.file("run"), out})));
    duration = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    fingerprint = read_file(out);
    REQUIRE(fingerprint.find("param fc1.weight") != std::string::npos);
  }
};
const Reference& reference() {
  static const Reference r;
  return r;
}

// Runs the child with each kill in turn, resuming from "last" after each, then to the end; returns the fingerprint.
// `extra` goes to every run (--precision ...).
std::string run_with_kills(const TempDir& dir, const std::string& name, const std::vector<std::string>& kills,
                           const std::vector<std::string>& extra = {}) {
  const std::string run = dir.file(name), out = dir.file(name + ".txt");
  for (std::size_t i = 0; i < kills.size(); ++i) {
    std::vector<std::string> args{run, out, "--kill", kills[i]};
    args.insert(args.end(), extra.begin(), extra.end());
    if (std::filesystem::exists(run + "/last.ckpt")) args.push_back("--resume");  // else killed before any checkpoint
    const int status = run_child(args);
    INFO("kill ", kills[i]);
    if (exited_ok(status)) break;  // the point was past the run's end (EarlyStopping stopped it earlier)
    REQUIRE(killed(status));
  }
  std::vector<std::string> last{run, out};
  last.insert(last.end(), extra.begin(), extra.end());
  if (std::filesystem::exists(run + "/last.ckpt")) last.push_back("--resume");
  REQUIRE(exited_ok(run_child(last)));
  check_no_temporaries(run);
  return read_file(out);
}
}  // namespace

TEST_CASE("a run killed anywhere and resumed from \"last\" in a fresh process ends bitwise identical") {
  const std::string& expected = reference().fingerprint;
  TempDir dir;
  // 12 batches an epoch, validation after batches 6 and 12, a checkpoint after every step.
  const std::vector<std::string> points = {
      "step:1",      "step:6",  "step:12",   "step:17", "save:4",     "save:12",    "save:18", "val_start:1",
      "val_start:2", "val_end:1", "val_end:2", "val_end:3", "epoch_end:1", "epoch_end:2"};
  for (const auto& point : points) {
    CAPTURE(point);
    std::string name = point;
    name[name.find(':')] = '_';
    CHECK(run_with_kills(dir, name, {point}) == expected);
  }
}

TEST_CASE("chains of kills, while resuming too, at seeded random points, end bitwise identical") {
  const std::string& expected = reference().fingerprint;
  TempDir dir;
  const unsigned seed = static_cast<unsigned>(std::random_device{}());
  MESSAGE("kill-point seed ", seed);
  std::mt19937 random(seed);
  const std::vector<std::string> kinds = {"step", "save", "val_start", "val_end", "epoch_end"};
  for (int chain = 0; chain < 4; ++chain) {
    std::vector<std::string> kills;
    for (int k = 0; k < 3; ++k) {
      const std::string kind = kinds[random() % kinds.size()];
      const int max = kind == "step" || kind == "save" ? 12 : kind == "epoch_end" ? 1 : 2;
      kills.push_back(kind + ":" + std::to_string(1 + random() % max));  // counted from each resume
      if (k == 1) kills.push_back("fit_start:1");                          // killed while resuming
    }
    CAPTURE(chain);
    std::string joined;
    for (const auto& k : kills) joined += k + " ";
    CAPTURE(joined);
    CHECK(run_with_kills(dir, "chain" + std::to_string(chain), kills) == expected);
  }
}

TEST_CASE("SIGKILL after random delays: each resume continues exactly, and no torn checkpoint is ever found") {
  const std::string& expected = reference().fingerprint;
  TempDir dir;
  const unsigned seed = static_cast<unsigned>(std::random_device{}());
  MESSAGE("kill-delay seed ", seed);
  std::mt19937 random(seed);
  const std::string run = dir.file("random"), out = dir.file("random.txt");
  int kills = 0;
  const auto span = static_cast<unsigned>(reference().duration.count());
  for (int attempt = 0; attempt < 12; ++attempt) {
    std::vector<std::string> args{run, out};
    if (std::filesystem::exists(run + "/last.ckpt")) args.push_back("--resume");
    const pid_t pid = start_child(args);
    // Somewhere in the run: from start-up (a third of it, mostly loading LibTorch) to its end.
    std::this_thread::sleep_for(std::chrono::milliseconds(span / 3 + random() % (span * 2 / 3 + 1)));
    ::kill(pid, SIGKILL);
    const int status = wait_child(pid);
    if (exited_ok(status)) break;
    REQUIRE(killed(status));
    ++kills;
  }
  MESSAGE(kills, " kills");
  std::vector<std::string> last{run, out};
  if (std::filesystem::exists(run + "/last.ckpt")) last.push_back("--resume");
  REQUIRE(exited_ok(run_child(last)));
  check_no_temporaries(run);
  CHECK(read_file(out) == expected);
}

TEST_CASE("SIGTERM asks for a checkpoint at the next step; resuming from it ends bitwise identical") {
  const std::string& expected = reference().fingerprint;
  TempDir dir;
  const std::string run = dir.file("preempted_run");
  const std::string announce = dir.file("training");
  const pid_t pid = start_child({run, dir.file("stopped.txt"), "--announce", announce});
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!std::filesystem::exists(announce) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  REQUIRE(std::filesystem::exists(announce));
  REQUIRE(kill(pid, SIGTERM) == 0);
  REQUIRE(exited_ok(wait_child(pid)));  // it stopped cleanly: the handler only set a flag
  REQUIRE(std::filesystem::exists(run + "/preempted.ckpt"));
  CHECK(read_file(dir.file("stopped.txt")) != expected);  // it did stop early
  REQUIRE(exited_ok(run_child({run, dir.file("resumed.txt"), "--resume", run + "/preempted.ckpt"})));
  CHECK(read_file(dir.file("resumed.txt")) == expected);
}

TEST_CASE("a checkpoint saved after fit returns resumes with more epochs exactly as the longer run") {
  const std::string& expected = reference().fingerprint;  // 4 epochs
  TempDir dir;
  const std::string run = dir.file("shorter");
  REQUIRE(exited_ok(run_child({run, dir.file("two.txt"), "--epochs", "2"})));
  REQUIRE(exited_ok(run_child({run, dir.file("four.txt"), "--epochs", "4", "--resume", run + "/after_fit.ckpt"})));
  CHECK(read_file(dir.file("four.txt")) == expected);
  // With the same limit there is nothing left to train: the finished state comes back as it was.
  REQUIRE(exited_ok(run_child({run, dir.file("again.txt"), "--epochs", "4", "--resume", run + "/after_fit.ckpt"})));
  CHECK(read_file(dir.file("again.txt")) == expected);
}

TEST_CASE("a user dataset read by two worker threads with random augmentation, killed and resumed: bitwise identical") {
  // The augmentation draws from each example's generator, seeded by (seed, epoch, index): zero and two workers train
  // on the same batches, and a resumed run reads the rest of the epoch with the same noise and flips.
  TempDir dir;
  REQUIRE(exited_ok(run_child({dir.file("zero"), dir.file("zero.txt"), "--workers", "0"})));
  const std::string expected = read_file(dir.file("zero.txt"));
  CHECK(expected != reference().fingerprint);  // the augmentation did change the training
  const std::vector<std::string> two{"--workers", "2"};
  REQUIRE(exited_ok(run_child({dir.file("two"), dir.file("two.txt"), "--workers", "2"})));
  CHECK(read_file(dir.file("two.txt")) == expected);
  for (const std::vector<std::string>& kills : {std::vector<std::string>{"step:5"}, {"save:9", "val_end:2"}, {"epoch_end:1", "fit_start:1", "step:7"}}) {
    std::string name = "workers";
    for (const auto& kill : kills) name += "_" + kill.substr(0, kill.find(':')) + kill.substr(kill.find(':') + 1);
    CAPTURE(name);
    CHECK(run_with_kills(dir, name, kills, two) == expected);
  }
}

TEST_CASE("record files streamed by two workers through a shuffle buffer, killed and resumed: bitwise identical") {
  // The loader's position is each worker's file and offset plus its buffered records' offsets: a resumed run reads
  // the rest of the epoch, in the same order, with the same per-record noise, and no consumed record again.
  TempDir dir;
  const std::vector<std::string> stream{"--stream"};
  REQUIRE(exited_ok(run_child({dir.file("whole"), dir.file("whole.txt"), "--stream"})));
  const std::string expected = read_file(dir.file("whole.txt"));
  CHECK(expected.find("share/1") != std::string::npos);
  for (const std::vector<std::string>& kills : {std::vector<std::string>{"step:5"}, {"save:9", "val_end:2"}, {"epoch_end:1", "fit_start:1", "step:7"}}) {
    std::string name = "stream";
    for (const auto& kill : kills) name += "_" + kill.substr(0, kill.find(':')) + kill.substr(kill.find(':') + 1);
    CAPTURE(name);
    CHECK(run_with_kills(dir, name, kills, stream) == expected);
  }
}

#if TRAINLOOP_WITH_AMP
TEST_CASE("mixed precision with the loss scaler, killed and resumed: bitwise identical, the scaler's state included") {
  // bf16 autocast with a forced scaler (fp16 autocast needs CUDA here), and batches that overflow it: skipped steps,
  // back-offs and growth all happen between the kills.
  const std::vector<std::string> scaled{"--precision", "bf16-scaled"};
  TempDir dir;
  std::vector<std::string> reference_args{dir.file("reference"), dir.file("reference.txt")};
  reference_args.insert(reference_args.end(), scaled.begin(), scaled.end());
  REQUIRE(exited_ok(run_child(reference_args)));
  const std::string expected = read_file(dir.file("reference.txt"));
  REQUIRE(expected.find("grad_scaler") != std::string::npos);
  CHECK(expected.find(" skipped=0") == std::string::npos);  // the run did skip steps
  CHECK(expected != reference().fingerprint);
  for (const std::vector<std::string>& kills : {std::vector<std::string>{"step:5"}, {"save:9", "val_end:2"}, {"epoch_end:1", "step:20"}}) {
    std::string name = "amp";
    for (const auto& kill : kills) name += "_" + kill.substr(0, kill.find(':')) + kill.substr(kill.find(':') + 1);
    CAPTURE(name);
    CHECK(run_with_kills(dir, name, kills, scaled) == expected);
  }
}
#endif
