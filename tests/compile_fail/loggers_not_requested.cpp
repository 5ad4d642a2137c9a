// expect: (CSVLogger.* is not a member of|no member named .CSVLogger. in namespace)
// A torch-free TU gets the loggers (and the <filesystem> they need) only with TRAINLOOP_WITH_LOGGERS=1.
#include <trainloop.hpp>

int main() {
  trainloop::CSVLogger logger(trainloop::CSVLoggerOptions().save_dir("logs"));
  (void)logger;
}
