// Data-parallel training (TRAINLOOP_WITH_DISTRIBUTED=1) on c10d's Gloo over 127.0.0.1: the launch environment, the
// gradient synchronisation against single-process references (ranks as threads, each with its own process group), and
// the Trainer across real processes (tests/torch/ddp_child.cpp): devices(n) from a plain binary, torchrun, killed
// ranks, ranks that never join, and resumption.
#include <trainloop.hpp>

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "temp_dir.hpp"

namespace dist = trainloop::distributed;
using namespace std::chrono_literals;

namespace {

dist::EnvironmentReader environment(std::map<std::string, std::string> vars) {
  auto held = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [held](const char* name) -> const char* {
    auto it = held->find(name);
    return it == held->end() ? nullptr : it->second.c_str();
  };
}

// n ranks as threads, each with its own store client and Gloo group (a short timeout: a failure ends in seconds).
// body(group, rank) runs on each; what it throws is returned per rank ("" when it returned).
template <class Body>
std::vector<std::string> run_ranks(int n, Body body) {
  c10d::TCPStoreOptions server_options;
  server_options.port = 0;
  server_options.isServer = true;
  server_options.numWorkers = static_cast<std::size_t>(n);
  server_options.waitWorkers = false;
  server_options.timeout = 20s;
  auto server = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", server_options);
  std::vector<std::string> errors(static_cast<std::size_t>(n));
  std::vector<std::thread> threads;
  for (int rank = 0; rank < n; ++rank)
    threads.emplace_back([&, rank] {
      try {
        c10d::TCPStoreOptions client;
        client.port = server->getPort();
        client.timeout = 20s;
        auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", client);
        auto options = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(5000));
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, n, options);
        dist::Environment e;
        e.launcher = "env";
        e.rank = e.local_rank = rank;
        e.world_size = e.local_world_size = n;
        auto group = std::make_shared<dist::ProcessGroup>(e, store, gloo, "gloo", 5000ms, nullptr);
        body(group, rank);
      } catch (const std::exception& error) {
        errors[static_cast<std::size_t>(rank)] = error.what();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

torch::nn::Sequential make_mlp(std::uint64_t seed) {
  torch::manual_seed(seed);
  return torch::nn::Sequential(torch::nn::Linear(4, 32), torch::nn::Tanh(), torch::nn::Linear(32, 16), torch::nn::Tanh(),
                               torch::nn::Linear(16, 2));
}
double max_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>());
  return worst;
}
std::vector<torch::Tensor> snapshot(torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.detach().clone());
  return out;
}

// The data of `steps` global batches of `n * per_rank` rows; rank r trains on rows [r*per_rank, (r+1)*per_rank).
struct GlobalBatches {
  std::vector<torch::Tensor> x, y;
  GlobalBatches(int steps, std::int64_t rows) {
    torch::manual_seed(123);
    for (int s = 0; s < steps; ++s) {
      x.push_back(torch::randn({rows, 4}));
      y.push_back(torch::randn({rows, 2}));
    }
  }
};

// The single-process reference: the same start (seed 0, rank 0's weights), the mean loss over each whole global batch.
std::vector<torch::Tensor> reference_run(const GlobalBatches& data, int accumulate) {
  auto model = make_mlp(0);
  torch::optim::SGD sgd(model->parameters(), 0.1);
  for (std::size_t s = 0; s < data.x.size(); s += static_cast<std::size_t>(accumulate)) {
    sgd.zero_grad();
    for (int k = 0; k < accumulate; ++k) {
      const auto i = s + static_cast<std::size_t>(k);
      (torch::mse_loss(model->forward(data.x[i]), data.y[i]) / accumulate).backward();
    }
    sgd.step();
  }
  return snapshot(*model);
}

}  // namespace

TEST_SUITE("distributed") {

TEST_CASE("the launch environment: torchrun, Slurm and Open MPI, with errors naming the variable") {
  const dist::Environment none = dist::detect_environment(environment({}));
  CHECK(none.launcher == "none");
  CHECK(none.world_size == 1);

  const auto torchrun = dist::detect_environment(environment(
      {{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"}, {"GROUP_RANK", "1"},
       {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"}, {"TORCHELASTIC_RUN_ID", "job"},
       {"TORCHELASTIC_USE_AGENT_STORE", "True"}, {"TORCHELASTIC_RESTART_COUNT", "2"}}));
  CHECK(torchrun.launcher == "torchrun");
  CHECK(torchrun.rank == 3);
  CHECK(torchrun.local_rank == 1);
  CHECK(torchrun.local_world_size == 2);
  CHECK(torchrun.node_rank == 1);
  CHECK(torchrun.master_addr == "10.0.0.1");
  CHECK(torchrun.master_port == 29500);
  CHECK(torchrun.agent_store);
  CHECK(torchrun.restart_count == 2);

  const auto slurm = dist::detect_environment(environment(
      {{"SLURM_NTASKS", "8"}, {"SLURM_PROCID", "5"}, {"SLURM_LOCALID", "1"}, {"SLURM_NODEID", "2"},
       {"SLURM_TASKS_PER_NODE", "2(x4)"}, {"SLURM_NODELIST", "gpu[017-020,031],login1"}, {"SLURM_JOB_ID", "123456"},
       {"SLURM_JOB_NAME", "train"}}));
  CHECK(slurm.launcher == "slurm");
  CHECK(slurm.rank == 5);
  CHECK(slurm.world_size == 8);
  CHECK(slurm.local_rank == 1);
  CHECK(slurm.local_world_size == 2);
  CHECK(slurm.node_rank == 2);
  CHECK(slurm.master_addr == "gpu017");
  CHECK(slurm.master_port == 15000 + 3456);
  CHECK(dist::first_slurm_host("node-a,node-b") == "node-a");
  CHECK(dist::first_slurm_host("n[3,5-9]x") == "n3x");
  CHECK_THROWS_WITH(dist::first_slurm_host("n[1-2"), contains("SLURM_NODELIST='n[1-2'"));
  // An interactive allocation (srun --pty bash) is not a training launch.
  CHECK(dist::detect_environment(environment({{"SLURM_NTASKS", "1"}, {"SLURM_PROCID", "0"}, {"SLURM_JOB_NAME", "bash"}}))
            .launcher == "none");

  const auto mpi = dist::detect_environment(environment(
      {{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
       {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}, {"MASTER_PORT", "4242"}}));
  CHECK(mpi.launcher == "mpi");
  CHECK(mpi.rank == 1);
  CHECK(mpi.master_addr == "127.0.0.1");
  CHECK(mpi.master_port == 4242);

  CHECK_THROWS_WITH(dist::detect_environment(environment({{"RANK", "x"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"},
                                                          {"MASTER_PORT", "1"}})),
                    contains("RANK='x' is not an integer"));
  CHECK_THROWS_WITH(dist::detect_environment(environment({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"},
                                                          {"MASTER_PORT", "1"}})),
                    contains("RANK=2 is not in [0, WORLD_SIZE=2)"));
  CHECK_THROWS_WITH(dist::detect_environment(environment({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"},
                                                          {"MASTER_PORT", "70000"}})),
                    contains("MASTER_PORT='70000' is not a TCP port"));
  CHECK_THROWS_WITH(dist::detect_environment(environment({{"RANK", "0"}, {"WORLD_SIZE", "2"}})),
                    contains("MASTER_ADDR or MASTER_PORT"));
  CHECK_THROWS_WITH(dist::detect_environment(environment({{"SLURM_NTASKS", "2"}, {"SLURM_PROCID", "0"},
                                                          {"SLURM_NODELIST", "a"}})),
                    contains("SLURM_JOB_ID or MASTER_PORT"));
  CHECK_THROWS_WITH(dist::detect_environment(environment({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                                                          {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}, {"MASTER_PORT", "1"}})),
                    contains("needs MASTER_ADDR"));
}

TEST_CASE("2 and 3 ranks: bucketed gradients equal one process on the union of the batches, and the simple path") {
  for (int n : {2, 3}) {
    CAPTURE(n);
    const int steps = 4, per_rank = 5;
    const GlobalBatches data(steps, n * per_rank);
    const auto reference = reference_run(data, 1);
    std::vector<std::vector<torch::Tensor>> bucketed(n), simple(n);
    std::vector<std::size_t> buckets(n);
    std::vector<std::int64_t> reduces(n);
    // Made here: the ranks' threads share torch's generator, so models drawn there would interleave its numbers.
    std::vector<torch::nn::Sequential> ddp_models, simple_models;
    for (int r = 0; r < n; ++r) {
      ddp_models.push_back(make_mlp(static_cast<std::uint64_t>(r)));  // different weights: rank 0's are broadcast
      simple_models.push_back(make_mlp(0));
    }
    const auto errors = run_ranks(n, [&](std::shared_ptr<dist::ProcessGroup> group, int rank) {
      auto rows = [&](const torch::Tensor& t) { return t.narrow(0, rank * per_rank, per_rank); };
      {  // our DistributedDataParallel
        auto& model = ddp_models[rank];
        dist::DistributedDataParallel ddp(*model, group, dist::DDPOptions().bucket_cap_mb(0.001));
        torch::optim::SGD sgd(model->parameters(), 0.1);
        for (int s = 0; s < steps; ++s) {
          sgd.zero_grad();
          torch::mse_loss(model->forward(rows(data.x[s])), rows(data.y[s])).backward();
          ddp.wait();
          sgd.step();
        }
        bucketed[rank] = snapshot(*model);
        buckets[rank] = ddp.bucket_count();
        reduces[rank] = ddp.all_reduces();
      }
      {  // by hand: backward, then every gradient all-reduced and averaged
        auto& model = simple_models[rank];
        torch::optim::SGD sgd(model->parameters(), 0.1);
        for (int s = 0; s < steps; ++s) {
          sgd.zero_grad();
          torch::mse_loss(model->forward(rows(data.x[s])), rows(data.y[s])).backward();
          for (auto& p : model->parameters()) {
            group->all_reduce(p.mutable_grad());
            p.mutable_grad().div_(n);
          }
          sgd.step();
        }
        simple[rank] = snapshot(*model);
      }
    });
    for (int r = 0; r < n; ++r) {
      CAPTURE(r);
      REQUIRE(errors[r] == "");
      CHECK(max_difference(bucketed[r], reference) < 1e-6);
      CHECK(max_difference(bucketed[r], simple[r]) < 1e-6);
      CHECK(max_difference(bucketed[r], bucketed[0]) == 0);  // every rank holds the same weights, bit for bit
      CHECK(buckets[r] > 1);
      CHECK(reduces[r] == static_cast<std::int64_t>(buckets[r]) * steps);
    }
  }
}

TEST_CASE("accumulation: no communication on micro-steps, one all-reduce per bucket per optimizer step") {
  const int n = 2, accumulate = 3, steps = 2, per_rank = 4;
  const GlobalBatches data(steps * accumulate, n * per_rank);
  const auto reference = reference_run(data, accumulate);
  std::vector<std::vector<torch::Tensor>> result(n);
  std::vector<std::int64_t> reduces(n), synced(n);
  std::vector<torch::nn::Sequential> models{make_mlp(0), make_mlp(0)};
  const auto errors = run_ranks(n, [&](std::shared_ptr<dist::ProcessGroup> group, int rank) {
    auto& model = models[rank];
    dist::DistributedDataParallel ddp(*model, group);  // 25 MiB: one bucket
    torch::optim::SGD sgd(model->parameters(), 0.1);
    for (int s = 0; s < steps * accumulate; s += accumulate) {
      sgd.zero_grad();
      for (int k = 0; k < accumulate; ++k) {
        const auto& x = data.x[s + k].narrow(0, rank * per_rank, per_rank);
        const auto& y = data.y[s + k].narrow(0, rank * per_rank, per_rank);
        if (k + 1 < accumulate) {
          auto no_sync = ddp.no_sync();
          (torch::mse_loss(model->forward(x), y) / accumulate).backward();
          ddp.wait();  // nothing to wait for inside no_sync
        } else {
          (torch::mse_loss(model->forward(x), y) / accumulate).backward();
        }
      }
      ddp.wait();
      sgd.step();
    }
    result[rank] = snapshot(*model);
    reduces[rank] = ddp.all_reduces();
    synced[rank] = ddp.synced_steps();
  });
  for (int r = 0; r < n; ++r) {
    REQUIRE(errors[r] == "");
    CHECK(reduces[r] == steps);
    CHECK(synced[r] == steps);
    CHECK(max_difference(result[r], reference) < 1e-6);
  }
}

TEST_CASE("parameters without a gradient: found with find_unused_parameters, else an error naming them, never a hang") {
  struct TwoHeads : torch::nn::Module {  // made in the ranks' threads: construction broadcasts rank 0's weights
    torch::nn::Linear a{nullptr}, b{nullptr};
    TwoHeads() {
      a = register_module("a", torch::nn::Linear(3, 1));
      b = register_module("b", torch::nn::Linear(3, 1));
    }
  };
  auto step = [](TwoHeads& m, int rank) {  // rank 1 never uses head b
    const torch::Tensor x = torch::full({2, 3}, 1.0 + rank);
    torch::Tensor loss = m.a(x).sum();
    if (rank == 0) loss = loss + m.b(x).sum();
    loss.backward();
  };
  std::vector<torch::Tensor> b_grad(2), a_weight(2);
  auto errors = run_ranks(2, [&](std::shared_ptr<dist::ProcessGroup> group, int rank) {
    TwoHeads m;
    dist::DistributedDataParallel ddp(m, group, dist::DDPOptions().find_unused_parameters(true));
    step(m, rank);
    ddp.wait();
    b_grad[rank] = m.b->weight.grad().clone();
    a_weight[rank] = m.a->weight.grad().clone();
  });
  REQUIRE(errors[0] == "");
  REQUIRE(errors[1] == "");
  CHECK(b_grad[0].equal(b_grad[1]));             // rank 0's gradient averaged with rank 1's zero
  CHECK(b_grad[0].equal(torch::full({1, 3}, 1.0)));  // (2 rows of 1.0 + nothing) / 2 ranks
  CHECK(a_weight[0].equal(a_weight[1]));

  const auto start = std::chrono::steady_clock::now();
  errors = run_ranks(2, [&](std::shared_ptr<dist::ProcessGroup> group, int rank) {
    TwoHeads m;
    dist::DistributedDataParallel ddp(m, group);
    step(m, rank);
    ddp.wait();
    group->barrier();
  });
  CHECK(std::chrono::steady_clock::now() - start < 20s);
  CHECK(errors[1].find("'b.weight', 'b.bias'") != std::string::npos);
  CHECK(errors[1].find("find_unused_parameters(true)") != std::string::npos);
  CHECK(errors[0].find("trainloop: distributed: rank 0 of 2") != std::string::npos);
}

TEST_CASE("construction broadcasts rank 0's parameters and buffers; sync_buffers keeps the buffers equal") {
  std::vector<torch::Tensor> weights(2), means(2);
  const auto errors = run_ranks(2, [&](std::shared_ptr<dist::ProcessGroup> group, int rank) {
    torch::nn::Sequential model(torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4));  // each rank draws its own
    dist::DistributedDataParallel ddp(*model, group);
    model->forward(torch::randn({8, 3}) * (rank + 1));  // each rank's running statistics move differently
    ddp.sync_buffers();
    weights[rank] = model->parameters()[0].detach().clone();
    means[rank] = model->buffers()[0].clone();
  });
  REQUIRE(errors[0] == "");
  REQUIRE(errors[1] == "");
  CHECK(weights[0].equal(weights[1]));
  CHECK(means[0].equal(means[1]));
}

#if TRAINLOOP_WITH_AMP
TEST_CASE("the loss scaler's found-inf flag is agreed across ranks: every rank skips the same step, keeps the same scale") {
  std::vector<bool> stepped(2);
  std::vector<double> scales(2);
  const auto errors = run_ranks(2, [&](std::shared_ptr<dist::ProcessGroup> group, int rank) {
    torch::Tensor w = torch::ones({3}, torch::requires_grad());
    torch::optim::SGD sgd({w}, 0.1);
    trainloop::amp::GradScaler scaler(trainloop::amp::GradScalerOptions().init_scale(1024));
    scaler.set_found_inf_reducer([&](torch::Tensor& found) { group->all_reduce(found, dist::ReduceOp::max); });
    // Only rank 1's gradient overflows (no gradient averaging here: the flag alone must agree).
    const double factor = rank == 1 ? std::numeric_limits<double>::infinity() : 1.0;
    scaler.scale((w * factor).sum()).backward();
    stepped[rank] = scaler.step(sgd);
    scaler.update();
    scales[rank] = scaler.get_scale();
  });
  REQUIRE(errors[0] == "");
  REQUIRE(errors[1] == "");
  CHECK_FALSE(stepped[0]);
  CHECK_FALSE(stepped[1]);
  CHECK(scales[0] == 512);
  CHECK(scales[1] == 512);
}
#endif

// --- the Trainer across processes --------------------------------------------------------------------------------

namespace {
std::string child_program() { return child_process::program_from("TRAINLOOP_DDP_CHILD"); }
struct Finished {
  int status = 0;
  std::string stderr_text;
  std::chrono::duration<double> took{};
  bool ok() const { return child_process::exited_ok(status); }
};
// Runs `args` (argv[0] first) with `env` added, its output to `log`; kills it past the deadline (the test then fails).
Finished run_process(std::vector<std::string> args, const std::map<std::string, std::string>& env, const std::string& log,
                     std::chrono::seconds deadline = 120s) {
  const auto start = std::chrono::steady_clock::now();
  Finished f;
  f.status = child_process::wait(child_process::start(std::move(args), env, log), deadline, log);
  f.took = std::chrono::steady_clock::now() - start;
  f.stderr_text = read_file(log);
  return f;
}
std::map<std::string, double> read_values(const std::string& path) {
  std::map<std::string, double> values;
  std::ifstream in(path);
  std::string name;
  double v = 0;
  while (in >> name >> v) values[name] = v;
  return values;
}
void check_close(const std::map<std::string, double>& a, const std::map<std::string, double>& b, double tolerance) {
  REQUIRE(a.size() == b.size());
  for (const auto& [name, value] : a) {
    if (name == "world_size") continue;
    CAPTURE(name);
    REQUIRE(b.count(name));
    CHECK(std::abs(value - b.at(name)) <= tolerance);
  }
}
// Processes whose command line mentions `marker` (a test's own temporary path): none may outlive a test.
int processes_mentioning(const std::string& marker) {
  int found = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string cmdline = read_file(entry.path().string() + "/cmdline");
    if (cmdline.find(marker) != std::string::npos) ++found;
  }
  return found;
}
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}
bool have_torchrun() { return std::system("command -v torchrun > /dev/null 2>&1") == 0; }
}  // namespace

TEST_CASE("Trainer devices(2) and devices(3) from a plain binary equal one process on the union of the batches") {
  TempDir dir;
  const std::string child = child_program();
  // One process, batches of 16 (= 2 ranks x 8) and 24 (= 3 x 8): the same examples per optimizer step.
  REQUIRE(run_process({child, dir.file("one2.txt"), "--strategy", "single", "--batch", "16"}, {}, dir.file("l0")).ok());
  REQUIRE(run_process({child, dir.file("one3.txt"), "--strategy", "single", "--batch", "24", "--accumulate", "2"}, {},
                      dir.file("l1")).ok());
  const Finished two = run_process({child, dir.file("two.txt"), "--devices", "2", "--batch", "8"}, {}, dir.file("l2"));
  REQUIRE_MESSAGE(two.ok(), two.stderr_text);
  const Finished three = run_process({child, dir.file("three.txt"), "--devices", "3", "--batch", "8", "--accumulate", "2"},
                                     {}, dir.file("l3"));
  REQUIRE_MESSAGE(three.ok(), three.stderr_text);
  const auto one2 = read_values(dir.file("one2.txt")), one3 = read_values(dir.file("one3.txt"));
  const auto d2 = read_values(dir.file("two.txt")), d3 = read_values(dir.file("three.txt"));
  CHECK(d2.at("world_size") == 2);
  CHECK(d3.at("world_size") == 3);
  // Parameters within 1e-6; the metrics (an Accuracy object, a mean and a sum logged with sync_dist) over all of the
  // validation data, as one process computes them.
  check_close(one2, d2, 1e-6);
  check_close(one3, d3, 1e-6);
  CHECK(d2.at("val_correct") == one2.at("val_correct"));
  CHECK(d2.at("val_acc") == one2.at("val_acc"));
  CHECK(processes_mentioning(dir.path.string()) == 0);
  // What Lightning prints as the group comes up: every rank's line, rank 0's banner.
  for (const char* line : {"Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2",
                           "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2", "distributed_backend=gloo",
                           "All distributed processes registered. Starting with 2 processes"})
    CHECK_MESSAGE(two.stderr_text.find(line) != std::string::npos, line);
  CHECK(three.stderr_text.find("Initializing distributed: GLOBAL_RANK: 2, MEMBER: 3/3") != std::string::npos);
}

TEST_CASE("devices(n): a rank that exits before joining is named within seconds, without the collective timeout") {
  TempDir dir;
  const Finished f = run_process({child_program(), dir.file("out.txt"), "--devices", "3", "--exit-early-rank", "2",
                                  "--timeout", "60"},
                                 {}, dir.file("log"));
  CHECK_FALSE(f.ok());
  CHECK(f.took < 20s);  // not the 60 s collective timeout
  CHECK_MESSAGE(f.stderr_text.find("rank 0 of 3: rank 2 (pid ") != std::string::npos, f.stderr_text);
  CHECK(f.stderr_text.find("exited with status 3 before every rank joined the rendezvous") != std::string::npos);
  CHECK(f.stderr_text.find("frame #") == std::string::npos);  // no c10 backtrace in trainloop's errors
  std::this_thread::sleep_for(300ms);
  CHECK(processes_mentioning(dir.path.string()) == 0);
}

TEST_CASE("devices(n): setup before fit longer than the collective timeout is waited for, up to rendezvous_timeout") {
  TempDir dir;
  // Every rank sleeps 5 s before fit (loading data), and the ranks rank 0 starts at fit repeat it: they join about
  // 5 s after rank 0, beyond the 3 s collective timeout, within the 60 s rendezvous timeout.
  const Finished f = run_process({child_program(), dir.file("out.txt"), "--devices", "2", "--setup-delay", "5",
                                  "--timeout", "3", "--rendezvous-timeout", "60", "--epochs", "1"},
                                 {}, dir.file("log"));
  REQUIRE_MESSAGE(f.ok(), f.stderr_text);
  CHECK(read_values(dir.file("out.txt")).at("world_size") == 2);
}

TEST_CASE("devices(n): a program that catches fit's error ends as it chooses; nothing exits the process for it") {
  TempDir dir;
  const Finished f = run_process({child_program(), dir.file("out.txt"), "--devices", "2", "--kill-rank", "1",
                                  "--kill-step", "3", "--catch"},
                                 {}, dir.file("log"));
  CHECK_MESSAGE(f.ok(), f.stderr_text);  // its own status: 0
  CHECK(f.stderr_text.find("caught: trainloop: distributed: rank 0 of 2") != std::string::npos);
  CHECK(f.stderr_text.find("rank 1 (pid ") != std::string::npos);
  CHECK(f.stderr_text.find("destroy() returned") != std::string::npos);
  CHECK(std::filesystem::exists(dir.file("out.txt.atexit")));  // atexit handlers ran: a normal exit
  std::this_thread::sleep_for(300ms);
  CHECK(processes_mentioning(dir.path.string()) == 0);
}

TEST_CASE("a rank killed mid-epoch: the others fail naming it, within the timeout; the launching parent exits non-zero") {
  TempDir dir;
  const std::string child = child_program();
  const Finished one = run_process({child, dir.file("out.txt"), "--devices", "2", "--kill-rank", "1", "--kill-step", "3"},
                                   {}, dir.file("log"));
  CHECK_FALSE(one.ok());
  CHECK(one.took < 25s);  // the collective timeout is 20 s; Gloo sees the closed connection at once
  CHECK(one.stderr_text.find("rank 0 of 2") != std::string::npos);
  CHECK(one.stderr_text.find("rank 1 (pid ") != std::string::npos);
  CHECK(one.stderr_text.find("was killed by signal 9") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir.file("out.txt")));
  // Rank 0 killed: the ranks it started die with it (nothing is left running).
  const Finished zero = run_process({child, dir.file("out.txt"), "--devices", "3", "--kill-rank", "0", "--kill-step", "2"},
                                    {}, dir.file("log0"));
  CHECK((WIFSIGNALED(zero.status) && WTERMSIG(zero.status) == SIGKILL));
  std::this_thread::sleep_for(300ms);
  CHECK(processes_mentioning(dir.path.string()) == 0);
}

TEST_CASE("a rank that never joins is a rendezvous error, not a hang") {
  TempDir dir;
  const Finished f = run_process({child_program(), dir.file("out.txt"), "--rendezvous-timeout", "2"},
                                 {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"},
                                  {"MASTER_PORT", std::to_string(free_port())}},
                                 dir.file("log"), 60s);
  CHECK_FALSE(f.ok());
  CHECK(f.took < 30s);
  CHECK(f.stderr_text.find("rendezvous") != std::string::npos);
  CHECK(f.stderr_text.find("rank 0 of 2") != std::string::npos);
}

TEST_CASE("a data-parallel run killed and relaunched from \"last\" ends bitwise identical to the uninterrupted run") {
  TempDir dir;
  const std::string child = child_program();
  REQUIRE(run_process({child, dir.file("full.txt"), "--devices", "2", "--ckpt", dir.file("full")}, {}, dir.file("l0")).ok());
  CHECK_FALSE(run_process({child, dir.file("x.txt"), "--devices", "2", "--ckpt", dir.file("run"), "--kill-rank", "1",
                           "--kill-step", "5"},
                          {}, dir.file("l1"))
                  .ok());
  REQUIRE(std::filesystem::exists(dir.file("run/last.ckpt")));
  const Finished resumed =
      run_process({child, dir.file("resumed.txt"), "--devices", "2", "--ckpt", dir.file("run"), "--resume"}, {}, dir.file("l2"));
  REQUIRE_MESSAGE(resumed.ok(), resumed.stderr_text);
  CHECK(read_file(dir.file("resumed.txt")) == read_file(dir.file("full.txt")));
}

TEST_CASE("torchrun --no_python: --standalone, the agent's store, and --max_restarts after a killed worker") {
  if (!have_torchrun()) {
    MESSAGE("torchrun is not installed (Debian: python3-torch); skipped");
    return;
  }
  TempDir dir;
  const std::string child = child_program();
  const std::vector<std::string> quiet = {"--no_python", "--redirects", "2", "--tee", "2"};  // Python 3.11 needs both
  REQUIRE(run_process({child, dir.file("plain.txt"), "--devices", "2"}, {}, dir.file("l0")).ok());
  std::vector<std::string> standalone = {"torchrun", "--standalone", "--nproc_per_node", "2"};
  standalone.insert(standalone.end(), quiet.begin(), quiet.end());
  for (const auto& a : {child, dir.file("standalone.txt")}) standalone.push_back(a);
  const Finished s = run_process(standalone, {}, dir.file("l1"));
  REQUIRE_MESSAGE(s.ok(), s.stderr_text);
  CHECK(read_file(dir.file("standalone.txt")) == read_file(dir.file("plain.txt")));

  // A static rendezvous: torchrun's agent hosts the store (TORCHELASTIC_USE_AGENT_STORE=True).
  auto agent = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> args = {"torchrun", "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                                     "--master_port", std::to_string(free_port())};
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), quiet.begin(), quiet.end());
    args.push_back(child);
    args.push_back(out);
    return args;
  };
  const Finished a = run_process(agent(dir.file("agent.txt"), {}), {}, dir.file("l2"));
  REQUIRE_MESSAGE(a.ok(), a.stderr_text);
  CHECK(read_file(dir.file("agent.txt")) == read_file(dir.file("plain.txt")));

  // Fault tolerance: worker 1 killed once; torchrun restarts both, which resume from the last checkpoint and finish
  // with the parameters of an uninterrupted run.
  REQUIRE(run_process({child, dir.file("full.txt"), "--devices", "2", "--ckpt", dir.file("full")}, {}, dir.file("l3")).ok());
  auto restart_args = agent(dir.file("restarted.txt"), {"--max_restarts", "1"});
  for (const auto& a : {std::string("--ckpt"), dir.file("run"), std::string("--resume"), std::string("--kill-rank"),
                        std::string("1"), std::string("--kill-step"), std::string("5")})
    restart_args.push_back(a);
  const Finished r = run_process(restart_args, {}, dir.file("l4"), 180s);
  REQUIRE_MESSAGE(r.ok(), r.stderr_text);
  CHECK(read_file(dir.file("restarted.txt")) == read_file(dir.file("full.txt")));
}

TEST_CASE("init(): processes(n) must match what the launcher started; unknown or missing backends are errors") {
  const dist::Environment launched = dist::detect_environment(environment(
      {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "1"}}));
  CHECK_THROWS_WITH(dist::init(dist::InitOptions().processes(4), launched), contains("4 processes were asked for, but the launcher (env) started 2"));
  CHECK_THROWS_WITH(dist::init(dist::InitOptions().backend("mpi"), launched), contains("backend 'mpi' is not one of"));
  if (!TRAINLOOP_DETAIL_HAS_NCCL)
    CHECK_THROWS_WITH(dist::init(dist::InitOptions().backend("nccl"), launched),
                      contains("backend 'nccl' is not in this LibTorch build"));
}

}  // TEST_SUITE
