// trainloop: data-parallel training on LibTorch's own c10d (TRAINLOOP_WITH_DISTRIBUTED=1).
//
// - distributed::detect_environment(): who launched us (torchrun, Slurm, Open MPI, trainloop's own local launch).
// - distributed::init(): the store rendezvous and the process group (Gloo on CPU, NCCL on CUDA where built in), with
//   timeouts, so a dead or missing rank is an error, never a hang. `processes(n)` without a launcher re-executes this
//   program for ranks 1..n-1 and watches them (Lightning's subprocess launcher).
// - distributed::DistributedDataParallel: gradients averaged over ranks by bucketed all-reduces launched from each
//   parameter's gradient-accumulator hook while backward still runs (our own reducer: Debian's 1.13 headers cannot
//   compile c10d's reducer.hpp), no_sync() for accumulation micro-steps, find_unused_parameters, broadcast buffers.
#pragma once
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
// Gloo (CPU) needs gloo's own headers, which Debian's libgloo-dev has but PyTorch's wheels and LibTorch archives do
// not ship: a CUDA build can go without it and use NCCL alone.
#if defined(USE_C10D_GLOO) && __has_include(<gloo/config.h>)
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#define TRAINLOOP_DETAIL_HAS_GLOO 1
#else
#define TRAINLOOP_DETAIL_HAS_GLOO 0
#endif
#if defined(USE_C10D_NCCL) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#define TRAINLOOP_DETAIL_HAS_NCCL 1
#else
#define TRAINLOOP_DETAIL_HAS_NCCL 0
#endif
#if !TRAINLOOP_DETAIL_HAS_GLOO && !TRAINLOOP_DETAIL_HAS_NCCL
#error "trainloop: TRAINLOOP_WITH_DISTRIBUTED needs a c10d backend: Gloo (-DUSE_C10D_GLOO and gloo's headers, e.g. Debian's libgloo-dev) or NCCL (-DUSE_C10D_NCCL with nccl.h); CMake's Torch target defines what LibTorch was built with (also -DUSE_DISTRIBUTED)"
#endif

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
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

extern char** environ;

TRAINLOOP_DETAIL_BEGIN

namespace distributed {

// --- the launch environment --------------------------------------------------------------------------------------

/// Where this process sits in the job, as its launcher described it.
struct Environment {
  /// "torchrun", "slurm", "mpi", "env" (RANK/WORLD_SIZE/MASTER_* set by hand), "trainloop" (a rank trainloop's local
  /// launch started) or "none" (a plain process).
  std::string launcher = "none";
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1, node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  /// torchrun's default: its agent hosts the store; every rank connects as a client under /worker/attempt_<n>.
  bool agent_store = false;
  int restart_count = 0;
  bool launched() const { return launcher != "none"; }
};

/// Reads one environment variable (nullptr when unset); tests pass synthetic environments.
using EnvironmentReader = std::function<const char*(const char*)>;

namespace detail {
inline std::string env_error(const char* name, const char* value, const std::string& what) {
  return std::string("trainloop: distributed: environment variable ") + name + "='" + (value ? value : "") + "' " + what;
}
inline std::optional<long long> env_integer(const EnvironmentReader& env, const char* name) {
  const char* value = env(name);
  if (!value) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(value, &end, 10);
  if (*value == '\0' || *end != '\0' || errno == ERANGE || v < INT32_MIN || v > INT32_MAX)
    throw std::invalid_argument(env_error(name, value, "is not an integer"));
  return v;
}
inline int env_required(const EnvironmentReader& env, const char* name, const char* launcher) {
  auto v = env_integer(env, name);
  if (!v) throw std::invalid_argument(std::string("trainloop: distributed: ") + launcher + " launch without " + name);
  return static_cast<int>(*v);
}
inline int env_port(const EnvironmentReader& env, const char* name) {
  auto v = env_integer(env, name);
  if (!v) return 0;
  if (*v < 1 || *v > 65535) throw std::invalid_argument(env_error(name, env(name), "is not a TCP port (1..65535)"));
  return static_cast<int>(*v);
}
inline void check_ranks(const Environment& e, const char* rank_var, const char* size_var) {
  if (e.world_size < 1)
    throw std::invalid_argument(std::string("trainloop: distributed: ") + size_var + "=" + std::to_string(e.world_size) +
                                " must be at least 1");
  if (e.rank < 0 || e.rank >= e.world_size)
    throw std::invalid_argument(std::string("trainloop: distributed: ") + rank_var + "=" + std::to_string(e.rank) +
                                " is not in [0, " + size_var + "=" + std::to_string(e.world_size) + ")");
  if (e.local_world_size < 1 || e.local_rank < 0 || e.local_rank >= e.local_world_size)
    throw std::invalid_argument("trainloop: distributed: local rank " + std::to_string(e.local_rank) +
                                " is not in [0, local world size " + std::to_string(e.local_world_size) + ")");
}
// The leading integer of Slurm's per-node counts ("4", "2(x3)", "2(x3),1").
inline std::optional<int> leading_count(const char* value) {
  if (!value || *value < '0' || *value > '9') return std::nullopt;
  return std::atoi(value);
}
}  // namespace detail

/// The first host of a Slurm node list: "node[003-005,9],gpu1" -> "node003", "a-1,b" -> "a-1".
inline std::string first_slurm_host(const std::string& nodelist) {
  std::string host;
  int depth = 0;
  bool in_range = false;  // inside [...], after the first number
  for (char c : nodelist) {
    if (c == '[') {
      ++depth;
      continue;
    }
    if (c == ']') {
      --depth;
      in_range = false;
      continue;
    }
    if (depth == 0 && c == ',') break;
    if (depth > 0 && (c == ',' || c == '-')) in_range = true;
    if (depth > 0 && in_range) continue;
    host += c;
  }
  if (host.empty() || depth != 0)
    throw std::invalid_argument("trainloop: distributed: SLURM_NODELIST='" + nodelist + "' is not a Slurm node list");
  return host;
}

/// The launch environment, checked in Lightning's order of launchers: torchrun (or RANK/WORLD_SIZE/MASTER_* set by
/// hand, or trainloop's own local launch), Slurm (srun), Open MPI (mpirun). Malformed values are errors naming the
/// variable.
inline Environment detect_environment(const EnvironmentReader& env = [](const char* name) { return std::getenv(name); }) {
  using namespace detail;
  Environment e;
  if (env("RANK") && env("WORLD_SIZE")) {
    e.launcher = env("TORCHELASTIC_RUN_ID") ? "torchrun" : env("TRAINLOOP_LOCAL_LAUNCH") ? "trainloop" : "env";
    e.rank = env_required(env, "RANK", e.launcher.c_str());
    e.world_size = env_required(env, "WORLD_SIZE", e.launcher.c_str());
    e.local_rank = static_cast<int>(env_integer(env, "LOCAL_RANK").value_or(e.rank));
    e.local_world_size = static_cast<int>(env_integer(env, "LOCAL_WORLD_SIZE").value_or(e.world_size));
    e.node_rank = static_cast<int>(env_integer(env, "GROUP_RANK").value_or(env_integer(env, "NODE_RANK").value_or(0)));
    if (!env("MASTER_ADDR") || !env("MASTER_PORT"))
      throw std::invalid_argument("trainloop: distributed: RANK and WORLD_SIZE are set but MASTER_ADDR or MASTER_PORT "
                                  "is not (the address and port of rank 0's store)");
    e.master_addr = env("MASTER_ADDR");
    e.master_port = env_port(env, "MASTER_PORT");
    const char* agent = env("TORCHELASTIC_USE_AGENT_STORE");
    e.agent_store = agent && (std::string(agent) == "True" || std::string(agent) == "true" || std::string(agent) == "1");
    e.restart_count = static_cast<int>(env_integer(env, "TORCHELASTIC_RESTART_COUNT").value_or(0));
    check_ranks(e, "RANK", "WORLD_SIZE");
    return e;
  }
  const char* job_name = env("SLURM_JOB_NAME");
  const bool interactive = job_name && (std::string(job_name) == "bash" || std::string(job_name) == "interactive");
  if (env("SLURM_NTASKS") && env("SLURM_PROCID") && !interactive) {
    e.launcher = "slurm";
    e.rank = env_required(env, "SLURM_PROCID", "Slurm");
    e.world_size = env_required(env, "SLURM_NTASKS", "Slurm");
    e.local_rank = static_cast<int>(env_integer(env, "SLURM_LOCALID").value_or(0));
    e.node_rank = static_cast<int>(env_integer(env, "SLURM_NODEID").value_or(0));
    auto per_node = leading_count(env("SLURM_NTASKS_PER_NODE"));
    if (!per_node) per_node = leading_count(env("SLURM_TASKS_PER_NODE"));
    e.local_world_size = per_node.value_or(e.world_size);
    if (const char* addr = env("MASTER_ADDR")) {
      e.master_addr = addr;
    } else if (const char* nodes = env("SLURM_NODELIST") ? env("SLURM_NODELIST") : env("SLURM_JOB_NODELIST")) {
      e.master_addr = first_slurm_host(nodes);
    } else {
      throw std::invalid_argument("trainloop: distributed: Slurm launch without SLURM_NODELIST or MASTER_ADDR");
    }
    e.master_port = env_port(env, "MASTER_PORT");
    if (e.master_port == 0) {  // every task derives the same port from the job id, as Lightning does
      const auto job = env_integer(env, "SLURM_JOB_ID");
      if (!job) throw std::invalid_argument("trainloop: distributed: Slurm launch without SLURM_JOB_ID or MASTER_PORT");
      e.master_port = 15000 + static_cast<int>(*job % 10000);
    }
    check_ranks(e, "SLURM_PROCID", "SLURM_NTASKS");
    return e;
  }
  if (env("OMPI_COMM_WORLD_RANK") && env("OMPI_COMM_WORLD_SIZE")) {
    e.launcher = "mpi";
    e.rank = env_required(env, "OMPI_COMM_WORLD_RANK", "Open MPI");
    e.world_size = env_required(env, "OMPI_COMM_WORLD_SIZE", "Open MPI");
    e.local_rank = static_cast<int>(env_integer(env, "OMPI_COMM_WORLD_LOCAL_RANK").value_or(e.rank));
    e.local_world_size = static_cast<int>(env_integer(env, "OMPI_COMM_WORLD_LOCAL_SIZE").value_or(e.world_size));
    e.node_rank = static_cast<int>(env_integer(env, "OMPI_COMM_WORLD_NODE_RANK").value_or(0));
    if (const char* addr = env("MASTER_ADDR")) e.master_addr = addr;
    else if (e.local_world_size != e.world_size)
      throw std::invalid_argument("trainloop: distributed: mpirun over several nodes needs MASTER_ADDR (rank 0's host): "
                                  "mpirun -x MASTER_ADDR=<host> -x MASTER_PORT=<port> ...");
    e.master_port = env_port(env, "MASTER_PORT");
    if (e.master_port == 0) {  // every rank derives the same port from Open MPI's job id
      const auto job = detail::env_integer(env, "OMPI_MCA_ess_base_jobid");
      if (!job) throw std::invalid_argument("trainloop: distributed: mpirun launch without MASTER_PORT (and no "
                                            "OMPI_MCA_ess_base_jobid to derive one from): mpirun -x MASTER_PORT=<port>");
      e.master_port = 15000 + static_cast<int>(static_cast<unsigned long long>(*job) % 20000);
    }
    check_ranks(e, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE");
    return e;
  }
  return e;
}

// --- the process group -------------------------------------------------------------------------------------------

/// How init() connects the ranks.
struct InitOptions {
  /// "auto" (NCCL for CUDA tensors where LibTorch has it, else Gloo), "gloo" or "nccl".
  InitOptions& backend(std::string v) { return backend_ = std::move(v), *this; }
  /// How long a collective may wait for its peers before it fails (a dead or stuck rank).
  InitOptions& timeout(std::chrono::milliseconds v) { return timeout_ = v, *this; }
  /// How long the first rendezvous may wait for every rank to join (a local launch's ranks repeat the program's
  /// setup before they join: loading data may take longer than `timeout`).
  InitOptions& rendezvous_timeout(std::chrono::milliseconds v) { return rendezvous_timeout_ = v, *this; }
  /// Without a launcher: run this many processes on this machine (this one is rank 0; the others re-execute this
  /// program with the same arguments). Under a launcher it must match the launcher's local world size.
  InitOptions& processes(int v) { return processes_ = v, *this; }
  /// The device the collectives run on ("auto" backend picks NCCL for CUDA).
  InitOptions& device(torch::Device v) { return device_ = v, *this; }

  const std::string& backend() const { return backend_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  std::chrono::milliseconds rendezvous_timeout() const { return rendezvous_timeout_; }
  int processes() const { return processes_; }
  torch::Device device() const { return device_; }

 private:
  std::string backend_ = "auto";
  std::chrono::milliseconds timeout_{std::chrono::seconds(60)};
  std::chrono::milliseconds rendezvous_timeout_{std::chrono::seconds(300)};
  int processes_ = 0;  // 0: whatever the launcher says (1 without one)
  torch::Device device_ = torch::kCPU;
};

namespace detail {
// LibTorch 2.x's backends derive from c10d::Backend, 1.13's from c10d::ProcessGroup; both declare the collectives
// with the same signatures, so hold whichever base Gloo has (detected, not switched on version numbers).
#if TRAINLOOP_DETAIL_HAS_GLOO
using CollectiveBackend = std::conditional_t<std::is_base_of_v<c10d::Backend, c10d::ProcessGroupGloo>, c10d::Backend,
                                             c10d::ProcessGroup>;
#else
using CollectiveBackend = std::conditional_t<std::is_base_of_v<c10d::Backend, c10d::ProcessGroupNCCL>, c10d::Backend,
                                             c10d::ProcessGroup>;
#endif

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

inline bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

// c10's errors append a C++ backtrace to what(); trainloop's messages carry the cause without it.
inline std::string error_text(const std::exception& error) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) return c10_error->what_without_backtrace();
  return error.what();
}
// How every distributed error starts: "trainloop: distributed: rank 1 of 4: ".
inline std::string rank_prefix(int rank, int world_size) {
  return "trainloop: distributed: rank " + std::to_string(rank) + " of " + std::to_string(world_size) + ": ";
}
inline std::string rendezvous_hint(const Environment& e) {
  return "tcp://" + e.master_addr + ":" + std::to_string(e.master_port) + " (launcher: " + e.launcher + ")";
}

// Every rank counts itself in on the store, then waits until all have, within the rendezvous timeout: so the program's
// setup before init (loading data, which a local launch's ranks repeat after rank 0 starts them) may take longer than
// the collective timeout that bounds the process group's own rendezvous, which starts once every rank is there. Rank
// 0 of a local launch watches the ranks it started meanwhile: one that exits first is named at once.
inline void join_ranks(c10d::Store& store, const Environment& e, std::chrono::milliseconds limit,
                       const LocalLaunch* launch) {
  static std::atomic<int> joins{0};  // one key per init() of this process: every rank calls init() as often
  const std::string key = "trainloop/ranks_joined/" + std::to_string(joins++);
  const auto add = [&](std::int64_t n) {
    try {
      return store.add(key, n);
    } catch (const std::exception& error) {
      throw std::runtime_error(rank_prefix(e.rank, e.world_size) + "the store at " + rendezvous_hint(e) +
                               " failed during the rendezvous: " + error_text(error));
    }
  };
  const auto until = std::chrono::steady_clock::now() + limit;
  for (std::int64_t joined = add(1); joined < e.world_size; joined = add(0)) {
    if (launch) {
      const std::string died = launch->failure();
      if (!died.empty())
        throw std::runtime_error(rank_prefix(e.rank, e.world_size) + died + " before every rank joined the rendezvous");
    }
    if (std::chrono::steady_clock::now() >= until)
      throw std::runtime_error(rank_prefix(e.rank, e.world_size) + "only " + std::to_string(joined) + " of " +
                               std::to_string(e.world_size) + " ranks joined the rendezvous within " +
                               std::to_string(limit.count() / 1000) + " s (rendezvous_timeout); is every rank started?");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}
}  // namespace detail

/// Which reduction an all-reduce applies.
enum class ReduceOp { sum, max, min };

/// The ranks of one job and their collectives. Every collective waits at most the group's timeout: a dead or stuck
/// peer is an exception naming this rank (and, under a local launch, the rank that died), never a hang.
class ProcessGroup {
 public:
  ProcessGroup(Environment environment, c10::intrusive_ptr<c10d::Store> store,
               c10::intrusive_ptr<detail::CollectiveBackend> backend, std::string backend_name,
               std::chrono::milliseconds timeout, std::unique_ptr<detail::LocalLaunch> launch)
      : environment_(std::move(environment)), store_(std::move(store)), backend_(std::move(backend)),
        backend_name_(std::move(backend_name)), timeout_(timeout), launch_(std::move(launch)) {}
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;
  /// A local launch's rank 0 waits for the other ranks to finish (they run the rest of the program too), as
  /// finish_local_ranks(); a failure no error has named yet is printed on stderr. The process is never ended here:
  /// its exit status is the program's.
  ~ProcessGroup() {
    if (!launch_ || local_ranks_finished_) return;
    const std::string failure = finish_local_ranks();
    if (!failure.empty() && !failure_reported_) std::fprintf(stderr, "trainloop: distributed: %s\n", failure.c_str());
  }

  /// On rank 0 of a local launch (`processes(n)` / the Trainer's `devices(n)` without a launcher): waits up to the
  /// group's timeout for the ranks this process started to exit, stops those still running then, and returns the
  /// first failure ("rank 1 (pid 42) exited with status 3"), or "" when every rank exited with status 0. A program
  /// that wants a failed rank in its own exit status asks here. Elsewhere: "".
  std::string finish_local_ranks() {
    if (launch_ && !local_ranks_finished_) {
      local_ranks_failure_ = launch_->finish(timeout_);
      local_ranks_finished_ = true;
    }
    return local_ranks_failure_;
  }

  int rank() const noexcept { return environment_.rank; }
  int size() const noexcept { return environment_.world_size; }
  int local_rank() const noexcept { return environment_.local_rank; }
  const Environment& environment() const noexcept { return environment_; }
  const std::string& backend_name() const noexcept { return backend_name_; }
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }
  c10d::Store& store() { return *store_; }

  /// Starts an all-reduce of `tensors` (one per device; usually one); wait() on what it returns.
  c10::intrusive_ptr<c10d::Work> all_reduce_async(std::vector<torch::Tensor>& tensors, ReduceOp op = ReduceOp::sum) {
    c10d::AllreduceOptions options;
    options.reduceOp = op == ReduceOp::sum ? c10d::ReduceOp::SUM : op == ReduceOp::max ? c10d::ReduceOp::MAX : c10d::ReduceOp::MIN;
    return collective("all_reduce", [&] { return backend_->allreduce(tensors, options); });
  }
  /// In-place all-reduce of one tensor.
  void all_reduce(torch::Tensor& tensor, ReduceOp op = ReduceOp::sum) {
    std::vector<torch::Tensor> tensors{tensor};
    wait(all_reduce_async(tensors, op), "all_reduce");
  }
  /// In-place broadcast of `tensor` from `root`.
  void broadcast(torch::Tensor& tensor, int root = 0) {
    std::vector<torch::Tensor> tensors{tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    wait(collective("broadcast", [&] { return backend_->broadcast(tensors, options); }), "broadcast");
  }
  /// Every rank waits here until all have arrived.
  void barrier() {
    c10d::BarrierOptions options;
    wait(collective("barrier", [&] { return backend_->barrier(options); }), "barrier");
  }
  /// Waits for a collective, turning a peer's death or a timeout into an error naming the ranks involved.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
    try {
      work->wait();
    } catch (const std::exception& error) {
      throw failed(what, detail::error_text(error));
    }
  }
  /// Whether `decision` holds on every rank (all = true) or on at least one (all = false): ranks that must take the
  /// same branch agree first.
  bool agree(bool decision, bool all) {
    if (size() == 1) return decision;
    torch::Tensor flag = torch::full({1}, decision ? 1.0f : 0.0f, torch::TensorOptions().device(device_));
    all_reduce(flag, all ? ReduceOp::min : ReduceOp::max);
    return flag.item<float>() != 0;
  }
  /// The device collectives run on (CUDA for NCCL).
  torch::Device device() const noexcept { return device_; }
  void set_device(torch::Device device) { device_ = device; }

  /// The error for a collective that failed: names this rank and, under a local launch, the rank that died.
  std::runtime_error failed(const char* what, const std::string& cause) {
    std::string message = detail::rank_prefix(rank(), size()) + what + " failed: ";
    const std::string died = launch_ ? launch_->failure(std::chrono::seconds(2)) : std::string();
    failure_reported_ = failure_reported_ || !died.empty();
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%g", static_cast<double>(timeout_.count()) / 1000);
    if (!died.empty()) message += died + " (" + cause + ")";
    else message += "a peer rank died, or did not arrive within the timeout of " + std::string(seconds) + " s (" + cause + ")";
    return std::runtime_error(message);
  }
  /// Stops a local launch's other ranks (rank 0 failed: they cannot finish).
  void abort_local_ranks() {
    if (launch_) launch_->terminate();
  }

 private:
  template <class Start>
  c10::intrusive_ptr<c10d::Work> collective(const char* what, Start&& start) {
    try {
      return start();
    } catch (const std::exception& error) {
      throw failed(what, detail::error_text(error));
    }
  }

  Environment environment_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<detail::CollectiveBackend> backend_;
  std::string backend_name_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<detail::LocalLaunch> launch_;
  bool local_ranks_finished_ = false, failure_reported_ = false;  // failure_reported_: an error named the dead rank
  std::string local_ranks_failure_;
  torch::Device device_ = torch::kCPU;
};

namespace detail {
inline std::shared_ptr<ProcessGroup>& default_group_slot() {
  static std::shared_ptr<ProcessGroup> group;
  return group;
}

#if TRAINLOOP_DETAIL_HAS_GLOO
inline std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string& master_addr) {
  if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"))
    return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
  if (is_loopback(master_addr)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}
#endif

// TCPStoreOptions::useLibUV exists from LibTorch 2.2 on (detected, not switched on versions): the classic server is
// the one every supported version has and the one trainloop's rendezvous (port 0 for the local launch, timeouts) is
// tested with, and LibTorch builds without libuv only warn and fall back to it.
template <class O>
auto disable_libuv(O& options, int) -> decltype(options.useLibUV = false, void()) {
  options.useLibUV = false;
}
template <class O>
void disable_libuv(O&, long) {}
}  // namespace detail

/// Connects this process to the others of its job: the store rendezvous (torchrun's agent store when torchrun runs
/// one; else rank 0 hosts it), then the process group. Without a launcher and with processes(n > 1), starts ranks
/// 1..n-1 first. Sets the default group (default_group()), and makes trainloop's metrics reduce over it.
inline std::shared_ptr<ProcessGroup> init(const InitOptions& options = InitOptions(), Environment e = detect_environment()) {
  if (options.processes() < 0) throw std::invalid_argument("trainloop: distributed: processes(n): n must be at least 1");
  if (e.launched() && options.processes() > 0 && options.processes() != e.local_world_size)
    throw std::invalid_argument("trainloop: distributed: " + std::to_string(options.processes()) +
                                " processes were asked for, but the launcher (" + e.launcher + ") started " +
                                std::to_string(e.local_world_size) + " on this node; ask for what the launcher runs");
  std::string backend = options.backend();
  if (backend == "auto") backend = options.device().is_cuda() && TRAINLOOP_DETAIL_HAS_NCCL ? "nccl" : "gloo";
  if (backend != "gloo" && backend != "nccl")
    throw std::invalid_argument("trainloop: distributed: backend '" + backend + "' is not one of auto, gloo, nccl");
  if (backend == "nccl" && !TRAINLOOP_DETAIL_HAS_NCCL)
    throw std::invalid_argument("trainloop: distributed: backend 'nccl' is not in this LibTorch build (no "
                                "USE_C10D_NCCL, or no ProcessGroupNCCL.hpp); use 'gloo'");
  if (backend == "gloo" && !TRAINLOOP_DETAIL_HAS_GLOO)
    throw std::invalid_argument("trainloop: distributed: backend 'gloo' was not compiled in (it needs -DUSE_C10D_GLOO "
                                "and gloo's headers, which PyTorch's packages do not ship): train on CUDA with 'nccl'");

  std::unique_ptr<detail::LocalLaunch> launch;
  c10::intrusive_ptr<c10d::Store> store;
  c10d::TCPStoreOptions store_options;
  store_options.timeout = options.rendezvous_timeout();
  detail::disable_libuv(store_options, 0);
  try {
    if (!e.launched() && options.processes() > 1) {
      // Local launch: rank 0 hosts the store on a port the kernel picks (no race for a "free" port), then starts the
      // others with it.
      e.launcher = "trainloop";
      e.world_size = e.local_world_size = options.processes();
      store_options.port = 0;
      store_options.isServer = true;
      store_options.numWorkers = static_cast<std::size_t>(e.world_size);
      store_options.waitWorkers = false;
      auto tcp = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", store_options);
      e.master_port = tcp->getPort();
      store = tcp;
      launch = std::make_unique<detail::LocalLaunch>(e.world_size, e.master_port);
    } else if (e.agent_store) {
      store_options.port = static_cast<std::uint16_t>(e.master_port);
      store_options.isServer = false;
      store = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(e.restart_count),
                                                     c10::make_intrusive<c10d::TCPStore>(e.master_addr, store_options));
    } else {
      store_options.port = static_cast<std::uint16_t>(e.master_port);
      store_options.isServer = e.rank == 0;
      store_options.numWorkers = static_cast<std::size_t>(e.world_size);
      store_options.waitWorkers = true;
      store = c10::make_intrusive<c10d::TCPStore>(e.master_addr, store_options);
    }
  } catch (const std::exception& error) {
    throw std::runtime_error(detail::rank_prefix(e.rank, e.world_size) + "the store rendezvous at " +
                             detail::rendezvous_hint(e) + " failed within " +
                             std::to_string(options.rendezvous_timeout().count() / 1000) +
                             " s (is every rank started, with the same MASTER_ADDR and MASTER_PORT?): " +
                             detail::error_text(error));
  }
  try {
    detail::join_ranks(*store, e, options.rendezvous_timeout(), launch.get());
  } catch (...) {
    if (launch) launch->terminate();
    throw;
  }

  c10::intrusive_ptr<detail::CollectiveBackend> collectives;
  try {
    if (backend == "gloo") {
#if TRAINLOOP_DETAIL_HAS_GLOO
      auto gloo_options = c10d::ProcessGroupGloo::Options::create(options.timeout());
      gloo_options->devices.push_back(detail::gloo_device(e.master_addr));
      // Every rank has joined (join_ranks): Gloo's own rendezvous, bounded by `timeout` as the collectives are, is quick.
      collectives = c10::make_intrusive<c10d::ProcessGroupGloo>(store, e.rank, e.world_size, gloo_options);
#endif
    } else {
#if TRAINLOOP_DETAIL_HAS_NCCL
      if (!std::getenv("TORCH_NCCL_ASYNC_ERROR_HANDLING"))  // a timed-out NCCL collective tears the process down
        setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1", 0);
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = options.timeout();
      collectives = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, e.rank, e.world_size, nccl_options);
#endif
    }
  } catch (const std::exception& error) {
    if (launch) launch->terminate();
    throw std::runtime_error(detail::rank_prefix(e.rank, e.world_size) + "the " + backend + " rendezvous at " +
                             detail::rendezvous_hint(e) + " failed (every rank had joined the store: one died, or "
                             "the group's own rendezvous took longer than the collective timeout of " +
                             std::to_string(options.timeout().count() / 1000) + " s): " + detail::error_text(error));
  }
  auto group = std::make_shared<ProcessGroup>(e, store, collectives, backend, options.timeout(), std::move(launch));
  group->set_device(backend == "nccl" ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(e.local_rank)) : torch::Device(torch::kCPU));
  detail::default_group_slot() = group;
  // Metrics reduce their states over this group, once per compute() (metrics/metric.hpp's seam).
  metric_state_reducer() = [group](torch::Tensor& state, SyncOp op) {
    group->all_reduce(state, op == SyncOp::sum ? ReduceOp::sum : op == SyncOp::max ? ReduceOp::max : ReduceOp::min);
  };
  return group;
}

/// The group init() made last (nullptr before).
inline std::shared_ptr<ProcessGroup> default_group() { return detail::default_group_slot(); }
/// Drops the default group and the metrics' reduction over it (a local launch's rank 0 then waits for its other
/// ranks, once nothing else holds the group: see ProcessGroup::finish_local_ranks).
inline void destroy() {
  detail::default_group_slot().reset();
  metric_state_reducer() = nullptr;
}

// --- gradient synchronisation ----------------------------------------------------------------------------------

/// DistributedDataParallel's settings.
struct DDPOptions {
  /// Gradients per all-reduce, in MiB (PyTorch's default 25; the first bucket is capped at 1 MiB so communication
  /// starts early in backward).
  DDPOptions& bucket_cap_mb(double v) { return bucket_cap_mb_ = v, *this; }
  /// Parameters may get no gradient in a step (branches not taken): they are found at wait() and synchronised too.
  /// Off, such a parameter is an error naming it.
  DDPOptions& find_unused_parameters(bool v) { return find_unused_parameters_ = v, *this; }
  /// Rank 0's buffers (batch-norm statistics) broadcast before each forward.
  DDPOptions& broadcast_buffers(bool v) { return broadcast_buffers_ = v, *this; }

  double bucket_cap_mb() const { return bucket_cap_mb_; }
  bool find_unused_parameters() const { return find_unused_parameters_; }
  bool broadcast_buffers() const { return broadcast_buffers_; }

 private:
  double bucket_cap_mb_ = 25.0;
  bool find_unused_parameters_ = false;
  bool broadcast_buffers_ = true;
};

/// Averages a module's gradients over the ranks of `group`. Construction broadcasts rank 0's parameters and buffers;
/// then each backward launches bucketed all-reduces as gradients become ready (same bucket order on every rank), and
/// wait() (before the optimizer step) finishes them and writes the averages back to the gradients.
///
///     distributed::DistributedDataParallel ddp(*model, group);
///     { auto guard = ddp.no_sync(); loss1.backward(); }   // accumulation micro-step: no communication
///     loss2.backward(); ddp.wait(); optimizer.step();
class DistributedDataParallel {
 public:
  DistributedDataParallel(torch::nn::Module& module, std::shared_ptr<ProcessGroup> group, DDPOptions options = {})
      : group_(std::move(group)), options_(options) {
    if (!group_) throw std::invalid_argument("trainloop: DistributedDataParallel: no process group (call distributed::init())");
    if (options_.bucket_cap_mb() <= 0)
      throw std::invalid_argument("trainloop: DistributedDataParallel: bucket_cap_mb must be positive");
    for (auto& item : module.named_parameters())
      if (item.value().requires_grad()) {
        names_.push_back(item.key());
        params_.push_back(item.value());
      }
    for (auto& b : module.buffers()) buffers_.push_back(b);
    check_same_model();
    std::vector<torch::Tensor> state = params_;
    state.insert(state.end(), buffers_.begin(), buffers_.end());
    broadcast_coalesced(state);
    make_buckets();
    install_hooks();
  }
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;
  ~DistributedDataParallel() {
    for (std::size_t i = 0; i < accumulators_.size(); ++i) accumulators_[i]->del_post_hook(hook_keys_[i]);
  }

  /// While the returned guard lives, backward accumulates gradients locally (no communication): the micro-steps of
  /// gradient accumulation. The backward after it synchronises the accumulated sum.
  class NoSync {
   public:
    explicit NoSync(DistributedDataParallel& ddp) : ddp_(&ddp), previous_(ddp.require_sync_) { ddp.require_sync_ = false; }
    NoSync(NoSync&& other) noexcept : ddp_(std::exchange(other.ddp_, nullptr)), previous_(other.previous_) {}
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;
    NoSync& operator=(NoSync&&) = delete;
    ~NoSync() {
      if (ddp_) ddp_->require_sync_ = previous_;
    }

   private:
    DistributedDataParallel* ddp_;
    bool previous_;
  };
  NoSync no_sync() { return NoSync(*this); }
  /// Whether the next backward synchronises (false inside no_sync()).
  bool require_sync() const noexcept { return require_sync_; }
  void require_sync(bool v) noexcept { require_sync_ = v; }

  /// Finishes the synchronisation the last backward started: launches the buckets still waiting (parameters without
  /// a gradient: found with find_unused_parameters, else an error naming them), waits, writes the averaged gradients
  /// back. Call it after backward and before the optimizer step; without a synchronising backward since the last
  /// call it does nothing.
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!pass_started_) return;
    std::vector<std::size_t> missing;
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (!ready_[i]) missing.push_back(i);
    torch::Tensor used;
    if (!missing.empty()) {
      if (!options_.find_unused_parameters()) {
        std::string names;
        for (std::size_t k = 0; k < missing.size() && k < 8; ++k) names += (k ? ", '" : "'") + names_[missing[k]] + "'";
        if (missing.size() > 8) names += ", ...";
        reset_pass();
        throw std::runtime_error("trainloop: DistributedDataParallel: rank " + std::to_string(group_->rank()) + ": " +
                                 std::to_string(missing.size()) + " parameter(s) got no gradient in this backward (" +
                                 names + "), so the other ranks would wait for them. Pass DDPOptions()"
                                 ".find_unused_parameters(true) if parts of the model can go unused in a step, or "
                                 "requires_grad(false) on parameters that never train");
      }
      for (std::size_t i : missing) mark_ready_locked(i, /*has_gradient=*/false);
    }
    if (options_.find_unused_parameters()) {  // which parameters any rank used: the others keep no gradient
      used = torch::zeros({static_cast<std::int64_t>(params_.size())}, torch::TensorOptions().device(group_->device()));
      std::vector<float> local(params_.size());
      for (std::size_t i = 0; i < params_.size(); ++i) local[i] = had_gradient_[i] ? 1.0f : 0.0f;
      used.copy_(torch::from_blob(local.data(), {static_cast<std::int64_t>(local.size())}));
      group_->all_reduce(used, ReduceOp::max);
      used = used.to(torch::kCPU);
    }
    const float* used_by_any = used.defined() ? used.data_ptr<float>() : nullptr;
    const auto start = std::chrono::steady_clock::now();
    for (auto& bucket : buckets_) group_->wait(bucket.work, "all_reduce of gradients");
    blocked_ += std::chrono::steady_clock::now() - start;
    torch::NoGradGuard no_grad;
    for (auto& bucket : buckets_) {
      for (std::size_t k = 0; k < bucket.params.size(); ++k) {
        const std::size_t i = bucket.params[k];
        if (used_by_any && used_by_any[i] == 0) continue;  // no rank used it: it keeps no gradient
        torch::Tensor average = bucket.flat.narrow(0, bucket.offsets[k], params_[i].numel()).view_as(params_[i]);
        torch::Tensor& grad = params_[i].mutable_grad();
        if (grad.defined()) grad.copy_(average);
        else grad = average.clone();
      }
      bucket.work = {};
    }
    ++synced_steps_;
    reset_pass();
  }

  /// Broadcasts rank 0's buffers (with broadcast_buffers; a no-op for a model without buffers). Call before forward.
  void sync_buffers() {
    if (options_.broadcast_buffers() && !buffers_.empty() && group_->size() > 1) broadcast_coalesced(buffers_);
  }

  ProcessGroup& group() { return *group_; }
  const DDPOptions& options() const noexcept { return options_; }
  /// Backward passes whose gradients were synchronised (wait() calls that had work).
  std::int64_t synced_steps() const noexcept { return synced_steps_; }
  /// All-reduces of gradient buckets launched so far.
  std::int64_t all_reduces() const noexcept { return all_reduces_; }
  std::size_t bucket_count() const noexcept { return buckets_.size(); }
  /// Time wait() spent blocked on communication (what backward did not hide).
  std::chrono::duration<double> blocked_time() const noexcept { return blocked_; }

 private:
  struct Bucket {
    std::vector<std::size_t> params;
    std::vector<std::int64_t> offsets;
    torch::Tensor flat;
    std::size_t pending = 0;
    c10::intrusive_ptr<c10d::Work> work;
  };
  struct ReadyHook : torch::autograd::FunctionPostHook {
    ReadyHook(DistributedDataParallel* ddp, std::size_t index) : ddp(ddp), index(index) {}
    torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                              const torch::autograd::variable_list& /*inputs*/) override {
      ddp->mark_ready(index);
      return outputs;
    }
    DistributedDataParallel* ddp;
    std::size_t index;
  };

  // Same number of parameters and elements on every rank, or a clear error instead of a mismatched collective.
  void check_same_model() {
    if (group_->size() == 1) return;
    std::int64_t elements = 0;
    for (const auto& p : params_) elements += p.numel();
    const double mine[2] = {static_cast<double>(params_.size()), static_cast<double>(elements)};
    torch::Tensor hi = torch::tensor({mine[0], mine[1]}, torch::kFloat64).to(group_->device());
    torch::Tensor lo = hi.clone();
    group_->all_reduce(hi, ReduceOp::max);
    group_->all_reduce(lo, ReduceOp::min);
    if (!hi.equal(lo))
      throw std::runtime_error("trainloop: DistributedDataParallel: rank " + std::to_string(group_->rank()) + " has " +
                               std::to_string(params_.size()) + " trainable parameters (" + std::to_string(elements) +
                               " elements), but the ranks disagree (from " + c10::str(lo.cpu()) + " to " +
                               c10::str(hi.cpu()) + "): every rank must build the same model");
  }
  // One broadcast per (device, dtype) group: the tensors flattened together, sent, copied back.
  void broadcast_coalesced(const std::vector<torch::Tensor>& tensors) {
    torch::NoGradGuard no_grad;
    std::map<std::pair<std::string, at::ScalarType>, std::vector<torch::Tensor>> groups;
    for (const auto& t : tensors) groups[{t.device().str(), t.scalar_type()}].push_back(t);
    for (auto& [key, group] : groups) {
      std::vector<torch::Tensor> flat_parts;
      for (const auto& t : group) flat_parts.push_back(t.reshape(-1));
      torch::Tensor flat = torch::cat(flat_parts);
      group_->broadcast(flat, 0);
      std::int64_t offset = 0;
      for (auto& t : group) {
        t.copy_(flat.narrow(0, offset, t.numel()).view_as(t));
        offset += t.numel();
      }
    }
  }
  // Buckets in reverse registration order (roughly the order backward produces gradients), one (device, dtype) each.
  void make_buckets() {
    const double cap = options_.bucket_cap_mb() * 1024 * 1024;
    bucket_of_.assign(params_.size(), 0);
    std::map<std::pair<std::string, at::ScalarType>, std::size_t> open;  // the bucket being filled per kind
    std::map<std::size_t, double> bytes;
    for (std::size_t n = params_.size(); n-- > 0;) {
      const torch::Tensor& p = params_[n];
      const auto key = std::make_pair(p.device().str(), p.scalar_type());
      const double size = static_cast<double>(p.numel() * p.element_size());
      auto it = open.find(key);
      const double limit = it != open.end() && it->second == 0 ? std::min(cap, 1024.0 * 1024) : cap;
      if (it == open.end() || (bytes[it->second] > 0 && bytes[it->second] + size > limit)) {
        buckets_.emplace_back();
        it = open.insert_or_assign(key, buckets_.size() - 1).first;
      }
      Bucket& b = buckets_[it->second];
      b.offsets.push_back(b.params.empty() ? 0 : b.offsets.back() + params_[b.params.back()].numel());
      b.params.push_back(n);
      bytes[it->second] += size;
      bucket_of_[n] = it->second;
    }
    for (auto& b : buckets_) {
      const torch::Tensor& first = params_[b.params.front()];
      b.flat = torch::zeros({b.offsets.back() + params_[b.params.back()].numel()}, first.options());
    }
    ready_.assign(params_.size(), false);
    had_gradient_.assign(params_.size(), false);
  }
  void install_hooks() {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto accumulator = torch::autograd::impl::grad_accumulator(params_[i]);
      if (!accumulator)
        throw std::invalid_argument("trainloop: DistributedDataParallel: parameter '" + names_[i] + "' is not a leaf");
      hook_keys_.push_back(accumulator->add_post_hook(std::make_unique<ReadyHook>(this, i)));
      accumulators_.push_back(std::move(accumulator));  // the variable holds it weakly: keep it alive
    }
  }
  // Called by autograd once parameter i's gradient is accumulated.
  void mark_ready(std::size_t i) {
    if (!require_sync_) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (ready_[i]) {
      throw std::runtime_error("trainloop: DistributedDataParallel: parameter '" + names_[i] + "' got a second gradient "
                               "before wait(): run accumulation micro-steps inside no_sync(), and call wait() after "
                               "each synchronising backward");
    }
    mark_ready_locked(i, true);
  }
  void mark_ready_locked(std::size_t i, bool has_gradient) {
    pass_started_ = true;
    ready_[i] = true;
    had_gradient_[i] = has_gradient;
    ++buckets_[bucket_of_[i]].pending;
    // Buckets start strictly in index order, so every rank issues the same sequence of collectives.
    while (next_bucket_ < buckets_.size() && buckets_[next_bucket_].pending == buckets_[next_bucket_].params.size())
      launch(buckets_[next_bucket_++]);
  }
  void launch(Bucket& b) {
    torch::NoGradGuard no_grad;
    const double world = static_cast<double>(group_->size());
    for (std::size_t k = 0; k < b.params.size(); ++k) {
      const torch::Tensor& p = params_[b.params[k]];
      torch::Tensor slot = b.flat.narrow(0, b.offsets[k], p.numel());
      if (had_gradient_[b.params[k]] && p.grad().defined()) slot.copy_(p.grad().reshape(-1));
      else slot.zero_();
    }
    b.flat.div_(world);
    std::vector<torch::Tensor> tensors{b.flat};
    b.work = group_->all_reduce_async(tensors);
    ++all_reduces_;
  }
  void reset_pass() {
    std::fill(ready_.begin(), ready_.end(), false);
    std::fill(had_gradient_.begin(), had_gradient_.end(), false);
    for (auto& b : buckets_) b.pending = 0;
    next_bucket_ = 0;
    pass_started_ = false;
  }

  std::shared_ptr<ProcessGroup> group_;
  DDPOptions options_;
  std::vector<std::string> names_;
  std::vector<torch::Tensor> params_, buffers_;
  std::vector<Bucket> buckets_;
  std::vector<std::size_t> bucket_of_;
  std::vector<bool> ready_, had_gradient_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<std::uintptr_t> hook_keys_;
  std::mutex mutex_;
  std::size_t next_bucket_ = 0;
  bool pass_started_ = false;
  bool require_sync_ = true;
  std::int64_t synced_steps_ = 0, all_reduces_ = 0;
  std::chrono::duration<double> blocked_{0};
};

}  // namespace distributed

TRAINLOOP_DETAIL_END
