// TensorDataset and DataLoader: batching, seeded shuffling independent of the global RNG, distributed shards,
// saving and restoring the position, errors; datasets of the user's type (collation, get_batch, collate functions,
// stacking errors), worker threads (order, bounded prefetch, exceptions, early exits, no thread left), randomness per
// example independent of workers, ranks and resumes; transforms; the loader driving the Engine and the Trainer;
// ImageFolder on the image decoders (with TRAINLOOP_WITH_IMAGE_IO); StreamLoader over record files.
// LibTorch first: where it brings glog (Debian's builds), its one-argument CHECK must be replaced by doctest's, as the
// precompiled header's order does in the CMake build (the LibTorch 2.x syntax check compiles this file without it).
#include <trainloop.hpp>
#include <doctest/doctest.h>

#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "temp_dir.hpp"

using namespace trainloop;

namespace {
// The first column of every batch of one epoch, as ints (the dataset below stores each example's index there).
template <class Loader>
std::vector<std::int64_t> epoch_indices(Loader& loader) {
  std::vector<std::int64_t> seen;
  for (auto batch : loader) {
    const torch::Tensor& x = batch.first;
    for (std::int64_t i = 0; i < x.size(0); ++i) seen.push_back(x[i][0].item<std::int64_t>());
  }
  return seen;
}
TensorDataset<2> indexed(std::int64_t n) {
  torch::Tensor x = torch::arange(n, torch::kLong).unsqueeze(1).repeat({1, 3});
  return TensorDataset(x, torch::arange(n, torch::kLong) * 10);
}
}  // namespace

TEST_CASE("TensorDataset: shapes are checked; batches gather rows of every tensor") {
  CHECK_THROWS_WITH_AS(TensorDataset(torch::zeros({4, 2}), torch::zeros({5})),
                       "trainloop: TensorDataset: tensor 1 has shape [5] but tensor 0 has shape [4, 2]; they must share dim 0",
                       std::invalid_argument);
  CHECK_THROWS_AS(TensorDataset(torch::zeros({})), std::invalid_argument);
  auto ds = indexed(6);
  auto [x, y] = ds.get_batch(torch::tensor({4, 1}, torch::kLong));
  CHECK(x.sizes().vec() == std::vector<std::int64_t>{2, 3});
  CHECK(y[0].item<std::int64_t>() == 40);
  TensorDataset<3> three(torch::zeros({2}), torch::ones({2}), torch::zeros({2, 7}));
  static_assert(std::is_same_v<TensorBatch<3>, std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>>, "tuple batch");
  CHECK(std::get<2>(three.get_batch(torch::tensor({1}, torch::kLong))).size(1) == 7);
}

TEST_CASE("DataLoader: batch count, drop_last, sequential order") {
  DataLoader loader(indexed(10), DataLoaderOptions().batch_size(4));
  CHECK(loader.size() == 3);
  CHECK(epoch_indices(loader) == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  DataLoader dropping(indexed(10), DataLoaderOptions().batch_size(4).drop_last(true));
  CHECK(dropping.size() == 2);
  CHECK(epoch_indices(dropping).size() == 8);
  CHECK_THROWS_WITH_AS(DataLoader(indexed(3), DataLoaderOptions().batch_size(0)),
                       "trainloop: DataLoader: batch_size must be at least 1, got 0", std::invalid_argument);
  CHECK_THROWS_WITH_AS(DataLoader(indexed(3), DataLoaderOptions().shard(2, 2)),
                       "trainloop: DataLoader: rank 2 is not in [0, world_size 2)", std::invalid_argument);
}

TEST_CASE("DataLoader: shuffling is seeded, differs per epoch, and ignores the global RNG") {
  DataLoaderOptions options = DataLoaderOptions().batch_size(3).shuffle(true).seed(42);
  DataLoader a(indexed(20), options), b(indexed(20), options);
  torch::manual_seed(1);
  const auto a1 = epoch_indices(a);
  torch::manual_seed(999);  // e.g. a dropout layer consumed random numbers: the data order must not change
  const auto b1 = epoch_indices(b);
  CHECK(a1 == b1);
  const auto a2 = epoch_indices(a);
  CHECK(a2 != a1);  // the next epoch is another order
  CHECK(std::set<std::int64_t>(a2.begin(), a2.end()).size() == 20);
  DataLoader other_seed(indexed(20), DataLoaderOptions().batch_size(3).shuffle(true).seed(43));
  CHECK(epoch_indices(other_seed) != a1);
  b.set_epoch(1);  // set_epoch agrees on the order, as DistributedSampler's does
  CHECK(epoch_indices(b) == a2);
}

TEST_CASE("DataLoader: distributed shards are disjoint, cover the data, equal in length (padded), reshuffled by set_epoch") {
  const std::int64_t world = 3;
  std::vector<std::int64_t> all;
  std::size_t length = 0;
  for (std::int64_t rank = 0; rank < world; ++rank) {
    DataLoader loader(indexed(10), DataLoaderOptions().batch_size(2).shuffle(true).seed(5).shard(rank, world));
    const auto shard = epoch_indices(loader);
    CHECK(shard.size() == 4);  // ceil(10 / 3)
    CHECK(loader.size() == 2);
    length = shard.size();
    all.insert(all.end(), shard.begin(), shard.end());
  }
  CHECK(all.size() == length * world);  // 12: two examples repeated to pad
  CHECK(std::set<std::int64_t>(all.begin(), all.end()).size() == 10);  // every example seen

  DataLoader rank0(indexed(10), DataLoaderOptions().batch_size(2).shuffle(true).seed(5).shard(0, world));
  rank0.set_epoch(7);
  const auto e7 = epoch_indices(rank0);
  rank0.set_epoch(8);
  CHECK(epoch_indices(rank0) != e7);
}

TEST_CASE("DataLoader: the position is saved and restored: a resumed epoch continues exactly") {
  DataLoaderOptions options = DataLoaderOptions().batch_size(2).shuffle(true).seed(3);
  DataLoader full(indexed(12), options);
  epoch_indices(full);  // epoch 0
  const auto epoch1 = epoch_indices(full);

  DataLoader interrupted(indexed(12), options);
  epoch_indices(interrupted);
  std::vector<std::int64_t> first_part;
  StateDict saved;
  auto it = interrupted.begin();
  for (int b = 0; b < 2; ++b, ++it) {
    auto batch = *it;
    for (std::int64_t i = 0; i < batch.first.size(0); ++i) first_part.push_back(batch.first[i][0].item<std::int64_t>());
  }
  saved = interrupted.state_dict();
  CHECK(std::get<std::int64_t>(saved.at("epoch")) == 1);
  CHECK(std::get<std::int64_t>(saved.at("next_batch")) == 2);

  DataLoader resumed(indexed(12), options);
  resumed.load_state_dict(saved);
  const auto rest = epoch_indices(resumed);
  std::vector<std::int64_t> joined = first_part;
  joined.insert(joined.end(), rest.begin(), rest.end());
  CHECK(joined == epoch1);
  CHECK(resumed.epoch() == 1);

  DataLoader different(indexed(12), DataLoaderOptions().batch_size(4).shuffle(true).seed(3));
  CHECK_THROWS_WITH_AS(different.load_state_dict(saved),
                       "trainloop: DataLoader state: 'batch_size' was 2 when saved, this loader has 4",
                       std::invalid_argument);
  StateDict broken = saved;
  broken.erase("epoch");
  CHECK_THROWS_WITH_AS(resumed.load_state_dict(broken), "trainloop: DataLoader state: key 'epoch' is missing",
                       std::invalid_argument);
}

TEST_CASE("DataLoader: one worker yields the same batches, in order, and stops cleanly mid-epoch") {
  DataLoaderOptions options = DataLoaderOptions().batch_size(5).shuffle(true).seed(11);
  DataLoader plain(indexed(103), options);
  DataLoader prefetched(indexed(103), DataLoaderOptions(options).workers(1).prefetch_factor(3));
  for (int epoch = 0; epoch < 3; ++epoch) CHECK(epoch_indices(plain) == epoch_indices(prefetched));
  auto it = prefetched.begin();
  *it;  // abandon the epoch after one batch: the next begin() (or the destructor) stops the worker
  CHECK(epoch_indices(prefetched).size() == 103);
}

TEST_CASE("the DataLoader drives an Engine (Ignite epochs) and the Trainer") {
  DataLoader loader(indexed(10), DataLoaderOptions().batch_size(4).shuffle(true));
  std::int64_t examples = 0;
  auto engine = make_engine<TensorBatch<2>>([&](TensorBatch<2>& b) { examples += b.first.size(0); });
  engine.run(loader, max_epochs(3));
  CHECK(examples == 30);
  CHECK(engine.state.epoch_length == 3u);  // the loader has a size
  CHECK(loader.epoch() == 2);              // three epochs: 0, 1, 2
}

namespace {
// A dataset of the user's type: example i is ([i, i, i], i * 10) with the label a plain number; counts its reads.
struct CountingDataset {
  std::int64_t n;
  std::shared_ptr<std::atomic<std::int64_t>> gets = std::make_shared<std::atomic<std::int64_t>>(0);
  std::shared_ptr<std::vector<std::atomic<int>>> reads_of = std::make_shared<std::vector<std::atomic<int>>>(static_cast<std::size_t>(n));
  std::chrono::microseconds delay{0};
  std::int64_t size() const { return n; }
  std::pair<torch::Tensor, std::int64_t> get(std::size_t index) const {
    ++*gets;
    ++(*reads_of)[index];
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    return {torch::full({3}, static_cast<double>(index), torch::kLong), static_cast<std::int64_t>(index) * 10};
  }
};
// Random augmentation per example: noise drawn from the example's generator.
struct NoisyDataset {
  std::int64_t n;
  std::size_t size() const { return static_cast<std::size_t>(n); }
  std::pair<torch::Tensor, torch::Tensor> get(std::size_t index, torch::Generator& generator) const {
    torch::Tensor x = torch::full({2, 5}, static_cast<double>(index)) + torch::rand({2, 5}, generator);
    return {transforms::RandomHorizontalFlip{0.5}(x.unsqueeze(0), generator).squeeze(0), torch::tensor(static_cast<std::int64_t>(index))};
  }
};
struct ImageExample {
  torch::Tensor image;
  torch::Tensor label;
};
struct StructDataset {
  std::int64_t size() const { return 5; }
  ImageExample get(std::size_t index) const { return {torch::full({1, 2, 2}, static_cast<double>(index)), torch::tensor(static_cast<std::int64_t>(index))}; }
};
struct TorchExampleDataset {
  std::int64_t size() const { return 5; }
  torch::data::Example<> get(std::size_t index) const { return {torch::full({2}, static_cast<double>(index)), torch::tensor(static_cast<std::int64_t>(index))}; }
};
// Variable-length sequences: example i has i % 3 + 1 elements.
struct SequenceDataset {
  std::int64_t size() const { return 6; }
  torch::Tensor get(std::size_t index) const { return torch::arange(static_cast<std::int64_t>(index % 3 + 1)); }
};
// Reads whole batches: get_batch wins over get.
struct BatchReadingDataset {
  std::shared_ptr<int> batch_reads = std::make_shared<int>(0);
  std::int64_t size() const { return 7; }
  torch::Tensor get(std::size_t) const { throw std::logic_error("get_batch must be used"); }
  torch::Tensor get_batch(const std::vector<std::size_t>& indices) const {
    ++*batch_reads;
    return torch::tensor(std::vector<std::int64_t>(indices.begin(), indices.end()));
  }
};
// Throws at chosen indices: a standard exception, a c10::Error, and a type of its own.
struct NotFound {
  std::string what;
};
struct FailingDataset {
  std::shared_ptr<std::atomic<std::int64_t>> failing = std::make_shared<std::atomic<std::int64_t>>(-1);
  std::int64_t size() const { return 40; }
  torch::Tensor get(std::size_t index) const {
    const std::int64_t i = static_cast<std::int64_t>(index);
    if (i == *failing && i == 13) throw std::out_of_range("record 13 is truncated");
    TORCH_CHECK_INDEX(i != *failing || i != 21, "record 21 has a bad header");
    if (i == *failing) throw NotFound{"gone"};
    return torch::full({1}, static_cast<double>(index));
  }
};
std::int64_t threads_of_this_process() {
  std::int64_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}
template <class Loader>
std::vector<torch::Tensor> epoch_tensors(Loader& loader) {
  std::vector<torch::Tensor> out;
  for (auto batch : loader) {
    out.push_back(batch.first);
    out.push_back(batch.second);
  }
  return out;
}
template <class Loader>
std::size_t epoch_indices_count(Loader& loader) {
  std::size_t batches = 0;
  for (auto batch : loader) batches += batch.defined();
  return batches;
}
bool same_tensors(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].sizes() != b[i].sizes() || a[i].scalar_type() != b[i].scalar_type() || !torch::equal(a[i], b[i])) return false;
  return true;
}
}  // namespace

TEST_CASE("DataLoader over datasets of the user's type: examples collated field by field; get_batch when present") {
  DataLoader pairs(CountingDataset{10}, DataLoaderOptions().batch_size(4));
  static_assert(std::is_same_v<decltype(pairs)::Batch, std::pair<torch::Tensor, torch::Tensor>>, "numbers become tensors");
  CHECK(pairs.size() == 3);
  CHECK(epoch_indices(pairs) == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  auto first = *pairs.begin();
  CHECK((first.second.scalar_type() == torch::kLong));
  CHECK(torch::equal(first.second, torch::tensor({0, 10, 20, 30}, torch::kLong)));
  CHECK(first.first.sizes().vec() == std::vector<std::int64_t>{4, 3});

  DataLoader structs(StructDataset{}, DataLoaderOptions().batch_size(3));
  ImageExample batch = *structs.begin();  // a struct of tensors is collated into the same struct
  CHECK(batch.image.sizes().vec() == std::vector<std::int64_t>{3, 1, 2, 2});
  CHECK(torch::equal(batch.label, torch::tensor({0, 1, 2}, torch::kLong)));

  DataLoader torch_examples(TorchExampleDataset{}, DataLoaderOptions().batch_size(5));
  torch::data::Example<> stacked = *torch_examples.begin();
  CHECK(stacked.data.sizes().vec() == std::vector<std::int64_t>{5, 2});
  CHECK(torch::equal(stacked.target, torch::arange(5)));

  BatchReadingDataset batched;
  DataLoader batches(batched, DataLoaderOptions().batch_size(3).shuffle(true).seed(1));
  std::set<std::int64_t> seen;
  for (const torch::Tensor& b : batches)
    for (std::int64_t i = 0; i < b.size(0); ++i) seen.insert(b[i].item<std::int64_t>());
  CHECK(seen.size() == 7);
  CHECK(*batched.batch_reads == 3);
}

TEST_CASE("collate: stacking errors name the field and both shapes; a collate function replaces stacking") {
  DataLoader sequences(SequenceDataset{}, DataLoaderOptions().batch_size(3));
  CHECK_THROWS_WITH_AS(*sequences.begin(),
                       "trainloop: collate: cannot stack the examples: example 1 in the batch has shape [2] (Long) but "
                       "example 0 has shape [1] (Long); give the DataLoader a collate function (padding variable-length "
                       "examples, for instance) [trainloop: DataLoader: while collating examples 0, 1 and 2 (epoch 0)]",
                       std::invalid_argument);
  auto pad = [](std::vector<torch::Tensor> examples) {
    std::int64_t longest = 0;
    for (const auto& e : examples) longest = std::max(longest, e.size(0));
    torch::Tensor out = torch::full({static_cast<std::int64_t>(examples.size()), longest}, -1, torch::kLong);
    for (std::size_t i = 0; i < examples.size(); ++i) out[static_cast<std::int64_t>(i)].slice(0, 0, examples[i].size(0)).copy_(examples[i]);
    return out;
  };
  DataLoader padded(SequenceDataset{}, DataLoaderOptions().batch_size(3).workers(2), pad);
  auto it = padded.begin();
  CHECK(torch::equal(*it, torch::tensor({0, -1, -1, 0, 1, -1, 0, 1, 2}, torch::kLong).view({3, 3})));
  CHECK_THROWS_WITH_AS(default_collate(std::vector<std::pair<torch::Tensor, int>>{{torch::zeros({2, 3}), 1}, {torch::zeros({3, 2}), 2}}),
                       doctest::Contains("cannot stack field 0: example 1 in the batch has shape [3, 2] (Float) but example 0 has shape [2, 3] (Float)"),
                       std::invalid_argument);
}

TEST_CASE("DataLoader workers: the same batches, in order, with 0, 1 and 4 workers; randomness per example, never the global RNG") {
  const DataLoaderOptions options = DataLoaderOptions().batch_size(5).shuffle(true).seed(17);
  DataLoader inline_loader(NoisyDataset{43}, options);
  DataLoader one(NoisyDataset{43}, DataLoaderOptions(options).workers(1));
  DataLoader four(NoisyDataset{43}, DataLoaderOptions(options).workers(4).prefetch_factor(1));
  torch::manual_seed(3);
  const torch::Tensor untouched = torch::rand({4});
  for (int epoch = 0; epoch < 3; ++epoch) {
    CAPTURE(epoch);
    torch::manual_seed(3);
    const auto expected = epoch_tensors(inline_loader);
    CHECK(torch::equal(torch::rand({4}), untouched));  // the loader drew nothing from the global generator
    torch::manual_seed(epoch);                         // a model drawing random numbers does not change the data
    CHECK(same_tensors(epoch_tensors(one), expected));
    CHECK(same_tensors(epoch_tensors(four), expected));
  }
  // Example i's randomness is its own: the same in another epoch's batch, on any rank's shard, at any position.
  DataLoader rank1(NoisyDataset{43}, DataLoaderOptions(options).shard(1, 2).workers(2));
  DataLoader whole(NoisyDataset{43}, DataLoaderOptions(options).shuffle(false));
  std::vector<torch::Tensor> by_index(43);
  for (auto [x, i] : whole)
    for (std::int64_t k = 0; k < x.size(0); ++k) by_index[static_cast<std::size_t>(i[k].item<std::int64_t>())] = x[k];
  std::int64_t checked = 0;
  for (auto& [x, i] : rank1)  // by reference: the loader holds the batch until the next one
    for (std::int64_t k = 0; k < x.size(0); ++k, ++checked) CHECK(torch::equal(x[k], by_index[static_cast<std::size_t>(i[k].item<std::int64_t>())]));
  CHECK(checked == 22);
}

TEST_CASE("DataLoader workers: an exception in get arrives with its type and the example's index; the next epoch works") {
  for (std::int64_t workers : {0, 1, 3}) {
    CAPTURE(workers);
    FailingDataset data;
    DataLoader loader(data, DataLoaderOptions().batch_size(4).workers(workers));
    auto whole_epoch = [&] {
      std::int64_t batches = 0;
      for (auto batch : loader) batches += batch.size(0) > 0;
      return batches;
    };
    *data.failing = 13;
    CHECK_THROWS_WITH_AS(whole_epoch(), "record 13 is truncated [trainloop: DataLoader: while getting example 13 (epoch 0)]",
                         std::out_of_range);
    CHECK(loader.state_dict().at("next_batch") == StateValue{std::int64_t{4}});  // batches 0-2 arrived, 3 failed
    *data.failing = 21;
    try {  // the next epoch starts cleanly and reaches the c10::Error, its type (IndexError) kept
      whole_epoch();
      FAIL("no error");
    } catch (const c10::IndexError& e) {
      CHECK(std::string(e.what()).find("record 21 has a bad header") != std::string::npos);
      CHECK(std::string(e.what()).find("while getting example 21 (epoch 1)") != std::string::npos);
    }
    *data.failing = 33;
    CHECK_THROWS_AS(whole_epoch(), NotFound);  // a type of the user's own arrives as it was thrown
    *data.failing = -1;
    CHECK(whole_epoch() == 10);
  }
}

TEST_CASE("DataLoader workers: at most prefetch_factor batches per worker ahead; leaving early never hangs or leaves a thread") {
  const std::int64_t threads_before = threads_of_this_process();
  {
    CountingDataset slow{200};
    slow.delay = std::chrono::microseconds(200);
    DataLoader loader(slow, DataLoaderOptions().batch_size(4).workers(2).prefetch_factor(2));
    auto it = loader.begin();
    *it;  // batch 0 taken: at most 2 workers x 2 batches ahead of it may be built
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(*slow.gets <= 4 * (1 + 2 * 2));
    CHECK(threads_of_this_process() == threads_before + 2);  // the workers, alive across epochs
    for (int epoch = 0; epoch < 3; ++epoch) {                // break, then a fresh epoch, repeatedly
      for (auto batch : loader) {
        (void)batch;
        break;
      }
    }
    CHECK(epoch_indices(loader).size() == 200);  // and a whole epoch after the early exits
    CHECK(threads_of_this_process() == threads_before + 2);
    it = loader.begin();
    *it;  // destroyed mid-epoch with workers blocked on a full queue
  }
  CHECK(threads_of_this_process() == threads_before);
  {  // an exception leaving a training loop, then destruction
    CountingDataset data{50};
    auto engine = make_engine<TensorBatch<2>>([](TensorBatch<2>& b) {
      if (b.second[0].item<std::int64_t>() >= 100) throw std::runtime_error("step failed");
    });
    DataLoader loader(data, DataLoaderOptions().batch_size(5).workers(3));
    CHECK_THROWS_WITH(engine.run(loader, max_epochs(2)), "step failed");
  }
  CHECK(threads_of_this_process() == threads_before);
}

namespace {
// Records the intra-op thread count LibTorch would use in the thread that reads each example.
struct ThreadCountDataset {
  std::shared_ptr<std::atomic<int>> most = std::make_shared<std::atomic<int>>(0);
  std::int64_t size() const { return 8; }
  torch::Tensor get(std::size_t) const {
    const int n = at::get_num_threads();
    for (int seen = *most; n > seen && !most->compare_exchange_weak(seen, n);) {}
    return torch::zeros({1});
  }
};
}  // namespace

TEST_CASE("DataLoader workers: one LibTorch intra-op thread each unless asked otherwise; the caller's setting stays") {
  const int callers = at::get_num_threads();
  ThreadCountDataset one, left;
  DataLoader workers(one, DataLoaderOptions().batch_size(2).workers(2));
  DataLoader leaving(left, DataLoaderOptions().batch_size(2).workers(2).worker_intra_op_threads(0));
  CHECK(epoch_indices_count(workers) == 4);
  CHECK(epoch_indices_count(leaving) == 4);
  CHECK(*one.most == 1);
  CHECK(*left.most == callers);
  CHECK(at::get_num_threads() == callers);
}

TEST_CASE("DataLoader: a restored position continues in O(1), reading no earlier example again, with any workers") {
  for (std::int64_t workers : {0, 2}) {
    CAPTURE(workers);
    const DataLoaderOptions options = DataLoaderOptions().batch_size(4).shuffle(true).seed(8).workers(workers).prefetch_factor(1);
    DataLoader full(CountingDataset{30}, options);
    const auto whole = epoch_indices(full);
    DataLoader first(CountingDataset{30}, options);
    auto it = first.begin();
    for (int b = 0; b < 3; ++b, ++it) *it;
    const StateDict saved = first.state_dict();

    CountingDataset data{30};
    DataLoader resumed(data, options);
    resumed.load_state_dict(saved);
    const auto rest = epoch_indices(resumed);
    CHECK(rest == std::vector<std::int64_t>(whole.begin() + 12, whole.end()));
    CHECK(*data.gets == 18);  // exactly the examples of the remaining batches, each once
    for (std::int64_t index : std::vector<std::int64_t>(whole.begin(), whole.begin() + 12)) CHECK((*data.reads_of)[static_cast<std::size_t>(index)] == 0);
  }
}

TEST_CASE("transforms") {
  const torch::Tensor image = torch::arange(2 * 3 * 4, torch::kFloat).view({2, 3, 4});
  auto g1 = torch::make_generator<torch::CPUGeneratorImpl>(5), g2 = torch::make_generator<torch::CPUGeneratorImpl>(5);
  SUBCASE("functional forms: flip, crop (zeros outside, as torchvision), three padding modes") {
    CHECK(torch::equal(transforms::hflip(image)[0][0], torch::tensor({3.f, 2.f, 1.f, 0.f})));
    CHECK(torch::equal(transforms::crop(image, 1, 1, 2, 2)[0], torch::tensor({5.f, 6.f, 9.f, 10.f}).view({2, 2})));
    CHECK(transforms::crop(image, -1, 3, 2, 2)[0].sum().item<float>() == 3.f);
    CHECK(transforms::pad(image, {1, 0, 0, 0}, 0, transforms::PaddingMode::reflect)[0][0][0].item<float>() == 1.f);
    CHECK(transforms::pad(image, {1, 0, 0, 0}, 0, transforms::PaddingMode::symmetric)[0][0][0].item<float>() == 0.f);
    CHECK(transforms::pad(image, {0, 0, 2, 0}, 0, transforms::PaddingMode::edge)[0][0][5].item<float>() == 3.f);
  }
  SUBCASE("to float from HWC bytes, resize to a size or by the shorter edge, bytes stay bytes") {
    const torch::Tensor bytes = torch::randint(0, 256, {5, 6, 3}, torch::kByte);
    const torch::Tensor chw = transforms::ToFloat{transforms::Layout::HWC}(bytes);
    CHECK(chw.sizes().vec() == std::vector<std::int64_t>{3, 5, 6});
    CHECK(chw[2][4][5].item<float>() == bytes[4][5][2].item<float>() / 255);
    CHECK(transforms::Resize(std::vector<std::int64_t>{10, 12})(chw).sizes().vec() == std::vector<std::int64_t>{3, 10, 12});
    CHECK(transforms::Resize(10)(chw).sizes().vec() == std::vector<std::int64_t>{3, 10, 12});  // the shorter edge
    CHECK((transforms::resize(bytes.permute({2, 0, 1}), {3, 3}).scalar_type() == torch::kByte));
  }
  SUBCASE("random ones draw from the generator given; Compose takes lambdas too") {
    auto augment = transforms::Compose(transforms::ToFloat{}, transforms::RandomCrop(4, 1), transforms::RandomHorizontalFlip{},
                                       [](torch::Tensor x) { return x * 2; }, transforms::Normalize({0.5}, {0.25}));
    const torch::Tensor one = torch::randint(0, 256, {1, 6, 6}, torch::kByte);
    CHECK(torch::equal(augment(one, g1), augment(one, g2)));
    CHECK(augment(one, g1).sizes().vec() == std::vector<std::int64_t>{1, 4, 4});
  }
  SUBCASE("errors name the shape at fault") {
    CHECK_THROWS_WITH_AS(transforms::to_float(torch::zeros({4, 4})),
                         "trainloop: transforms::to_float: expected an image of 3 dimensions (C, H, W), got shape [4, 4]",
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(transforms::RandomCrop(8)(image, g1),
                         "trainloop: transforms::RandomCrop: the crop 8x8 is larger than the (padded) image 3x4",
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(transforms::normalize(image, {0.5, 0.5, 0.5}, {1, 1, 1}),
                         "trainloop: transforms::normalize: mean has 3 values for an image of 2 channels",
                         std::invalid_argument);
  }
}

#if TRAINLOOP_WITH_IMAGE_IO
namespace {
// A PNG file of an 8-bit grey ([H, W]) or RGB ([H, W, 3]) uint8 tensor, written by hand (zlib's deflate and CRC):
// the tests need files, not a PNG encoder.
void write_png(const std::string& path, const torch::Tensor& pixels) {
  const auto height = static_cast<std::uint32_t>(pixels.size(0)), width = static_cast<std::uint32_t>(pixels.size(1));
  const int channels = pixels.dim() == 3 ? 3 : 1;
  std::string raw;
  const torch::Tensor data = pixels.contiguous();
  for (std::uint32_t y = 0; y < height; ++y) {
    raw += '\0';  // filter: none
    raw.append(reinterpret_cast<const char*>(data.data_ptr<std::uint8_t>()) + y * width * channels, width * channels);
  }
  std::string deflated(compressBound(raw.size()), '\0');
  uLongf size = deflated.size();
  REQUIRE(compress(reinterpret_cast<Bytef*>(deflated.data()), &size, reinterpret_cast<const Bytef*>(raw.data()), raw.size()) == Z_OK);
  deflated.resize(size);
  auto be32 = [](std::uint32_t v) { return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; };
  auto chunk = [&](const std::string& kind, const std::string& body) {
    const std::string typed = kind + body;
    return be32(static_cast<std::uint32_t>(body.size())) + typed +
           be32(static_cast<std::uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(typed.data()), typed.size())));
  };
  const std::string header = be32(width) + be32(height) + std::string{8, char(channels == 3 ? 2 : 0), 0, 0, 0};
  std::ofstream(path, std::ios::binary) << "\x89PNG\r\n\x1a\n" << chunk("IHDR", header) << chunk("IDAT", deflated) << chunk("IEND", "");
}
// root/<class>/<name>: a 6 x 5 grey image whose pixels are `value` + its position.
torch::Tensor write_sample(const std::filesystem::path& file, std::int64_t value) {
  std::filesystem::create_directories(file.parent_path());
  torch::Tensor pixels = (torch::arange(30, torch::kLong).reshape({6, 5}) + value).to(torch::kUInt8);
  write_png(file.string(), pixels);
  return pixels;
}
}  // namespace

TEST_CASE("ImageFolder: torchvision's classes and order; examples decoded, transformed and batched by workers") {
  TempDir dir;
  const std::filesystem::path root = dir.path / "images";
  const torch::Tensor first = write_sample(root / "cat" / "b.png", 10);
  write_sample(root / "cat" / "a.PNG", 20);       // endings compare case-insensitively
  write_sample(root / "cat" / "sub" / "c.png", 30);  // files of nested folders belong to the class, after the class's own
  write_sample(root / "dog" / "z.png", 40);
  write_sample(root / "dog" / "y.png", 50);
  std::ofstream((root / "dog" / "notes.txt").string()) << "not an image";
  std::ofstream((root / "README").string()) << "a file at the root is not a class";

  const ImageFolder folder(root.string());
  CHECK(folder.classes() == std::vector<std::string>{"cat", "dog"});
  CHECK(folder.class_to_idx().at("dog") == 1);
  std::vector<std::string> names;
  for (const auto& [path, label] : folder.samples()) names.push_back(std::filesystem::path(path).filename().string() + ":" + std::to_string(label));
  CHECK(names == std::vector<std::string>{"a.PNG:0", "b.png:0", "c.png:0", "y.png:1", "z.png:1"});
  CHECK(folder.targets() == std::vector<std::int64_t>{0, 0, 0, 1, 1});

  const auto [image, label] = *folder.get(1);  // rgb by default: the grey value in three channels, as Pillow converts
  CHECK(label == 0);
  CHECK(image.sizes() == torch::IntArrayRef{3, 6, 5});
  CHECK(image.dtype() == torch::kUInt8);
  CHECK(torch::equal(image, first.unsqueeze(0).expand({3, 6, 5})));
  CHECK(ImageFolder(root.string(), ImageFolderOptions().mode(ImageMode::gray)).get(1)->first.sizes() == torch::IntArrayRef{1, 6, 5});
  CHECK(ImageFolder(root.string(), ImageFolderOptions().mode(ImageMode::rgba)).get(1)->first[3].eq(255).all().item<bool>());
  CHECK(ImageFolder(root.string(), ImageFolderOptions().extensions({".Png"})).size() == 5);
  CHECK_THROWS_WITH_AS(folder.get(5), ("trainloop: ImageFolder " + root.string() + ": index 5 is out of range (5 samples)").c_str(),
                       std::out_of_range);

  // The transforms run on each example with its own generator: the same batches with 0 and 2 workers.
  auto batches = [&](std::int64_t workers) {
    ImageFolder augmented(root.string(), ImageFolderOptions(),
                          transforms::Compose(transforms::ToFloat{}, transforms::RandomCrop(4, 1), transforms::RandomHorizontalFlip{}));
    DataLoader loader(std::move(augmented), DataLoaderOptions().batch_size(2).shuffle(true).seed(3).workers(workers));
    std::vector<torch::Tensor> out;
    for (auto& [x, y] : loader) {
      CHECK(x.sizes().slice(1) == torch::IntArrayRef{3, 4, 4});
      CHECK(x.dtype() == torch::kFloat32);
      CHECK(y.dtype() == torch::kLong);
      out.push_back(x);
    }
    return out;
  };
  const auto serial = batches(0), threaded = batches(2);
  REQUIRE(serial.size() == 3);
  REQUIRE(threaded.size() == 3);
  for (std::size_t i = 0; i < serial.size(); ++i) CHECK(torch::equal(serial[i], threaded[i]));
}

TEST_CASE("ImageFolder: a folder without classes or with an empty class is an error; a bad file fails its batch, or is skipped and counted") {
  TempDir dir;
  const std::filesystem::path root = dir.path / "images";
  CHECK_THROWS_WITH_AS(ImageFolder(root.string()), contains("trainloop: ImageFolder " + root.string() + ": cannot list the folder"),
                       std::invalid_argument);
  std::filesystem::create_directories(root);
  CHECK_THROWS_WITH_AS(ImageFolder(root.string()), contains("found no class folder"), std::invalid_argument);
  write_sample(root / "a" / "0.png", 0);
  std::filesystem::create_directories(root / "b");
  std::filesystem::create_directories(root / "c");
  std::ofstream((root / "c" / "x.txt").string()) << "";
  CHECK_THROWS_WITH_AS(ImageFolder(root.string()),
                       ("trainloop: ImageFolder " + root.string() + ": found no valid file for the classes b, c. Supported extensions are: .jpg .jpeg .png").c_str(),
                       std::invalid_argument);
  std::filesystem::remove_all(root / "b");
  std::filesystem::remove_all(root / "c");
  for (int i = 1; i < 6; ++i) write_sample(root / "a" / (std::to_string(i) + ".png"), i);
  {  // cut short: the decoder's complaint, the file, the example and the epoch, in the training thread
    std::ifstream in((root / "a" / "3.png").string(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream((root / "a" / "3.png").string(), std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  for (std::int64_t workers : {0, 2}) {
    CAPTURE(workers);
    DataLoader strict(ImageFolder(root.string()), DataLoaderOptions().batch_size(2).workers(workers));
    auto epoch = [&] {
      for (auto& batch : strict) (void)batch;
    };
    CHECK_THROWS_WITH_AS(epoch(),
                         ("trainloop: " + (root / "a" / "3.png").string() + ": not a valid PNG file: the file ends early (truncated) (libpng) "
                          "[trainloop: DataLoader: while getting example 3 (epoch 0)]").c_str(),
                         ImageDecodeError);

    DataLoader lenient(ImageFolder(root.string(), ImageFolderOptions().skip_bad_files(true)), DataLoaderOptions().batch_size(2).workers(workers));
    for (int e = 0; e < 2; ++e) {
      std::vector<std::int64_t> sizes;
      for (auto& [x, y] : lenient) sizes.push_back(x.size(0));
      CHECK(sizes == std::vector<std::int64_t>{2, 1, 2});  // the batch of examples 2 and 3 is example 2 alone
    }
    CHECK(lenient.dataset().bad_files() == 2);  // once per epoch, by the loader's copy
    CHECK(lenient.dataset().bad_file_paths() == std::vector<std::string>{(root / "a" / "3.png").string()});
  }
  // A batch with nothing left is an error, not an empty batch.
  DataLoader single(ImageFolder(root.string(), ImageFolderOptions().skip_bad_files(true)), DataLoaderOptions().batch_size(1));
  auto epoch = [&] {
    for (auto& batch : single) (void)batch;
  };
  CHECK_THROWS_WITH_AS(epoch(), contains("the dataset skipped every example of the batch of example 3 (epoch 0)"), std::runtime_error);
}
#endif  // TRAINLOOP_WITH_IMAGE_IO

// --- streaming: StreamLoader ---------------------------------------------------------------------------------------
namespace {
// Record files: lines "r<id> <padding>" of varied lengths (one file empty, one without a final newline), and the same
// ids as 8-byte fixed-size records.
struct StreamFiles {
  std::vector<std::string> lines, records;
  std::int64_t count = 0;
  explicit StreamFiles(const TempDir& dir) {
    const std::vector<std::int64_t> sizes{37, 0, 101, 12};
    for (std::size_t f = 0; f < sizes.size(); ++f) {
      lines.push_back(dir.file("lines" + std::to_string(f) + ".txt"));
      records.push_back(dir.file("records" + std::to_string(f) + ".bin"));
      std::ofstream text(lines.back(), std::ios::binary), binary(records.back(), std::ios::binary);
      for (std::int64_t i = 0; i < sizes[f]; ++i, ++count) {
        text << "r" << count << " " << std::string(static_cast<std::size_t>(count * 7 % 23), 'x');
        if (f != 3 || i + 1 < sizes[f]) text << "\n";  // the last file's last line has no newline
        binary.write(reinterpret_cast<const char*>(&count), sizeof count);
      }
    }
  }
};
std::int64_t line_id(const std::string& line) { return std::stoll(line.substr(1, line.find(' ') - 1)); }
std::int64_t record_id(const std::string& bytes) {
  std::int64_t id = 0;
  std::memcpy(&id, bytes.data(), sizeof id);
  return id;
}
// A format with no way to find a boundary from an arbitrary offset: a length byte, then the bytes (whole files are
// dealt to the shares).
struct LengthPrefixed {
  using Record = std::string;
  std::optional<std::string> read(RecordFile& file) const {
    const int length = file.get();
    if (length < 0) return std::nullopt;
    std::string out(static_cast<std::size_t>(length), '\0');
    if (file.read(out.data(), out.size()) != out.size()) throw std::runtime_error("short record");
    return out;
  }
};
// The ids of one epoch, batch by batch.
template <class Loader>
std::vector<std::vector<std::int64_t>> stream_epoch(Loader& loader, std::int64_t max_batches = -1) {
  std::vector<std::vector<std::int64_t>> batches;
  for (auto it = loader.begin(); it != loader.end(); ++it) {  // ++ takes the next batch: stop before it
    const torch::Tensor& ids = *it;
    batches.emplace_back(ids.data_ptr<std::int64_t>(), ids.data_ptr<std::int64_t>() + ids.numel());
    if (static_cast<std::int64_t>(batches.size()) == max_batches) break;
  }
  return batches;
}
}  // namespace

TEST_CASE("StreamLoader: two workers x two ranks read every record exactly once per epoch: lines, fixed-size records, whole files") {
  TempDir dir;
  const StreamFiles files(dir);
  auto as_tensor = [](std::int64_t id) { return torch::tensor(id); };
  for (std::int64_t shuffle : {0, 16}) {
    for (int epoch = 0; epoch < 2; ++epoch) {
      CAPTURE(shuffle);
      CAPTURE(epoch);
      std::map<std::int64_t, int> lines_seen, records_seen;
      std::vector<std::int64_t> per_rank;
      for (std::int64_t rank : {0, 1}) {
        const auto options = StreamLoaderOptions().batch_size(5).workers(2).shuffle_buffer(shuffle).seed(3).shard(rank, 2);
        StreamLoader text(files.lines, TextLines{}, [&](const std::string& line) { return as_tensor(line_id(line)); }, options);
        StreamLoader binary(files.records, FixedSizeRecords(8), [&](const std::string& bytes) { return as_tensor(record_id(bytes)); }, options);
        text.set_epoch(epoch);
        binary.set_epoch(epoch);
        std::int64_t n = 0;
        for (const auto& batch : stream_epoch(text))
          for (std::int64_t id : batch) ++lines_seen[id], ++n;
        for (const auto& batch : stream_epoch(binary))
          for (std::int64_t id : batch) ++records_seen[id];
        per_rank.push_back(n);
      }
      CHECK(lines_seen.size() == static_cast<std::size_t>(files.count));
      CHECK(records_seen.size() == static_cast<std::size_t>(files.count));
      CHECK(std::all_of(lines_seen.begin(), lines_seen.end(), [](const auto& kv) { return kv.second == 1; }));
      CHECK(std::all_of(records_seen.begin(), records_seen.end(), [](const auto& kv) { return kv.second == 1; }));
      CHECK(std::abs(per_rank[0] - per_rank[1]) < files.count / 4);  // byte ranges: about even
    }
  }
  // A format that cannot align: whole files dealt to the four shares, still each record once.
  std::vector<std::string> prefixed;
  for (int f = 0; f < 6; ++f) {
    prefixed.push_back(dir.file("prefixed" + std::to_string(f)));
    std::ofstream out(prefixed.back(), std::ios::binary);
    for (int i = 0; i < 5; ++i) out << char(3) << char('a' + f) << char('0' + i) << "!";
  }
  std::map<std::string, int> seen;
  for (std::int64_t rank : {0, 1}) {
    StreamLoader loader(prefixed, LengthPrefixed{}, [](const std::string& r) { return torch::tensor(std::int64_t{r[0] * 100 + r[1]}); },
                        StreamLoaderOptions().batch_size(3).workers(2).shard(rank, 2));
    for (const auto& batch : stream_epoch(loader))
      for (std::int64_t v : batch) ++seen[std::string{char(v / 100), char(v % 100)}];
  }
  CHECK(seen.size() == 30);
  CHECK(std::all_of(seen.begin(), seen.end(), [](const auto& kv) { return kv.second == 1; }));
}

TEST_CASE("StreamLoader: a restored position continues after the last batch taken, reading only what was not consumed") {
  TempDir dir;
  const StreamFiles files(dir);
  std::shared_ptr<std::atomic<std::int64_t>> reads = std::make_shared<std::atomic<std::int64_t>>(0);
  // Counts every record read from the files (the shuffle buffer's re-reads after a restore included).
  struct CountingLines {
    using Record = std::string;
    std::shared_ptr<std::atomic<std::int64_t>> reads;
    std::optional<std::string> read(RecordFile& file) const {
      auto line = TextLines{}.read(file);
      if (line) ++*reads;
      return line;
    }
    void align(RecordFile& file, std::uint64_t offset) const { TextLines{}.align(file, offset); }
  };
  auto parse = [](const std::string& line, torch::Generator& generator) {  // a random part: drawn per record
    return std::make_pair(torch::tensor(line_id(line)), torch::rand({1}, generator));
  };
  for (std::int64_t workers : {0, 2}) {
    CAPTURE(workers);
    const auto options = StreamLoaderOptions().batch_size(4).workers(workers).shuffle_buffer(8).seed(11);
    auto flat = [](auto& loader, std::int64_t max_batches) {
      std::vector<std::pair<std::int64_t, float>> out;
      std::int64_t taken = 0;
      for (auto it = loader.begin(); it != loader.end(); ++it) {  // ++ takes the next batch: stop before it
        for (std::int64_t i = 0; i < it->first.size(0); ++i) out.emplace_back(it->first[i].template item<std::int64_t>(), it->second[i][0].template item<float>());
        if (++taken == max_batches) break;
      }
      return out;
    };
    StreamLoader whole(files.lines, CountingLines{reads}, parse, options);
    whole.set_epoch(1);
    const auto expected = flat(whole, -1);
    REQUIRE(expected.size() == static_cast<std::size_t>(files.count));

    StreamLoader first(files.lines, CountingLines{reads}, parse, options);
    first.set_epoch(1);
    const auto head = flat(first, 9);  // 9 batches taken; the workers have read further ahead
    const StateDict state = first.state_dict();
    auto second_reads = std::make_shared<std::atomic<std::int64_t>>(0);  // the first loader's workers may still read ahead
    StreamLoader second(files.lines, CountingLines{second_reads}, parse, options);
    second.load_state_dict(state);
    auto rest = flat(second, -1);
    CHECK(second.epoch() == 1);
    std::vector<std::pair<std::int64_t, float>> joined = head;
    joined.insert(joined.end(), rest.begin(), rest.end());
    CHECK(joined == expected);  // the same records, in the same order, with the same random draws
    CHECK(*second_reads == static_cast<std::int64_t>(rest.size()));  // nothing consumed was read again
    // A finished epoch stays finished: restored, it yields nothing more; the next pass is the next epoch, whole.
    StreamLoader third(files.lines, CountingLines{reads}, parse, options);
    third.load_state_dict(second.state_dict());
    CHECK(flat(third, -1).empty());
    CHECK(flat(third, -1).size() == expected.size());
    CHECK(third.epoch() == 2);
  }
  // The configuration must match.
  StreamLoader other(files.lines, TextLines{}, [](const std::string& l) { return torch::tensor(line_id(l)); },
                     StreamLoaderOptions().batch_size(5));
  StreamLoader saved(files.lines, TextLines{}, [](const std::string& l) { return torch::tensor(line_id(l)); },
                     StreamLoaderOptions().batch_size(4));
  CHECK_THROWS_WITH_AS(other.load_state_dict(saved.state_dict()), "trainloop: StreamLoader state: 'batch_size' was 4 when saved, this loader has 5",
                       std::invalid_argument);
}

TEST_CASE("StreamLoader: a truncated final record is an error naming the file and the offset, raised in the training thread") {
  TempDir dir;
  const std::string path = dir.file("cut.bin");
  std::ofstream(path, std::ios::binary) << std::string(8 * 5 + 3, 'z');
  for (std::int64_t workers : {0, 2}) {
    CAPTURE(workers);
    StreamLoader loader({path}, FixedSizeRecords(8), [](const std::string&) { return torch::zeros({1}, torch::kLong); },
                        StreamLoaderOptions().batch_size(2).workers(workers));
    CHECK_THROWS_WITH_AS(stream_epoch(loader),
                         ("trainloop: " + path + ": the record at offset 40 is truncated: 3 of 8 bytes (the file's size, 43, is not a "
                          "multiple of the record size) [trainloop: StreamLoader: while reading " + path + ", offset 40]").c_str(),
                         std::runtime_error);
  }
  CHECK_THROWS_WITH_AS(StreamLoader({dir.file("missing.txt")}, TextLines{}, [](const std::string&) { return torch::zeros({1}); },
                                    StreamLoaderOptions()),
                       ("trainloop: cannot open " + dir.file("missing.txt") + ": No such file or directory").c_str(), std::runtime_error);
}

TEST_CASE("StreamLoader drives the Engine and the Trainer: an epoch ends with the data, or at limit_train_batches") {
  TempDir dir;
  const StreamFiles files(dir);
  StreamLoader loader(files.records, FixedSizeRecords(8), [](const std::string& bytes) { return torch::tensor(record_id(bytes)); },
                      StreamLoaderOptions().batch_size(10).workers(2).shuffle_buffer(32));
  std::int64_t records = 0;
  auto engine = make_engine<torch::Tensor>([&](torch::Tensor& ids) { records += ids.numel(); });
  engine.run(loader, max_epochs(3));
  CHECK(records == 3 * files.count);
  CHECK(engine.state.epoch_length.has_value());  // the first pass told it
  CHECK(loader.epoch() == 2);

  struct Counter : LightningModule<Counter> {
    torch::nn::Linear fc{nullptr};
    std::int64_t seen = 0;
    Counter() { fc = register_module("fc", torch::nn::Linear(1, 1)); }
    torch::Tensor training_step(torch::Tensor& ids, std::int64_t) {
      seen += ids.numel();
      return fc(ids.to(torch::kFloat).unsqueeze(1)).mean();
    }
    std::shared_ptr<torch::optim::SGD> configure_optimizers() { return std::make_shared<torch::optim::SGD>(parameters(), 0.0); }
  };
  Counter module;
  Trainer(TrainerOptions().barebones(true).max_epochs(2).accelerator("cpu")).fit(module, loader);
  CHECK(module.seen == 2 * files.count);
  Counter limited;
  Trainer trainer(TrainerOptions().barebones(true).max_epochs(2).accelerator("cpu").limit_train_batches(3));
  trainer.fit(limited, loader);
  CHECK(limited.seen == 2 * 3 * 10);
  CHECK(trainer.global_step() == 6);
}
