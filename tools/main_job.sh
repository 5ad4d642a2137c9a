#!/usr/bin/env bash
# The main job: sets up a fresh Debian machine, builds the Fashion-MNIST Trainer example, and trains its CNN with
# validation (progress bar on the terminal, plain lines otherwise), then tests it. The logged metrics go to
# runs/fashion_mnist_trainer/csv/version_N/metrics.csv and to TensorBoard event files in
# runs/fashion_mnist_trainer/tensorboard/version_N/; tools/plot_metrics draws the curves into
# runs/fashion_mnist_trainer/curves.svg. Extra arguments go to the example (--model mlp, --epochs N, --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build/main -G Ninja -DCMAKE_BUILD_TYPE=Release -DTRAINLOOP_BUILD_TESTS=OFF -DTRAINLOOP_BUILD_BENCH=OFF
cmake --build build/main --target fashion_mnist_trainer -j "$(nproc)"
./build/main/examples/fashion_mnist_trainer --log-dir runs/fashion_mnist_trainer "$@"
latest=$(ls -d runs/fashion_mnist_trainer/csv/version_* | sort -t_ -k3 -n | tail -1)
python3 tools/plot_metrics "$latest/metrics.csv" -o runs/fashion_mnist_trainer/curves.svg --title "Fashion-MNIST CNN ($latest)"
