// expect: trainloop: on\(events, f\): f must be callable as f\(engine\) or f\(\)
#include <trainloop.hpp>
#include <vector>
int main() {
  std::vector<int> data{1};
  auto engine = trainloop::make_engine<int>([](int&) {}, trainloop::on(trainloop::Events::completed, [](int, int) {}));
  engine.run(data);
}
