#!/usr/bin/env python3
"""trainloop's ImageFolder and image decoders against torchvision's ImageFolder + PILToTensor (Debian's
python3-torchvision and python3-pil) on the same files: classes, class_to_idx, the samples' order and every pixel,
for ImageMode gray, rgb and rgba (Pillow's convert("L"), "RGB", "RGBA").

The folder holds a few hundred Fashion-MNIST images written by Pillow in every kind the decoders meet: PNG greyscale,
grey+alpha, RGB, RGBA, palette (with and without transparency, 8 and 4 bits), 1-bit, interlaced (Adam7, written here:
Pillow cannot); JPEG greyscale, RGB at 4:4:4, 4:2:2 and 4:2:0 subsampling, progressive; upper-case extensions, a
nested folder, a symbolic link to a file and one to a folder, files that are not images. PNG must be bitwise equal;
JPEG too (Pillow and TurboJPEG run the same libjpeg-turbo with the same settings: accurate integer DCT, fancy
upsampling). Damaged files must be errors naming the file, as Pillow's are.
  test_image_folder_torchvision.py PROBE   (PROBE: tests/torch/torchvision_probe.cpp, built)"""
import gzip
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

try:
    import torch
    from PIL import Image
    from torchvision.datasets import DatasetFolder
    from torchvision.transforms import PILToTensor
except ImportError as e:  # ctest counts exit code 77 as skipped
    print(f"skipped: {e} (install python3-torchvision and python3-pil)")
    sys.exit(77)

probe = sys.argv[1]
DATA = "/usr/share/datasets/fashion-mnist"
work = tempfile.mkdtemp(prefix="trainloop-image-folder-")
failures = []


def fashion_mnist(count):
    with gzip.open(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"), "rb") as f:
        data = f.read()
    n, rows, cols = struct.unpack(">III", data[4:16])
    size = rows * cols
    return [Image.frombytes("L", (cols, rows), data[16 + i * size:16 + (i + 1) * size]) for i in range(count)]


def colour(gray, i):
    """An RGB image from a grey one, with distinct channels (so channel order and luma are tested)."""
    inverted = gray.point(lambda v: 255 - v)
    shifted = gray.transform(gray.size, Image.AFFINE, (1, 0, i % 5, 0, 1, 0))
    return Image.merge("RGB", (gray, inverted, shifted))


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_interlaced_png(image, path):
    """An Adam7-interlaced 8-bit RGB PNG (Pillow reads these but cannot write them)."""
    width, height = image.size
    pixels = image.convert("RGB").tobytes()
    raw = b""
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
        xs, ys = range(x0, width, dx), range(y0, height, dy)
        if not xs or not ys:
            continue
        for y in ys:
            raw += b"\0" + b"".join(pixels[3 * (y * width + x):3 * (y * width + x) + 3] for x in xs)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw)) +
                png_chunk(b"IEND", b""))


def build_folder(root):
    images = fashion_mnist(360)
    kinds = []
    for i, gray in enumerate(images):
        rgb = colour(gray, i)
        kind = i % 18
        cls = ["a_png", "b_jpeg", "c_mixed", "d_nested"][i % 4]
        folder = os.path.join(root, cls, "deeper") if cls == "d_nested" and i % 8 == 3 else os.path.join(root, cls)
        os.makedirs(folder, exist_ok=True)
        stem = os.path.join(folder, "%04d" % i)
        if kind == 0:
            gray.save(stem + ".png")
        elif kind == 1:
            rgb.save(stem + ".png")
        elif kind == 2:
            rgba = rgb.copy()
            rgba.putalpha(gray)
            rgba.save(stem + ".PNG")
        elif kind == 3:
            Image.merge("LA", (gray, rgb.getchannel(1))).save(stem + ".png")
        elif kind == 4:
            rgb.quantize(64).save(stem + ".png")
        elif kind == 5:
            p = rgb.quantize(16)
            p.save(stem + ".png", bits=4)
        elif kind == 6:
            p = rgb.quantize(32)
            p.info["transparency"] = 0
            p.save(stem + ".png", transparency=0)
        elif kind == 7:
            gray.convert("1").save(stem + ".png")
        elif kind == 8:
            write_interlaced_png(rgb, stem + ".png")
        elif kind == 9:
            gray.save(stem + ".jpg", quality=90)
        elif kind == 10:
            rgb.save(stem + ".jpg", quality=90, subsampling=0)
        elif kind == 11:
            rgb.save(stem + ".jpeg", quality=75, subsampling=1)
        elif kind == 12:
            rgb.save(stem + ".JPG", quality=95, subsampling=2)
        elif kind == 13:
            rgb.resize((57, 43)).save(stem + ".jpg", quality=85, progressive=True)
        elif kind == 14:
            rgb.resize((31, 17)).save(stem + ".png")
        elif kind == 15:
            gray.resize((45, 33)).save(stem + ".jpg")
        elif kind == 16:
            rgb.convert("RGBA").save(stem + ".png")
        else:
            rgb.save(stem + ".png", compress_level=9)
        kinds.append(kind)
    # Not samples: other endings, a folder-like name.
    with open(os.path.join(root, "a_png", "notes.txt"), "w") as f:
        f.write("not an image")
    os.makedirs(os.path.join(root, "c_mixed", "x.png"), exist_ok=True)  # a folder with an image's name
    # Symbolic links are followed: to a file, and to a folder (inside another class's tree).
    os.symlink(os.path.abspath(os.path.join(root, "a_png", "0000.png")), os.path.join(root, "b_jpeg", "linked.png"))
    outside = os.path.join(work, "outside")
    os.makedirs(outside)
    gray.save(os.path.join(outside, "z.png"))
    os.symlink(outside, os.path.join(root, "c_mixed", "linked_folder"))
    with open(os.path.join(root, "README"), "w") as f:  # a file at the root is not a class
        f.write("classes are folders")


def run_probe(commands):
    result = subprocess.run([probe], input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=240)
    if result.returncode != 0:
        print(result.stderr)
        sys.exit("probe failed")
    return result.stdout.splitlines()


def check_folder(root, mode, answer, out):
    if answer == "no-image-io":
        print("skipped: the probe was built without TRAINLOOP_WITH_IMAGE_IO (install libturbojpeg0-dev and libpng-dev)")
        sys.exit(77)
    pil_mode = {"gray": "L", "rgb": "RGB", "rgba": "RGBA"}[mode]
    # ImageFolder with its loader's convert(mode) and our default extensions (torchvision takes them in DatasetFolder).
    reference = DatasetFolder(root, loader=lambda path: Image.open(path).convert(pil_mode), transform=PILToTensor(),
                            extensions=(".jpg", ".jpeg", ".png"))
    with open(out + ".index") as f:
        lines = f.read().splitlines()
    classes = lines[0].split("\t")
    if classes != reference.classes:
        failures.append(f"{mode}: classes {classes} != torchvision's {reference.classes}")
    if {c: i for i, c in enumerate(classes)} != reference.class_to_idx:
        failures.append(f"{mode}: class_to_idx differs")
    samples = [line.split("\t") for line in lines[1:]]
    if [(path, int(label)) for label, _, path in samples] != reference.samples:
        failures.append(f"{mode}: samples differ: {[s[2] for s in samples][:5]} ... vs {reference.samples[:5]} ...")
        return
    with open(out, "rb") as f:
        pixels = bytearray(f.read())
    offset, mismatched = 0, 0
    for i, (label, shape, path) in enumerate(samples):
        shape = [int(d) for d in shape.split(",")]
        n = shape[0] * shape[1] * shape[2]
        ours = torch.frombuffer(pixels, dtype=torch.uint8, count=n, offset=offset).reshape(shape)
        offset += n
        theirs, their_label = reference[i]
        if list(theirs.shape) != shape or not torch.equal(ours, theirs):
            worst = (ours.int() - theirs.int()).abs().max().item() if list(theirs.shape) == shape else "shape"
            failures.append(f"{mode}: {path}: pixels differ from Pillow's (largest difference {worst}; shape {shape} "
                            f"vs {list(theirs.shape)})")
            mismatched += 1
    print(f"{mode}: {len(samples)} images, {len(classes)} classes, {mismatched} differ from torchvision")


def check_bad_files():
    """Damaged files: an error from us naming the file and the decoder's reason, and Pillow fails on them too."""
    bad = os.path.join(work, "bad")
    os.makedirs(bad)
    good_png, good_jpg = os.path.join(bad, "good.png"), os.path.join(bad, "good.jpg")
    image = colour(fashion_mnist(1)[0], 1)
    image.save(good_png)
    image.save(good_jpg)
    cases = {}
    for name, source, keep in [("cut.png", good_png, 0.6), ("cut.jpg", good_jpg, 0.6), ("cut_late.jpg", good_jpg, 0.9), ("header.png", good_png, 0.03)]:
        with open(source, "rb") as f:
            data = f.read()
        cases[name] = data[:int(len(data) * keep)]
    with open(good_png, "rb") as f:
        data = bytearray(f.read())
    data[60] ^= 0xFF  # inside the image data: a CRC that does not match
    cases["crc.png"] = bytes(data)
    cases["text.png"] = b"this is not a PNG file at all"
    cases["empty.jpg"] = b""
    paths = []
    for name, data in cases.items():
        path = os.path.join(bad, name)
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    answers = run_probe([f"decode {p} rgb" for p in paths] + [f"decode {os.path.join(bad, 'missing.png')} rgb"])
    for path, answer in zip(paths + [os.path.join(bad, "missing.png")], answers):
        if not answer.startswith("error ") or path not in answer:
            failures.append(f"{path}: expected an error naming the file, got: {answer}")
        try:
            Image.open(path).convert("RGB")
            failures.append(f"{path}: Pillow reads it, so it should not be called damaged")
        except Exception:
            pass
        print(f"{os.path.basename(path)}: {answer}")


root = os.path.join(work, "folder")
build_folder(root)
modes = ["gray", "rgb", "rgba"]
outs = [os.path.join(work, f"{mode}.raw") for mode in modes]
answers = run_probe([f"folder {root} {mode} {out}" for mode, out in zip(modes, outs)])
for mode, answer, out in zip(modes, answers, outs):
    check_folder(root, mode, answer, out)
check_bad_files()
shutil.rmtree(work)
if failures:
    print("\n".join(failures[:40]))
    print(f"{len(failures)} failures")
    sys.exit(1)
print("ok")
