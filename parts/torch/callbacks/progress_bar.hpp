// trainloop: ProgressBar, a tqdm-like bar for the Trainer: bar, batch/total, it/s, ETA and the prog_bar metrics,
// redrawn in place on a terminal at a bounded rate; plain periodic lines when the output is not a terminal.
// Validation (and test, predict) get a bar of their own.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "parts/torch/trainer_core.hpp"

TRAINLOOP_DETAIL_BEGIN

class ProgressBar {
 public:
  struct Options {
    double refresh_seconds = 0.1;        ///< terminal: at most this often a redraw (the host reads metrics then)
    double plain_line_seconds = 10.0;    ///< not a terminal: at most this often a line (plus one per 25% and the end)
    int bar_width = 24;
    std::FILE* stream = stdout;
    std::optional<bool> terminal;        ///< force terminal or plain mode; default: isatty(stream)
  };
  ProgressBar() : ProgressBar(Options{}) {}
  TRAINLOOP_DETAIL_API explicit ProgressBar(Options options);

  // The hooks read the Trainer through TrainerCore, so their bodies are compiled once (not per Trainer and module).
  TRAINLOOP_DETAIL_API void on_train_epoch_start(const TrainerCore& trainer, const torch::nn::Module&);
  template <class O, class B>
  void on_train_batch_end(const TrainerCore& trainer, const torch::nn::Module&, const O&, B&, std::int64_t) {
    advance(train_, trainer, false);
  }
  TRAINLOOP_DETAIL_API void on_train_epoch_end(const TrainerCore& trainer, const torch::nn::Module&);
  TRAINLOOP_DETAIL_API void on_validation_start(const TrainerCore& trainer, const torch::nn::Module&);
  template <class O, class B>
  void on_validation_batch_end(const TrainerCore& trainer, const torch::nn::Module&, const O&, B&, std::int64_t) {
    advance(eval_, trainer, true);
  }
  TRAINLOOP_DETAIL_API void on_validation_end(const TrainerCore& trainer, const torch::nn::Module&);
  TRAINLOOP_DETAIL_API void on_test_start(const TrainerCore& trainer, const torch::nn::Module&);
  template <class O, class B>
  void on_test_batch_end(const TrainerCore& trainer, const torch::nn::Module&, const O&, B&, std::int64_t) {
    advance(eval_, trainer, true);
  }
  TRAINLOOP_DETAIL_API void on_test_end(const TrainerCore& trainer, const torch::nn::Module&);
  TRAINLOOP_DETAIL_API void on_predict_start(const TrainerCore& trainer, const torch::nn::Module&);
  template <class O, class B>
  void on_predict_batch_end(const TrainerCore& trainer, const torch::nn::Module&, const O&, B&, std::int64_t) {
    advance(eval_, trainer, true);
  }
  TRAINLOOP_DETAIL_API void on_predict_end(const TrainerCore& trainer, const torch::nn::Module&);

  bool is_terminal() const { return terminal_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Bar {
    std::string description;
    std::optional<std::int64_t> total;
    std::int64_t n = 0;
    Clock::time_point start{}, last_draw{};
    int last_quarter = 0;
    bool active = false;
    void begin(std::string d, std::optional<std::int64_t> t) {
      description = std::move(d);
      total = t;
      n = 0;
      start = last_draw = Clock::now();
      last_quarter = 0;
      active = true;
    }
  };

  TRAINLOOP_DETAIL_API void advance(Bar& bar, const TrainerCore& trainer, bool nested);
  TRAINLOOP_DETAIL_API void finish(Bar& bar, const TrainerCore& trainer, bool keep);
  TRAINLOOP_DETAIL_API void nested_start(const std::string& description, std::optional<std::int64_t> total);
  TRAINLOOP_DETAIL_API void nested_end(const TrainerCore& trainer);

  TRAINLOOP_DETAIL_API static std::string clock_text(double seconds);

  TRAINLOOP_DETAIL_API void render(const Bar& bar, const std::map<std::string, double>& metrics,
                                   bool final_line) const;

  Options options_;
  bool terminal_ = false;
  Bar train_, eval_;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API void ProgressBar::on_train_epoch_start(const TrainerCore& trainer, const torch::nn::Module&) {
  const auto max_epochs = trainer.max_epochs();
  train_.begin("Epoch " + std::to_string(trainer.current_epoch() + 1) +
                   (max_epochs ? "/" + std::to_string(*max_epochs) : std::string()),
               trainer.num_training_batches());
}
TRAINLOOP_DETAIL_API void ProgressBar::on_train_epoch_end(const TrainerCore& trainer, const torch::nn::Module&) {
  finish(train_, trainer, /*keep=*/true);
}
TRAINLOOP_DETAIL_API void ProgressBar::on_validation_start(const TrainerCore& trainer, const torch::nn::Module&) {
  nested_start(trainer.sanity_checking() ? "Sanity Checking" : "Validation", trainer.num_val_batches());
}
TRAINLOOP_DETAIL_API void ProgressBar::on_validation_end(const TrainerCore& trainer, const torch::nn::Module&) {
  nested_end(trainer);
}
TRAINLOOP_DETAIL_API void ProgressBar::on_test_start(const TrainerCore& trainer, const torch::nn::Module&) {
  nested_start("Testing", trainer.num_test_batches());
}
TRAINLOOP_DETAIL_API void ProgressBar::on_test_end(const TrainerCore& trainer, const torch::nn::Module&) {
  nested_end(trainer);
}
TRAINLOOP_DETAIL_API void ProgressBar::on_predict_start(const TrainerCore& trainer, const torch::nn::Module&) {
  nested_start("Predicting", trainer.num_predict_batches());
}
TRAINLOOP_DETAIL_API void ProgressBar::on_predict_end(const TrainerCore& trainer, const torch::nn::Module&) {
  nested_end(trainer);
}
TRAINLOOP_DETAIL_API void ProgressBar::advance(Bar& bar, const TrainerCore& trainer, bool nested) {
  if (!bar.active) return;
  ++bar.n;
  const auto now = Clock::now();
  const double since_draw = std::chrono::duration<double>(now - bar.last_draw).count();
  bool draw = false;
  if (terminal_) {
    draw = since_draw >= options_.refresh_seconds;
  } else if (nested) {
    draw = false;  // plain output: evaluation bars print one line, at their end
  } else {
    const int quarter = bar.total && *bar.total > 0 ? static_cast<int>(4 * bar.n / *bar.total) : 0;
    draw = since_draw >= options_.plain_line_seconds || quarter > bar.last_quarter;
    if (quarter > bar.last_quarter) bar.last_quarter = quarter;
    if (bar.total && bar.n == *bar.total) draw = false;  // the end line comes from finish()
  }
  if (draw) {
    bar.last_draw = now;
    render(bar, nested ? std::map<std::string, double>{} : trainer.progress_bar_metrics(), false);
  }
}
TRAINLOOP_DETAIL_API void ProgressBar::finish(Bar& bar, const TrainerCore& trainer, bool keep) {
  if (!bar.active) return;
  bar.active = false;
  render(bar, trainer.progress_bar_metrics(), keep);
}
TRAINLOOP_DETAIL_API void ProgressBar::nested_start(const std::string& description, std::optional<std::int64_t> total) {
  if (terminal_ && train_.active) std::fputs("\n", options_.stream);  // the nested bar takes the next line
  eval_.begin(description, total);
}
TRAINLOOP_DETAIL_API void ProgressBar::nested_end(const TrainerCore& trainer) {
  if (!eval_.active) return;
  eval_.active = false;
  if (terminal_) {
    // Clear the nested bar; go back to the training bar's line and redraw it, or leave a final line.
    if (train_.active) {
      std::fputs("\r\033[K\033[1A", options_.stream);
      render(train_, trainer.progress_bar_metrics(), false);
    } else {
      render(eval_, trainer.progress_bar_metrics(), true);
    }
  } else {
    render(eval_, trainer.progress_bar_metrics(), true);
  }
}

TRAINLOOP_DETAIL_API std::string ProgressBar::clock_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<long long>(seconds + 0.5);
  char text[32];
  if (s >= 3600) std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(text, sizeof text, "%02lld:%02lld", s / 60, s % 60);
  return text;
}

TRAINLOOP_DETAIL_API void ProgressBar::render(const Bar& bar, const std::map<std::string, double>& metrics,
                                              bool final_line) const {
  const double elapsed = std::chrono::duration<double>(Clock::now() - bar.start).count();
  const double rate = elapsed > 0 ? static_cast<double>(bar.n) / elapsed : 0.0;
  std::string line = bar.description + ": ";
  char buffer[96];
  if (bar.total && *bar.total > 0) {
    const double fraction = std::min(1.0, static_cast<double>(bar.n) / static_cast<double>(*bar.total));
    std::snprintf(buffer, sizeof buffer, "%3d%%", static_cast<int>(100 * fraction));
    line += buffer;
    if (terminal_) {
      static const char* const eighths[] = {"", "\u258F", "\u258E", "\u258D", "\u258C", "\u258B", "\u258A", "\u2589"};
      const int cells = static_cast<int>(fraction * options_.bar_width * 8);
      line += "|";
      for (int i = 0; i < cells / 8; ++i) line += "\u2588";
      int used = cells / 8;
      if (used < options_.bar_width) {
        line += eighths[cells % 8];
        used += 1;
      }
      line += std::string(static_cast<std::size_t>(options_.bar_width - used), ' ') + "|";
    }
    std::snprintf(buffer, sizeof buffer, " %lld/%lld [%s<%s, %.2fit/s", static_cast<long long>(bar.n),
                  static_cast<long long>(*bar.total), clock_text(elapsed).c_str(),
                  clock_text(rate > 0 ? static_cast<double>(*bar.total - bar.n) / rate : -1).c_str(), rate);
  } else {
    std::snprintf(buffer, sizeof buffer, "%lld [%s, %.2fit/s", static_cast<long long>(bar.n),
                  clock_text(elapsed).c_str(), rate);
  }
  line += buffer;
  for (const auto& [name, value] : metrics) {
    std::snprintf(buffer, sizeof buffer, ", %s=%.4g", name.c_str(), value);
    line += buffer;
  }
  line += "]";
  if (terminal_) {
    std::fprintf(options_.stream, "\r\033[K%s%s", line.c_str(), final_line ? "\n" : "");
  } else {
    std::fprintf(options_.stream, "%s\n", line.c_str());
  }
  std::fflush(options_.stream);
}
TRAINLOOP_DETAIL_API ProgressBar::ProgressBar(Options options) : options_(options) {
#if defined(__unix__) || defined(__APPLE__)
  terminal_ = options_.terminal.value_or(isatty(fileno(options_.stream)) == 1);
#else
  terminal_ = options_.terminal.value_or(false);
#endif
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
