#!/usr/bin/env bash
# The main job: sets up a fresh Debian machine, builds the Fashion-MNIST example, and trains it, printing progress
# and writing the run's metrics to runs/. Extra arguments go to the example (for example --epochs 5, --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build/main -G Ninja -DCMAKE_BUILD_TYPE=Release -DTRAINLOOP_BUILD_TESTS=OFF -DTRAINLOOP_BUILD_BENCH=OFF
cmake --build build/main --target fashion_mnist_engine -j "$(nproc)"
./build/main/examples/fashion_mnist_engine --log-dir runs/fashion_mnist_engine "$@"
