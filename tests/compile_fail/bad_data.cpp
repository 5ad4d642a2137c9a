// expect: trainloop: run\(data\): data must be a range
#include <trainloop.hpp>
int main() {
  auto engine = trainloop::make_engine<int>([](int&) {});
  engine.run(42);
}
