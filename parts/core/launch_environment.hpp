// trainloop: where this process sits in its job, as the launcher described it (torchrun, Slurm, Open MPI, a hand-set
// RANK/WORLD_SIZE, or trainloop's own local launch), and the one answer to "which rank am I" that the loggers, the
// progress bar, the metrics and the Trainer all read. Plain C++ (no LibTorch): the loggers need it without torch.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

TRAINLOOP_DETAIL_BEGIN

namespace distributed {

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
}  // namespace distributed

namespace detail {
// The rank of the process group this process joined (distributed::init registers it, distributed::destroy clears
// it); nullopt while none is up.
TRAINLOOP_DETAIL_API std::optional<int>& joined_rank();
/// This process's rank in its job: the process group's once one is up, else what the launcher's environment says
/// (Lightning's rank_zero_only reads the environment the same way until its strategy sets the rank); 0 alone, and 0
/// when the variables describe no valid job.
/// Loggers, the progress bar and checkpoints write on rank 0 only.
TRAINLOOP_DETAIL_API int process_rank();
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
namespace detail {
TRAINLOOP_DETAIL_API std::optional<int>& joined_rank() {
  static std::optional<int> rank;
  return rank;
}
TRAINLOOP_DETAIL_API int process_rank() {
  if (const std::optional<int>& joined = joined_rank()) return *joined;
  try {
    return distributed::detect_environment().rank;
  } catch (const std::invalid_argument&) {  // variables that describe no valid job: a process of its own (a process
    return 0;                               // group, if one is asked for, reports them)
  }
}
}  // namespace detail
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
