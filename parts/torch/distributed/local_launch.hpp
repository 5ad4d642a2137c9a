// trainloop: the local launch: without a launcher, rank 0 re-executes this program for ranks 1..n-1 (Lightning's
// subprocess launcher) and watches them, so a rank that dies is named at once and none outlives a killed parent.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

TRAINLOOP_DETAIL_BEGIN

namespace distributed {
namespace detail {
inline std::string describe_status(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = strsignal(sig);
    return "was killed by signal " + std::to_string(sig) + (name ? std::string(" (") + name + ")" : std::string());
  }
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

// Ranks 1..n-1 of a local launch: this program re-executed with the rank variables added, watched by a thread that
// stops the others when one fails. Children die with this process (PR_SET_PDEATHSIG), so none outlives a killed parent.
class LocalLaunch {
 public:
  LocalLaunch(int world_size, int port) {
    const std::vector<std::string> args = own_arguments();
    for (int rank = 1; rank < world_size; ++rank) children_.push_back({rank, spawn(args, rank, world_size, port), false, 0});
    watcher_ = std::thread([this] { watch(); });
  }
  LocalLaunch(const LocalLaunch&) = delete;
  LocalLaunch& operator=(const LocalLaunch&) = delete;
  ~LocalLaunch() {
    stop_ = true;
    watcher_.join();
  }

  /// The first failure ("rank 1 (pid 42) was killed by signal 9 (Killed)"), waiting up to `grace` for one to show.
  std::string failure(std::chrono::milliseconds grace = std::chrono::milliseconds(0)) const {
    poll(grace, [&] {
      std::lock_guard<std::mutex> lock(mutex_);
      return !failure_.empty();
    });
    std::lock_guard<std::mutex> lock(mutex_);
    return failure_;
  }
  /// Waits up to `timeout` for every child to exit, then kills those left. Returns the first failure, if any.
  std::string finish(std::chrono::milliseconds timeout) {
    if (!poll(timeout, [&] { return all_exited(); })) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (failure_.empty())
        failure_ = "rank(s) still running " + std::to_string(timeout.count() / 1000) + " s after rank 0 finished; stopped";
    }
    terminate();
    return failure();
  }
  /// SIGTERM to the children still running, SIGKILL to any left 5 s later.
  void terminate() {
    signal_all(SIGTERM);
    if (poll(std::chrono::seconds(5), [&] { return all_exited(); })) return;
    signal_all(SIGKILL);
    while (!all_exited()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

 private:
  // Checks `done` every 20 ms until it holds or `limit` has passed; returns its last answer.
  template <class Done>
  static bool poll(std::chrono::milliseconds limit, Done&& done) {
    const auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
      if (done()) return true;
      if (std::chrono::steady_clock::now() >= until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  struct Child {
    int rank;
    pid_t pid;
    bool exited;
    int status;
  };

  static std::vector<std::string> own_arguments() {
    std::ifstream in("/proc/self/cmdline", std::ios::binary);
    std::vector<std::string> args;
    std::string arg;
    while (std::getline(in, arg, '\0')) args.push_back(arg);
    if (args.empty()) throw std::runtime_error("trainloop: distributed: cannot read /proc/self/cmdline to start the other ranks");
    return args;
  }
  static pid_t spawn(const std::vector<std::string>& args, int rank, int world_size, int port) {
    // Everything execve needs is built before fork: after it, only async-signal-safe calls.
    const std::map<std::string, std::string> set = {
        {"RANK", std::to_string(rank)},         {"LOCAL_RANK", std::to_string(rank)},
        {"WORLD_SIZE", std::to_string(world_size)}, {"LOCAL_WORLD_SIZE", std::to_string(world_size)},
        {"GROUP_RANK", "0"},                    {"MASTER_ADDR", "127.0.0.1"},
        {"MASTER_PORT", std::to_string(port)},  {"TRAINLOOP_LOCAL_LAUNCH", "1"}};
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      const std::string entry = *e;
      if (!set.count(entry.substr(0, entry.find('=')))) env.push_back(entry);
    }
    for (const auto& [name, value] : set) env.push_back(name + "=" + value);
    std::vector<char*> argv, envp;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const pid_t parent = getpid();
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error(std::string("trainloop: distributed: fork for rank ") + std::to_string(rank) +
                                          ": " + std::strerror(errno));
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);  // the parent died before prctl
      execve("/proc/self/exe", argv.data(), envp.data());
      _exit(127);
    }
    return pid;
  }
  void watch() {
    while (!stop_) {
      reap();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  void reap() {
    std::vector<pid_t> to_stop;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& c : children_) {
        if (c.exited) continue;
        int status = 0;
        if (waitpid(c.pid, &status, WNOHANG) != c.pid) continue;
        c.exited = true;
        c.status = status;
        const bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (failed && failure_.empty())
          failure_ = "rank " + std::to_string(c.rank) + " (pid " + std::to_string(c.pid) + ") " + describe_status(status);
      }
      if (failure_.empty()) return;
      for (auto& c : children_)
        if (!c.exited) to_stop.push_back(c.pid);
    }
    for (pid_t pid : to_stop) kill(pid, SIGTERM);  // one rank failed: the others cannot finish
  }
  bool all_exited() {
    reap();
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& c : children_)
      if (!c.exited) return false;
    return true;
  }
  void signal_all(int sig) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& c : children_)
      if (!c.exited) kill(c.pid, sig);
  }

  std::vector<Child> children_;
  mutable std::mutex mutex_;
  std::string failure_;
  std::atomic<bool> stop_{false};
  std::thread watcher_;
};
}  // namespace detail
}  // namespace distributed

TRAINLOOP_DETAIL_END
