// compile_cost: the torch-free Engine (Compiler Explorer's case): a step function, a Timer and a filtered handler.
#include <trainloop.hpp>

#include <cstdio>
#include <vector>

int main() {
  using namespace trainloop;
  std::vector<double> data(1000, 1.0);
  double w = 0;
  auto engine = make_engine([&w](double& x) { w -= 0.01 * (w * x - 2 * x) * x; }, Timer{});
  engine.on(Events::epoch_completed | every(1), [&w](auto& e) { std::printf("epoch %d w = %f\n", int(e.state.epoch), w); });
  engine.run(data, max_epochs(3));
  return w > 1.9 ? 0 : 1;
}
