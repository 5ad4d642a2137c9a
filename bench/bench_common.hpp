// Shared by the benchmarks: variants run interleaved (round-robin), several rounds, and report the median, so slow
// drift of the machine hits every variant alike; each result is also printed as a ratio to the baseline.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace bench {

// Keeps the compiler from deleting work whose result is unused.
template <class T>
inline void keep(T& value) {
  asm volatile("" : "+r,m"(value) : : "memory");
}

struct Variant {
  std::string name;
  std::function<void()> run;  // one timed unit of work
  double units = 1;           // what one run() counts as (iterations, batches, ...): results are per unit
  std::vector<double> seconds_per_unit{};
};

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Runs each variant once to warm up, then `rounds` interleaved rounds; prints a table with the first variant as
// the baseline. `scale` and `unit` set how times print (1e9, "ns" for nanoseconds per unit).
inline void run_interleaved(const std::string& title, std::vector<Variant>& variants, int rounds, double scale,
                            const char* unit) {
  using Clock = std::chrono::steady_clock;
  for (auto& v : variants) v.run();
  auto timed = [](Variant& v) {
    const auto start = Clock::now();
    v.run();
    v.seconds_per_unit.push_back(std::chrono::duration<double>(Clock::now() - start).count() / v.units);
  };
  // Odd rounds run the variants in reverse order, so neither always runs first (warm caches, drift).
  for (int r = 0; r < rounds; ++r) {
    if (r % 2 == 0)
      for (auto& v : variants) timed(v);
    else
      for (auto it = variants.rbegin(); it != variants.rend(); ++it) timed(*it);
  }
  const double base = median(variants.front().seconds_per_unit);
  std::printf("\n%s (median of %d interleaved rounds)\n", title.c_str(), rounds);
  std::printf("  %-52s %12s %12s %10s\n", "variant", unit, "min", "ratio");
  for (auto& v : variants) {
    const double m = median(v.seconds_per_unit);
    const double lo = *std::min_element(v.seconds_per_unit.begin(), v.seconds_per_unit.end());
    std::printf("  %-52s %12.3f %12.3f %10.3f\n", v.name.c_str(), m * scale, lo * scale, m / base);
  }
  std::fflush(stdout);
}

}  // namespace bench
