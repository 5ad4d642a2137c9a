// expect: trainloop: make_engine\(step, \.\.\.\) cannot tell the batch type of a generic step; write make_engine<Batch>
#include <trainloop.hpp>
int main() {
  auto engine = trainloop::make_engine([](auto& batch) { return batch; });
  (void)engine;
}
