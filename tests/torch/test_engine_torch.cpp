// The Engine driving LibTorch: tensor batches, LibTorch's own torch::data loaders as data, a real optimisation.
#include <doctest/doctest.h>
#include <trainloop.hpp>

#include <utility>
#include <vector>

using namespace trainloop;
using Batch = std::pair<torch::Tensor, torch::Tensor>;

TEST_CASE("an Engine trains a linear model on tensor batches, and an evaluator Engine measures it") {
  torch::manual_seed(0);
  const torch::Tensor true_w = torch::tensor({{2.0f}, {-3.0f}});
  std::vector<Batch> train;
  for (int i = 0; i < 16; ++i) {
    torch::Tensor x = torch::randn({32, 2});
    train.emplace_back(x, x.mm(true_w) + 0.5);
  }
  torch::nn::Linear model(2, 1);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1));
  auto trainer = make_engine([&](EngineCore&, Batch& batch) {
    optimizer.zero_grad();
    torch::Tensor loss = torch::mse_loss(model(batch.first), batch.second);
    loss.backward();
    optimizer.step();
    return loss.detach();  // stays a tensor: no host sync per step
  });
  static_assert(std::is_same_v<decltype(trainer)::output_type, torch::Tensor>, "output is the step's tensor");

  auto evaluator = make_engine([&](Batch& batch) {
    torch::NoGradGuard no_grad;
    return torch::mse_loss(model(batch.first), batch.second, torch::Reduction::Sum);
  });
  torch::Tensor sum;
  evaluator.on(Events::started, [&] { sum = torch::zeros({}); });
  evaluator.on(Events::iteration_completed, [&](auto& e) { sum += e.output(); });
  std::vector<double> epoch_mse;
  trainer.on(Events::epoch_completed, [&] {
    evaluator.run(train);
    epoch_mse.push_back(sum.item<double>() / (16 * 32));
  });
  trainer.run(train, max_epochs(5));
  REQUIRE(epoch_mse.size() == 5);
  CHECK(epoch_mse.back() < 1e-3);
  CHECK(epoch_mse.back() < epoch_mse.front());
  CHECK(model->weight[0][0].item<float>() == doctest::Approx(2.0).epsilon(0.01));
}

TEST_CASE("LibTorch's torch::data loader is a data source, epoch after epoch") {
  torch::Tensor inputs = torch::arange(10, torch::kFloat32).unsqueeze(1);
  auto dataset = torch::data::datasets::TensorDataset(inputs).map(torch::data::transforms::Stack<torch::data::TensorExample>());
  auto loader = torch::data::make_data_loader<torch::data::samplers::SequentialSampler>(
      std::move(dataset), torch::data::DataLoaderOptions().batch_size(4));
  using LoaderBatch = torch::data::TensorExample;
  std::vector<std::int64_t> sizes;
  double total = 0;
  auto engine = make_engine<LoaderBatch>([&](LoaderBatch& batch) {
    sizes.push_back(batch.data.size(0));
    total += batch.data.sum().item<double>();
  });
  engine.run(*loader, max_epochs(2));
  CHECK(sizes == std::vector<std::int64_t>{4, 4, 2, 4, 4, 2});
  CHECK(total == 2 * 45.0);
  CHECK(engine.state.epoch_length == 3u);  // learnt from the first pass: the loader has no size()
}
