#!/usr/bin/env bash
# Unpacks Debian trixie's LibTorch 2.x headers into a folder, without touching the system's apt state,
# so our headers can be syntax-checked against LibTorch 2.x on a bookworm machine (LibTorch 1.13 installed).
# Usage: tools/fetch_libtorch2.sh DEST   -> DEST/usr/include/{torch,ATen,c10,...}
set -euo pipefail
dest=${1:?usage: tools/fetch_libtorch2.sh DEST}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
if [ -f "$dest/.complete" ]; then echo "LibTorch 2.x headers already in $dest"; exit 0; fi
state="$dest/.apt"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/debs"
printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  > "$state/trixie.sources"
apt_opts=(-o "Dir::Etc::SourceParts=$state/none"
          -o "Dir::Etc::sourcelist=$state/trixie.sources" -o "Dir::State=$state" -o "Dir::State::Lists=$state/lists"
          -o "Dir::Cache=$state/cache" -o "Dir::State::status=/dev/null" -o "APT::Architecture=amd64" -o "Debug::NoLocking=1")
mkdir -p "$state/none"
apt-get "${apt_opts[@]}" -q update >/dev/null
# The headers are spread over these packages in trixie (torch, ATen, c10, caffe2 config).
cd "$state/debs"
apt-get "${apt_opts[@]}" -o APT::Sandbox::User=root -q download libtorch-dev >/dev/null
for deb in "$state"/debs/*.deb; do dpkg -x "$deb" "$dest"; done
test -f "$dest/usr/include/torch/csrc/api/include/torch/torch.h" || { echo "no torch.h in $dest"; exit 1; }
dpkg-deb -f "$state"/debs/libtorch-dev*.deb Version > "$dest/.complete"
echo "LibTorch $(cat "$dest/.complete") headers in $dest/usr/include"
