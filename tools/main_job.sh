#!/usr/bin/env bash
# The main job: sets up a fresh Debian machine, builds the Fashion-MNIST Trainer example, and trains its CNN with
# validation (progress bar on the terminal, plain lines otherwise), then tests it; the epoch metrics go to
# runs/fashion_mnist_trainer/metrics.csv. Extra arguments go to the example (--model mlp, --epochs N, --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build/main -G Ninja -DCMAKE_BUILD_TYPE=Release -DTRAINLOOP_BUILD_TESTS=OFF -DTRAINLOOP_BUILD_BENCH=OFF
cmake --build build/main --target fashion_mnist_trainer -j "$(nproc)"
./build/main/examples/fashion_mnist_trainer --log-dir runs/fashion_mnist_trainer "$@"
