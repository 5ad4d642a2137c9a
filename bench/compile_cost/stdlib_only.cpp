// compile_cost: the floor of a C++ TU with a loop: the standard library's iostream-free essentials only.
#include <cstdio>
#include <vector>

int main() {
  std::vector<double> data(1000, 1.0);
  double w = 0;
  for (int epoch = 0; epoch < 3; ++epoch)
    for (double x : data) w -= 0.01 * (w * x - 2 * x) * x;
  std::printf("w = %f\n", w);
  return w > 1.9 ? 0 : 1;
}
