// trainloop: streaming (iterable) data. A list of files, each a sequence of records (text lines, fixed-size binary
// records, or the user's own format), read in order without an index, split over the DataLoader's workers and the
// data-parallel ranks so that every record is read exactly once per epoch; shuffled through a buffer of chosen size
// seeded by (seed, epoch); resumable from file + offset positions, never re-reading what was consumed. The length is
// unknown: an epoch ends when the files do (or at the Trainer's limit_train_batches).
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "parts/torch/data/dataset.hpp"
#include "parts/torch/data/loader.hpp"

TRAINLOOP_DETAIL_BEGIN

/// A file read record by record: buffered reads that keep the offset of the next byte (a record's position).
class RecordFile {
 public:
  TRAINLOOP_DETAIL_API explicit RecordFile(std::string path);
  const std::string& path() const { return path_; }
  std::uint64_t size() const { return size_; }
  /// The offset of the next byte read.
  std::uint64_t offset() const { return offset_; }
  TRAINLOOP_DETAIL_API void seek(std::uint64_t offset);
  /// Reads up to n bytes; fewer only at the end of the file.
  TRAINLOOP_DETAIL_API std::size_t read(void* out, std::size_t n);
  /// The next byte, or -1 at the end of the file.
  int get() {
    const int c = std::getc(file_.get());
    if (c != EOF) ++offset_;
    return c;
  }

 private:
  struct Close {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::string path_;
  std::unique_ptr<std::FILE, Close> file_;
  std::uint64_t size_ = 0, offset_ = 0;
};

/// Records that are text lines, '\n'-terminated (the last may lack it); a record is the line without its '\n'.
struct TextLines {
  using Record = std::string;
  TRAINLOOP_DETAIL_API std::optional<std::string> read(RecordFile& file) const;
  /// Moves to the first line that starts at or after `offset` (a line starts at 0 or after a '\n').
  TRAINLOOP_DETAIL_API void align(RecordFile& file, std::uint64_t offset) const;
};

/// Binary records of a fixed number of bytes. A file whose size is not a multiple of it ends in a truncated record:
/// an error naming the file and the record's offset, when that record is reached.
struct FixedSizeRecords {
  using Record = std::string;  // the record's bytes
  std::size_t bytes;
  explicit FixedSizeRecords(std::size_t record_bytes) : bytes(record_bytes) {
    if (bytes == 0) throw std::invalid_argument("trainloop: FixedSizeRecords: the record size must be at least 1 byte");
  }
  TRAINLOOP_DETAIL_API std::optional<std::string> read(RecordFile& file) const;
  void align(RecordFile& file, std::uint64_t offset) const { file.seek((offset + bytes - 1) / bytes * bytes); }
};

/// The StreamLoader's options, as chainable setters.
class StreamLoaderOptions {
 public:
  StreamLoaderOptions& batch_size(std::int64_t v) { return batch_size_ = v, *this; }
  /// Shuffling: each epoch visits the files in an order drawn from (seed, epoch), and records pass through a buffer
  /// of this many, from which each next record is drawn at random (tf.data's and torchdata's shuffle buffer).
  /// 0 (the default): files and records in the given order.
  StreamLoaderOptions& shuffle_buffer(std::int64_t records) { return shuffle_buffer_ = records, *this; }
  StreamLoaderOptions& seed(std::uint64_t v) { return seed_ = v, *this; }
  /// Drop each worker's last, incomplete batch of an epoch.
  StreamLoaderOptions& drop_last(bool v) { return drop_last_ = v, *this; }
  /// Threads that read and build batches, each from its own share of the records; batches are taken from them in
  /// turn (PyTorch's IterableDataset workers). 0: the caller's thread reads.
  StreamLoaderOptions& workers(std::int64_t n) { return workers_ = n, *this; }
  StreamLoaderOptions& prefetch_factor(std::int64_t n) { return prefetch_factor_ = n, *this; }
  StreamLoaderOptions& worker_intra_op_threads(std::int64_t n) { return worker_intra_op_threads_ = n, *this; }
  /// This rank's share of `world_size` disjoint shares of the records.
  StreamLoaderOptions& shard(std::int64_t rank, std::int64_t world_size) { return rank_ = rank, world_size_ = world_size, *this; }

  std::int64_t batch_size() const { return batch_size_; }
  std::int64_t shuffle_buffer() const { return shuffle_buffer_; }
  std::uint64_t seed() const { return seed_; }
  bool drop_last() const { return drop_last_; }
  std::int64_t workers() const { return workers_; }
  std::int64_t prefetch_factor() const { return prefetch_factor_; }
  std::int64_t worker_intra_op_threads() const { return worker_intra_op_threads_; }
  std::int64_t rank() const { return rank_; }
  std::int64_t world_size() const { return world_size_; }

 private:
  std::int64_t batch_size_ = 1, shuffle_buffer_ = 0, workers_ = 0, prefetch_factor_ = 2, worker_intra_op_threads_ = 1;
  std::int64_t rank_ = 0, world_size_ = 1;
  std::uint64_t seed_ = 0;
  bool drop_last_ = false;
};

namespace detail {
template <class F>
using format_align_t = decltype(std::declval<const F&>().align(std::declval<RecordFile&>(), std::uint64_t{}));
template <class P, class R>
using parse_random_t = decltype(std::declval<const P&>()(std::declval<R>(), std::declval<torch::Generator&>()));
// What parse makes of a record: called with a generator when it takes one.
template <class P, class R, class = void>
struct parsed {
  using type = std::invoke_result_t<const P&, R>;
};
template <class P, class R>
struct parsed<P, R, std::void_t<parse_random_t<P, R>>> {
  using type = parse_random_t<P, R>;
};
// floor(size * k / n) without overflow: the k-th of n cuts of a file of `size` bytes.
inline std::uint64_t cut_point(std::uint64_t size, std::uint64_t k, std::uint64_t n) { return size / n * k + size % n * k / n; }

// Where one share of the records stands: everything needed to resume it without reading a consumed record.
struct StreamPosition {
  std::int64_t file = 0;           // index in the epoch's file order
  std::uint64_t offset = 0;        // the next record to read from that file
  bool in_file = false;            // false: the file's share is not entered yet (offset unused)
  bool finished = false;           // nothing left: files read and buffer empty
  std::uint64_t random = 0;        // the shuffle buffer's generator
  std::vector<std::pair<std::int64_t, std::uint64_t>> pending;  // (file, offset) of records read, not yet yielded
  TRAINLOOP_DETAIL_API std::string encode() const;
  TRAINLOOP_DETAIL_API static StreamPosition decode(const std::string& text, const std::string& key);
};
// splitmix64 step: the shuffle buffer's generator (its whole state is one number, saved in the position).
inline std::uint64_t next_random(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace detail

/// Batches from record files, epoch after epoch; see the file's comment. `parse` turns a record into an example:
/// (Record) or, for random augmentation, (Record, torch::Generator&) with a generator seeded by (seed, epoch, file,
/// offset), so a record's augmentation does not depend on the workers, the ranks or a resume. Examples are collated by
/// `Collate`. An input range without a size: hand it to an Engine or the Trainer.
///
/// Splitting: with a format that can find a record boundary from any offset (`align`, as TextLines and
/// FixedSizeRecords have), every file is cut into world_size x workers byte ranges and each share reads, in every file,
/// the records that start in its range; with a format that cannot, whole files are dealt to the shares in turn.
/// Shares may differ by a few records (a Trainer on several ranks then needs limit_train_batches, or data that divides
/// evenly: a rank whose data ends first would wait for the others).
template <class Format, class Parse, class Collate = DefaultCollate>
class StreamLoader {
  using Record = typename Format::Record;
  static constexpr bool random_parse = detail::is_detected_v<detail::parse_random_t, Parse, Record>;
  using Example = std::decay_t<typename detail::parsed<Parse, Record>::type>;

 public:
  using Batch = std::decay_t<std::invoke_result_t<Collate&, std::vector<Example>>>;

  StreamLoader(std::vector<std::string> files, Format format, Parse parse, StreamLoaderOptions options, Collate collate = {})
      : shared_(std::make_shared<Shared>(std::move(files), std::move(format), std::move(parse), options, std::move(collate))) {
    auto fail = [](const std::string& what) { return std::invalid_argument("trainloop: StreamLoader: " + what); };
    if (shared_->files.empty()) throw fail("no files to read");
    if (options.batch_size() < 1) throw fail("batch_size must be at least 1, got " + std::to_string(options.batch_size()));
    if (options.shuffle_buffer() < 0) throw fail("shuffle_buffer must not be negative");
    if (options.workers() < 0) throw fail("workers must not be negative, got " + std::to_string(options.workers()));
    if (options.prefetch_factor() < 1) throw fail("prefetch_factor must be at least 1");
    check_shard(options.rank(), options.world_size());
    for (const auto& path : shared_->files) RecordFile{path};  // every file opens now, not in a worker later
  }
  StreamLoader(const StreamLoader&) = delete;
  StreamLoader& operator=(const StreamLoader&) = delete;
  /// Movable, worker threads included (they hold the loader's heap state, not the loader).
  StreamLoader(StreamLoader&&) = default;
  StreamLoader& operator=(StreamLoader&&) = default;
  ~StreamLoader() = default;

  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    using pointer = Batch*;
    using reference = Batch&;
    Iterator(StreamLoader* loader, bool end) : loader_(loader), end_(end) {}
    Batch& operator*() const { return *loader_->current_; }
    Batch* operator->() const { return &*loader_->current_; }
    /// Takes the next batch (the previous one stays valid until then).
    Iterator& operator++() {
      loader_->advance();
      return *this;
    }
    bool operator==(const Iterator& o) const { return done() == o.done(); }
    bool operator!=(const Iterator& o) const { return !(*this == o); }

   private:
    bool done() const { return end_ || !loader_->current_; }
    StreamLoader* loader_;
    bool end_;
  };

  /// Starts the next epoch (or continues the one a restored position stopped in) and takes its first batch.
  Iterator begin() {
    stop();
    if (!resume_) {
      if (started_) ++epoch_;
      positions_.assign(static_cast<std::size_t>(shares_per_rank()), detail::StreamPosition{});
      turn_ = 0;
    }
    resume_ = false;
    started_ = true;
    start();
    advance();
    return {this, false};
  }
  Iterator end() { return {this, true}; }

  std::int64_t epoch() const { return epoch_; }
  void set_epoch(std::int64_t epoch) {
    stop();
    epoch_ = epoch;
    positions_.assign(static_cast<std::size_t>(shares_per_rank()), detail::StreamPosition{});
    turn_ = 0;
    resume_ = true;
  }
  const StreamLoaderOptions& options() const { return shared_->options; }
  const std::vector<std::string>& files() const { return shared_->files; }
  /// Makes this loader read `rank`'s share of `world_size` from its next epoch on (the Trainer calls it under
  /// data-parallel training).
  void shard(std::int64_t rank, std::int64_t world_size) {
    check_shard(rank, world_size);
    stop();
    shared_->options.shard(rank, world_size);
  }

  /// The position: the epoch, whose turn is next, and each worker's share as (file, offset) of the next record and of
  /// the records waiting in its shuffle buffer. What was handed out is never read again after a restore.
  StateDict state_dict() const {
    StateDict state{{"epoch", epoch_},
                    {"turn", turn_},
                    {"shares", shares_per_rank()},
                    {"seed", static_cast<std::int64_t>(options().seed())},
                    {"shuffle_buffer", options().shuffle_buffer()},
                    {"batch_size", options().batch_size()},
                    {"files", static_cast<std::int64_t>(shared_->files.size())},
                    {"rank", options().rank()},
                    {"world_size", options().world_size()}};
    // A finished epoch stays finished: with data of unknown length, only the end of the data tells a resumed Engine
    // that the epoch is over (then its next epoch begins a fresh pass).
    for (std::int64_t w = 0; w < shares_per_rank(); ++w)
      state["share/" + std::to_string(w)] = started_ ? positions_[static_cast<std::size_t>(w)].encode() : detail::StreamPosition{}.encode();
    return state;
  }
  /// Restores a position saved by state_dict; the next begin() continues that epoch (nothing, if it had ended: the
  /// begin() after that starts the next). The configuration must match (errors name the key).
  void load_state_dict(const StateDict& state) {
    auto read = [&](const std::string& key) -> const StateValue& {
      auto it = state.find(key);
      if (it == state.end()) throw std::invalid_argument("trainloop: StreamLoader state: key '" + key + "' is missing");
      return it->second;
    };
    auto integer = [&](const std::string& key) {
      const std::int64_t* v = std::get_if<std::int64_t>(&read(key));
      if (!v) throw std::invalid_argument("trainloop: StreamLoader state: key '" + key + "' must be an integer");
      return *v;
    };
    auto expect = [&](const std::string& key, std::int64_t mine) {
      if (const std::int64_t saved = integer(key); saved != mine)
        throw std::invalid_argument("trainloop: StreamLoader state: '" + key + "' was " + std::to_string(saved) +
                                    " when saved, this loader has " + std::to_string(mine));
    };
    expect("shares", shares_per_rank());
    expect("seed", static_cast<std::int64_t>(options().seed()));
    expect("shuffle_buffer", options().shuffle_buffer());
    expect("batch_size", options().batch_size());
    expect("files", static_cast<std::int64_t>(shared_->files.size()));
    expect("rank", options().rank());
    expect("world_size", options().world_size());
    std::vector<detail::StreamPosition> positions;
    for (std::int64_t w = 0; w < shares_per_rank(); ++w) {
      const std::string key = "share/" + std::to_string(w);
      const std::string* text = std::get_if<std::string>(&read(key));
      if (!text) throw std::invalid_argument("trainloop: StreamLoader state: key '" + key + "' must be a string");
      positions.push_back(detail::StreamPosition::decode(*text, key));
    }
    const std::int64_t turn = integer("turn");
    if (turn < 0) throw std::invalid_argument("trainloop: StreamLoader state: 'turn' must not be negative");
    stop();
    epoch_ = integer("epoch");
    turn_ = turn;
    positions_ = std::move(positions);
    resume_ = true;
    started_ = true;
  }

 private:
  // One share's reader: its byte ranges of the files, the shuffle buffer, and batches built from them.
  struct Item {
    Record record;
    std::int64_t file;
    std::uint64_t offset;
  };
  struct Shared;
  class ShareReader {
   public:
    ShareReader(const Shared& shared, std::int64_t epoch, std::int64_t share, std::int64_t shares, detail::StreamPosition position)
        : s_(&shared), epoch_(epoch), share_(share), shares_(shares), position_(std::move(position)), order_(shared.file_order(epoch)) {
      if (!position_.in_file && position_.pending.empty() && position_.file == 0 && !position_.finished)
        position_.random = detail::mix_seed(detail::mix_seed(s_->options.seed() ^ 0xD1B54A32D192ED03ull, static_cast<std::uint64_t>(epoch)),
                                            static_cast<std::uint64_t>(share + shares * s_->options.rank()));
      for (const auto& [file, offset] : position_.pending) buffer_.push_back(read_at(file, offset));  // the buffer as it was
      position_.pending.clear();
    }
    // The next batch, or nullopt when the share is exhausted; `position` is where the share stands after it.
    std::optional<Batch> next_batch(torch::Generator* generator, detail::StreamPosition& position) {
      std::vector<Example> examples;
      const std::int64_t want = s_->options.batch_size();
      examples.reserve(static_cast<std::size_t>(want));
      while (static_cast<std::int64_t>(examples.size()) < want) {
        std::optional<Item> item = next();
        if (!item) break;
        examples.push_back(parse(std::move(*item), generator));
      }
      // One record of look-ahead: a saved position knows whether the share is done (a finished epoch then resumes at
      // the next one instead of an empty pass).
      if (std::optional<Item> ahead = next()) buffer_.push_back(std::move(*ahead));
      position = snapshot();
      if (examples.empty() || (s_->options.drop_last() && static_cast<std::int64_t>(examples.size()) < want)) return std::nullopt;
      try {
        return s_->collate(std::move(examples));
      } catch (...) {
        detail::rethrow_with_context("trainloop: StreamLoader: while collating a batch (epoch " + std::to_string(epoch_) + ")");
      }
    }

   private:
    Example parse(Item item, torch::Generator* generator) {
      try {
        if constexpr (random_parse) {
          generator->set_current_seed(detail::mix_seed(detail::example_seed(s_->options.seed(), epoch_, item.file), item.offset));
          return s_->parse(std::move(item.record), *generator);
        } else {
          (void)generator;
          return s_->parse(std::move(item.record));
        }
      } catch (...) {
        detail::rethrow_with_context("trainloop: StreamLoader: while parsing the record at " + where(item.file, item.offset) +
                                     " (epoch " + std::to_string(epoch_) + ")");
      }
    }
    std::string where(std::int64_t file, std::uint64_t offset) const {
      return s_->files[static_cast<std::size_t>(order_[static_cast<std::size_t>(file)])] + ", offset " + std::to_string(offset);
    }
    // Which share of all ranks' shares this is, and how many there are.
    std::int64_t global_share() const { return share_ + shares_ * s_->options.rank(); }
    std::int64_t all_shares() const { return shares_ * s_->options.world_size(); }
    Item read_at(std::int64_t file, std::uint64_t offset) {
      open(file);
      file_->seek(offset);
      std::optional<Record> record = read_record(file, offset);
      if (!record)
        throw std::runtime_error("trainloop: StreamLoader: no record at " + where(file, offset) +
                                 ", where the saved position has one (did the file change?)");
      return {std::move(*record), file, offset};
    }
    std::optional<Record> read_record(std::int64_t file, std::uint64_t offset) {
      try {
        return s_->format.read(*file_);
      } catch (...) {
        detail::rethrow_with_context("trainloop: StreamLoader: while reading " + where(file, offset));
      }
    }
    void open(std::int64_t file) {
      if (open_file_ == file) return;
      file_.emplace(s_->files[static_cast<std::size_t>(order_[static_cast<std::size_t>(file)])]);
      open_file_ = file;
    }
    // The next record from the files, in order: in each file, the records that start in this share's byte range (a
    // format that can align), or every record of the files dealt to this share (one that cannot).
    std::optional<Item> next_in_files() {
      constexpr bool aligns = detail::is_detected_v<detail::format_align_t, Format>;
      const auto count = static_cast<std::int64_t>(order_.size());
      for (; position_.file < count; ++position_.file, position_.in_file = false) {
        if (!aligns && position_.file % all_shares() != global_share()) continue;
        open(position_.file);
        std::uint64_t end = file_->size();
        if constexpr (aligns) {
          const auto all = static_cast<std::uint64_t>(all_shares()), mine = static_cast<std::uint64_t>(global_share());
          end = detail::cut_point(file_->size(), mine + 1, all);
          if (!position_.in_file) s_->format.align(*file_, detail::cut_point(file_->size(), mine, all));
        } else {
          if (!position_.in_file) file_->seek(0);
        }
        if (!position_.in_file) {
          position_.offset = file_->offset();
          position_.in_file = true;
        }
        file_->seek(position_.offset);
        if (position_.offset >= end) continue;
        const std::uint64_t at = position_.offset;
        if (std::optional<Record> record = read_record(position_.file, at)) {
          position_.offset = file_->offset();
          return Item{std::move(*record), position_.file, at};
        }
      }
      return std::nullopt;
    }
    // The next record this share yields: straight from the files, or drawn from the shuffle buffer.
    std::optional<Item> next() {
      const auto capacity = static_cast<std::size_t>(s_->options.shuffle_buffer());
      if (capacity == 0) {
        if (!buffer_.empty()) {  // the look-ahead record
          Item item = std::move(buffer_.front());
          buffer_.pop_front();
          return item;
        }
        return next_in_files();
      }
      while (buffer_.size() < capacity) {
        std::optional<Item> item = next_in_files();
        if (!item) break;
        buffer_.push_back(std::move(*item));
      }
      if (buffer_.empty()) return std::nullopt;
      const std::size_t j = static_cast<std::size_t>(detail::next_random(position_.random) % buffer_.size());
      std::swap(buffer_[j], buffer_.back());
      Item item = std::move(buffer_.back());
      buffer_.pop_back();
      return item;
    }
    detail::StreamPosition snapshot() const {
      detail::StreamPosition out = position_;
      out.finished = buffer_.empty() && position_.file >= static_cast<std::int64_t>(order_.size());
      for (const Item& item : buffer_) out.pending.emplace_back(item.file, item.offset);
      return out;
    }

    const Shared* s_;
    std::int64_t epoch_, share_, shares_;
    detail::StreamPosition position_;
    std::vector<std::int64_t> order_;
    std::optional<RecordFile> file_;
    std::int64_t open_file_ = -1;
    std::deque<Item> buffer_;
  };

  struct Built {
    std::optional<Batch> batch;  // none: the share is exhausted
    std::exception_ptr error;
    detail::StreamPosition position;
  };
  struct Shared {
    std::vector<std::string> files;
    Format format;
    Parse parse;
    StreamLoaderOptions options;
    Collate collate;
    Shared(std::vector<std::string> f, Format fo, Parse p, const StreamLoaderOptions& o, Collate c)
        : files(std::move(f)), format(std::move(fo)), parse(std::move(p)), options(o), collate(std::move(c)) {}
    // The epoch's file order: as given, or drawn from (seed, epoch) when shuffling; the same on every rank.
    std::vector<std::int64_t> file_order(std::int64_t epoch) const {
      std::vector<std::int64_t> order(files.size());
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::int64_t>(i);
      if (options.shuffle_buffer() > 0) {
        std::uint64_t state = detail::mix_seed(options.seed(), static_cast<std::uint64_t>(epoch));
        for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[detail::next_random(state) % i]);
      }
      return order;
    }
  };
  // A worker thread's share: its reader runs ahead by up to prefetch_factor batches.
  struct Worker {
    std::mutex mutex;
    std::condition_variable changed;
    std::deque<Built> ready;
    bool stopping = false;
    std::thread thread;
    Worker() = default;
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
    ~Worker() {  // a worker inside a batch finishes it first
      {
        std::lock_guard<std::mutex> lock(mutex);
        stopping = true;
      }
      changed.notify_all();
      if (thread.joinable()) thread.join();
    }
  };

  std::int64_t shares_per_rank() const { return std::max<std::int64_t>(options().workers(), 1); }
  static void check_shard(std::int64_t rank, std::int64_t world_size) {
    if (world_size < 1 || rank < 0 || rank >= world_size)
      throw std::invalid_argument("trainloop: StreamLoader: rank " + std::to_string(rank) + " is not in [0, world_size " +
                                  std::to_string(world_size) + ")");
  }

  void start() {
    const std::int64_t shares = shares_per_rank();
    if (options().workers() == 0) {
      if (!positions_[0].finished) caller_reader_.emplace(*shared_, epoch_, 0, shares, positions_[0]);
      if (random_parse && !caller_generator_) caller_generator_ = torch::make_generator<torch::CPUGeneratorImpl>();
      return;
    }
    for (std::int64_t w = 0; w < shares; ++w) {
      auto worker = std::make_unique<Worker>();
      if (!positions_[static_cast<std::size_t>(w)].finished)
        worker->thread = std::thread(&StreamLoader::work, shared_, worker.get(), epoch_, w, shares, positions_[static_cast<std::size_t>(w)]);
      workers_.push_back(std::move(worker));
    }
  }
  static void work(std::shared_ptr<Shared> shared, Worker* worker, std::int64_t epoch, std::int64_t share, std::int64_t shares,
                   detail::StreamPosition position) {
    if (shared->options.worker_intra_op_threads() > 0) detail::set_thread_intra_op_threads(shared->options.worker_intra_op_threads());
    torch::NoGradGuard no_grad;
    std::optional<torch::Generator> generator;
    if constexpr (random_parse) generator = torch::make_generator<torch::CPUGeneratorImpl>();
    std::optional<ShareReader> reader;
    while (true) {
      Built built;
      try {
        if (!reader) reader.emplace(*shared, epoch, share, shares, position);
        built.batch = reader->next_batch(generator ? &*generator : nullptr, built.position);
      } catch (...) {
        built.error = std::current_exception();
      }
      const bool last = built.error || !built.batch;
      std::unique_lock<std::mutex> lock(worker->mutex);
      worker->changed.wait(lock, [&] { return worker->stopping || static_cast<std::int64_t>(worker->ready.size()) < shared->options.prefetch_factor(); });
      if (worker->stopping) return;
      worker->ready.push_back(std::move(built));
      worker->changed.notify_all();
      if (last) return;
    }
  }
  // Ends the pass being served: the workers stop (after the batch in hand), the reader of the caller's thread closes.
  void stop() {
    current_.reset();
    caller_reader_.reset();
    workers_.clear();
  }
  // The next batch of one share, in turn; an exhausted share is passed over.
  Built take(std::size_t share) {
    if (options().workers() == 0) {
      Built built;
      built.batch = caller_reader_->next_batch(caller_generator_ ? &*caller_generator_ : nullptr, built.position);
      return built;
    }
    Worker& worker = *workers_[share];
    std::unique_lock<std::mutex> lock(worker.mutex);
    worker.changed.wait(lock, [&] { return !worker.ready.empty(); });
    Built built = std::move(worker.ready.front());
    worker.ready.pop_front();
    worker.changed.notify_all();
    return built;
  }
  void advance() {
    current_.reset();  // first: a batch may own large buffers
    const auto shares = static_cast<std::int64_t>(positions_.size());
    while (!std::all_of(positions_.begin(), positions_.end(), [](const auto& p) { return p.finished; })) {
      const auto share = static_cast<std::size_t>(turn_++ % shares);
      if (positions_[share].finished) continue;
      Built built = take(share);
      if (built.error) std::rethrow_exception(built.error);
      positions_[share] = std::move(built.position);
      if (!built.batch) {  // exhausted (or only a dropped last batch was left)
        positions_[share].finished = true;
        continue;
      }
      current_.emplace(std::move(*built.batch));
      return;
    }
  }

  std::shared_ptr<Shared> shared_;  // shared with the worker threads, which may outlive a moved-from loader's members
  std::vector<std::unique_ptr<Worker>> workers_;
  std::optional<ShareReader> caller_reader_;  // workers(0)
  std::optional<torch::Generator> caller_generator_;
  std::vector<detail::StreamPosition> positions_;  // each share's position after the batches handed out
  std::optional<Batch> current_;
  std::int64_t epoch_ = 0, turn_ = 0;
  bool started_ = false, resume_ = false;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API RecordFile::RecordFile(std::string path) : path_(std::move(path)) {
  file_.reset(std::fopen(path_.c_str(), "rb"));
  if (!file_) throw std::runtime_error("trainloop: cannot open " + path_ + ": " + std::strerror(errno));
  if (std::fseek(file_.get(), 0, SEEK_END) != 0) throw std::runtime_error("trainloop: cannot seek in " + path_ + ": " + std::strerror(errno));
  const long size = std::ftell(file_.get());
  if (size < 0 || std::fseek(file_.get(), 0, SEEK_SET) != 0)
    throw std::runtime_error("trainloop: cannot tell the size of " + path_ + ": " + std::strerror(errno));
  size_ = static_cast<std::uint64_t>(size);
}
TRAINLOOP_DETAIL_API void RecordFile::seek(std::uint64_t offset) {
  if (offset == offset_) return;
  if (std::fseek(file_.get(), static_cast<long>(offset), SEEK_SET) != 0)
    throw std::runtime_error("trainloop: cannot seek to offset " + std::to_string(offset) + " in " + path_ + ": " + std::strerror(errno));
  offset_ = offset;
}
TRAINLOOP_DETAIL_API std::size_t RecordFile::read(void* out, std::size_t n) {
  const std::size_t got = std::fread(out, 1, n, file_.get());
  offset_ += got;
  if (got < n && std::ferror(file_.get()))
    throw std::runtime_error("trainloop: cannot read " + path_ + " at offset " + std::to_string(offset_) + ": " + std::strerror(errno));
  return got;
}

TRAINLOOP_DETAIL_API std::optional<std::string> TextLines::read(RecordFile& file) const {
  std::string line;
  int c = file.get();
  if (c == EOF) return std::nullopt;
  for (; c != EOF && c != '\n'; c = file.get()) line += static_cast<char>(c);
  return line;
}
TRAINLOOP_DETAIL_API void TextLines::align(RecordFile& file, std::uint64_t offset) const {
  if (offset == 0) return file.seek(0);
  file.seek(offset - 1);  // a line starts at `offset` exactly when the byte before it ends a line
  for (int c = file.get(); c != EOF && c != '\n'; c = file.get()) {
  }
}

TRAINLOOP_DETAIL_API std::optional<std::string> FixedSizeRecords::read(RecordFile& file) const {
  const std::uint64_t at = file.offset();
  std::string record(bytes, '\0');
  const std::size_t got = file.read(record.data(), bytes);
  if (got == 0) return std::nullopt;
  if (got < bytes)
    throw std::runtime_error("trainloop: " + file.path() + ": the record at offset " + std::to_string(at) + " is truncated: " +
                             std::to_string(got) + " of " + std::to_string(bytes) + " bytes (the file's size, " +
                             std::to_string(file.size()) + ", is not a multiple of the record size)");
  return record;
}

TRAINLOOP_DETAIL_API std::string detail::StreamPosition::encode() const {
  std::string out = std::to_string(file) + " " + std::to_string(offset) + " " + (in_file ? "1" : "0") + " " + (finished ? "1" : "0") +
                    " " + std::to_string(random) + " " + std::to_string(pending.size());
  for (const auto& [f, o] : pending) out += " " + std::to_string(f) + ":" + std::to_string(o);
  return out;
}
TRAINLOOP_DETAIL_API detail::StreamPosition detail::StreamPosition::decode(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  StreamPosition p;
  int in_file = 0, finished = 0;
  std::size_t pending = 0;
  in >> p.file >> p.offset >> in_file >> finished >> p.random >> pending;
  for (std::size_t i = 0; in && i < pending; ++i) {
    std::int64_t f = 0;
    char colon = 0;
    std::uint64_t o = 0;
    in >> f >> colon >> o;
    if (colon != ':') in.setstate(std::ios::failbit);
    p.pending.emplace_back(f, o);
  }
  if (!in || p.file < 0) throw std::invalid_argument("trainloop: StreamLoader state: key '" + key + "' is not a saved position: '" + text.substr(0, 80) + "'");
  p.in_file = in_file != 0;
  p.finished = finished != 0;
  return p;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
