// trainloop: Preemption. SIGTERM and SIGUSR1 (configurable) ask for a checkpoint: the signal handler only sets a
// flag; at the next step boundary the callback saves the fit and stops it (or lets it go on). Resume from the file
// with fit(..., path): the run continues exactly where it was.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <csignal>
#include <string>
#include <vector>

TRAINLOOP_DETAIL_BEGIN

namespace detail {
inline volatile std::sig_atomic_t preemption_requested = 0;
inline void request_preemption(int) { preemption_requested = 1; }  // async-signal-safe: one store
}  // namespace detail

class Preemption {
 public:
  static constexpr bool trainloop_checkpointing_callback = true;  // saves after every other hook of the step
  struct Options {
    std::vector<int> signals{SIGTERM, SIGUSR1};
    std::string path = "preempted.ckpt";  ///< where the checkpoint goes
    bool stop = true;                     ///< stop fit after saving (false: save and go on)
  };
  Preemption() : Preemption(Options{}) {}
  explicit Preemption(Options options) : options_(std::move(options)) {}
  Preemption(const Preemption& other) : options_(other.options_) {}  // installed handlers are not copied
  ~Preemption() { restore(); }

  template <class T, class M>
  void on_fit_start(T&, M&) {
    detail::preemption_requested = 0;
    for (int signal : options_.signals) {
      struct sigaction action {};
      action.sa_handler = &detail::request_preemption;
      sigemptyset(&action.sa_mask);
      struct sigaction previous {};
      if (sigaction(signal, &action, &previous) != 0)
        throw std::runtime_error("trainloop: Preemption: cannot handle signal " + std::to_string(signal));
      previous_.emplace_back(signal, previous);
    }
  }
  template <class T, class M, class O, class B>
  void on_train_batch_end(T& trainer, M&, const O&, B&, std::int64_t) {
    if (!detail::preemption_requested) return;
    detail::preemption_requested = 0;
    trainer.save_checkpoint(options_.path);
    ++saved_;
    if (options_.stop) trainer.terminate();
  }
  template <class T, class M>
  void on_fit_end(T&, M&) {
    restore();
  }
  template <class T, class M>
  void on_exception(T&, M&, std::exception_ptr) {
    restore();
  }
  /// How many checkpoints signals asked for.
  int saved() const { return saved_; }

 private:
  void restore() {
    for (auto& [signal, previous] : previous_) sigaction(signal, &previous, nullptr);
    previous_.clear();
  }
  Options options_;
  std::vector<std::pair<int, struct sigaction>> previous_;
  int saved_ = 0;
};

TRAINLOOP_DETAIL_END
