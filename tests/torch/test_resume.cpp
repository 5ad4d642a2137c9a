// Exact resume: a training run killed with SIGKILL at several different steps (mid-epoch and at an epoch boundary)
// and resumed from its last checkpoint ends with parameters bitwise identical to an uninterrupted run.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <chrono>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "temp_dir.hpp"

namespace {
// Runs the child with a deadline; returns waitpid's status. A child past the deadline is killed (and the test fails).
int run_child(const std::vector<std::string>& args, std::chrono::seconds deadline = std::chrono::seconds(120)) {
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
