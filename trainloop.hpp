// trainloop: a structured, complete, fast training loop for LibTorch, in one header.
// This is the development umbrella: it includes parts/ in order. Users copy single_include/trainloop.hpp, which
// tools/amalgamate.py generates from exactly this list.
#ifndef TRAINLOOP_HPP
#define TRAINLOOP_HPP

#include "parts/core/config.hpp"
#include "parts/core/type_name.hpp"
#include "parts/core/function.hpp"
#include "parts/core/events.hpp"
#include "parts/core/state.hpp"
#include "parts/core/filters.hpp"
#include "parts/core/hooks.hpp"
#include "parts/core/data_source.hpp"
#include "parts/core/engine.hpp"
#include "parts/core/handlers.hpp"
#include "parts/core/launch_environment.hpp"
#if TRAINLOOP_WITH_LOGGERS
#include "parts/core/crc32c.hpp"
#include "parts/core/loggers/common.hpp"
#include "parts/core/loggers/media.hpp"
#include "parts/core/loggers/csv.hpp"
#include "parts/core/loggers/tensorboard.hpp"
#include "parts/core/loggers/mlflow.hpp"
#include "parts/core/loggers/jsonl.hpp"
#endif
#include "parts/core/loggers/engine_logging.hpp"
#if TRAINLOOP_WITH_TORCH
#include <torch/torch.h>

#include "parts/torch/allocator.hpp"
#include "parts/torch/data/idx.hpp"
#include "parts/torch/data/dataset.hpp"
#include "parts/torch/data/transforms.hpp"
#include "parts/torch/data/image_io.hpp"
#include "parts/torch/data/image_folder.hpp"
#include "parts/torch/data/loader.hpp"
#include "parts/torch/data/stream.hpp"
#include "parts/torch/device.hpp"
#include "parts/torch/logging.hpp"
#include "parts/torch/media.hpp"
#include "parts/torch/metrics/metric.hpp"
#include "parts/torch/metrics/regression.hpp"
#include "parts/torch/metrics/classification.hpp"
#include "parts/torch/optim.hpp"
#include "parts/torch/schedulers.hpp"
#include "parts/torch/checkpoint.hpp"
#include "parts/torch/torch_save_format.hpp"
#include "parts/torch/pytorch_files.hpp"
#include "parts/torch/profiler.hpp"
#include "parts/torch/precision.hpp"
#if TRAINLOOP_WITH_DISTRIBUTED
#include "parts/torch/distributed/process_group.hpp"
#include "parts/torch/distributed/ddp.hpp"
#endif
#include "parts/torch/trainer_options.hpp"
#include "parts/torch/strategy.hpp"
#include "parts/torch/module.hpp"
#include "parts/torch/logger_connector.hpp"
#include "parts/torch/loop_progress.hpp"
#include "parts/torch/lightning_checkpoint.hpp"
#include "parts/torch/checkpoint_connector.hpp"
#include "parts/torch/trainer_core.hpp"
#include "parts/torch/callbacks/progress_bar.hpp"
#include "parts/torch/callbacks/model_summary.hpp"
#include "parts/torch/callback_list.hpp"
#include "parts/torch/loops/evaluation_loop.hpp"
#include "parts/torch/loops/optimization.hpp"
#include "parts/torch/loops/fit_loop.hpp"
#include "parts/torch/trainer.hpp"
#include "parts/torch/callbacks/early_stopping.hpp"
#include "parts/torch/callbacks/model_checkpoint.hpp"
#include "parts/torch/callbacks/preemption.hpp"
#include "parts/torch/callbacks/lr_monitor.hpp"
#include "parts/torch/callbacks/ema.hpp"
#include "parts/torch/callbacks/gradient_accumulation.hpp"
#include "parts/torch/callbacks/histograms.hpp"
#include "parts/torch/tuner.hpp"
#include "parts/torch/cli.hpp"
#endif
#include "parts/core/epilogue.hpp"

#endif  // TRAINLOOP_HPP
