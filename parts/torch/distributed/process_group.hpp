// trainloop: the process group on LibTorch's own c10d (TRAINLOOP_WITH_DISTRIBUTED=1): the store rendezvous, Gloo on
// CPU and NCCL on CUDA where built in, collectives bounded by timeouts, so a dead or missing rank is an error naming
// it, never a hang. distributed::init() connects this process to the others of its job (starting them first when no
// launcher did: local_launch.hpp).
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
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

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "parts/core/launch_environment.hpp"
#include "parts/torch/distributed/local_launch.hpp"
#include "parts/torch/metrics/metric.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace distributed {

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
  trainloop::detail::joined_rank() = e.rank;  // the loggers, the progress bar and the Trainer read it from now on
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
  trainloop::detail::joined_rank().reset();
  metric_state_reducer() = nullptr;
}

}  // namespace distributed

TRAINLOOP_DETAIL_END
