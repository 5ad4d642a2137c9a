// expect: trainloop: engine.handler<T>\(\): the engine holds no handler of type T, or several
#include <trainloop.hpp>
#include <vector>
struct Counter {
  int n = 0;
  template <class E>
  void on_iteration_completed(E&) {
    ++n;
  }
};
int main() {
  std::vector<int> data{1};
  auto engine = trainloop::make_engine<int>([](int&) {}, Counter{}, Counter{});
  engine.run(data);
  return engine.handler<Counter>().n;  // two Counters: handler<0>() or handler<1>()
}
