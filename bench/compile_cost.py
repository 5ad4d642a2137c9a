#!/usr/bin/env python3
"""What trainloop costs at compile time: translation units doing the same work by hand and through trainloop, each
compiled N times, interleaved, minimum seconds and ratios printed (nothing asserted: timings are for people).

  bench/compile_cost.py [--runs N] [--no-pch] [--core-only] [--smoke] [--cxx g++] [--flags "-std=c++17 -O2"]

  hand_written.cpp  an MLP + Adam loop with validation and a test pass, <torch/torch.h> only      (torch baseline)
  trainer.cpp       the same through LightningModule + Trainer (fit with validation, then test)
  stdlib_only.cpp   a loop over a std::vector with printf                                          (core baseline)
  engine.cpp        the torch-free Engine with a Timer and a filtered handler (Compiler Explorer's case)

"separate" compiles the same source with -DTRAINLOOP_SEPARATE_COMPILATION=1 (trainloop's type-independent code only
declared); the one TU a program then adds (#define TRAINLOOP_IMPLEMENTATION) is timed once, without a ratio.

The torch TUs are also compiled against a precompiled <torch/torch.h> (g++ -include, -Winvalid-pch), which removes
LibTorch's parsing and leaves what is trainloop's and the user's; and the Trainer TU against a precompiled
<torch/torch.h> + <trainloop.hpp> (what CMake's trainloop_precompile_headers() builds), which leaves what the TU
instantiates. The sources include the single header, as users do.
--smoke compiles the torch-free TUs and the Trainer TU once, without the precompiled header (CI runs it, syntax
only, so the benchmark keeps working).
"""
import argparse
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = ROOT / "bench" / "compile_cost"


def torch_includes(extra):
    """LibTorch's API folder: the ones given, else Debian's."""
    folders = extra or [d for d in ("/usr/include/torch/csrc/api/include",) if os.path.isdir(d)]
    return [f for d in folders for f in ("-isystem", d)]


def compile_seconds(cxx, flags, source, extra):
    command = [cxx, *flags, *extra, "-c", str(source), "-o", os.devnull]
    start = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"compile_cost: failed: {shlex.join(command)}\n{result.stdout[-3000:]}")
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-pch", action="store_true", help="skip the precompiled-header variants")
    parser.add_argument("--smoke", action="store_true", help="one run, no precompiled header")
    parser.add_argument("--core-only", action="store_true", help="only the torch-free TUs")
    parser.add_argument("--cxx", default=os.environ.get("CXX", "g++"))
    parser.add_argument("--flags", default="-std=c++17 -O2")
    parser.add_argument("--torch-include", action="append", default=[], help="extra -isystem folders for LibTorch")
    args = parser.parse_args()
    runs = 1 if args.smoke else args.runs
    flags = shlex.split(args.flags) + ["-I", str(ROOT / "single_include")]
    torch = torch_includes(args.torch_include)
    core = ["-DTRAINLOOP_WITH_TORCH=0"]

    scratch = pathlib.Path(tempfile.mkdtemp(prefix="trainloop-compile-cost-"))
    try:
        # Separate compilation: the same TU declares trainloop's type-independent code instead of compiling it; the
        # program's one TRAINLOOP_IMPLEMENTATION TU compiles it once (reported, with no ratio: it is per program).
        separate = ["-DTRAINLOOP_SEPARATE_COMPILATION=1"]
        implementation = scratch / "trainloop_implementation.cpp"
        implementation.write_text("#define TRAINLOOP_IMPLEMENTATION\n#include <trainloop.hpp>\n")
        variants = [  # (name, source, extra flags, baseline name)
            ("stdlib only", "stdlib_only.cpp", core, None),
            ("torch-free Engine", "engine.cpp", core, "stdlib only"),
        ]
        if not args.smoke:
            variants += [("torch-free Engine, separate", "engine.cpp", core + separate, "stdlib only")]
        if args.smoke:  # the Trainer TU is the one trainloop's changes can break; the hand-written one is LibTorch's
            variants += [("Trainer", "trainer.cpp", torch, None)]
        elif not args.core_only:
            variants += [("hand-written loop", "hand_written.cpp", torch, None),
                         ("Trainer", "trainer.cpp", torch, "hand-written loop"),
                         ("Trainer, separate", "trainer.cpp", torch + separate, "hand-written loop"),
                         ("implementation TU (once)", implementation, torch, None)]
        if not (args.smoke or args.no_pch or args.core_only):
            def precompiled(name, text, extra):
                header = scratch / name
                header.write_text(text)
                start = time.perf_counter()
                subprocess.run([args.cxx, *flags, *extra, "-x", "c++-header", str(header), "-o", str(header) + ".gch"],
                               check=True)
                print(f"compile_cost: precompiled {name} in {time.perf_counter() - start:.1f} s")
                return extra + ["-include", str(header), "-Winvalid-pch"]

            # A precompiled <torch/torch.h> alone (what a project that precompiles LibTorch has), and with
            # <trainloop.hpp> too (trainloop_precompile_headers(); built with the TU's own macros, as CMake does).
            pch = precompiled("torch_pch.hpp", "#include <torch/torch.h>\n", torch)
            both = "#include <torch/torch.h>\n#include <trainloop.hpp>\n"
            pch_both = precompiled("torch_trainloop_pch.hpp", both, torch)
            pch_both_separate = precompiled("torch_trainloop_separate_pch.hpp", both, torch + separate)
            variants += [("hand-written loop, PCH", "hand_written.cpp", pch, None),
                         ("Trainer, PCH", "trainer.cpp", pch, "hand-written loop, PCH"),
                         ("Trainer, separate, PCH", "trainer.cpp", pch + separate, "hand-written loop, PCH"),
                         ("Trainer, PCH +trainloop", "trainer.cpp", pch_both, "hand-written loop, PCH"),
                         ("Trainer, separate, PCH +trainloop", "trainer.cpp", pch_both_separate,
                          "hand-written loop, PCH")]
        best = {name: float("inf") for name, *_ in variants}
        for _ in range(runs):  # interleaved, so a busy moment does not favour one variant
            for name, source, extra, _ in variants:
                best[name] = min(best[name], compile_seconds(args.cxx, flags, SOURCES / source, extra))
        print(f"\ncompile_cost: {args.cxx} {args.flags} -c, minimum of {runs} run(s)")
        print(f"  {'translation unit':<34} {'seconds':>8} {'ratio':>7}  against")
        for name, _, _, baseline in variants:
            ratio = f"{best[name] / best[baseline]:.2f}" if baseline else "1.00"
            print(f"  {name:<34} {best[name]:8.2f} {ratio:>7}  {baseline or '(baseline)'}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
