#!/usr/bin/env python3
"""Writes Fashion-MNIST as an image folder (torchvision's ImageFolder layout: one sub-folder per class).

    make_image_folder.py OUT [--split train|test] [--format png|jpeg] [--size 28] [--mode L|RGB] [--limit N]

Reads Debian's dataset-fashion-mnist (IDX .gz files) and writes OUT/<label>_<name>/<index>.<ext> with Pillow
(Debian's python3-pil). The class folders sort in label order ("0_T-shirt_top" ... "9_Ankle_boot"), so ImageFolder's
class indices equal Fashion-MNIST's labels. --size resizes with Pillow's bilinear filter; --mode RGB writes three
channels (the grey value repeated) as a colour corpus would have; JPEG quality is 90 (Pillow's default is 75).
Run it with /usr/bin/python3 (Debian's packages).
"""
import argparse
import gzip
import os
import struct
import sys

from PIL import Image

CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return shape, data[4 + 4 * dims:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--split", choices=["train", "test"], default="train")
    parser.add_argument("--format", choices=["png", "jpeg"], default="png")
    parser.add_argument("--size", type=int, default=28, help="edge in pixels (28: as stored)")
    parser.add_argument("--mode", choices=["L", "RGB"], default="L")
    parser.add_argument("--limit", type=int, default=0, help="write the first N images only (0: all)")
    parser.add_argument("--data", default=DATA, help="folder of the IDX .gz files")
    args = parser.parse_args()

    prefix = "train" if args.split == "train" else "t10k"
    (count, rows, cols), pixels = read_idx(os.path.join(args.data, prefix + "-images-idx3-ubyte.gz"))
    _, labels = read_idx(os.path.join(args.data, prefix + "-labels-idx1-ubyte.gz"))
    if args.limit:
        count = min(count, args.limit)
    folders = [os.path.join(args.out, "%d_%s" % (i, name)) for i, name in enumerate(CLASSES)]
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    extension = "png" if args.format == "png" else "jpg"
    size = rows * cols
    for i in range(count):
        image = Image.frombytes("L", (cols, rows), pixels[i * size:(i + 1) * size])
        if args.size != rows:
            image = image.resize((args.size, args.size), Image.BILINEAR)
        if args.mode != "L":
            image = image.convert(args.mode)
        path = os.path.join(folders[labels[i]], "%05d.%s" % (i, extension))
        if args.format == "png":
            image.save(path)
        else:
            image.save(path, quality=90)
    print("make_image_folder: wrote %d %s images of %dx%d (%s) under %s" % (count, args.format, args.size, args.size,
                                                                          args.mode, args.out))


if __name__ == "__main__":
    sys.exit(main())
