// trainloop: the DataLoader. Batches any map-style dataset (parts/torch/data/dataset.hpp): a TensorDataset by one
// index_select per tensor, a dataset of the user's type example by example (collated) or by its own get_batch.
// Shuffles with its own seeded generator (never the global RNG); gives each example a generator seeded by (seed,
// epoch, index) alone, so random augmentation does not depend on the number of workers, the rank or a resume; shards
// for distributed ranks; builds batches in worker threads, handed out in order; and saves its position so a run
// resumes mid-epoch exactly, fetching no example twice.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>
#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>  // dlsym: the OpenMP runtime's per-thread setting, in the workers
#endif

#include "parts/core/data_source.hpp"
#include "parts/core/hooks.hpp"
#include "parts/torch/data/dataset.hpp"
#include "parts/torch/data/image_io.hpp"

TRAINLOOP_DETAIL_BEGIN

/// The DataLoader's options, as chainable setters.
class DataLoaderOptions {
 public:
  DataLoaderOptions& batch_size(std::int64_t v) { return batch_size_ = v, *this; }
  DataLoaderOptions& shuffle(bool v) { return shuffle_ = v, *this; }
  /// Drop the last, incomplete batch of each epoch.
  DataLoaderOptions& drop_last(bool v) { return drop_last_ = v, *this; }
  /// The shuffle's seed, and the seed of every example's generator: epoch e's order depends only on (seed, e), and
  /// example i's generator in epoch e only on (seed, e, i); never on the global RNG.
  DataLoaderOptions& seed(std::uint64_t v) { return seed_ = v, *this; }
  /// Copy batches into pinned (page-locked) memory, for fast asynchronous copies to CUDA.
  DataLoaderOptions& pin_memory(bool v) { return pin_memory_ = v, *this; }
  /// Threads that build whole batches (PyTorch's num_workers). 0: each batch is built in the caller's thread when it
  /// is asked for. The threads start with the first epoch and live until the loader is destroyed.
  DataLoaderOptions& workers(std::int64_t n) { return workers_ = n, *this; }
  /// Batches each worker may have ready or in the making ahead of the one the training loop takes (PyTorch's
  /// prefetch_factor, default 2): memory is bounded by workers x prefetch_factor batches.
  DataLoaderOptions& prefetch_factor(std::int64_t n) { return prefetch_factor_ = n, *this; }
  /// LibTorch intra-op (OpenMP) threads in each worker; default 1, as PyTorch's workers (n workers already use n
  /// cores). 0 leaves LibTorch's setting.
  DataLoaderOptions& worker_intra_op_threads(std::int64_t n) { return worker_intra_op_threads_ = n, *this; }
  /// Distributed sampling: this rank's shard of `world_size` disjoint, equal shards (padded by repeating the
  /// epoch's first examples when the dataset does not divide, as PyTorch's DistributedSampler does).
  DataLoaderOptions& shard(std::int64_t rank, std::int64_t world_size) { return rank_ = rank, world_size_ = world_size, *this; }

  std::int64_t batch_size() const { return batch_size_; }
  bool shuffle() const { return shuffle_; }
  bool drop_last() const { return drop_last_; }
  std::uint64_t seed() const { return seed_; }
  bool pin_memory() const { return pin_memory_; }
  std::int64_t workers() const { return workers_; }
  std::int64_t prefetch_factor() const { return prefetch_factor_; }
  std::int64_t worker_intra_op_threads() const { return worker_intra_op_threads_; }
  std::int64_t rank() const { return rank_; }
  std::int64_t world_size() const { return world_size_; }

 private:
  std::int64_t batch_size_ = 1;
  bool shuffle_ = false, drop_last_ = false, pin_memory_ = false;
  std::uint64_t seed_ = 0;
  std::int64_t workers_ = 0, prefetch_factor_ = 2, worker_intra_op_threads_ = 1, rank_ = 0, world_size_ = 1;
};

namespace detail {
// splitmix64's finaliser: independent streams for (seed, epoch) and (seed, epoch, index).
inline std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t value) {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (value + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// The seed of example `index`'s generator in `epoch`: a stream apart from the shuffle's.
inline std::uint64_t example_seed(std::uint64_t seed, std::int64_t epoch, std::int64_t index) {
  return mix_seed(mix_seed(seed ^ 0x5851F42D4C957F2Dull, static_cast<std::uint64_t>(epoch)), static_cast<std::uint64_t>(index));
}
// Sets the calling thread's OpenMP thread count (LibTorch's intra-op parallelism in OpenMP builds), found at run
// time: at::set_num_threads would also change the process-wide pools the training thread uses.
TRAINLOOP_DETAIL_API void set_thread_intra_op_threads(std::int64_t n);
// Rethrows the exception in flight with `context` added to its message, keeping its type: c10::Error (and kinds)
// gains context, the standard exceptions are rethrown as the same type; others go unchanged.
[[noreturn]] TRAINLOOP_DETAIL_API void rethrow_with_context(const std::string& context);

// "examples 4, 17 and 9" (the first few of a batch), for errors.
inline std::string index_list(const std::int64_t* index, std::int64_t n) {
  std::string out = n == 1 ? "example " : "examples ";
  for (std::int64_t i = 0; i < n && i < 8; ++i) out += (i == 0 ? "" : i + 1 == n ? " and " : ", ") + std::to_string(index[i]);
  return n > 8 ? out + ", ... (" + std::to_string(n) + " in all)" : out;
}
template <class T>
struct unwrap_optional {
  using type = T;
};
template <class T>
struct unwrap_optional<std::optional<T>> {
  using type = T;
};
// Builds batches from a dataset: TensorDataset-like gathers by index tensor, else per example (with a generator
// when get takes one) and collated, else the dataset's get_batch.
template <class Dataset, class Collate>
struct BatchMaker {
  static constexpr bool gathers = is_detected_v<dataset_get_batch_tensor_t, Dataset> && !is_detected_v<dataset_get_random_t, Dataset>;
  static constexpr bool random = is_detected_v<dataset_get_random_t, Dataset>;
  static constexpr bool per_example = random || (!gathers && !is_detected_v<dataset_get_batch_t, Dataset> && is_detected_v<dataset_get_t, Dataset>);
  static_assert(gathers || per_example || is_detected_v<dataset_get_batch_t, Dataset>,
                "trainloop: DataLoader: the dataset has no get(std::size_t index), get(std::size_t index, "
                "torch::Generator&) or get_batch(const std::vector<std::size_t>&) to read examples with");
  // get may return std::optional<Example>: std::nullopt skips the example (ImageFolder's skip_bad_files), and the
  // batch is collated from the others.
  using Got = example_of_t<Dataset>;
  static constexpr bool skips = is_optional<Got>::value;
  using Example = typename unwrap_optional<Got>::type;

  static auto make(Dataset& dataset, Collate& collate, const torch::Tensor& indices, std::uint64_t seed,
                   std::int64_t epoch, torch::Generator* generator) {
    if constexpr (gathers) {
      (void)collate, (void)seed, (void)epoch, (void)generator;
      return dataset.get_batch(indices);
    } else {
      const std::int64_t* index = indices.data_ptr<std::int64_t>();
      const std::int64_t n = indices.numel();
      if constexpr (per_example) {
        std::vector<Example> examples;
        examples.reserve(static_cast<std::size_t>(n));
        for (std::int64_t i = 0; i < n; ++i) {
          try {
            auto got = [&] {
              if constexpr (random) {
                generator->set_current_seed(example_seed(seed, epoch, index[i]));
                return dataset.get(static_cast<std::size_t>(index[i]), *generator);
              } else {
                return dataset.get(static_cast<std::size_t>(index[i]));
              }
            }();
            if constexpr (skips) {
              if (got) examples.push_back(std::move(*got));
            } else {
              examples.push_back(std::move(got));
            }
          } catch (...) {
            rethrow_with_context("trainloop: DataLoader: while getting example " + std::to_string(index[i]) + " (epoch " + std::to_string(epoch) + ")");
          }
        }
        if (skips && examples.empty())
          throw std::runtime_error("trainloop: DataLoader: the dataset skipped every example of the batch of " +
                                   index_list(index, n) + " (epoch " + std::to_string(epoch) + "): a batch cannot be empty");
        try {
          return collate(std::move(examples));
        } catch (...) {
          rethrow_with_context("trainloop: DataLoader: while collating " + index_list(index, n) + " (epoch " + std::to_string(epoch) + ")");
        }
      } else {
        try {
          auto got = dataset.get_batch(std::vector<std::size_t>(index, index + n));
          if constexpr (is_std_vector<decltype(got)>::value) return collate(std::move(got));
          else return got;
        } catch (...) {
          rethrow_with_context("trainloop: DataLoader: while getting the batch of " + index_list(index, n) + " (epoch " + std::to_string(epoch) + ")");
        }
      }
    }
  }
};
}  // namespace detail

/// Batches of a dataset, epoch after epoch: a TensorDataset, or any type with size() and get(std::size_t index) (the
/// names torch::data::Dataset uses), get(std::size_t index, torch::Generator& generator) for random augmentation, or
/// get_batch(const std::vector<std::size_t>& indices). Examples are collated by `Collate` (default_collate unless
/// given). A range with a size: `for (auto& [x, y] : loader)`, or hand it to an Engine or the Trainer. Each
/// `begin()` starts the next epoch (a new order when shuffling), unless a position was just restored with
/// load_state_dict, in which case it continues that epoch where it stopped.
///
/// With workers(n), n threads call the dataset at once: its get must be safe to call concurrently (read-only state,
/// or a file handle per call). Batches still arrive in the sampler's order, and an example's randomness comes from
/// its own generator, so the batches are the same for every n.
template <class Dataset, class Collate = DefaultCollate>
class DataLoader {
  using Maker = detail::BatchMaker<Dataset, Collate>;

 public:
  using Batch = std::decay_t<decltype(Maker::make(std::declval<Dataset&>(), std::declval<Collate&>(), std::declval<const torch::Tensor&>(),
                                                  std::uint64_t{}, std::int64_t{}, nullptr))>;

  DataLoader(Dataset dataset, DataLoaderOptions options, Collate collate = {})
      : shared_(std::make_unique<Shared>(std::move(dataset), options, std::move(collate))) {
    auto fail = [](const std::string& what) { return std::invalid_argument("trainloop: DataLoader: " + what); };
    if (options.batch_size() < 1) throw fail("batch_size must be at least 1, got " + std::to_string(options.batch_size()));
    if (options.world_size() < 1) throw fail("world_size must be at least 1");
    if (options.rank() < 0 || options.rank() >= options.world_size())
      throw fail("rank " + std::to_string(options.rank()) + " is not in [0, world_size " + std::to_string(options.world_size()) + ")");
    if (options.workers() < 0) throw fail("workers must not be negative, got " + std::to_string(options.workers()));
    if (options.prefetch_factor() < 1) throw fail("prefetch_factor must be at least 1, got " + std::to_string(options.prefetch_factor()));
    if (options.worker_intra_op_threads() < 0) throw fail("worker_intra_op_threads must not be negative");
    if (shared_->dataset_size == 0) throw fail("the dataset is empty");
    if (options.pin_memory() && !torch::cuda::is_available()) throw fail("pin_memory needs CUDA, which is not available");
  }
  DataLoader(const DataLoader&) = delete;  // one position per loader; copy the dataset and options instead
  DataLoader& operator=(const DataLoader&) = delete;
  /// Movable, the position and the worker threads included (they serve the loader's heap state, which moves by
  /// pointer): `trainer.test(model, DataLoader(...))` hands it over.
  DataLoader(DataLoader&&) = default;
  DataLoader& operator=(DataLoader&&) = default;
  ~DataLoader() = default;

  /// Examples this rank sees per epoch (padded to an equal share).
  std::int64_t examples_per_epoch() const {
    const std::int64_t world = options().world_size();
    return (shared_->dataset_size + world - 1) / world;
  }
  /// Batches per epoch for this rank.
  std::size_t size() const {
    const std::int64_t n = examples_per_epoch(), b = options().batch_size();
    return static_cast<std::size_t>(options().drop_last() ? n / b : (n + b - 1) / b);
  }
  /// The epoch the next begin() starts (or the one in progress). Like DistributedSampler.set_epoch: all ranks set
  /// the same epoch to agree on the order.
  void set_epoch(std::int64_t epoch) {
    release_current();
    shared_->cancel();
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
    using pointer = Batch*;
    using reference = Batch&;
    Iterator(DataLoader* loader, std::int64_t batch) : loader_(loader), batch_(batch) {}
    /// The batch at this position, taken from the loader at the first dereference and held by it until the next
    /// position is dereferenced (or the next epoch begins): `for (auto& [x, y] : loader)` works, and so does a copy.
    Batch& operator*() const { return loader_->batch_at(batch_); }
    Batch* operator->() const { return &loader_->batch_at(batch_); }
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
    release_current();
    if (!resume_) {
      if (started_) ++epoch_;
      next_batch_ = 0;
    }
    resume_ = false;
    started_ = true;
    shared_->start(epoch_order(epoch_), epoch_, next_batch_, static_cast<std::int64_t>(size()));
    return {this, next_batch_};
  }
  Iterator end() { return {this, static_cast<std::int64_t>(size())}; }

  /// The examples (dataset indices) of this rank in `epoch`, in order: the seeded permutation, padded, sharded.
  torch::Tensor epoch_order(std::int64_t epoch) const {
    const std::int64_t n = shared_->dataset_size, world = options().world_size();
    torch::Tensor order;
    if (options().shuffle()) {
      auto generator = torch::make_generator<torch::CPUGeneratorImpl>(detail::mix_seed(options().seed(), static_cast<std::uint64_t>(epoch)));
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
    return order.slice(0, options().rank(), total, world).contiguous();
  }

  /// The position: epoch, batches handed out in it, and what must match to restore it. Never the examples.
  StateDict state_dict() const {
    // A finished epoch is saved as the start of the next, so a resumed run begins it without an empty pass.
    const bool finished = next_batch_ >= static_cast<std::int64_t>(size());
    return {{"epoch", std::int64_t{finished ? epoch_ + 1 : epoch_}},
            {"next_batch", std::int64_t{finished ? 0 : next_batch_}},
            {"seed", static_cast<std::int64_t>(options().seed())},
            {"dataset_size", shared_->dataset_size},
            {"batch_size", options().batch_size()},
            {"shuffle", std::int64_t{options().shuffle() ? 1 : 0}},
            {"rank", options().rank()},
            {"world_size", options().world_size()}};
  }
  /// Restores a position; the next begin() continues that epoch at that batch, in O(1): no earlier example is read.
  /// Every key must match this loader's configuration (errors name the key), so a checkpoint cannot silently resume
  /// a different data order.
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
    expect("seed", static_cast<std::int64_t>(options().seed()));
    expect("dataset_size", shared_->dataset_size);
    expect("batch_size", options().batch_size());
    expect("shuffle", options().shuffle() ? 1 : 0);
    expect("rank", options().rank());
    expect("world_size", options().world_size());
    const std::int64_t epoch = read("epoch"), next = read("next_batch");
    if (next < 0 || next > static_cast<std::int64_t>(size()))
      throw std::invalid_argument("trainloop: DataLoader state: 'next_batch' " + std::to_string(next) +
                                  " is outside the epoch's " + std::to_string(size()) + " batches");
    release_current();
    shared_->cancel();
    epoch_ = epoch;
    next_batch_ = next;
    resume_ = true;
    started_ = true;
  }

  const Dataset& dataset() const { return shared_->dataset; }
  const DataLoaderOptions& options() const { return shared_->options; }
  /// Makes this loader serve `rank`'s shard of `world_size` from its next epoch on (the Trainer shards its loaders
  /// this way under data-parallel training, as Lightning swaps in a DistributedSampler).
  void shard(std::int64_t rank, std::int64_t world_size) {
    if (world_size < 1 || rank < 0 || rank >= world_size)
      throw std::invalid_argument("trainloop: DataLoader::shard(" + std::to_string(rank) + ", " +
                                  std::to_string(world_size) + "): rank must be in [0, world_size)");
    release_current();
    shared_->cancel();
    shared_->options.shard(rank, world_size);
  }
  /// Serves batches of `batch_size` from now on (the batch-size finder sets it, as Lightning re-creates the loader):
  /// the next begin() starts the epoch a state_dict() would resume, from its first batch.
  void set_batch_size(std::int64_t batch_size) {
    if (batch_size < 1)
      throw std::invalid_argument("trainloop: DataLoader::set_batch_size(" + std::to_string(batch_size) + "): must be at least 1");
    const bool finished = next_batch_ >= static_cast<std::int64_t>(size());
    release_current();
    shared_->cancel();
    shared_->options.batch_size(batch_size);
    if (started_ && !resume_ && finished) ++epoch_;
    next_batch_ = 0;
    resume_ = true;
  }

 private:
  // What the worker threads share with the loader, on the heap: moving the loader moves a pointer, the threads go on.
  struct Shared {
    struct Slot {  // the batch with this number modulo capacity: built, or failed
      std::int64_t batch = -1;
      std::optional<Batch> value;
      std::exception_ptr error;
    };

    Dataset dataset;
    DataLoaderOptions options;
    Collate collate;
    std::int64_t dataset_size;
    std::optional<torch::Generator> caller_generator;  // workers(0): the examples' generator, reseeded per example

    // The epoch being served. Workers read `order` outside the lock; it changes only while none is building.
    torch::Tensor order;
    std::int64_t epoch = 0, next_to_build = 0, next_to_take = 0, end = 0;
    bool serving = false, stopping = false;
    std::int64_t building = 0;  // workers inside make(), outside the lock
    std::vector<Slot> slots;
    std::vector<std::thread> threads;
    std::mutex mutex;
    std::condition_variable work, ready, idle;

    Shared(Dataset d, const DataLoaderOptions& o, Collate c)
        : dataset(std::move(d)), options(o), collate(std::move(c)), dataset_size(detail::dataset_size(dataset)) {}
    Shared(const Shared&) = delete;
    Shared& operator=(const Shared&) = delete;
    ~Shared() {
      {
        std::lock_guard<std::mutex> lock(mutex);
        stopping = true;
      }
      work.notify_all();
      for (auto& t : threads) t.join();  // a worker inside get() finishes that batch first
    }

    Batch make(std::int64_t batch, torch::Generator* generator) {
      const std::int64_t b = options.batch_size();
      const std::int64_t start = batch * b, stop = std::min(start + b, order.size(0));
      Batch out = Maker::make(dataset, collate, order.slice(0, start, stop), options.seed(), epoch, generator);
      if (options.pin_memory()) detail::for_each_tensor(out, [](torch::Tensor& t) { t = t.pin_memory(); });
      return out;
    }

    // Stops serving the current epoch: workers finish the batch in hand, nothing more is built.
    void cancel() {
      std::unique_lock<std::mutex> lock(mutex);
      serving = false;
      idle.wait(lock, [&] { return building == 0; });
      for (auto& slot : slots) slot = Slot{};
    }
    void start(torch::Tensor epoch_order, std::int64_t epoch_, std::int64_t first, std::int64_t end_) {
      cancel();
      const std::int64_t workers = options.workers();
      std::lock_guard<std::mutex> lock(mutex);
      order = std::move(epoch_order);
      epoch = epoch_;
      next_to_build = next_to_take = first;
      end = end_;
      if (workers == 0) return;
      slots.resize(static_cast<std::size_t>(workers * options.prefetch_factor()));
      serving = true;
      while (static_cast<std::int64_t>(threads.size()) < workers) threads.emplace_back([this] { work_loop(); });
      work.notify_all();
    }

    void work_loop() {
      if (options.worker_intra_op_threads() > 0) detail::set_thread_intra_op_threads(options.worker_intra_op_threads());
      torch::NoGradGuard no_grad;
      std::optional<torch::Generator> generator;
      if constexpr (Maker::random) generator = torch::make_generator<torch::CPUGeneratorImpl>();
      const auto capacity = static_cast<std::int64_t>(slots.size());
      std::unique_lock<std::mutex> lock(mutex);
      while (true) {
        work.wait(lock, [&] { return stopping || (serving && next_to_build < end && next_to_build < next_to_take + capacity); });
        if (stopping) return;
        const std::int64_t batch = next_to_build++;
        ++building;
        lock.unlock();
        Slot done;
        done.batch = batch;
        try {
          done.value.emplace(make(batch, generator ? &*generator : nullptr));
        } catch (...) {
          done.error = std::current_exception();
        }
        lock.lock();
        slots[static_cast<std::size_t>(batch % capacity)] = std::move(done);
        --building;
        ready.notify_all();
        if (building == 0) idle.notify_all();
      }
    }

    // Hands out batch `batch` (the next one): built now (workers(0)) or waited for.
    Batch take(std::int64_t batch) {
      if (options.workers() == 0) {
        if (!caller_generator && Maker::random) caller_generator = torch::make_generator<torch::CPUGeneratorImpl>();
        return make(batch, caller_generator ? &*caller_generator : nullptr);
      }
      std::unique_lock<std::mutex> lock(mutex);
      if (!serving || batch != next_to_take)
        throw std::logic_error("trainloop: DataLoader: batch " + std::to_string(batch) +
                               " was asked for out of order (each batch is handed out once, in order)");
      Slot& slot = slots[static_cast<std::size_t>(batch % static_cast<std::int64_t>(slots.size()))];
      ready.wait(lock, [&] { return slot.batch == batch; });
      Slot done = std::move(slot);
      slot = Slot{};
      ++next_to_take;
      work.notify_all();
      lock.unlock();
      if (done.error) std::rethrow_exception(done.error);
      return std::move(*done.value);
    }
  };

  Batch& batch_at(std::int64_t batch) {
    if (current_index_ != batch) {
      release_current();  // first: a batch may own large buffers
      next_batch_ = batch + 1;  // the position counts batches handed out, so a checkpoint after this step resumes after it
      current_.emplace(shared_->take(batch));
      current_index_ = batch;
    }
    return *current_;
  }
  void release_current() {
    current_.reset();
    current_index_ = -1;
  }

  std::unique_ptr<Shared> shared_;
  std::optional<Batch> current_;  // the batch the iterators point at
  std::int64_t current_index_ = -1;
  std::int64_t epoch_ = 0, next_batch_ = 0;
  bool started_ = false, resume_ = false;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API void detail::set_thread_intra_op_threads(std::int64_t n) {
  // LibTorch sets a thread's count at its first parallel call (lazily): let that happen first, then override it.
  at::internal::lazy_init_num_threads();
#if defined(__unix__) || defined(__APPLE__)
  // The OpenMP runtime LibTorch loaded (libgomp, libomp or libiomp5 all export this name); none: nothing to set.
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"))) set(static_cast<int>(n));
#else
  (void)n;
#endif
}

[[noreturn]] TRAINLOOP_DETAIL_API void detail::rethrow_with_context(const std::string& context) {
  try {
    throw;
  } catch (c10::Error& e) {  // c10::Error and its kinds (IndexError, ValueError, ...): the same object, with context
    e.add_context(context);
    throw;
  } catch (const std::exception& e) {
    const std::string what = std::string(e.what()) + " [" + context + "]";
    const std::type_info& type = typeid(e);
    if (type == typeid(std::runtime_error)) throw std::runtime_error(what);
    if (type == typeid(std::invalid_argument)) throw std::invalid_argument(what);
    if (type == typeid(std::out_of_range)) throw std::out_of_range(what);
    if (type == typeid(std::logic_error)) throw std::logic_error(what);
    if (type == typeid(std::domain_error)) throw std::domain_error(what);
    if (type == typeid(std::length_error)) throw std::length_error(what);
    if (type == typeid(std::range_error)) throw std::range_error(what);
    if (type == typeid(std::overflow_error)) throw std::overflow_error(what);
    if (type == typeid(std::underflow_error)) throw std::underflow_error(what);
    if (type == typeid(ImageDecodeError)) throw ImageDecodeError(what);
    throw;  // a type of the user's own: it cannot be rebuilt with a longer message, so it goes as it came
  }
}
#endif

TRAINLOOP_DETAIL_END
