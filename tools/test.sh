#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs every check trainloop has. This is the README's test command, and CI's.
#   1. the single header is in sync with parts/ and compiles alone, torch-free, with no torch on the include path
#   2. the full suite (g++, C++17, warnings as errors) against parts/ and against the single header
#   3. the torch-free core, and the torch suite (Trainer, checkpoints, resume, callbacks, data-parallel), under
#      AddressSanitizer + UndefinedBehaviorSanitizer
#   4. the torch-free core with clang, when clang++ is installed
#   5. the torch parts, mixed precision, data-parallel training and image files included, compile (-fsyntax-only) with
#      clang, and as C++17 and C++20 against LibTorch 2.x (Debian trixie's headers), the mixed-precision, data-parallel
#      and loader tests too
#   6. every part of parts/ compiles on its own, and every C++ block of README.md and docs/ compiles
#   7. `conan create` with the real Conan (../shared/tools/conan.sh, when it is there), both values of with_torch
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
step() { printf '\n==== %s\n' "$*"; }
# ccache, when installed, keeps compiled objects outside the clone (~/.cache/ccache): a second run on the same
# machine rebuilds little. Nothing needs it.
launcher=()
if command -v ccache > /dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
  export CCACHE_BASEDIR="$PWD"  # paths relative to the clone: another clone of the same sources hits the cache
fi

step "setup"
bash tools/setup.sh

step "single header: in sync, compiles alone without torch"
python3 tools/amalgamate.py --check
for std in c++17 c++20; do
  g++ -std=$std -Wall -Wextra -Wpedantic -Werror -DTRAINLOOP_WITH_TORCH=0 -fsyntax-only -x c++ single_include/trainloop.hpp
  g++ -std=$std -Wall -Wextra -Wpedantic -Werror -DTRAINLOOP_WITH_TORCH=0 -Isingle_include \
      examples/engine_basics/main.cpp -o build-engine-basics-check && ./build-engine-basics-check --smoke > /dev/null
done
rm -f build-engine-basics-check

step "full suite: g++, C++17, parts/ and single header"
# -O1: a third less compile time than Release's -O3 for the same checks (benchmark figures come from a Release build).
cmake -S . -B build/gcc -G Ninja -DCMAKE_BUILD_TYPE=Release -DTRAINLOOP_DEV_OPTIMIZATION=-O1 \
      -DTRAINLOOP_WARNINGS_AS_ERRORS=ON "${launcher[@]}"
cmake --build build/gcc -j "$jobs"
(cd build/gcc && ctest -j "$jobs" --output-on-failure --timeout 900)

# The real Conan 2.8.1 (not a Debian package: ../shared/tools/conan.sh runs it offline from its source) creates the
# package and builds and runs its test package, for both values of with_torch (the Trainer on this LibTorch; the Engine).
if [ -f ../shared/tools/conan.sh ]; then
  step "Conan: conan create, offline, with_torch=False and with_torch=True"
  for with_torch in False True; do
    bash ../shared/tools/conan.sh --offline-create 0.1.0 -o "trainloop/*:with_torch=$with_torch" > build/conan-$with_torch.log 2>&1 ||
      { tail -n 40 build/conan-$with_torch.log; exit 1; }
    grep -E "^trainloop 0\.1\.0" build/conan-$with_torch.log
  done
else
  step "Conan: skipped (../shared/tools/conan.sh is not beside this clone)"
fi

step "torch-free core under ASan + UBSan, C++20"
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTRAINLOOP_WITH_TORCH=OFF -DTRAINLOOP_SANITIZE=ON \
      -DCMAKE_CXX_STANDARD=20 -DTRAINLOOP_WARNINGS_AS_ERRORS=ON "${launcher[@]}"
cmake --build build/asan -j "$jobs"
(cd build/asan && ctest -j "$jobs" --output-on-failure -L core)

step "torch suite under ASan + UBSan (Trainer, checkpoints, resume and crash tests, callbacks, data-parallel)"
# LibTorch itself is not instrumented; leak checking is off because its process-lifetime singletons look like leaks.
# -g1 (line tables: reports keep file and line) compiles a fifth faster than Debug's -g.
cmake -S . -B build/asan-torch -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-g1 -DTRAINLOOP_SANITIZE=ON \
      -DTRAINLOOP_BUILD_EXAMPLES=OFF -DTRAINLOOP_BUILD_BENCH=OFF -DTRAINLOOP_WARNINGS_AS_ERRORS=ON "${launcher[@]}"
cmake --build build/asan-torch -j "$jobs" --target test_torch_parts trainloop_resume_child_parts test_distributed_parts \
      trainloop_ddp_child_parts
(cd build/asan-torch && ASAN_OPTIONS=detect_leaks=0 ctest -j "$jobs" --output-on-failure -R '^torch_parts(_resume.*|_distributed)?$')

if command -v clang++ > /dev/null; then
  step "torch-free core with clang"
  cmake -S . -B build/clang -G Ninja -DCMAKE_BUILD_TYPE=Release -DTRAINLOOP_WITH_TORCH=OFF \
        -DCMAKE_CXX_COMPILER=clang++ -DTRAINLOOP_WARNINGS_AS_ERRORS=ON
  cmake --build build/clang -j "$jobs"
  (cd build/clang && ctest -j "$jobs" --output-on-failure -L "core|compile_fail")
fi

step "torch parts: clang, and LibTorch 2.x as C++17 and C++20 (syntax only)"
torch_api=/usr/include/torch/csrc/api/include
# With mixed precision compiled in: its autocast calls differ between LibTorch 1.x and 2.4+.
check_flags=(-Wall -Wextra -Wpedantic -Werror -fsyntax-only -DTRAINLOOP_WITH_TORCH=1 -DTRAINLOOP_WITH_AMP=1
             -DTRAINLOOP_WITH_DISTRIBUTED=1 -DUSE_DISTRIBUTED -DUSE_C10D_GLOO -Isingle_include)
bash tools/fetch_libtorch2.sh build/libtorch2
lt2=build/libtorch2/usr/include
echo "LibTorch $(cat build/libtorch2/.complete)"
lt2_flags=(-isystem "$lt2" -isystem "$lt2/torch/csrc/api/include")
# The checks are independent, single-threaded compiles: they run $jobs at a time (xargs fails if any fails).
checks=()
add_check() { checks+=("$(printf '%q ' "$@")"); }
if command -v clang++ > /dev/null; then
  add_check clang++ -std=c++17 "${check_flags[@]}" -isystem "$torch_api" tests/compile/torch_instantiation.cpp
fi
add_check g++ -std=c++17 "${check_flags[@]}" "${lt2_flags[@]}" tests/compile/torch_instantiation.cpp
add_check g++ -std=c++20 "${check_flags[@]}" "${lt2_flags[@]}" tests/compile/torch_instantiation.cpp
# The mixed-precision tests take LibTorch 2.x's fused CPU scaler kernels there: their comparison with the fallback compiles.
add_check g++ -std=c++17 "${check_flags[@]}" -Itests/torch "${lt2_flags[@]}" tests/torch/test_amp.cpp
# The loader's tests instantiate it over every kind of dataset (user types, torch::data's Example, structs), with workers
# and the transforms, the image decoders (TurboJPEG and libpng from the system) and the streaming loader.
add_check g++ -std=c++17 "${check_flags[@]}" -DTRAINLOOP_WITH_IMAGE_IO=1 "${lt2_flags[@]}" tests/torch/test_loader.cpp
if command -v clang++ > /dev/null; then
  add_check clang++ -std=c++17 "${check_flags[@]}" -DTRAINLOOP_WITH_IMAGE_IO=1 -isystem "$torch_api" -include torch/torch.h \
            tests/torch/test_loader.cpp
fi
# The data-parallel tests and the NCCL smoke hold c10d's classes directly (Backend vs ProcessGroup bases differ in 2.x).
add_check g++ -std=c++17 "${check_flags[@]}" -Itests/torch "${lt2_flags[@]}" tests/torch/test_distributed.cpp
add_check g++ -std=c++17 "${check_flags[@]}" "${lt2_flags[@]}" tests/gpu/ddp_nccl.cpp
# The histograms' CUDA check (tests/gpu/media_cuda.cpp) runs only where a GPU is lent: it compiles here.
add_check g++ -std=c++17 "${check_flags[@]}" "${lt2_flags[@]}" tests/gpu/media_cuda.cpp
# Every C++ block of README.md and docs/ (one TU, every feature on).
add_check python3 tools/check_doc_snippets.py -- -DTRAINLOOP_WITH_TORCH=1 -DTRAINLOOP_WITH_AMP=1 \
          -DTRAINLOOP_WITH_DISTRIBUTED=1 -DUSE_DISTRIBUTED -DUSE_C10D_GLOO -isystem "$torch_api"
printf '%s\n' "${checks[@]}" | xargs -P "$jobs" -I{} bash -c '{}'

step "every part compiles on its own"
python3 tools/check_parts.py --jobs "$jobs"

step "all checks passed"
