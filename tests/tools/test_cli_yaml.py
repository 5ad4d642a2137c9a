#!/usr/bin/env python3
"""trainloop::cli's YAML, read by PyYAML (Debian's python3-yaml), through examples/fashion_mnist_trainer:

1. --print_config's output (what --config reads and config.yaml holds) loads in PyYAML with the types it has in C++:
   ints, floats, bools, strings, nulls, lists.
2. A hand-written file (tests/data/cli/run.yaml: comments, quotes, ~, yes/off, 1.0e-2, .5) read by the example gives,
   key by key, the values PyYAML reads from it.
3. The printed configuration read back with --config prints the same text (a run reproduces from its config.yaml).
4. --help lists every option --print_config prints, and the old flags as aliases.
5. A run with --lr_find --log-dir writes config.yaml (equal to --print_config's) into the CSV log folder, and the
   finder's plot (lr_find.svg) holds the curve and the suggestion.

usage: test_cli_yaml.py EXAMPLE_BINARY"""
import os
import subprocess
import sys
import tempfile
import xml.dom.minidom

import yaml

example = sys.argv[1]
source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "cli", "run.yaml")


def run(*args):
    result = subprocess.run([example, *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat(value, name + "."))
        else:
            out[name] = value
    return out


printed = run("--print_config")
config = yaml.safe_load(printed)
values = flat(config)
assert set(config) == {"seed_everything", "trainer", "model", "data", "run", "ckpt_path"}, set(config)
assert values["trainer.max_epochs"] == 6 and type(values["trainer.max_epochs"]) is int
assert values["model.lr"] == 1e-3 and type(values["model.lr"]) is float
assert values["trainer.deterministic"] is False and values["trainer.enable_progress_bar"] is True
assert values["trainer.precision"] == "32" and values["trainer.accelerator"] == "auto"
assert values["seed_everything"] is None and values["ckpt_path"] is None
assert values["trainer.limit_train_batches"] == 1.0 and type(values["trainer.limit_train_batches"]) is float

written = yaml.safe_load(open(source))
read = flat(yaml.safe_load(run("--config", source, "--print_config")))
for key, value in flat(written).items():
    assert read[key] == value, f"{key}: PyYAML reads {value!r} from run.yaml, the CLI {read[key]!r}"
    if isinstance(value, bool) or value is None:
        assert read[key] is value, (key, read[key])

with tempfile.TemporaryDirectory() as d:
    again = os.path.join(d, "again.yaml")
    with open(again, "w") as f:
        f.write(run("--config", source, "--print_config"))
    assert run("--config", again, "--print_config") == open(again).read()

    help_text = run("--help")
    for key in values:
        assert f"--{key} " in help_text, key
    for alias in ("--epochs", "--smoke", "--log-dir", "--strategy", "--devices", "--lr_find"):
        assert f"  {alias} " in help_text, alias

    log_dir = os.path.join(d, "logs")
    args = ["--model", "mlp", "--lr_find", "--run.lr_find_steps", "40", "--trainer.max_steps", "3",
            "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2", "--trainer.enable_progress_bar",
            "false", "--log-dir", log_dir]
    out = run(*args)
    assert "learning-rate finder: 40 steps, suggested lr" in out, out
    saved = open(os.path.join(log_dir, "csv", "version_0", "config.yaml")).read()
    assert saved == run(*args, "--print_config"), "config.yaml differs from --print_config"
    doc = xml.dom.minidom.parse(os.path.join(log_dir, "lr_find.svg"))
    curve = doc.getElementsByTagName("polyline")
    assert len(curve) == 1 and len(curve[0].getAttribute("points").split()) == 40
    assert [c for c in doc.getElementsByTagName("circle") if c.getAttribute("fill") == "red"]
    rows = open(os.path.join(log_dir, "lr_find.csv")).read().splitlines()
    assert rows[0] == "lr,loss" and len(rows) == 41, rows[:3]
print("cli yaml: ok")
