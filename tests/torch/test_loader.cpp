// TensorDataset and DataLoader: batching, seeded shuffling independent of the global RNG, distributed shards,
// saving and restoring the position, errors; datasets of the user's type (collation, get_batch, collate functions,
// stacking errors), worker threads (order, bounded prefetch, exceptions, early exits, no thread left), randomness per
// example independent of workers, ranks and resumes; transforms; and the loader driving the Engine and the Trainer.
// LibTorch first: where it brings glog (Debian's builds), its one-argument CHECK must be replaced by doctest's, as the
// precompiled header's order does in the CMake build (the LibTorch 2.x syntax check compiles this file without it).
#include <trainloop.hpp>
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <set>
#include <thread>
#include <vector>

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

TEST_CASE("transforms: functional forms, random ones from the generator, composed with lambdas; errors name the shape") {
  const torch::Tensor image = torch::arange(2 * 3 * 4, torch::kFloat).view({2, 3, 4});
  CHECK(torch::equal(transforms::hflip(image)[0][0], torch::tensor({3.f, 2.f, 1.f, 0.f})));
  CHECK(torch::equal(transforms::crop(image, 1, 1, 2, 2)[0], torch::tensor({5.f, 6.f, 9.f, 10.f}).view({2, 2})));
  CHECK(transforms::crop(image, -1, 3, 2, 2)[0].sum().item<float>() == 3.f);  // outside: zeros, as torchvision
  CHECK(transforms::pad(image, {1, 0, 0, 0}, 0, transforms::PaddingMode::reflect)[0][0][0].item<float>() == 1.f);
  CHECK(transforms::pad(image, {1, 0, 0, 0}, 0, transforms::PaddingMode::symmetric)[0][0][0].item<float>() == 0.f);
  CHECK(transforms::pad(image, {0, 0, 2, 0}, 0, transforms::PaddingMode::edge)[0][0][5].item<float>() == 3.f);
  const torch::Tensor bytes = torch::randint(0, 256, {5, 6, 3}, torch::kByte);
  const torch::Tensor chw = transforms::ToFloat{transforms::Layout::HWC}(bytes);
  CHECK(chw.sizes().vec() == std::vector<std::int64_t>{3, 5, 6});
  CHECK(chw[2][4][5].item<float>() == bytes[4][5][2].item<float>() / 255);
  CHECK(transforms::Resize(std::vector<std::int64_t>{10, 12})(chw).sizes().vec() == std::vector<std::int64_t>{3, 10, 12});
  CHECK(transforms::Resize(10)(chw).sizes().vec() == std::vector<std::int64_t>{3, 10, 12});  // the shorter edge
  CHECK((transforms::resize(bytes.permute({2, 0, 1}), {3, 3}).scalar_type() == torch::kByte));

  auto augment = transforms::Compose(transforms::ToFloat{}, transforms::RandomCrop(4, 1), transforms::RandomHorizontalFlip{},
                                     [](torch::Tensor x) { return x * 2; }, transforms::Normalize({0.5}, {0.25}));
  auto g1 = torch::make_generator<torch::CPUGeneratorImpl>(5), g2 = torch::make_generator<torch::CPUGeneratorImpl>(5);
  const torch::Tensor one = torch::randint(0, 256, {1, 6, 6}, torch::kByte);
  CHECK(torch::equal(augment(one, g1), augment(one, g2)));
  CHECK(augment(one, g1).sizes().vec() == std::vector<std::int64_t>{1, 4, 4});

  CHECK_THROWS_WITH_AS(transforms::to_float(torch::zeros({4, 4})),
                       "trainloop: transforms::to_float: expected an image of 3 dimensions (C, H, W), got shape [4, 4]",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(transforms::RandomCrop(8)(image, g1),
                       "trainloop: transforms::RandomCrop: the crop 8x8 is larger than the (padded) image 3x4",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(transforms::normalize(image, {0.5, 0.5, 0.5}, {1, 1, 1}),
                       "trainloop: transforms::normalize: mean has 3 values for an image of 2 channels", std::invalid_argument);
}
