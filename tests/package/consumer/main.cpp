// Uses the header as a consumer would: `#include <trainloop.hpp>` through the trainloop::trainloop target.
#include <trainloop.hpp>

#include <cstdio>
#include <vector>

int main() {
  static_assert(!trainloop::with_torch, "this consumer is built against the torch-free package");
  std::vector<int> data{1, 2, 3};
  int sum = 0;
  auto engine = trainloop::make_engine([&sum](int& b) { sum += b; });
  engine.run(data, trainloop::max_epochs(2));
  std::printf("trainloop %s: sum %d\n", trainloop::version_string, sum);
  return sum == 12 ? 0 : 1;
}
