// NCCL smoke on one GPU (tools/gpu_check.sh): a one-rank group from RANK/WORLD_SIZE/MASTER_* set here, the "auto"
// backend choosing NCCL for CUDA, an all-reduce and a barrier, DistributedDataParallel on cuda:0 training exactly as
// the same model without it (one rank: the average is the gradient), and the Trainer with strategy("ddp").
#include <trainloop.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

using namespace trainloop;
using Batch = std::pair<torch::Tensor, torch::Tensor>;

namespace {
int failures = 0;
void check(bool ok, const std::string& what) {
  std::printf("ddp_nccl: %s: %s\n", ok ? "ok" : "FAILED", what.c_str());
  if (!ok) ++failures;
}
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}
struct Net : LightningModule<Net> {
  torch::nn::Linear fc{nullptr};
  Net() { fc = register_module("fc", torch::nn::Linear(8, 2)); }
  torch::Tensor training_step(Batch& b, std::int64_t) { return torch::mse_loss(fc(b.first), b.second); }
  std::shared_ptr<torch::optim::SGD> configure_optimizers() {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
  }
};
}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // every line out before a crash
  if (!torch::cuda::is_available()) {
    std::puts("ddp_nccl: no CUDA device; skipped");
    return 0;
  }
  setenv("RANK", "0", 1);
  setenv("WORLD_SIZE", "1", 1);
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  setenv("MASTER_PORT", std::to_string(free_port()).c_str(), 1);
  const torch::Device cuda(torch::kCUDA, 0);
  auto group = distributed::init(distributed::InitOptions().device(cuda).timeout(std::chrono::seconds(30)));
  check(group->backend_name() == "nccl", "the auto backend for CUDA is " + group->backend_name());
  torch::Tensor t = torch::full({4}, 3.0, torch::TensorOptions().device(cuda));
  group->all_reduce(t);
  group->barrier();
  check(t.cpu().equal(torch::full({4}, 3.0)), "all_reduce over one rank keeps the value");

  torch::manual_seed(0);
  torch::nn::Linear plain(8, 2), wrapped(8, 2);
  plain->to(cuda);
  wrapped->to(cuda);
  {
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < plain->parameters().size(); ++i) wrapped->parameters()[i].copy_(plain->parameters()[i]);
  }
  distributed::DistributedDataParallel ddp(*wrapped, group);
  torch::optim::SGD a(plain->parameters(), 0.1), b(wrapped->parameters(), 0.1);
  for (int step = 0; step < 5; ++step) {
    const torch::Tensor x = torch::randn({16, 8}, cuda), y = torch::randn({16, 2}, cuda);
    a.zero_grad();
    torch::mse_loss(plain(x), y).backward();
    a.step();
    b.zero_grad();
    torch::mse_loss(wrapped(x), y).backward();
    ddp.wait();
    b.step();
  }
  double worst = 0;
  for (std::size_t i = 0; i < plain->parameters().size(); ++i)
    worst = std::max(worst, (plain->parameters()[i] - wrapped->parameters()[i]).abs().max().item<double>());
  check(worst < 1e-6, "DistributedDataParallel on cuda:0 trains as the plain model (max difference " +
                          std::to_string(worst) + ")");

  Net net;
  std::vector<Batch> data;
  for (int i = 0; i < 8; ++i) data.emplace_back(torch::randn({16, 8}), torch::randn({16, 2}));
  Trainer trainer(TrainerOptions().max_epochs(2).accelerator("cuda").strategy("ddp").barebones(true));
  trainer.fit(net, data);
  check(trainer.global_step() == 16 && trainer.world_size() == 1 && trainer.strategy().process_group()->backend_name() == "nccl",
        "the Trainer with strategy(\"ddp\") on NCCL: " + std::to_string(trainer.global_step()) + " steps");
  return failures == 0 ? 0 : 1;
}
