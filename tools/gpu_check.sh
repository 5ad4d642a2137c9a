#!/usr/bin/env bash
# The CUDA checks, in one call on a machine with an NVIDIA GPU, PyTorch 2.x (its LibTorch headers, libraries and
# CMake package) and no network: builds tests/gpu/*.cpp against the single header with CMake's Torch package and runs
# each. Prints what it ran on and each check's result; exits non-zero if one fails. With the device tool:
#   bash tools/gpu_check.sh        (carry build/gpu-include: zlib's header, for a machine without zlib1g-dev)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
echo "gpu_check: PyTorch $(python3 -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda, "CXX11 ABI", torch._C._GLIBCXX_USE_CXX11_ABI)')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
extra=()
[ -f /usr/include/zlib.h ] || extra=(-DTRAINLOOP_EXTRA_INCLUDE="$PWD/build/gpu-include")
start=$(date +%s)
cmake -S tests/gpu -B build/gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" "${extra[@]}" > build/gpu-cmake.log 2>&1 ||
  { tail -30 build/gpu-cmake.log; exit 1; }
cmake --build build/gpu -j "$(nproc)"
echo "gpu_check: built in $(( $(date +%s) - start )) s"
export CUBLAS_WORKSPACE_CONFIG=:4096:8  # deterministic cuBLAS, for TrainerOptions().deterministic(true)
status=0
for program in build/gpu/*; do
  [ -f "$program" ] && [ -x "$program" ] || continue
  "$program" || status=1
done
exit $status
