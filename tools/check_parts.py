#!/usr/bin/env python3
"""Compiles every part of parts/ on its own (-fsyntax-only), so each one includes the parts and headers it uses: an
editor, an include graph or a reader opening one file sees its dependencies.

Core parts (parts/core/) compile torch-free, with no torch on the include path. Torch parts compile with every feature
macro on (mixed precision, data parallelism, image files) after a precompiled <torch/torch.h> (built once, so the
check takes a minute rather than ten); that they include a torch header themselves is checked in their text.

  python3 tools/check_parts.py [--cxx g++] [--jobs N] [--torch-include DIR ...] [PART ...]
"""
import argparse
import concurrent.futures
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
WARNINGS = ["-Wall", "-Wextra", "-Wpedantic", "-Werror"]
TORCH_MACROS = ["-DTRAINLOOP_WITH_TORCH=1", "-DTRAINLOOP_WITH_AMP=1", "-DTRAINLOOP_WITH_DISTRIBUTED=1",
                "-DTRAINLOOP_WITH_IMAGE_IO=1", "-DUSE_DISTRIBUTED", "-DUSE_C10D_GLOO"]
TORCH_HEADER = re.compile(r'^\s*#\s*include\s+<(torch|ATen|c10)/', re.M)


def compile_one(cxx, flags, part, prefix, workdir):
    source = workdir / (part.replace("/", "_") + ".cpp")
    source.write_text(prefix + f'#include "{part}"\n', encoding="utf-8")
    result = subprocess.run([cxx, *flags, "-fsyntax-only", str(source)], capture_output=True, text=True)
    return part, result.returncode, result.stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cxx", default="g++")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--torch-include", action="append", default=[], help="LibTorch include dirs (default: Debian's)")
    parser.add_argument("parts", nargs="*", help="parts to check (default: all)")
    args = parser.parse_args()
    parts = args.parts or sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "parts").rglob("*.hpp"))
    torch_dirs = args.torch_include or ["/usr/include/torch/csrc/api/include"]
    failures = []
    for part in parts:
        text = (ROOT / part).read_text(encoding="utf-8")
        if part.startswith("parts/torch/") and not TORCH_HEADER.search(text):
            failures.append((part, "includes no torch header (<torch/...>, <ATen/...> or <c10/...>)"))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        core_flags = ["-std=c++17", *WARNINGS, "-DTRAINLOOP_WITH_TORCH=0", f"-I{ROOT}"]
        torch_flags = ["-std=c++17", *WARNINGS, *TORCH_MACROS, f"-I{ROOT}", f"-I{workdir}"]
        for d in torch_dirs:
            torch_flags += ["-isystem", d]
        if any(p.startswith("parts/torch/") for p in parts):
            header = workdir / "torch_first.hpp"
            header.write_text("#include <torch/torch.h>\n", encoding="utf-8")
            pch = subprocess.run([args.cxx, *torch_flags, "-x", "c++-header", str(header), "-o", str(header) + ".gch"],
                                 capture_output=True, text=True)
            if pch.returncode != 0:
                sys.exit("check_parts: cannot precompile <torch/torch.h>:\n" + pch.stderr)
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            jobs = []
            for part in parts:
                if part.startswith("parts/torch/"):
                    jobs.append(pool.submit(compile_one, args.cxx, torch_flags, part, '#include "torch_first.hpp"\n', workdir))
                else:
                    jobs.append(pool.submit(compile_one, args.cxx, core_flags, part, "", workdir))
            for job in jobs:
                part, code, stderr = job.result()
                if code != 0:
                    failures.append((part, "does not compile on its own:\n" + "\n".join(stderr.splitlines()[:12])))
    for part, why in failures:
        print(f"check_parts: {part} {why}", file=sys.stderr)
    if failures:
        return 1
    print(f"check_parts: {len(parts)} parts compile on their own")
    return 0


if __name__ == "__main__":
    sys.exit(main())
