#!/usr/bin/env python3
"""The learning-rate finder's suggestion, checked against Lightning's rule run by PyTorch itself.

Each tests/data/lr_find/*.csv is a recorded (lr, loss) series: two from real runs of examples/fashion_mnist_trainer
--lr_find (MLP and CNN), and synthetic ones for the edges (a run stopped early by divergence, non-finite losses, a short
linear-mode run, a run too short to suggest anything). expected.txt holds the index Lightning's
_LRFinder.suggestion(skip_begin=10, skip_end=1) gives for each; test_tuner.cpp checks that trainloop's
lr_find_suggestion_index gives the same, and this script checks expected.txt against the rule below, which is
Lightning's, step for step: the slice [skip_begin:-skip_end], float32 tensors, the non-finite losses dropped,
torch.gradient with the learning rates as coordinates, argmin, the index mapped back (Lightning is not installed here;
the rule is short enough to restate, and it runs on PyTorch's own torch.gradient).

With a path to an LRFinderResult::save_plot SVG as argv[1], it also checks that the picture parses and holds the curve
and the suggestion's red dot."""
import csv
import os
import sys
import xml.dom.minidom

import torch

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "lr_find")


def lightning_suggestion_index(lrs, losses, skip_begin=10, skip_end=1):
    kept_losses = torch.tensor(losses[skip_begin:-skip_end])
    kept_lrs = torch.tensor(lrs[skip_begin:-skip_end])
    finite = torch.isfinite(kept_losses)
    kept_losses, kept_lrs = kept_losses[finite], kept_lrs[finite]
    if len(kept_losses) < 2:
        return None
    gradients = torch.gradient(kept_losses, spacing=[kept_lrs])[0]
    smallest = torch.argmin(gradients).item()
    return torch.arange(len(losses))[skip_begin:-skip_end][finite][smallest].item()


expected = {}
with open(os.path.join(here, "expected.txt")) as f:
    for line in f:
        if line.strip() and not line.startswith("#"):
            name, index = line.split()
            expected[name] = None if index == "none" else int(index)
series = sorted(n[:-4] for n in os.listdir(here) if n.endswith(".csv"))
assert sorted(expected) == series, (sorted(expected), series)
for name in series:
    with open(os.path.join(here, name + ".csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    lrs = [float(r["lr"]) for r in rows]
    losses = [float(r["loss"]) for r in rows]
    got = lightning_suggestion_index(lrs, losses)
    assert got == expected[name], f"{name}: Lightning's rule gives {got}, expected.txt says {expected[name]}"
    print(f"{name}: {len(lrs)} points, suggestion index {got}" + ("" if got is None else f", lr {lrs[got]:.3g}"))

if len(sys.argv) > 1:
    doc = xml.dom.minidom.parse(sys.argv[1])
    lines = doc.getElementsByTagName("polyline")
    assert len(lines) == 1 and len(lines[0].getAttribute("points").split()) >= 10, "the loss curve is missing"
    dots = [c for c in doc.getElementsByTagName("circle") if c.getAttribute("fill") == "red"]
    assert len(dots) == 1, "the suggestion's red dot is missing"
    print(f"{sys.argv[1]}: a curve of {len(lines[0].getAttribute('points').split())} points and the suggestion")
print("lr_find suggestion: ok")
