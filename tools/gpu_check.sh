#!/usr/bin/env bash
# The CUDA checks, in one call on a machine with an NVIDIA GPU, PyTorch 2.x (its LibTorch headers, libraries and CMake
# package) and no network: builds tests/gpu/*.cpp (mixed precision, checkpoints, metrics, histograms on the device and
# under 16-mixed, an NCCL data-parallel smoke on one GPU), the Fashion-MNIST Trainer example (separately compiled) and
# the AMP benchmark against the single header (mixed precision compiled in) with CMake's Torch package, runs each
# check, trains the example with --precision 16-mixed on CUDA (when the data is there; its CSV, TensorBoard and MLflow
# logs too, read back by TensorBoard where it is installed) and runs the benchmark. Prints what it ran on and each
# result; writes the log to $OUT/gpu_check.log when OUT is set; exits non-zero if a check fails. Device tool:
#   bash tools/gpu_check.sh     carry build/gpu-include (zlib's header, for a machine without zlib1g-dev) and
#                               build/fashion-mnist (tools/gpu_check.sh --stage-data copies Debian's files there)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--stage-data" ]; then  # on the machine with dataset-fashion-mnist, before the device call
  mkdir -p build/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz build/fashion-mnist/
  mkdir -p build/gpu-include && cp /usr/include/zlib.h /usr/include/zconf.h build/gpu-include/
  exit 0
fi
if [ -n "${OUT:-}" ]; then exec > >(tee "$OUT/gpu_check.log") 2>&1; fi
prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
echo "gpu_check: PyTorch $(python3 -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda, "CXX11 ABI", torch._C._GLIBCXX_USE_CXX11_ABI)')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
extra=()
[ -f /usr/include/zlib.h ] || extra=(-DTRAINLOOP_EXTRA_INCLUDE="$PWD/build/gpu-include")
# NCCL's header for the data-parallel smoke (tests/gpu/ddp_nccl.cpp), from the nvidia-nccl wheel PyTorch depends on.
# The wheel's layout differs between CUDA 12 (nvidia/nccl/include) and CUDA 13 wheels, so look for the header itself.
nvidia=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
nccl=$( [ -n "$nvidia" ] && find "$nvidia" -name nccl.h -print -quit 2>/dev/null || true)
[ -n "$nccl" ] && extra+=(-DTRAINLOOP_NCCL_INCLUDE="$(dirname "$nccl")")
start=$(date +%s)
cmake -S tests/gpu -B build/gpu -G "Unix Makefiles" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" "${extra[@]}" > build/gpu-cmake.log 2>&1 ||
  { tail -30 build/gpu-cmake.log; exit 1; }
status=0
# Keep going past a program that fails to build (make -k), so one call reports every check that can run.
cmake --build build/gpu -j "$(nproc)" -- -k || { status=1; echo "gpu_check: FAILED: some programs did not build"; }
echo "gpu_check: built in $(( $(date +%s) - start )) s"
export CUBLAS_WORKSPACE_CONFIG=:4096:8  # deterministic cuBLAS, for TrainerOptions().deterministic(true)
for program in build/gpu/*; do
  [ -f "$program" ] && [ -x "$program" ] || continue
  timeout 180 "$program" || { status=1; echo "gpu_check: FAILED: $program"; }
done
data=build/fashion-mnist
[ -d "$data" ] || data=/usr/share/datasets/fashion-mnist
if [ -f "$data/train-images-idx3-ubyte.gz" ]; then
  echo "gpu_check: Fashion-MNIST CNN, precision 16-mixed, 6 epochs, CSV/TensorBoard/MLflow logs (std::filesystem)"
  logs=build/gpu-logs
  rm -rf "$logs"
  t=$(date +%s)
  timeout 240 build/gpu/tools/fashion_mnist_trainer --data "$data" --epochs 6 --precision 16-mixed --min-accuracy 0.88 \
    --log-dir "$logs" | tail -7 || status=1
  echo "gpu_check: trained in $(( $(date +%s) - t )) s; log files: $(find "$logs" -type f | wc -l)," \
    "metrics.csv rows: $(cat "$logs"/csv/version_*/metrics.csv 2>/dev/null | wc -l)"
  find "$logs" -type f -newer build/gpu-cmake.log -size +0 | grep -q . || { status=1; echo "gpu_check: FAILED: no logs"; }
  # TensorBoard's own reader on the event file, where the machine has TensorBoard.
  if python3 -c 'import tensorboard' 2>/dev/null; then
    python3 - "$logs" <<'PY' || { status=1; echo "gpu_check: FAILED: TensorBoard could not read the event file"; }
import glob, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
runs = glob.glob(sys.argv[1] + "/tensorboard/version_*")
assert runs, "no TensorBoard run folder"
events = EventAccumulator(runs[0], size_guidance={"histograms": 0, "images": 0})
events.Reload()
tags = events.Tags()
assert tags["scalars"], "no scalars"
print("gpu_check: TensorBoard reads", {tag: len(events.Scalars(tag)) for tag in tags["scalars"]})
# The histograms (every 100 steps) and the images (a prediction grid per epoch, the confusion matrix) too.
assert tags["histograms"] and tags["images"], "no histograms or images"
print("gpu_check: TensorBoard reads", len(tags["histograms"]), "histogram tags,", len(events.Histograms(tags["histograms"][0])),
      "of", tags["histograms"][0], "; images:", {tag: len(events.Images(tag)) for tag in tags["images"]})
PY
  fi
else
  echo "gpu_check: no Fashion-MNIST at $data: the example was not run (tools/gpu_check.sh --stage-data)"
fi
timeout 180 build/gpu/tools/amp_step || status=1
exit $status
