#!/usr/bin/env bash
# Installs the Debian packages trainloop builds, tests and trains on, skipping those already installed.
# Run as root or with sudo available. Safe to run again.
set -euo pipefail

packages=(
  g++ cmake ninja-build python3 pkg-config git  # git: the release checks cut releases from clones
  ccache                # optional: speeds up a second build on the same machine
  libtorch-dev          # LibTorch 1.13 (CMake config `Torch`)
  libgloo-dev           # c10d's Gloo backend, for TRAINLOOP_WITH_DISTRIBUTED
  python3-torch         # torchrun, for the distributed tests (optional: they skip its cases without it)
  python3-torchvision   # the transforms are checked against torchvision's (optional: the check skips without it)
  doctest-dev           # the test framework
  dataset-fashion-mnist # the real data the examples train on (/usr/share/datasets/fashion-mnist)
  zlib1g-dev            # gzip IDX files
  libturbojpeg0-dev libpng-dev  # the image decoders (TRAINLOOP_WITH_IMAGE_IO: ImageFolder, read_image)
  python3-pil           # tools/make_image_folder.py, and Pillow's pixels for the ImageFolder check
  # Debian's LibTorch calls the system libblas.so.3; without OpenBLAS that is the reference BLAS, and a small MLP
  # step runs ~15x slower. Installing OpenBLAS makes its alternative take over libblas.so.3.
  libopenblas0-openmp
)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi

# Say which BLAS LibTorch will get: the choice changes training speed more than anything in trainloop.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
case "$blas" in
  *openblas*) echo "setup: libblas.so.3 -> $blas (OpenBLAS)";;
  *) echo "setup: WARNING: libblas.so.3 -> ${blas:-none}, not OpenBLAS; LibTorch will be ~15x slower." \
          "Select OpenBLAS with: update-alternatives --config libblas.so.3-x86_64-linux-gnu" >&2;;
esac
