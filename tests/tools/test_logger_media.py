"""What trainloop's loggers write beside scalars, read back by their documented layouts and checked by the tools users
compare against: tests/torch/pytorch_probe.cpp `media DIR` logs histograms, images and text to a TensorBoardLogger and
an MLFlowLogger; this reads the event file with a reader of its own (TFRecord framing, masked CRC32C, protobuf by
field number: event.proto, summary.proto, histogram.proto, tensor.proto), and checks

- histograms against numpy: torch.utils.tensorboard's make_histogram (np.histogram over the float64 values with
  TensorFlow's default bins or the chosen edges, trimmed as it trims), num/min/max/sum/sum_squares;
- images decoded by PIL to the pixels add_image's scaling gives, the grid to torchvision.utils.make_grid's;
- text as add_text writes it; MLflow's artifacts (time-stepped image names, text, a copied file) byte for byte.

TensorBoard's own EventAccumulator and MLflow's MlflowClient are not Debian packages; where the interpreter has them
they read the same files too. Debian's torch.utils.tensorboard cannot be the reference for histograms (its
make_histogram fails with Debian's numpy), so its algorithm is restated here with numpy.

  test_logger_media.py PROBE
Exit 77 (ctest: skipped) without torch, torchvision, numpy or PIL."""
import glob
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torchvision
    from PIL import Image
except ImportError as missing:
    print(f"{missing}: skipped")
    sys.exit(77)

PROBE = sys.argv[1]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def records(path):
    data = open(path, "rb").read()
    at = 0
    while at < len(data):
        (length,) = struct.unpack_from("<Q", data, at)
        (length_crc,) = struct.unpack_from("<I", data, at + 8)
        body = data[at + 12 : at + 12 + length]
        (body_crc,) = struct.unpack_from("<I", data, at + 12 + length)
        if masked(crc32c(data[at : at + 8])) != length_crc or masked(crc32c(body)) != body_crc:
            raise AssertionError(f"bad CRC in record at byte {at}")
        yield body
        at += 12 + length + 4


def fields(message):
    """(number, wire type, value) of each field: varints as int, fixed64/32 as bytes, length-delimited as bytes."""
    out, at = [], 0

    def varint():
        nonlocal at
        value, shift = 0, 0
        while True:
            b = message[at]
            at += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    while at < len(message):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 1:
            value, at = message[at : at + 8], at + 8
        elif wire == 5:
            value, at = message[at : at + 4], at + 4
        elif wire == 2:
            n = varint()
            value, at = message[at : at + n], at + n
        else:
            raise AssertionError(f"wire type {wire}")
        out.append((number, wire, value))
    return out


def first(message, number):
    return next((v for n, _, v in fields(message) if n == number), None)


def f64(raw):
    return struct.unpack("<d", raw)[0]


def make_histogram(values, bins):
    """torch.utils.tensorboard.summary.make_histogram (max_bins None), restated."""
    values = values.reshape(-1)
    counts, limits = np.histogram(values, bins=bins)
    cum_counts = np.cumsum(np.greater(counts, 0))
    start, end = np.searchsorted(cum_counts, [0, cum_counts[-1] - 1], side="right")
    start, end = int(start), int(end) + 1
    counts = counts[start - 1 : end] if start > 0 else np.concatenate([[0], counts[:end]])
    limits = limits[start : end + 1]
    return dict(min=values.min(), max=values.max(), num=len(values), sum=values.sum(), sum_squares=values.dot(values),
                bucket_limit=limits.tolist(), bucket=counts.tolist())


def tensorflow_bins():
    v, buckets, neg_buckets = 1e-12, [], []
    while v < 1e20:
        buckets.append(v)
        neg_buckets.append(-v)
        v *= 1.1
    return neg_buckets[::-1] + [0] + buckets


def add_image_pixels(chw):
    """torch.utils.tensorboard.summary.image's conversion: HWC, one channel as three, x255 unless uint8, clip, cast."""
    hwc = chw.permute(1, 2, 0).numpy()
    if hwc.shape[2] == 1:
        hwc = np.concatenate([hwc, hwc, hwc], 2)
    scale = 1 if hwc.dtype == np.uint8 else 255
    return (hwc.astype(np.float32) * scale).clip(0, 255).astype(np.uint8)


def main():
    tmp = tempfile.mkdtemp(prefix="trainloop_logger_media_")
    try:
        r = subprocess.run([PROBE, "media", tmp], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError(f"probe failed: {r.stdout}{r.stderr}")
        inputs = torch.load(os.path.join(tmp, "inputs.pt"))
        event_files = glob.glob(os.path.join(tmp, "tb", "lightning_logs", "version_0", "events.out.tfevents.*"))
        check(len(event_files) == 1, "one event file")
        values = {}  # tag -> (step, the Summary.Value's fields)
        for body in records(event_files[0]):
            step = first(body, 2) or 0
            summary = first(body, 5)
            if summary is None:
                continue
            for number, _, value in fields(summary):
                if number == 1:
                    values[first(value, 1).decode()] = (step, value)

        # Histograms: Value.histo = 5.
        for tag, name, bins, step in [("weights/fc/weight", "weights", tensorflow_bins(), 3),
                                      ("chosen", "chosen", [-1, -0.5, 0, 0.5, 1], 4)]:
            expected = make_histogram(inputs[name].numpy().astype(float), bins)
            got_step, value = values[tag]
            histo = first(value, 5)
            got = {n: v for n, _, v in fields(histo)}
            check(got_step == step, f"{tag}: step {step}")
            check(f64(got[1]) == expected["min"] and f64(got[2]) == expected["max"] and f64(got[3]) == expected["num"],
                  f"{tag}: min, max, num as numpy's")
            check(np.isclose(f64(got[4]), expected["sum"], rtol=1e-12, atol=1e-12) and
                  np.isclose(f64(got[5]), expected["sum_squares"], rtol=1e-12), f"{tag}: sum and sum of squares")
            limits = list(struct.unpack(f"<{len(got[6]) // 8}d", got[6]))
            counts = list(struct.unpack(f"<{len(got[7]) // 8}d", got[7]))
            check(limits == expected["bucket_limit"], f"{tag}: {len(limits)} bucket limits, exactly make_histogram's")
            check(counts == [float(c) for c in expected["bucket"]], f"{tag}: every bucket's count, make_histogram's")

        # Images: Value.image = 4 {height 1, width 2, colorspace 3, encoded_image_string 4}, decoded by PIL.
        grid = torchvision.utils.make_grid(inputs["rgb"], nrow=4)
        check(torch.equal(grid, inputs["grid"]), "make_grid: torchvision's grid, pixel for pixel")
        reference = torchvision.utils.make_grid(inputs["normalized_input"], normalize=True, scale_each=True, pad_value=0.5)
        check(torch.allclose(reference, inputs["normalized"], atol=1e-6), "make_grid(normalize, scale_each, pad_value): torchvision's")
        for tag, expected in [("gray", add_image_pixels(inputs["gray"])), ("grid", add_image_pixels(inputs["grid"]))]:
            _, value = values[tag]
            image = first(value, 4)
            png = first(image, 4)
            decoded = np.asarray(Image.open(io.BytesIO(png)))
            check(first(image, 1) == expected.shape[0] and first(image, 2) == expected.shape[1] and
                  first(image, 3) == expected.shape[2], f"{tag}: height, width, colorspace")
            check(decoded.shape == expected.shape and (decoded == expected).all(), f"{tag}: PIL decodes add_image's pixels")
        confusion = np.asarray(Image.open(io.BytesIO(first(first(values["confusion"][1], 4), 4))))
        check(confusion.shape == (3 * 24 + 1, 3 * 24 + 1, 3), "confusion matrix: 3x3 cells of 24 pixels")

        # Text: "<tag>/text_summary", metadata plugin "text", a DT_STRING tensor of shape [1].
        step, value = values["note/text_summary"]
        plugin = first(first(value, 9), 1)
        tensor = first(value, 8)
        check(step == 7 and first(plugin, 1) == b"text", "text: add_text's tag and plugin")
        check(first(tensor, 1) == 7 and first(first(first(tensor, 2), 2), 1) == 1 and first(tensor, 8) == b"a *Markdown* note",
              "text: DT_STRING, shape [1], the text")

        # MLflow: the run's artifacts.
        runs = [d for d in glob.glob(os.path.join(tmp, "mlruns", "0", "*")) if os.path.isdir(d)]
        check(len(runs) == 1, "one MLflow run")
        artifacts = os.path.join(runs[0], "artifacts")
        images = sorted(os.listdir(os.path.join(artifacts, "images")))
        check(len(images) == 2 and images[0].startswith("val#grid%step%5%timestamp%") and images[0].endswith("%compressed.webp")
              and images[1] == images[0][: -len("%compressed.webp")] + ".png", f"MLflow image names: {images}")
        decoded = np.asarray(Image.open(os.path.join(artifacts, "images", images[1])))
        check((decoded == add_image_pixels(inputs["grid"])).all(), "MLflow image: PIL decodes the grid")
        check(open(os.path.join(artifacts, "text", "note", "step_7.txt")).read() == "a *Markdown* note", "MLflow text")
        check(open(os.path.join(artifacts, "configs", "config.yaml"), "rb").read() ==
              open(os.path.join(tmp, "config.yaml"), "rb").read(), "MLflow log_artifact: byte-identical copy")
        check(open(os.path.join(runs[0], "tags", "mlflow.loggedImages")).read() == "True", "tag mlflow.loggedImages")

        try:  # the real readers, where installed
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
            acc = EventAccumulator(os.path.dirname(event_files[0]), size_guidance={"histograms": 0, "images": 0})
            acc.Reload()
            histo = acc.Histograms("weights/fc/weight")[0].histogram_value
            check(histo.num == len(inputs["weights"]), "EventAccumulator reads the histogram")
            check(acc.Images("grid")[0].width == inputs["grid"].shape[2], "EventAccumulator reads the image")
        except ImportError:
            print("skip TensorBoard's EventAccumulator: not installed")
        try:
            import mlflow
            client = mlflow.MlflowClient(tracking_uri="file://" + os.path.join(tmp, "mlruns"))
            run_id = os.path.basename(runs[0])
            listed = [a.path for a in client.list_artifacts(run_id)]
            check("configs" in listed and "images" in listed, f"MlflowClient lists the artifacts: {listed}")
            local = client.download_artifacts(run_id, "configs/config.yaml", tmp)
            check(open(local, "rb").read() == open(os.path.join(tmp, "config.yaml"), "rb").read(), "MlflowClient downloads it")
        except ImportError:
            print("skip MLflow's MlflowClient: not installed")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} FAILED")
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
