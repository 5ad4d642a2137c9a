// The one translation unit of a separately compiled test program that compiles trainloop's type-independent code
// (the single-header suites build this way: every other TU has TRAINLOOP_SEPARATE_COMPILATION=1 and only declares it).
#define TRAINLOOP_IMPLEMENTATION
#include <trainloop.hpp>
