// The fault tests' child processes (test_resume.cpp's training child, test_distributed.cpp's ranks and launchers):
// started in a process group of their own, waited for with a deadline, and killed with everything they started when
// it passes (the test then fails), so no test hangs and no process outlives one.
#pragma once
#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "temp_dir.hpp"

namespace child_process {

// A helper program's path from ctest's environment (tests/CMakeLists.txt sets `variable`).
inline std::string program_from(const char* variable) {
  const char* path = std::getenv(variable);
  REQUIRE_MESSAGE(path != nullptr, variable << " must name the test's child program (ctest sets it)");
  return path;
}

// Starts `args` (argv[0] first, found on PATH when it has no slash) with `env` added; its stdout and stderr go to
// `log` when given.
inline pid_t start(std::vector<std::string> args, const std::map<std::string, std::string>& env = {},
                   const std::string& log = "") {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    setpgid(0, 0);  // its own group: the deadline kills every process it started
    for (const auto& [name, value] : env) setenv(name.c_str(), value.c_str(), 1);
    if (!log.empty()) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        dup2(fd, 2);
        dup2(fd, 1);
      }
    }
    execvp(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Waits for `pid`; returns waitpid's status. Past the deadline its whole group is killed and the test fails (with
// `log`'s text, when given).
inline int wait(pid_t pid, std::chrono::milliseconds deadline = std::chrono::seconds(120), const std::string& log = "") {
  const auto until = std::chrono::steady_clock::now() + deadline;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > until) {
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      FAIL("the child process did not finish within the deadline" << (log.empty() ? "" : ": " + read_file(log)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status;
}

inline bool exited_ok(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }
inline bool killed(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }

}  // namespace child_process
