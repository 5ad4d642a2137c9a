// The torch-free Engine on its own: it compiles with nothing but the standard library, so this file runs on
// Compiler Explorer with single_include/trainloop.hpp and -DTRAINLOOP_WITH_TORCH=0.
//
// It fits y = 3x - 1 by stochastic gradient descent on plain doubles, with the Ignite habits: a step function,
// compile-time handlers, a filtered run-time handler, a user-defined event, a Timer, and an early stop.
#include <trainloop.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <utility>

using Sample = std::pair<double, double>;  // (x, y)

struct Model {
  double w = 0, b = 0;
};

// A compile-time handler: the hooks it declares are found at compile time; nothing else costs anything.
struct EpochReport {
  template <class E>
  void on_epoch_completed(E& engine) {
    std::printf("epoch %2llu  mean loss %.6f\n", static_cast<unsigned long long>(engine.state.epoch),
                engine.state.metrics["loss"]);
  }
};

int main(int argc, char** argv) {
  const bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  using namespace trainloop;

  // An infinite stream of noisy samples; epoch_length makes epochs of it.
  std::mt19937 rng(42);
  std::normal_distribution<double> noise(0.0, 0.05);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  auto samples = [&]() -> std::optional<Sample> {
    const double x = uniform(rng);
    return Sample{x, 3 * x - 1 + noise(rng)};
  };

  Model model;
  const Event converged = register_event("converged");
  double loss_sum = 0;

  auto trainer = make_engine(
      [&](EngineCore& engine, Sample& s) {
        const double error = model.w * s.first + model.b - s.second;
        model.w -= 0.05 * error * s.first;
        model.b -= 0.05 * error;
        loss_sum += error * error;
        if (std::abs(model.w - 3) < 0.01 && std::abs(model.b + 1) < 0.01) engine.fire(converged);
        return error * error;
      },
      on(Events::epoch_started, [&] { loss_sum = 0; }),
      on(Events::epoch_completed,
         [&](auto& engine) { engine.state.metrics["loss"] = loss_sum / double(*engine.state.epoch_length); }),
      EpochReport{}, Timer{});

  trainer.on(Events::iteration_completed | every(smoke ? 50 : 500), [](auto& engine) {
    std::printf("  iteration %5llu  loss %.6f\n", static_cast<unsigned long long>(engine.state.iteration),
                engine.output());
  });
  trainer.on(converged | once(1), [](auto& engine) {
    std::printf("converged at iteration %llu; stopping\n", static_cast<unsigned long long>(engine.state.iteration));
    engine.terminate();
  });

  trainer.run(samples, max_epochs(smoke ? 2 : 20).epoch_length(smoke ? 100 : 1000));
  const Timer& timer = trainer.handler<Timer>();
  std::printf("w = %.4f, b = %.4f after %llu iterations; %.1f ns per iteration\n", model.w, model.b,
              static_cast<unsigned long long>(trainer.state.iteration), timer.iteration().mean() * 1e9);
  return std::abs(model.w - 3) < 0.1 && std::abs(model.b + 1) < 0.1 ? 0 : 1;
}
