// expect: trainloop: TRAINLOOP_WITH_AMP must be 0 or 1
#define TRAINLOOP_WITH_AMP 2
#include <trainloop.hpp>
int main() {}
