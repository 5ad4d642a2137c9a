// Exact resume: a training run killed with SIGKILL at several different steps (mid-epoch and at an epoch boundary)
// and resumed from its last checkpoint ends with parameters bitwise identical to an uninterrupted run.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <chrono>
#include <filesystem>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "temp_dir.hpp"

namespace {
// Starts the child; returns its pid.
pid_t start_child(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  std::string program = TRAINLOOP_RESUME_CHILD;
  argv.push_back(program.data());
  std::vector<std::string> copies = args;
  for (auto& a : copies) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    execv(program.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}
// Waits for the child with a deadline; returns waitpid's status. A child past it is killed (and the test fails).
int wait_child(pid_t pid, std::chrono::seconds deadline = std::chrono::seconds(120)) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > until) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      FAIL("the training child did not finish within the deadline");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return status;
}
int run_child(const std::vector<std::string>& args) { return wait_child(start_child(args)); }

std::map<std::string, torch::Tensor> weights(const std::string& path) {
  torch::serialize::InputArchive archive;
  archive.load_from(path);
  c10::IValue model;
  archive.read("model", model);
  std::map<std::string, torch::Tensor> out;
  for (const auto& e : model.toGenericDict()) out[e.key().toStringRef()] = e.value().toTensor();
  return out;
}
}  // namespace

TEST_CASE("a run killed with SIGKILL and resumed ends bitwise identical to an uninterrupted run") {
  TempDir dir;
  const std::string reference = dir.file("reference.weights");
  const int clean = run_child({dir.file("reference_ckpt"), reference});
  REQUIRE(WIFEXITED(clean));
  REQUIRE(WEXITSTATUS(clean) == 0);
  const auto expected = weights(reference);

  // 36 steps in all (3 epochs of 12 batches): mid-epoch, on an epoch's last step, and in the last epoch.
  for (int kill_at : {5, 12, 29}) {
    CAPTURE(kill_at);
    const std::string ckpt = dir.file("ckpt_" + std::to_string(kill_at));
    const std::string out = dir.file("resumed_" + std::to_string(kill_at) + ".weights");
    const int killed = run_child({ckpt, out, "--kill-at", std::to_string(kill_at)});
    REQUIRE(WIFSIGNALED(killed));
    REQUIRE(WTERMSIG(killed) == SIGKILL);
    const int resumed = run_child({ckpt, out, "--resume"});
    REQUIRE(WIFEXITED(resumed));
    REQUIRE(WEXITSTATUS(resumed) == 0);
    const auto got = weights(out);
    REQUIRE(got.size() == expected.size());
    for (const auto& [name, tensor] : expected) {
      CAPTURE(name);
      CHECK(torch::equal(got.at(name), tensor));
    }
  }
}

TEST_CASE("SIGTERM asks for a checkpoint at the next step; resuming from it ends bitwise identical") {
  TempDir dir;
  const std::string reference = dir.file("reference.weights");
  REQUIRE(WIFEXITED(run_child({dir.file("reference_ckpt"), reference})));
  const std::string ckpt = dir.file("preempted_run");
  const std::string announce = dir.file("training");
  const std::string stopped = dir.file("stopped.weights");
  const pid_t pid = start_child({ckpt, stopped, "--announce", announce});
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!std::filesystem::exists(announce) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  REQUIRE(std::filesystem::exists(announce));
  REQUIRE(kill(pid, SIGTERM) == 0);
  const int status = wait_child(pid);
  REQUIRE(WIFEXITED(status));  // it stopped cleanly: the handler only set a flag
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(std::filesystem::exists(ckpt + "/preempted.ckpt"));
  const std::string resumed = dir.file("resumed.weights");
  REQUIRE(WIFEXITED(run_child({ckpt, resumed, "--resume", ckpt + "/preempted.ckpt"})));
  const auto expected = weights(reference), got = weights(resumed);
  for (const auto& [name, tensor] : expected) {
    CAPTURE(name);
    CHECK(torch::equal(got.at(name), tensor));
  }
  CHECK_FALSE(torch::equal(weights(stopped).at("fc1.weight"), expected.at("fc1.weight")));  // it did stop early
}
