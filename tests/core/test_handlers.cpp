// The generic, torch-free handlers: Timer and TimeLimit.
#include <doctest/doctest.h>

#include <chrono>
#include <thread>
#include <vector>

#include <trainloop.hpp>

using namespace trainloop;
using namespace std::chrono_literals;

TEST_CASE("Timer counts and measures runs, epochs, batch fetches and iterations") {
  std::vector<int> data{1, 2, 3};
  Timer timer;
  auto engine = make_engine<int>([](int&) { std::this_thread::sleep_for(2ms); }, std::ref(timer));
  engine.run(data, max_epochs(2));
  CHECK(timer.run().count == 1);
  CHECK(timer.epoch().count == 2);
  CHECK(timer.batch_fetch().count == 6);
  CHECK(timer.iteration().count == 6);
  // Every iteration sleeps 2 ms, so each span is at least that; the run contains all of them.
  CHECK(timer.iteration().mean() >= 0.002);
  CHECK(timer.epoch().total >= timer.iteration().total);
  CHECK(timer.run().total >= timer.epoch().total);
  CHECK(timer.run().last == timer.run().total);
  timer.reset();
  CHECK(timer.iteration().count == 0);
  CHECK(timer.iteration().mean() == 0.0);
}

TEST_CASE("TimeLimit terminates the run once the limit has passed, after an iteration") {
  int next = 0;
  auto infinite = [&next]() -> std::optional<int> { return next++; };
  auto engine = make_engine<int>([](int&) { std::this_thread::sleep_for(1ms); }, TimeLimit(30ms));
  engine.run(infinite, epoch_length(1000000));
  CHECK(engine.handler<TimeLimit>().reached());
  CHECK(engine.state.iteration >= 1);
  CHECK(engine.state.iteration < 1000000);
  CHECK(engine.state.fired(Event::terminate) == 1);

  std::vector<int> data{1, 2};
  auto quick = make_engine<int>([](int&) {}, TimeLimit(std::chrono::hours(1)));
  quick.run(data);
  CHECK_FALSE(quick.handler<TimeLimit>().reached());
  CHECK(quick.state.iteration == 2);
}
