// TensorDataset and DataLoader: batching, seeded shuffling independent of the global RNG, distributed shards,
// prefetching, saving and restoring the position, errors; and the loader driving the Engine and the Trainer.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <set>
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
  auto [x, y] = ds.gather(torch::tensor({4, 1}, torch::kLong));
  CHECK(x.sizes().vec() == std::vector<std::int64_t>{2, 3});
  CHECK(y[0].item<std::int64_t>() == 40);
  TensorDataset<3> three(torch::zeros({2}), torch::ones({2}), torch::zeros({2, 7}));
  static_assert(std::is_same_v<TensorBatch<3>, std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>>, "tuple batch");
  CHECK(std::get<2>(three.gather(torch::tensor({1}, torch::kLong))).size(1) == 7);
}

TEST_CASE("DataLoader: batch count, drop_last, sequential order") {
  DataLoader<2> loader(indexed(10), DataLoaderOptions().batch_size(4));
  CHECK(loader.size() == 3);
  CHECK(epoch_indices(loader) == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  DataLoader<2> dropping(indexed(10), DataLoaderOptions().batch_size(4).drop_last(true));
  CHECK(dropping.size() == 2);
  CHECK(epoch_indices(dropping).size() == 8);
  CHECK_THROWS_WITH_AS(DataLoader<2>(indexed(3), DataLoaderOptions().batch_size(0)),
                       "trainloop: DataLoader: batch_size must be at least 1, got 0", std::invalid_argument);
  CHECK_THROWS_WITH_AS(DataLoader<2>(indexed(3), DataLoaderOptions().shard(2, 2)),
                       "trainloop: DataLoader: rank 2 is not in [0, world_size 2)", std::invalid_argument);
}

TEST_CASE("DataLoader: shuffling is seeded, differs per epoch, and ignores the global RNG") {
  DataLoaderOptions options = DataLoaderOptions().batch_size(3).shuffle(true).seed(42);
  DataLoader<2> a(indexed(20), options), b(indexed(20), options);
  torch::manual_seed(1);
  const auto a1 = epoch_indices(a);
  torch::manual_seed(999);  // e.g. a dropout layer consumed random numbers: the data order must not change
  const auto b1 = epoch_indices(b);
  CHECK(a1 == b1);
  const auto a2 = epoch_indices(a);
  CHECK(a2 != a1);  // the next epoch is another order
  CHECK(std::set<std::int64_t>(a2.begin(), a2.end()).size() == 20);
  DataLoader<2> other_seed(indexed(20), DataLoaderOptions().batch_size(3).shuffle(true).seed(43));
  CHECK(epoch_indices(other_seed) != a1);
  b.set_epoch(1);  // set_epoch agrees on the order, as DistributedSampler's does
  CHECK(epoch_indices(b) == a2);
}

TEST_CASE("DataLoader: distributed shards are disjoint, cover the data, equal in length (padded), reshuffled by set_epoch") {
  const std::int64_t world = 3;
  std::vector<std::int64_t> all;
  std::size_t length = 0;
  for (std::int64_t rank = 0; rank < world; ++rank) {
    DataLoader<2> loader(indexed(10), DataLoaderOptions().batch_size(2).shuffle(true).seed(5).shard(rank, world));
    const auto shard = epoch_indices(loader);
    CHECK(shard.size() == 4);  // ceil(10 / 3)
    CHECK(loader.size() == 2);
    length = shard.size();
    all.insert(all.end(), shard.begin(), shard.end());
  }
  CHECK(all.size() == length * world);  // 12: two examples repeated to pad
  CHECK(std::set<std::int64_t>(all.begin(), all.end()).size() == 10);  // every example seen

  DataLoader<2> rank0(indexed(10), DataLoaderOptions().batch_size(2).shuffle(true).seed(5).shard(0, world));
  rank0.set_epoch(7);
  const auto e7 = epoch_indices(rank0);
  rank0.set_epoch(8);
  CHECK(epoch_indices(rank0) != e7);
}

TEST_CASE("DataLoader: the position is saved and restored: a resumed epoch continues exactly") {
  DataLoaderOptions options = DataLoaderOptions().batch_size(2).shuffle(true).seed(3);
  DataLoader<2> full(indexed(12), options);
  epoch_indices(full);  // epoch 0
  const auto epoch1 = epoch_indices(full);

  DataLoader<2> interrupted(indexed(12), options);
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

  DataLoader<2> resumed(indexed(12), options);
  resumed.load_state_dict(saved);
  const auto rest = epoch_indices(resumed);
  std::vector<std::int64_t> joined = first_part;
  joined.insert(joined.end(), rest.begin(), rest.end());
  CHECK(joined == epoch1);
  CHECK(resumed.epoch() == 1);

  DataLoader<2> different(indexed(12), DataLoaderOptions().batch_size(4).shuffle(true).seed(3));
  CHECK_THROWS_WITH_AS(different.load_state_dict(saved),
                       "trainloop: DataLoader state: 'batch_size' was 2 when saved, this loader has 4",
                       std::invalid_argument);
  StateDict broken = saved;
  broken.erase("epoch");
  CHECK_THROWS_WITH_AS(resumed.load_state_dict(broken), "trainloop: DataLoader state: key 'epoch' is missing",
                       std::invalid_argument);
}

TEST_CASE("DataLoader: prefetching yields the same batches, in order, and stops cleanly mid-epoch") {
  DataLoaderOptions options = DataLoaderOptions().batch_size(5).shuffle(true).seed(11);
  DataLoader<2> plain(indexed(103), options);
  DataLoader<2> prefetched(indexed(103), DataLoaderOptions(options).prefetch(3));
  for (int epoch = 0; epoch < 3; ++epoch) CHECK(epoch_indices(plain) == epoch_indices(prefetched));
  auto it = prefetched.begin();
  *it;  // abandon the epoch after one batch: the next begin() (or the destructor) stops the worker
  CHECK(epoch_indices(prefetched).size() == 103);
}

TEST_CASE("the DataLoader drives an Engine (Ignite epochs) and the Trainer") {
  DataLoader<2> loader(indexed(10), DataLoaderOptions().batch_size(4).shuffle(true));
  std::int64_t examples = 0;
  auto engine = make_engine<TensorBatch<2>>([&](TensorBatch<2>& b) { examples += b.first.size(0); });
  engine.run(loader, max_epochs(3));
  CHECK(examples == 30);
  CHECK(engine.state.epoch_length == 3u);  // the loader has a size
  CHECK(loader.epoch() == 2);              // three epochs: 0, 1, 2
}
