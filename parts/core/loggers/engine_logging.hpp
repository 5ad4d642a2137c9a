// trainloop: loggers on an Engine (Ignite's OutputHandler habit): an Engine handler that hands engine.state.metrics
// to a logger.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <cstdint>
#include <exception>
#include <map>
#include <string>

#include "parts/core/engine.hpp"

TRAINLOOP_DETAIL_BEGIN

/// `make_engine(step, log_metrics_to(logger, {"val/", 0, &trainer_engine}))`: at each epoch end (and every
/// `every_n_iterations` iterations when set) the engine's metrics go to the logger as "<prefix><name>", with the
/// epoch, at the step of `step_from` (another engine, e.g. the trainer when this is the evaluator) or of this engine's
/// iteration count. With `finalize`, the logger is finalized when the engine fails, and when it completes unless
/// `step_from` is still running (an evaluator inside training: the run ends once, with the outer run — put `finalize`
/// on the outer engine's log_metrics_to too, or let the logger's destructor end it). The logger is held by
/// reference: it must outlive the engine, and several engines may share it.
template <class Logger>
class EngineLogging {
 public:
  struct Options {
    std::string prefix;
    std::uint64_t every_n_iterations = 0;  ///< 0: epoch ends only
    const EngineCore* step_from = nullptr;
    bool finalize = false;
  };
  EngineLogging(Logger& logger, Options options) : logger_(&logger), options_(std::move(options)) {}

  template <class E>
  void on_started(E&) {
    logger_->start();
  }
  template <class E>
  void on_iteration_completed(E& engine) {
    if (options_.every_n_iterations > 0 && engine.state.iteration % options_.every_n_iterations == 0) write(engine);
  }
  template <class E>
  void on_epoch_completed(E& engine) {
    write(engine);
  }
  template <class E>
  void on_completed(E&) {
    if (options_.finalize && !(options_.step_from && options_.step_from->running())) logger_->finalize("success");
  }
  template <class E>
  void on_exception_raised(E&, std::exception_ptr) {
    if (options_.finalize) logger_->finalize("failed");
  }

 private:
  template <class E>
  void write(E& engine) {
    std::map<std::string, double> record;
    for (const auto& [name, value] : engine.state.metrics) record[options_.prefix + name] = value;
    record["epoch"] = static_cast<double>(engine.state.epoch);
    const auto& steps = options_.step_from ? options_.step_from->state : engine.state;
    logger_->log_metrics(static_cast<std::int64_t>(steps.iteration), record);
  }
  Logger* logger_;
  Options options_;
};

template <class Logger>
EngineLogging<Logger> log_metrics_to(Logger& logger, typename EngineLogging<Logger>::Options options = {}) {
  return EngineLogging<Logger>(logger, std::move(options));
}

TRAINLOOP_DETAIL_END
