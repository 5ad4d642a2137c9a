// trainloop: TensorDataset and DataLoader. An in-memory dataset of tensors sharing dim 0, and a loader that gathers
// each batch with one index_select per tensor (not per-example stacking), shuffles with its own seeded generator
// (independent of the global RNG), shards for distributed ranks, prefetches in the background, and saves its
// position so a run resumes mid-epoch exactly.
#pragma once
#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

TRAINLOOP_DETAIL_BEGIN

namespace detail {
template <std::size_t N, class = std::make_index_sequence<N>>
struct tensor_tuple;
template <std::size_t>
using tensor_for_index = torch::Tensor;
template <std::size_t N, std::size_t... I>
struct tensor_tuple<N, std::index_sequence<I...>> {
  using type = std::tuple<tensor_for_index<I>...>;
};
// One tensor: the tensor; two: a pair (batch.first, batch.second); more: a tuple. All work with structured bindings.
template <std::size_t N>
struct tensor_batch {
  using type = typename tensor_tuple<N>::type;
};
template <>
struct tensor_batch<1> {
  using type = torch::Tensor;
};
template <>
struct tensor_batch<2> {
  using type = std::pair<torch::Tensor, torch::Tensor>;
};
}  // namespace detail

/// The batch type of a TensorDataset<N>: a Tensor, a std::pair, or a std::tuple of N tensors.
template <std::size_t N>
using TensorBatch = typename detail::tensor_batch<N>::type;

/// N tensors sharing their first dimension: example i is (t[i] for each tensor t).
template <std::size_t N>
class TensorDataset {
  static_assert(N >= 1, "trainloop: a TensorDataset holds at least one tensor");

 public:
  template <class... T, class = std::enable_if_t<sizeof...(T) == N>>
  explicit TensorDataset(T... tensors) : tensors_{std::move(tensors)...} {
    for (std::size_t i = 0; i < N; ++i) {
      if (!tensors_[i].defined()) throw std::invalid_argument("trainloop: TensorDataset: tensor " + std::to_string(i) + " is undefined");
      if (tensors_[i].dim() == 0)
        throw std::invalid_argument("trainloop: TensorDataset: tensor " + std::to_string(i) +
                                    " is a scalar; every tensor needs a first dimension indexing the examples");
      if (tensors_[i].size(0) != tensors_[0].size(0))
        throw std::invalid_argument("trainloop: TensorDataset: tensor " + std::to_string(i) + " has shape " +
                                    c10::str(tensors_[i].sizes()) + " but tensor 0 has shape " +
                                    c10::str(tensors_[0].sizes()) + "; they must share dim 0");
    }
  }
  std::int64_t size() const { return tensors_[0].size(0); }
  const std::array<torch::Tensor, N>& tensors() const { return tensors_; }

  /// The examples at `index` (an int64 tensor) as one batch: one index_select per tensor.
  TensorBatch<N> gather(const torch::Tensor& index) const {
    return gather_impl(index, std::make_index_sequence<N>{});
  }

 private:
  template <std::size_t... I>
  TensorBatch<N> gather_impl(const torch::Tensor& index, std::index_sequence<I...>) const {
    if constexpr (N == 1) return tensors_[0].index_select(0, index);
    else return TensorBatch<N>(tensors_[I].index_select(0, index)...);
  }
  std::array<torch::Tensor, N> tensors_;
};
template <class... T>
TensorDataset(T...) -> TensorDataset<sizeof...(T)>;

/// The DataLoader's options, as chainable setters.
class DataLoaderOptions {
 public:
  DataLoaderOptions& batch_size(std::int64_t v) { return batch_size_ = v, *this; }
  DataLoaderOptions& shuffle(bool v) { return shuffle_ = v, *this; }
  /// Drop the last, incomplete batch of each epoch.
  DataLoaderOptions& drop_last(bool v) { return drop_last_ = v, *this; }
  /// The shuffle's seed: epoch e's order depends only on (seed, e), not on the global RNG.
  DataLoaderOptions& seed(std::uint64_t v) { return seed_ = v, *this; }
  /// Copy batches into pinned (page-locked) memory, for fast asynchronous copies to CUDA.
  DataLoaderOptions& pin_memory(bool v) { return pin_memory_ = v, *this; }
  /// Gather up to n batches ahead in a background thread; 0: gather in the caller's thread.
  DataLoaderOptions& prefetch(std::int64_t n) { return prefetch_ = n, *this; }
  /// Distributed sampling: this rank's shard of `world_size` disjoint, equal shards (padded by repeating the
  /// epoch's first examples when the dataset does not divide, as PyTorch's DistributedSampler does).
  DataLoaderOptions& shard(std::int64_t rank, std::int64_t world_size) { return rank_ = rank, world_size_ = world_size, *this; }

  std::int64_t batch_size() const { return batch_size_; }
  bool shuffle() const { return shuffle_; }
  bool drop_last() const { return drop_last_; }
  std::uint64_t seed() const { return seed_; }
  bool pin_memory() const { return pin_memory_; }
  std::int64_t prefetch() const { return prefetch_; }
  std::int64_t rank() const { return rank_; }
  std::int64_t world_size() const { return world_size_; }

 private:
  std::int64_t batch_size_ = 1;
  bool shuffle_ = false, drop_last_ = false, pin_memory_ = false;
  std::uint64_t seed_ = 0;
  std::int64_t prefetch_ = 0, rank_ = 0, world_size_ = 1;
};

/// Batches of a TensorDataset, epoch after epoch. A range with a size: `for (auto& [x, y] : loader)`, or hand it to
/// an Engine or the Trainer. Each `begin()` starts the next epoch (a new order when shuffling), unless a position was
/// just restored with load_state_dict, in which case it continues that epoch where it stopped.
template <std::size_t N>
class DataLoader {
 public:
  using Batch = TensorBatch<N>;

  DataLoader(TensorDataset<N> dataset, DataLoaderOptions options) : dataset_(std::move(dataset)), options_(options) {
    auto fail = [](const std::string& what) { return std::invalid_argument("trainloop: DataLoader: " + what); };
    if (options_.batch_size() < 1) throw fail("batch_size must be at least 1, got " + std::to_string(options_.batch_size()));
    if (options_.world_size() < 1) throw fail("world_size must be at least 1");
    if (options_.rank() < 0 || options_.rank() >= options_.world_size())
      throw fail("rank " + std::to_string(options_.rank()) + " is not in [0, world_size " +
                 std::to_string(options_.world_size()) + ")");
    if (options_.prefetch() < 0) throw fail("prefetch must not be negative");
    if (dataset_.size() == 0) throw fail("the dataset is empty");
    if (options_.pin_memory() && !torch::cuda::is_available()) throw fail("pin_memory needs CUDA, which is not available");
  }
  DataLoader(const DataLoader&) = delete;  // one position per loader; copy the dataset and options instead
  DataLoader& operator=(const DataLoader&) = delete;
  /// Movable (`trainer.test(model, DataLoader<2>(...))` hands it over), the position included. The prefetch thread
  /// points at the loader it serves, so it stops here and restarts in the new loader at the next batch to hand
  /// out; iterators of the old loader are invalidated.
  DataLoader(DataLoader&& other) : dataset_(other.dataset_), options_(other.options_) { take_over(other); }
  DataLoader& operator=(DataLoader&& other) {
    if (this != &other) {
      stop_prefetch();
      dataset_ = other.dataset_;
      options_ = other.options_;
      take_over(other);
    }
    return *this;
  }
  ~DataLoader() { stop_prefetch(); }

  /// Examples this rank sees per epoch (padded to an equal share).
  std::int64_t examples_per_epoch() const {
    const std::int64_t world = options_.world_size();
    return (dataset_.size() + world - 1) / world;
  }
  /// Batches per epoch for this rank.
  std::size_t size() const {
    const std::int64_t n = examples_per_epoch(), b = options_.batch_size();
    return static_cast<std::size_t>(options_.drop_last() ? n / b : (n + b - 1) / b);
  }
  /// The epoch the next begin() starts (or the one in progress). Like DistributedSampler.set_epoch: all ranks set
  /// the same epoch to agree on the order.
  void set_epoch(std::int64_t epoch) {
    stop_prefetch();
    epoch_ = epoch;
    next_batch_ = 0;
    resume_ = true;  // begin() starts exactly this epoch
  }
  std::int64_t epoch() const { return epoch_; }

  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = Batch;
    Iterator(DataLoader* loader, std::int64_t batch) : loader_(loader), batch_(batch) {}
    Batch operator*() const { return loader_->take(batch_); }
    Iterator& operator++() {
      ++batch_;
      return *this;
    }
    bool operator==(const Iterator& o) const { return batch_ == o.batch_; }
    bool operator!=(const Iterator& o) const { return batch_ != o.batch_; }

   private:
    DataLoader* loader_;
    std::int64_t batch_;
  };

  Iterator begin() {
    stop_prefetch();
    if (!resume_) {
      if (started_) ++epoch_;
      next_batch_ = 0;
    }
    resume_ = false;
    started_ = true;
    order_ = epoch_order(epoch_);
    if (options_.prefetch() > 0) start_prefetch(next_batch_);
    return {this, next_batch_};
  }
  Iterator end() { return {this, static_cast<std::int64_t>(size())}; }

  /// The examples (dataset indices) of this rank in `epoch`, in order: the seeded permutation, padded, sharded.
  torch::Tensor epoch_order(std::int64_t epoch) const {
    const std::int64_t n = dataset_.size(), world = options_.world_size();
    torch::Tensor order;
    if (options_.shuffle()) {
      auto generator = torch::make_generator<torch::CPUGeneratorImpl>(mix(options_.seed(), static_cast<std::uint64_t>(epoch)));
      order = torch::randperm(n, generator, torch::kLong);
    } else {
      order = torch::arange(n, torch::kLong);
    }
    if (world == 1) return order;
    const std::int64_t total = examples_per_epoch() * world;
    if (total > n) {  // pad by repeating from the start (as often as needed for tiny datasets)
      const std::int64_t repeats = (total - n + n - 1) / n;
      order = torch::cat({order, order.repeat({repeats}).slice(0, 0, total - n)});
    }
    return order.slice(0, options_.rank(), total, world);
  }

  /// The position: epoch, batches handed out in it, and what must match to restore it.
  StateDict state_dict() const {
    // A finished epoch is saved as the start of the next, so a resumed run begins it without an empty pass.
    const bool finished = next_batch_ >= static_cast<std::int64_t>(size());
    return {{"epoch", std::int64_t{finished ? epoch_ + 1 : epoch_}},
            {"next_batch", std::int64_t{finished ? 0 : next_batch_}},
            {"seed", static_cast<std::int64_t>(options_.seed())},
            {"dataset_size", dataset_.size()},
            {"batch_size", options_.batch_size()},
            {"shuffle", std::int64_t{options_.shuffle() ? 1 : 0}},
            {"rank", options_.rank()},
            {"world_size", options_.world_size()}};
  }
  /// Restores a position; the next begin() continues that epoch at that batch. Every key must match this loader's
  /// configuration (errors name the key), so a checkpoint cannot silently resume a different data order.
  void load_state_dict(const StateDict& state) {
    auto read = [&](const std::string& key) {
      auto it = state.find(key);
      if (it == state.end()) throw std::invalid_argument("trainloop: DataLoader state: key '" + key + "' is missing");
      const std::int64_t* v = std::get_if<std::int64_t>(&it->second);
      if (!v) throw std::invalid_argument("trainloop: DataLoader state: key '" + key + "' must be an integer");
      return *v;
    };
    auto expect = [&](const std::string& key, std::int64_t mine) {
      const std::int64_t saved = read(key);
      if (saved != mine)
        throw std::invalid_argument("trainloop: DataLoader state: '" + key + "' was " + std::to_string(saved) +
                                    " when saved, this loader has " + std::to_string(mine));
    };
    expect("seed", static_cast<std::int64_t>(options_.seed()));
    expect("dataset_size", dataset_.size());
    expect("batch_size", options_.batch_size());
    expect("shuffle", options_.shuffle() ? 1 : 0);
    expect("rank", options_.rank());
    expect("world_size", options_.world_size());
    const std::int64_t epoch = read("epoch"), next = read("next_batch");
    if (next < 0 || next > static_cast<std::int64_t>(size()))
      throw std::invalid_argument("trainloop: DataLoader state: 'next_batch' " + std::to_string(next) +
                                  " is outside the epoch's " + std::to_string(size()) + " batches");
    stop_prefetch();
    epoch_ = epoch;
    next_batch_ = next;
    resume_ = true;
    started_ = true;
  }

  const TensorDataset<N>& dataset() const { return dataset_; }
  const DataLoaderOptions& options() const { return options_; }
  /// Makes this loader serve `rank`'s shard of `world_size` from its next epoch on (the Trainer shards its loaders
  /// this way under data-parallel training, as Lightning swaps in a DistributedSampler).
  void shard(std::int64_t rank, std::int64_t world_size) {
    if (world_size < 1 || rank < 0 || rank >= world_size)
      throw std::invalid_argument("trainloop: DataLoader::shard(" + std::to_string(rank) + ", " +
                                  std::to_string(world_size) + "): rank must be in [0, world_size)");
    stop_prefetch();
    options_.shard(rank, world_size);
  }

 private:
  // splitmix64: independent streams per (seed, epoch).
  static std::uint64_t mix(std::uint64_t seed, std::uint64_t epoch) {
    std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (epoch + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  Batch gather(std::int64_t batch) const {
    const std::int64_t b = options_.batch_size();
    const std::int64_t start = batch * b, stop = std::min(start + b, order_.size(0));
    Batch out = dataset_.gather(order_.slice(0, start, stop));
    if (options_.pin_memory()) out = pinned(std::move(out));
    return out;
  }
  static Batch pinned(Batch batch) {
    if constexpr (N == 1) return batch.pin_memory();
    else if constexpr (N == 2) return {batch.first.pin_memory(), batch.second.pin_memory()};
    else {
      std::apply([](auto&... t) { ((t = t.pin_memory()), ...); }, batch);
      return batch;
    }
  }

  // Hands out batch `batch`: from the prefetch queue when one runs, else gathered now.
  Batch take(std::int64_t batch) {
    next_batch_ = batch + 1;  // the position counts batches handed out, so a checkpoint after this step resumes after it
    if (!worker_.joinable()) return gather(batch);
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [&] { return !queue_.empty() || worker_error_; });
    if (worker_error_) std::rethrow_exception(worker_error_);
    Batch out = std::move(queue_.front().second);
    const std::int64_t got = queue_.front().first;
    queue_.pop_front();
    space_.notify_one();
    if (got != batch) throw std::logic_error("trainloop: DataLoader: batches were requested out of order");
    return out;
  }

  void take_over(DataLoader& other) {
    const bool prefetching = other.worker_.joinable();
    other.stop_prefetch();  // the batches it queued are gathered again by the new thread
    order_ = std::move(other.order_);
    epoch_ = other.epoch_;
    next_batch_ = other.next_batch_;
    started_ = other.started_;
    resume_ = other.resume_;
    if (prefetching && next_batch_ < static_cast<std::int64_t>(size())) start_prefetch(next_batch_);
  }

  void start_prefetch(std::int64_t first) {
    stop_ = false;
    worker_error_ = nullptr;
    worker_ = std::thread([this, first] {
      try {
        torch::NoGradGuard no_grad;
        for (std::int64_t batch = first; batch < static_cast<std::int64_t>(size()); ++batch) {
          Batch out = gather(batch);
          std::unique_lock<std::mutex> lock(mutex_);
          space_.wait(lock, [&] { return stop_ || static_cast<std::int64_t>(queue_.size()) < options_.prefetch(); });
          if (stop_) return;
          queue_.emplace_back(batch, std::move(out));
          ready_.notify_one();
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        worker_error_ = std::current_exception();
        ready_.notify_all();
      }
    });
  }
  void stop_prefetch() {
    if (!worker_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    space_.notify_all();
    worker_.join();
    queue_.clear();
  }

  TensorDataset<N> dataset_;
  DataLoaderOptions options_;
  torch::Tensor order_;
  std::int64_t epoch_ = 0, next_batch_ = 0;
  bool started_ = false, resume_ = false;

  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable ready_, space_;
  std::deque<std::pair<std::int64_t, Batch>> queue_;
  bool stop_ = false;
  std::exception_ptr worker_error_;
};

TRAINLOOP_DETAIL_END
