// expect: trainloop: the step must be callable as step\(engine, batch\) or step\(batch\)
#include <trainloop.hpp>
#include <string>
int main() {
  auto engine = trainloop::make_engine<int>([](std::string&) {});
  (void)engine;
}
