#!/usr/bin/env python3
"""trainloop's transforms against torchvision's on the same images and parameters (Debian's python3-torchvision).
Deterministic ops must match bitwise (torchvision computes them with the same LibTorch kernels); the random ones,
with a generator seeded s, must give what torchvision's transform gives after torch.manual_seed(s).
  test_transforms_torchvision.py PROBE   (PROBE: tests/torch/torchvision_probe.cpp, built)"""
import os
import subprocess
import sys
import tempfile

try:
    import torch
    import torchvision.transforms as T
    import torchvision.transforms.functional as F
except ImportError as e:  # ctest counts exit code 77 as skipped
    print(f"skipped: {e} (install python3-torchvision)")
    sys.exit(77)

probe = sys.argv[1]
work = tempfile.mkdtemp(prefix="trainloop-transforms-")
failures = []


commands, expectations = [], []


def ours(op, image, *args):
    """Queues trainloop's op on `image`; the probe runs every queued command at the end, in one process."""
    k = len(commands)
    path_in, path_out = os.path.join(work, f"in{k}.raw"), os.path.join(work, f"out{k}.raw")
    with open(path_in, "wb") as f:
        f.write(image.contiguous().numpy().tobytes())
    dtype = "uint8" if image.dtype == torch.uint8 else "float32"
    shape = ",".join(str(d) for d in image.shape)
    commands.append(" ".join([op, path_in, path_out, dtype, shape, *map(str, args)]))
    return path_out


def compare(name, ours_path, expected):
    expectations.append((name, ours_path, expected.clone()))


def read_result(path, line):
    out_dtype, out_shape = line.split()
    with open(path, "rb") as f:
        data = bytearray(f.read())
    out = torch.frombuffer(data, dtype=torch.uint8 if out_dtype == "uint8" else torch.float32)
    return out.reshape([int(d) for d in out_shape.split(",")])


torch.manual_seed(0)
byte_image = torch.randint(0, 256, (3, 17, 23), dtype=torch.uint8)
float_image = torch.rand(3, 17, 23)
hwc = torch.randint(0, 256, (17, 23, 3), dtype=torch.uint8)

compare("to_float CHW", ours("to_float_chw", byte_image), F.convert_image_dtype(byte_image, torch.float32))
compare("to_float HWC (to_tensor)", ours("to_float_hwc", hwc), F.to_tensor(hwc.numpy()))
for image, kind in ((byte_image, "uint8"), (float_image, "float")):
    compare(f"hflip {kind}", ours("hflip", image), F.hflip(image))
    for mode in ("constant", "edge", "reflect", "symmetric"):
        compare(f"pad {mode} {kind}", ours("pad", image, 2, 1, 3, 0, 7, mode), F.pad(image, [2, 1, 3, 0], 7, mode))
    for top, left, h, w in ((2, 3, 10, 12), (-2, 15, 8, 11), (10, -4, 9, 30)):
        compare(f"crop {top},{left},{h},{w} {kind}", ours("crop", image, top, left, h, w), F.crop(image, top, left, h, w))
    for size in ([10, 12], [40, 50], [13], [17, 23], [30]):
        compare(f"resize {size} {kind}", ours("resize", image, ",".join(map(str, size))),
                F.resize(image, size, antialias=False))
    for seed in range(6):
        torch.manual_seed(seed)
        compare(f"RandomCrop(15, padding=2) seed {seed} {kind}", ours("random_crop", image, seed, 15, 2),
                T.RandomCrop(15, padding=2)(image))
        torch.manual_seed(seed)
        compare(f"RandomHorizontalFlip(0.5) seed {seed} {kind}", ours("random_hflip", image, seed, 0.5),
                T.RandomHorizontalFlip(0.5)(image))
mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
compare("normalize", ours("normalize", float_image, ",".join(map(str, mean)), ",".join(map(str, std))),
        F.normalize(float_image, mean, std))

result = subprocess.run([probe], input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=240)
if result.returncode != 0:
    print(result.stderr, file=sys.stderr)
    sys.exit(1)
lines = result.stdout.splitlines()
assert len(lines) == len(expectations), (len(lines), len(expectations))
for (name, path, expected), line in zip(expectations, lines):
    got = read_result(path, line)
    if got.shape != expected.shape or got.dtype != expected.dtype:
        failures.append(f"{name}: got {got.dtype} {list(got.shape)}, torchvision {expected.dtype} {list(expected.shape)}")
    elif not torch.equal(got, expected):
        diff = (got.double() - expected.double()).abs().max().item()
        failures.append(f"{name}: not bitwise equal (max difference {diff})")
    else:
        print(f"ok {name} (bitwise)")

for f in os.listdir(work):
    os.remove(os.path.join(work, f))
os.rmdir(work)
if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print("all transforms match torchvision")
