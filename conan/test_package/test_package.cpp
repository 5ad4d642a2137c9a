// The Conan package's test: the torch-free Engine runs a step function over data with a filtered handler.
#include <trainloop.hpp>

#include <cstdio>
#include <vector>

int main() {
  static_assert(!trainloop::with_torch, "the test package consumes trainloop with with_torch=False");
  std::vector<int> data{1, 2, 3, 4};
  int sum = 0, every_second = 0;
  auto engine = trainloop::make_engine([&sum](int& batch) { sum += batch; });
  engine.on(trainloop::Events::iteration_completed | trainloop::every(2), [&every_second](auto&) { ++every_second; });
  engine.run(data, trainloop::max_epochs(3));
  std::printf("trainloop %s: sum %d, handler called %d times\n", trainloop::version_string, sum, every_second);
  return sum == 30 && every_second == 6 ? 0 : 1;
}
