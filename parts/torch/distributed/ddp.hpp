// trainloop: DistributedDataParallel: gradients averaged over ranks by bucketed all-reduces launched from each
// parameter's gradient-accumulator hook while backward still runs (our own reducer: Debian's 1.13 headers cannot
// compile c10d's reducer.hpp), no_sync() for accumulation micro-steps, find_unused_parameters, broadcast buffers.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "parts/torch/distributed/process_group.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace distributed {

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
