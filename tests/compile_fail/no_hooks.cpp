// expect: trainloop: a handler declares no Engine hook
#include <trainloop.hpp>
#include <vector>
struct NotAHandler {
  int value = 0;
};
int main() {
  std::vector<int> data{1};
  trainloop::make_engine<int>([](int&) {}, NotAHandler{}).run(data);
}
