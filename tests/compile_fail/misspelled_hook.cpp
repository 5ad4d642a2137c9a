// expect: trainloop: a handler declares on_iteration_complete, which is not an Engine hook; did you mean on_iteration_completed\?
#include <trainloop.hpp>
#include <vector>
struct Logger {
  template <class E>
  void on_started(E&) {}
  template <class E>
  void on_iteration_complete(E&) {}  // missing "d"
};
int main() {
  std::vector<int> data{1};
  trainloop::make_engine<int>([](int&) {}, Logger{}).run(data);
}
