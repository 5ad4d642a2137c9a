// expect: TRAINLOOP_WITH_LOGGERS=0 is for the torch-free core
// The Trainer always has its loggers: asking for none with torch is an error that says so (before torch is parsed).
#undef TRAINLOOP_WITH_TORCH
#define TRAINLOOP_WITH_TORCH 1
#define TRAINLOOP_WITH_LOGGERS 0
#include <trainloop.hpp>

int main() {}
