// Uses the header as a consumer would: `#include <trainloop.hpp>` through the trainloop::trainloop target.
#include <trainloop.hpp>

#if defined(CONSUMER_HELPERS) && !TRAINLOOP_SEPARATE_COMPILATION
#error "trainloop_separate_compilation() did not set TRAINLOOP_SEPARATE_COMPILATION"
#endif

#include <cstdio>
#include <vector>

int main() {
  static_assert(!trainloop::with_torch, "this consumer is built against the torch-free package");
  std::vector<int> data{1, 2, 3};
  int sum = 0;
  auto engine = trainloop::make_engine([&sum](int& b) { sum += b; });
  engine.run(data, trainloop::max_epochs(2));
  std::printf("trainloop %s%s: sum %d\n", trainloop::version_string, TRAINLOOP_SEPARATE_COMPILATION ? " (separately compiled)" : "", sum);
  return sum == 12 ? 0 : 1;
}
