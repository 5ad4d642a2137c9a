// expect: trainloop: a handler declares no Engine hook.*wrap a callable as trainloop::on
#include <trainloop.hpp>
#include <vector>
int main() {
  std::vector<int> data{1};
  trainloop::make_engine<int>([](int&) {}, [](auto&) {}).run(data);  // should be on(Events::..., lambda)
}
