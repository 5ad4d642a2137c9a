// CUDA checks of the histograms (parts/torch/media.hpp, callbacks/histograms.hpp), built and run by tools/gpu_check.sh:
//  1. histogram_of a CUDA tensor (tensor operations on the device, one transfer of the counts) equals the CPU's host
//     pass on the same values, TensorFlow's edges (every edge and the points between them too) and chosen ones;
//  2. ParameterHistograms under "16-mixed" logs the gradients the optimizer applies: unscaled (the scaler's 65536x
//     gone), the same sum of squares as the parameters' .grad() at on_before_optimizer_step;
//  3. its cost: the example's CNN on CUDA, with and without the callback every 100 steps (the ratio printed).
// Prints one line per check and exits non-zero when one fails.
#include <trainloop.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "../../bench/bench_models.hpp"
#include "report.hpp"

using namespace trainloop;
using bench::Batch;
using bench::Cnn;

namespace {
bool same(const Histogram& a, const Histogram& b) {
  return a.bucket_limits == b.bucket_limits && a.bucket_counts == b.bucket_counts && a.num == b.num && a.min == b.min &&
         a.max == b.max && std::abs(a.sum - b.sum) <= 1e-9 * (1 + std::abs(b.sum)) &&
         std::abs(a.sum_squares - b.sum_squares) <= 1e-9 * b.sum_squares;
}

// A logger that keeps the histograms it gets (and takes the scalars, so the Trainer counts it as a logger).
struct HistogramSink {
  std::map<std::string, Histogram> last;
  void log_metrics(std::int64_t, const std::map<std::string, double>&) {}
  void log_histogram(const std::string& tag, const Histogram& h, std::int64_t) { last[tag] = h; }
};
// What the optimizer is about to apply, seen at the same hook after ParameterHistograms.
struct GradientProbe {
  std::map<std::string, double> sum_squares;
  template <class T, class M>
  void on_before_optimizer_step(T&, M& module, torch::optim::Optimizer&) {
    for (const auto& p : module.named_parameters())
      if (p.value().grad().defined()) sum_squares[p.key()] = p.value().grad().to(torch::kFloat64).pow(2).sum().template item<double>();
  }
};

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  if (!torch::cuda::is_available()) {
    std::printf("media_cuda: no CUDA device\n");
    return 1;
  }
  const torch::Device cuda(torch::kCUDA, 0);
  torch::manual_seed(0);
  {
    const torch::Tensor w = torch::cat({torch::randn({200000}) * 0.05, torch::zeros({100}), torch::tensor({1e-12f, -1e-12f})});
    const torch::Tensor edges = torch::tensor(tensorflow_bucket_edges(), torch::kFloat64);
    const torch::Tensor between = torch::cat({edges, -edges, (edges.narrow(0, 0, 1548) + edges.narrow(0, 1, 1548)) / 2});
    const std::vector<double> chosen{-0.1, -0.01, 0.0, 0.01, 0.1};
    report("histogram_of on CUDA == the CPU's (TensorFlow's edges)", same(histogram_of(w.to(cuda)), histogram_of(w)));
    report("histogram_of on CUDA == the CPU's (every edge, between them)", same(histogram_of(between.to(cuda)), histogram_of(between)));
    report("histogram_of on CUDA == the CPU's (chosen edges)", same(histogram_of(w.to(cuda), chosen), histogram_of(w, chosen)));
  }
  std::vector<Batch> data;
  for (int i = 0; i < 300; ++i)
    data.emplace_back(torch::rand({64, 1, 28, 28}).to(cuda), torch::randint(10, {64}, torch::kLong).to(cuda));
  const auto options = TrainerOptions().accelerator("cuda").max_epochs(1).enable_progress_bar(false)
                           .enable_model_summary(false).num_sanity_val_steps(0);
  {
    Cnn model;
    ParameterHistograms::Options every;
    every.every_n_steps = 1;
    Trainer trainer(TrainerOptions(options).precision("16-mixed").limit_train_batches(3), HistogramSink(),
                    ParameterHistograms(every), GradientProbe());
    trainer.fit(model, data);
    const auto& logged = trainer.callback<HistogramSink>().last;
    const auto& applied = trainer.callback<GradientProbe>().sum_squares;
    bool ok = !applied.empty();
    std::string detail;
    for (const auto& [name, sum_squares] : applied) {
      std::string tag = "grads/" + name;
      for (char& c : tag)
        if (c == '.') c = '/';
      const auto it = logged.find(tag);
      ok = ok && it != logged.end() && std::abs(it->second.sum_squares - sum_squares) <= 1e-6 * sum_squares;
      if (name == "fc1.weight" && it != logged.end()) detail = "fc1.weight: " + std::to_string(it->second.sum_squares);
    }
    report("16-mixed: the gradients' histograms are the unscaled gradients", ok, detail);
  }
  {
    Cnn model;
    model.to(cuda);
    VersionedLoggerOptions plain_logs, histogram_logs;
    plain_logs.save_dir = "/tmp/trainloop_media_cuda/plain";
    histogram_logs.save_dir = "/tmp/trainloop_media_cuda/histograms";
    Trainer plain(options, TensorBoardLogger(plain_logs));
    Trainer with_histograms(options, TensorBoardLogger(histogram_logs), ParameterHistograms());
    std::vector<double> a, b;
    for (int round = 0; round < 7; ++round) {
      for (auto* times : {&a, &b}) {
        torch::cuda::synchronize();
        const auto start = std::chrono::steady_clock::now();
        times == &a ? plain.fit(model, data) : with_histograms.fit(model, data);
        torch::cuda::synchronize();
        times->push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      }
    }
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    char line[160];
    std::snprintf(line, sizeof line, "%.1f us/step without, %.1f with: ratio %.3f", a[3] / 300 * 1e6, b[3] / 300 * 1e6, b[3] / a[3]);
    report("ParameterHistograms(every 100 steps) on CUDA, the example's CNN", true, line);
  }
  return failures ? 1 : 0;
}
