// expect: trainloop: a handler declares on_epoch_completed but it cannot be called as on_epoch_completed\(engine&\)
#include <trainloop.hpp>
#include <vector>
struct Logger {
  void on_epoch_completed(int epoch);  // takes an int, not the engine
};
int main() {
  std::vector<int> data{1};
  trainloop::make_engine<int>([](int&) {}, Logger{}).run(data);
}
