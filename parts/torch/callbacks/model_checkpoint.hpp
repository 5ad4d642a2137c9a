// trainloop: ModelCheckpoint. Saves the Trainer's checkpoints every N training steps, every N epochs or every so
// often, keeps the top k by a monitored metric (or the latest), and a last.ckpt; `fit(..., "last" | "best")` resumes
// from them, in the same process or, after a crash, from what is on disk. It runs after every other callback and the
// module (a checkpointing callback), so its checkpoints hold what they did for that step.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <algorithm>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "parts/torch/checkpoint.hpp"
#include "parts/torch/checkpoint_connector.hpp"
#include "parts/torch/logging.hpp"

TRAINLOOP_DETAIL_BEGIN

class ModelCheckpoint {
 public:
  static constexpr bool trainloop_checkpointing_callback = true;  // last: after the module and the other callbacks
  using Mode = MonitorMode;
  struct Options {
    std::string dirpath = "checkpoints";
    /// {epoch}, {step} and any logged metric, optionally formatted: "epoch={epoch}-val_loss={val_loss:.3f}".
    std::string filename = "epoch={epoch}-step={step}";
    std::string monitor;        ///< empty: no ranking, the latest checkpoints are kept
    Mode mode = Mode::min;
    std::int64_t save_top_k = 1;  ///< -1: keep all; 0: none (only last.ckpt, with save_last)
    bool save_last = false;       ///< also write dirpath/last.ckpt at every save
    std::int64_t every_n_train_steps = 0;  ///< 0: not by steps
    std::int64_t every_n_epochs = 1;       ///< at epoch ends (when not saving by steps or time); 0: never
    std::chrono::duration<double> train_time_interval{0};  ///< 0: not by time
    bool save_weights_only = false;
    /// The files' layout: trainloop's (exact resume), or Lightning's (Python's Lightning loads and resumes from them;
    /// fit here reads both: docs/checkpoints.md).
    CheckpointFormat format = CheckpointFormat::trainloop;
  };
  TRAINLOOP_DETAIL_API ModelCheckpoint();
  TRAINLOOP_DETAIL_API explicit ModelCheckpoint(Options options);

  template <class T, class M>
  void on_fit_start(T& trainer, M&) {
    last_time_save_ = std::chrono::steady_clock::now();
    validated_ = warned_ = false;
    if (!trainer.is_global_zero()) return;  // rank 0 writes the checkpoints
    std::error_code error;
    std::filesystem::create_directories(options_.dirpath, error);
    const std::string probe = options_.dirpath + "/.trainloop-write-test";
    std::FILE* f = error ? nullptr : std::fopen(probe.c_str(), "w");
    if (!f)
      throw std::runtime_error("trainloop: ModelCheckpoint: cannot write checkpoints to '" + options_.dirpath + "'" +
                               (error ? ": " + error.message() : std::string()));
    std::fclose(f);
    std::remove(probe.c_str());
  }
  template <class T, class M, class O, class B>
  void on_train_batch_end(T& trainer, M&, const O&, B&, std::int64_t) {
    const auto step = trainer.global_step();
    if (options_.every_n_train_steps > 0 && step > 0 && step % options_.every_n_train_steps == 0 && step != last_step_)
      return save(trainer);
    // Each rank's clock differs: they agree (any rank due saves) so every rank calls save together.
    if (options_.train_time_interval.count() > 0 &&
        trainer.reduce_decision(std::chrono::steady_clock::now() - last_time_save_ >= options_.train_time_interval, false))
      save(trainer);
  }
  template <class T, class M>
  void on_validation_epoch_end(T& trainer, M&) {
    validated_ = validated_ || !trainer.sanity_checking();
  }
  template <class T, class M>
  void on_train_epoch_end(T& trainer, M&) {
    if (options_.every_n_train_steps > 0 || options_.train_time_interval.count() > 0 || options_.every_n_epochs == 0) return;
    if ((trainer.current_epoch() + 1) % options_.every_n_epochs == 0) save(trainer);
  }

  const std::string& dirpath() const { return options_.dirpath; }
  const Options& options() const noexcept { return options_; }
  /// The checkpoint `fit(..., "last" | "best")` resumes from, or "" when there is none: what this ModelCheckpoint
  /// wrote in this process, else what its folder holds (after a crash): last.ckpt or the newest .ckpt for "last",
  /// and for "best" the best path recorded in that newest checkpoint.
  TRAINLOOP_DETAIL_API std::string find_checkpoint(const std::string& which) const;

  const std::string& best_model_path() const { return best_path_; }
  std::optional<double> best_model_score() const { return best_score_; }
  const std::string& last_model_path() const { return last_path_; }
  /// The kept checkpoints, in saving order, with their scores (NaN without a monitor).
  const std::vector<std::pair<std::string, double>>& kept() const { return kept_; }

  TRAINLOOP_DETAIL_API StateDict state_dict() const;
  TRAINLOOP_DETAIL_API void load_state_dict(const StateDict& s);

  /// "epoch={epoch}-val_loss={val_loss:.3f}" with the values: {name} or {name:.Nf}; an unknown name is an error.
  TRAINLOOP_DETAIL_API static std::string format_filename(const std::string& pattern, const std::map<std::string,
                                                          double>& values);

 private:
  template <class T>
  void save(T& trainer) {
    last_step_ = trainer.global_step();
    last_time_save_ = std::chrono::steady_clock::now();
    std::map<std::string, double> values{{"epoch", static_cast<double>(trainer.current_epoch())},
                                         {"step", static_cast<double>(trainer.global_step())}};
    for (const auto& [name, value] : trainer.callback_metrics())
      if (value.defined() && value.numel() == 1) values[name] = value.template item<double>();
    double score = std::numeric_limits<double>::quiet_NaN();
    bool saved = false;
    if (!options_.monitor.empty()) {
      auto it = values.find(options_.monitor);
      if (it == values.end() && !validated_) {  // Lightning's rule: before any validation, a warning and no save
        if (!warned_ && trainer.is_global_zero())
          std::fprintf(stderr, "trainloop: ModelCheckpoint monitors '%s', which was not logged before any validation ran: "
                       "no checkpoint at step %lld\n", options_.monitor.c_str(), static_cast<long long>(last_step_));
        warned_ = true;
        return;
      }
      if (it == values.end())
        throw std::runtime_error("trainloop: ModelCheckpoint monitors '" + options_.monitor + "', which was not logged");
      score = it->second;
      if (std::isnan(score))  // a NaN ranks worst, as in Lightning
        score = options_.mode == Mode::min ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
    }
    // Ranks agree (all must keep it) so that every rank takes part in the save; Lightning's reduce_boolean_decision.
    if (options_.save_top_k != 0 && trainer.reduce_decision(keeps(score), /*all=*/true)) {
      // The kept set (and best path) is updated before the write, so the file records itself among them; it is put
      // back if the write fails or is skipped, and the dropped files are deleted only once the new one is written.
      const std::string path = options_.dirpath + "/" + format_filename(options_.filename, values) + ".ckpt";
      const auto kept_before = kept_;
      kept_.erase(std::remove_if(kept_.begin(), kept_.end(), [&](const auto& k) { return k.first == path; }), kept_.end());
      kept_.emplace_back(path, score);
      const std::vector<std::string> dropped = drop_beyond_top_k();
      bool written = false;
      try {
        written = trainer.save_checkpoint(path, options_.format, options_.save_weights_only);
      } catch (...) {
        kept_ = kept_before;
        update_best();
        throw;
      }
      if (!written) {
        kept_ = kept_before;
        update_best();
        return;
      }
      if (trainer.is_global_zero())
        for (const auto& file : dropped)
          if (file != path) std::filesystem::remove(file);
      saved = true;
    }
    if (options_.save_last) {
      const std::string last = options_.dirpath + "/last.ckpt";
      const std::string last_before = last_path_;
      last_path_ = last;
      try {
        if (!trainer.save_checkpoint(last, options_.format, options_.save_weights_only)) last_path_ = last_before;
        else saved = true;
      } catch (...) {
        last_path_ = last_before;
        throw;
      }
    }
    // Lightning's logger.after_save_checkpoint: loggers that log checkpoints (MLFlowLogger's log_model) see them.
    if (saved && trainer.is_global_zero())
      std::apply([&](auto&... callbacks) { (after_save(detail::unwrap(callbacks)), ...); }, trainer.callbacks());
  }
  template <class C>
  void after_save(C& callback) const {
    if constexpr (detail::is_detected_v<detail::after_save_checkpoint_t, C, ModelCheckpoint>) callback.after_save_checkpoint(*this);
    else (void)callback;
  }
  bool better(double a, double b) const { return options_.mode == Mode::min ? a < b : a > b; }
  // Whether a checkpoint with `score` enters the kept set.
  TRAINLOOP_DETAIL_API bool keeps(double score) const;
  // Takes the worst (without a monitor: the oldest) beyond save_top_k out of the kept set, returning their files,
  // and updates the best.
  TRAINLOOP_DETAIL_API std::vector<std::string> drop_beyond_top_k();
  TRAINLOOP_DETAIL_API void update_best();

  Options options_;
  std::vector<std::pair<std::string, double>> kept_;  // in saving order
  std::string best_path_, last_path_;
  std::optional<double> best_score_;
  std::int64_t last_step_ = -1;
  std::chrono::steady_clock::time_point last_time_save_{};
  bool validated_ = false, warned_ = false;  // a validation has run in this fit; the missing monitor was reported
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API ModelCheckpoint::ModelCheckpoint() : ModelCheckpoint(Options{}) {}

TRAINLOOP_DETAIL_API ModelCheckpoint::ModelCheckpoint(Options options) : options_(std::move(options)) {
  if (options_.save_top_k < -1) throw std::invalid_argument("trainloop: ModelCheckpoint: save_top_k must be -1 or more");
  if (options_.save_top_k > 1 && options_.monitor.empty())
    throw std::invalid_argument("trainloop: ModelCheckpoint: save_top_k > 1 needs a monitor to rank checkpoints");
  if (options_.every_n_train_steps < 0 || options_.every_n_epochs < 0)
    throw std::invalid_argument("trainloop: ModelCheckpoint: every_n_* must not be negative");
}

TRAINLOOP_DETAIL_API std::string ModelCheckpoint::find_checkpoint(const std::string& which) const {
  namespace fs = std::filesystem;
  std::error_code error;
  const std::string& known = which == "best" ? best_path_ : last_path_;
  if (!known.empty() && fs::exists(known, error)) return known;
  std::string newest;
  const std::string last = options_.dirpath + "/last.ckpt";
  if (fs::exists(last, error)) {
    newest = last;
  } else {
    fs::file_time_type newest_time{};
    for (fs::directory_iterator it(options_.dirpath, error), end; !error && it != end; it.increment(error)) {
      if (it->path().extension() != ".ckpt" || !it->is_regular_file(error)) continue;
      const auto time = it->last_write_time(error);
      if (!error && (newest.empty() || time > newest_time)) newest = it->path().string(), newest_time = time;
    }
  }
  if (which != "best" || newest.empty()) return newest;
  for (const auto& [key, state] : read_checkpoint_states(newest)) {
    if (key.rfind(detail::callback_type_key<ModelCheckpoint>(), 0) != 0) continue;
    auto best = state.find("best_model_path");
    if (best == state.end() || !std::holds_alternative<std::string>(best->second)) continue;
    const std::string& path = std::get<std::string>(best->second);
    if (!path.empty() && fs::exists(path, error)) return path;
  }
  return "";
}
TRAINLOOP_DETAIL_API StateDict ModelCheckpoint::state_dict() const {
  StateDict s{{"best_model_path", best_path_}, {"last_model_path", last_path_}, {"last_step", last_step_}};
  if (best_score_) s["best_model_score"] = *best_score_;
  std::string kept;
  for (const auto& [path, score] : kept_) kept += path + '\t' + std::to_string(score) + '\n';
  s["kept"] = kept;
  return s;
}
TRAINLOOP_DETAIL_API void ModelCheckpoint::load_state_dict(const StateDict& s) {
  auto text = [&](const char* key) { return s.count(key) ? std::get<std::string>(s.at(key)) : std::string(); };
  best_path_ = text("best_model_path");
  last_path_ = text("last_model_path");
  last_step_ = s.count("last_step") ? std::get<std::int64_t>(s.at("last_step")) : -1;
  best_score_ = s.count("best_model_score") ? std::optional<double>(std::get<double>(s.at("best_model_score"))) : std::nullopt;
  kept_.clear();
  const std::string kept = text("kept");
  for (std::size_t start = 0, end; (end = kept.find('\n', start)) != std::string::npos; start = end + 1) {
    const std::string line = kept.substr(start, end - start);
    const auto tab = line.find('\t');
    kept_.emplace_back(line.substr(0, tab), std::stod(line.substr(tab + 1)));
  }
}
TRAINLOOP_DETAIL_API std::string ModelCheckpoint::format_filename(const std::string& pattern,
                                                                  const std::map<std::string, double>& values) {
  std::string out;
  for (std::size_t i = 0; i < pattern.size();) {
    if (pattern[i] != '{') {
      out += pattern[i++];
      continue;
    }
    const auto close = pattern.find('}', i);
    if (close == std::string::npos) throw std::invalid_argument("trainloop: ModelCheckpoint: unclosed '{' in '" + pattern + "'");
    std::string field = pattern.substr(i + 1, close - i - 1), format;
    if (const auto colon = field.find(':'); colon != std::string::npos) {
      format = field.substr(colon + 1);
      field = field.substr(0, colon);
    }
    auto it = values.find(field);
    if (it == values.end())
      throw std::invalid_argument("trainloop: ModelCheckpoint: the filename names '" + field + "', which was not logged");
    char text[64];
    if (format.empty() && it->second == static_cast<double>(static_cast<std::int64_t>(it->second)))
      std::snprintf(text, sizeof text, "%lld", static_cast<long long>(it->second));
    else if (format.empty())
      std::snprintf(text, sizeof text, "%g", it->second);
    else
      std::snprintf(text, sizeof text, ("%" + format).c_str(), it->second);
    out += text;
    i = close + 1;
  }
  return out;
}
TRAINLOOP_DETAIL_API bool ModelCheckpoint::keeps(double score) const {
  if (options_.monitor.empty() || options_.save_top_k == -1) return true;
  if (static_cast<std::int64_t>(kept_.size()) < options_.save_top_k) return true;
  for (const auto& [path, s] : kept_)
    if (better(score, s)) return true;
  return false;
}
TRAINLOOP_DETAIL_API std::vector<std::string> ModelCheckpoint::drop_beyond_top_k() {
  std::vector<std::string> dropped;
  while (options_.save_top_k > 0 && static_cast<std::int64_t>(kept_.size()) > options_.save_top_k) {
    auto worst = kept_.begin();  // in saving order: the oldest first
    if (!options_.monitor.empty())
      for (auto it = kept_.begin(); it != kept_.end(); ++it)
        if (better(worst->second, it->second)) worst = it;
    dropped.push_back(worst->first);
    kept_.erase(worst);
  }
  update_best();
  return dropped;
}
TRAINLOOP_DETAIL_API void ModelCheckpoint::update_best() {
  best_path_.clear();
  best_score_.reset();
  for (const auto& [path, score] : kept_)
    if (options_.monitor.empty() || !best_score_ || better(score, *best_score_)) best_path_ = path, best_score_ = score;
  if (options_.monitor.empty()) best_score_.reset();  // "best" is the latest when nothing is ranked
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
