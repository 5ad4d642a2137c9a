// What the Engine costs per iteration: an empty step with 0, 1 and 4 compile-time handlers (one of them filtered
// every(100)), and a type-erased run-time handler, against a plain `for` loop doing the same empty work.
// Torch-free. Prints nanoseconds per iteration and the ratio to the plain loop.
//
//   engine_overhead [--smoke]
#include <trainloop.hpp>

#include <cstdint>
#include <cstring>
#include <vector>

#include "bench_common.hpp"

using namespace trainloop;

namespace {
struct CountIterations {
  std::uint64_t n = 0;
  template <class E>
  void on_iteration_completed(E&) noexcept {
    ++n;
  }
};
struct CountStarts {
  std::uint64_t n = 0;
  template <class E>
  void on_iteration_started(E&) noexcept {
    ++n;
  }
};
struct CountEpochs {
  std::uint64_t n = 0;
  template <class E>
  void on_epoch_completed(E&) noexcept {
    ++n;
  }
};
}  // namespace

int main(int argc, char** argv) {
  const bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  const std::size_t length = smoke ? 10000 : 1000000;
  const std::uint64_t epochs = 4;
  const int rounds = smoke ? 3 : 15;
  std::vector<int> data(length, 1);
  const double iterations = double(length) * double(epochs);

  auto empty_step = [](int& batch) { bench::keep(batch); };
  std::uint64_t filtered_calls = 0;

  auto engine0 = make_engine<int>(empty_step);
  auto engine1 = make_engine<int>(empty_step, CountIterations{});
  auto engine4 = make_engine<int>(empty_step, CountIterations{}, CountStarts{}, CountEpochs{},
                                  on(Events::iteration_completed | every(100), [&filtered_calls] { ++filtered_calls; }));
  auto engine_runtime = make_engine<int>(empty_step);
  engine_runtime.on(Events::iteration_completed | every(100), [&filtered_calls] { ++filtered_calls; });

  std::vector<bench::Variant> variants{
      {"plain for loop (baseline)",
       [&] {
         for (std::uint64_t e = 0; e < epochs; ++e)
           for (int& batch : data) empty_step(batch);
       },
       iterations},
      {"Engine, 0 handlers", [&] { engine0.run(data, max_epochs(epochs)); }, iterations},
      {"Engine, 1 handler", [&] { engine1.run(data, max_epochs(epochs)); }, iterations},
      {"Engine, 4 handlers (one filtered every(100))", [&] { engine4.run(data, max_epochs(epochs)); }, iterations},
      {"Engine, 1 run-time handler every(100) (type-erased)", [&] { engine_runtime.run(data, max_epochs(epochs)); },
       iterations},
  };
  bench::run_interleaved("engine_overhead: empty step, " + std::to_string(length) + " x " + std::to_string(epochs) +
                             " iterations per round",
                         variants, rounds, 1e9, "ns/iter");
  const double base = bench::median(variants[0].seconds_per_unit);
  std::printf("  overhead over the plain loop, ns/iter: 0 handlers %.2f, 1 handler %.2f, 4 handlers %.2f, run-time %.2f\n",
              1e9 * (bench::median(variants[1].seconds_per_unit) - base),
              1e9 * (bench::median(variants[2].seconds_per_unit) - base),
              1e9 * (bench::median(variants[3].seconds_per_unit) - base),
              1e9 * (bench::median(variants[4].seconds_per_unit) - base));
  // The handlers really ran: every iteration counted, every 100th filtered call made.
  const std::uint64_t per_run = std::uint64_t(length) * epochs;
  const std::uint64_t counted = engine4.handler<CountIterations>().n;
  const bool ok = counted == per_run * std::uint64_t(rounds + 1) && filtered_calls == 2 * counted / 100;
  return ok ? 0 : 1;
}
