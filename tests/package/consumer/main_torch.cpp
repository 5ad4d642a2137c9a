// Uses the header with LibTorch as a consumer would: `#include <trainloop.hpp>` through trainloop::trainloop (or
// pkg-config's flags), a metric over tensors, so the program links LibTorch through what the package says.
#include <trainloop.hpp>

#if defined(CONSUMER_HELPERS) && !TRAINLOOP_SEPARATE_COMPILATION
#error "trainloop_separate_compilation() did not set TRAINLOOP_SEPARATE_COMPILATION"
#endif

#include <cstdio>

int main() {
  static_assert(trainloop::with_torch, "this consumer is built against the package with torch");
  trainloop::Accuracy accuracy(trainloop::ClassificationOptions().num_classes(3));
  accuracy.update(torch::tensor({{0.1, 0.8, 0.1}, {0.7, 0.2, 0.1}, {0.2, 0.2, 0.6}, {0.3, 0.3, 0.4}}),
                  torch::tensor({1, 2, 2, 0}, torch::kLong));
  const double value = accuracy.compute().item<double>();
  std::printf("trainloop %s%s with LibTorch: accuracy %.2f\n", trainloop::version_string, TRAINLOOP_SEPARATE_COMPILATION ? " (separately compiled)" : "", value);
  return value == 0.5 ? 0 : 1;
}
