// CUDA checks of the metrics' value checks, built and run by tools/gpu_check.sh on a machine with a GPU:
//  1. an out-of-range multiclass label on CUDA triggers no device-side assert (which would kill the CUDA context):
//     update() counts it on the device, compute() throws naming the metric and the count, and the context still works;
//  2. binary targets other than 0/1 and NaN scores on CUDA: the same, and the counts are right;
//  3. the counts agree with the CPU's values when all is valid (the device path computes what the CPU path does).
// Prints one line per check and exits non-zero when one fails.
#include <trainloop.hpp>

#include <cmath>
#include <cstdio>
#include <string>

#include "report.hpp"

using namespace trainloop;

namespace {
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}
}  // namespace

int main() {
  if (!torch::cuda::is_available()) {
    std::printf("metrics_cuda: no CUDA device\n");
    return 1;
  }
  const torch::Device cuda(torch::kCUDA, 0);
  {
    ConfusionMatrix matrix(3);
    Accuracy accuracy(ClassificationOptions().num_classes(3));
    const auto labels = torch::tensor({0, 1, 7, 2}, torch::kLong).to(cuda);
    const auto scores = torch::rand({4, 3}).to(cuda);
    const std::string update_error = error_of([&] {
      matrix.update(scores, labels);
      accuracy.update(scores, labels);
    });
    const std::string compute_error = error_of([&] { matrix.compute(); });
    const bool context_alive = torch::ones({2}, cuda).sum().item<double>() == 2.0;
    report("multiclass label out of range: no device assert, compute() raises",
           update_error.empty() && compute_error.find("ConfusionMatrix: 1 invalid entries") != std::string::npos &&
               error_of([&] { accuracy.compute(); }).find("Accuracy: 1 invalid entries") != std::string::npos &&
               context_alive,
           compute_error);
  }
  {
    Precision precision(ClassificationOptions().task(Task::binary));
    precision.update(torch::tensor({0.2, std::nan(""), 0.9, 0.7}).to(cuda), torch::tensor({0, 1, 2, 1}).to(cuda));
    const std::string error = error_of([&] { precision.compute(); });
    report("binary NaN score and target 2 on CUDA: counted, raised at compute()",
           error.find("Precision: 2 invalid entries") != std::string::npos, error);
  }
  {
    const auto scores = torch::rand({64, 5});
    const auto labels = torch::randint(0, 5, {64}, torch::kLong);
    FBeta cpu = F1(ClassificationOptions().num_classes(5)), gpu = F1(ClassificationOptions().num_classes(5));
    cpu.update(scores, labels);
    gpu.update(scores.to(cuda), labels.to(cuda));
    const double a = cpu.compute().item<double>(), b = gpu.compute().item<double>();
    // The counts are exact; the macro mean's float reduction may differ in its last bit between CPU and CUDA.
    char detail[64];
    std::snprintf(detail, sizeof detail, "%.9g vs %.9g", a, b);
    report("valid inputs: CUDA and CPU agree (within 1e-6)", std::abs(a - b) <= 1e-6, detail);
  }
  return failures == 0 ? 0 : 1;
}
