"""Files that cross between trainloop and Python's PyTorch, both ways, checked by PyTorch itself (torch.load,
load_state_dict, torch.optim) against tests/torch/pytorch_probe.cpp: state dicts bitwise, optimizer states and their
next step to 1e-6, Lightning's checkpoint layout (built here by Lightning's dump_checkpoint layout, since Lightning is
not installable from Debian), and the errors for files that are not what they should be.

  test_pytorch_interop.py PROBE
Exit 77 (ctest: skipped) without torch."""
import collections
import os
import pickletools
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

try:
    import torch
except ImportError:
    print("no torch in this interpreter: skipped")
    sys.exit(77)

PROBE = sys.argv[1]
TMP = tempfile.mkdtemp(prefix="trainloop_pytorch_interop_")
failures = []


def probe(*args, ok=True):
    r = subprocess.run([PROBE, *map(str, args)], capture_output=True, text=True, timeout=120)
    if ok and r.returncode != 0:
        raise AssertionError(f"probe {args} failed: {r.stdout}{r.stderr}")
    return r


ALLOWED_GLOBALS = {"torch._utils _rebuild_tensor_v2", "collections OrderedDict"}


def load_ours(name):
    """A file trainloop wrote, with only the globals torch.load's weights_only unpickler allows (its default since
    PyTorch 2.6; LibTorch's own pickler writes torch.jit._pickle type tags, which it refuses). Checked by the
    pickle's opcodes: Debian's PyTorch 1.13 has an older weights_only unpickler (it cannot read floats)."""
    with zipfile.ZipFile(name) as archive:
        pickle = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    found = {arg for op, arg, _ in pickletools.genops(pickle) if op.name == "GLOBAL"}
    unsafe = {g for g in found if g not in ALLOWED_GLOBALS and not re.fullmatch(r"torch \w+Storage", g)}
    check(not unsafe and not any(op.name in ("STACK_GLOBAL", "INST", "OBJ") for op, _, _ in pickletools.genops(pickle)),
          f"{os.path.basename(name)}: only the globals weights_only allows ({sorted(found)})")
    return torch.load(name)


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def path(name):
    return os.path.join(TMP, name)


def same_tensor(a, b):
    return (a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
            and a.storage_offset() == b.storage_offset() and torch.equal(a, b))


def same_value(a, b, where=""):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and same_tensor(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a.keys()) == list(b.keys()) and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) == type(b) and len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b and type(a) == type(b)


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 8)
        self.fc2 = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


class Cnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        self.head = torch.nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class Embedder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(10, 4)
        self.out = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.out(self.embedding(x)).squeeze(-1)


MODELS = {"mlp": Mlp, "cnn": Cnn, "embedding": Embedder}


class Opaque:  # a user's class: C++ has no type for it
    def __init__(self):
        self.value = 3


def main():
    torch.manual_seed(0)
    # 1. Python -> C++ -> Python, bitwise: models' state dicts and tensors of every kind.
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    odd = {
        "transposed": base.t(),                      # non-contiguous
        "sliced": base[1:3, ::2],                    # offset and strides into a shared storage
        "shared": base,
        "half": torch.randn(3, 2).half(),
        "bfloat16": torch.randn(5).bfloat16(),
        "int64": torch.tensor([1, -2, 2**40]),
        "bool": torch.tensor([True, False]),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 3),
        "nested": {"list": [1, 2.5, "three", None, True], "tuple": (0.9, 0.999), "int_keys": {0: 1, 7: 2}},
    }
    for name, cls in MODELS.items():
        model = cls()
        if name == "cnn":
            model(torch.randn(4, 1, 8, 8))  # BatchNorm's running statistics and num_batches_tracked move
        odd[name] = model.state_dict()
    torch.save(odd, path("python.pt"))
    probe("copy", path("python.pt"), path("copied.pt"))
    back = load_ours(path("copied.pt"))
    for key in odd:
        check(same_value(odd[key], back[key]), f"Python -> C++ -> Python: {key} bitwise (dtype, shape, strides, values)")
    check(back["sliced"].storage().data_ptr() == back["shared"].storage().data_ptr(),
          "views keep sharing their storage")
    for name, cls in MODELS.items():
        model = cls()
        model.load_state_dict(back[name])  # strict
        check(True, f"{name}: the copied state dict loads into Python's model (strict)")

    # C++ -> Python -> C++: tensors of every kind made in C++ are what Python makes; Python saves them, C++ copies
    # that, and the result is what C++ wrote first.
    probe("tensors", path("cpp_tensors.pt"))
    made = load_ours(path("cpp_tensors.pt"))
    expected = {"transposed": base.t(), "sliced": base[1:3, ::2], "shared": base,
                "half": (torch.arange(6, dtype=torch.float32) / 7).reshape(3, 2).half(),
                "bfloat16": (torch.arange(5, dtype=torch.float32) / 3).bfloat16(),
                "int64": torch.tensor([1, -2, 2**40]), "bool": torch.tensor([True, False]),
                "scalar": torch.tensor(2.5, dtype=torch.float64)}
    for key, value in expected.items():
        check(same_tensor(value, made[key]), f"C++ -> Python: {key} (dtype, shape, strides, offset, values)")
    torch.save(made, path("python_again.pt"))
    probe("copy", path("python_again.pt"), path("cpp_again.pt"))
    again = load_ours(path("cpp_again.pt"))
    check(same_value(dict(made), dict(again)), "C++ -> Python -> C++ -> Python: every tensor bitwise")

    # 2. C++ -> Python -> C++: a C++ model's state dict in Python's model, outputs equal; and back.
    for name, cls in MODELS.items():
        probe("save_state", name, path(f"cpp_{name}.pt"))
        state = load_ours(path(f"cpp_{name}.pt"))
        model = cls()
        model.load_state_dict(state)
        model.eval()
        io = load_ours(path(f"cpp_{name}.pt.io"))
        with torch.no_grad():
            out = model(io["input"])
        check(torch.allclose(out, io["output"], atol=1e-6, rtol=0), f"{name}: C++ weights in Python give C++'s outputs")
        check(list(state.keys()) == list(model.state_dict().keys()), f"{name}: PyTorch's names in PyTorch's order")
        if name == "cnn":
            check(int(state["features.1.num_batches_tracked"]) == 3, "cnn: num_batches_tracked = 3 steps")
        torch.save(model.state_dict(), path(f"py_{name}.pt"))
        probe("load_state", name, path(f"py_{name}.pt"), path(f"cpp_again_{name}.pt"))
        again = load_ours(path(f"cpp_again_{name}.pt"))
        check(same_value(dict(model.state_dict()), again) and same_value(dict(state), again),
              f"{name}: C++ -> Python -> C++ model -> Python bitwise")

    # 3. Optimizers: our Adam's and SGD's state equal PyTorch's after the same steps; PyTorch continues from ours.
    torch.manual_seed(1)
    model = Mlp()
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    data = {"state_dict": start, "x": x, "y": y, "steps": 5, "lr": 0.01}
    torch.save(data, path("optim_data.pt"))
    for name, make in {"adam": lambda p: torch.optim.Adam(p, lr=0.01),
                       "sgd": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)}.items():
        probe("optimizer", name, path("optim_data.pt"), path(f"optim_{name}.pt"))
        ours = load_ours(path(f"optim_{name}.pt"))
        model = Mlp()
        model.load_state_dict(start)
        optimizer = make(model.parameters())
        for _ in range(5):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
        theirs = optimizer.state_dict()
        ok = list(theirs["state"].keys()) == list(ours["optimizer"]["state"].keys())
        for index, state in theirs["state"].items():
            mine = ours["optimizer"]["state"][index]
            ok &= list(state.keys()) == list(mine.keys())
            for key, value in state.items():
                ok &= torch.allclose(value.float(), mine[key].float(), atol=1e-6, rtol=0) and value.dtype == mine[key].dtype
        check(ok, f"{name}: state key by key equals PyTorch's after 5 steps (1e-6)")
        group, mine = theirs["param_groups"][0], ours["optimizer"]["param_groups"][0]
        check(all(k in mine and mine[k] == v for k, v in group.items() if k not in ("fused", "foreach")),
              f"{name}: param_groups' hyperparameters and params equal PyTorch's ({sorted(group)})")
        # PyTorch's optimizer from our file, on our weights: its next step is ours.
        model = Mlp()
        model.load_state_dict(ours["state_dict"])
        optimizer = make(model.parameters())
        optimizer.load_state_dict(load_ours(path(f"optim_{name}.pt.optimizer")))
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        check(all(torch.allclose(v, ours["next_state_dict"][k], atol=1e-6, rtol=0) for k, v in model.state_dict().items()),
              f"{name}: PyTorch's optimizer loaded from our file takes our next step (1e-6)")

    # 4. Lightning's layout. Ours, read by torch.load: every key dump_checkpoint writes, with its type and nesting.
    probe("fit_lightning", path("ours.ckpt"))
    ckpt = load_ours(path("ours.ckpt"))
    expected = {"epoch": int, "global_step": int, "pytorch-lightning_version": str, "state_dict": dict,
                "loops": dict, "callbacks": dict, "optimizer_states": list, "lr_schedulers": list,
                "hparams_name": str, "hyper_parameters": dict}
    for key, kind in expected.items():
        check(isinstance(ckpt.get(key), kind), f"Lightning layout: '{key}' is a {kind.__name__}")
    check(ckpt["epoch"] == 2 and ckpt["global_step"] == 6, "epoch 2 and global step 6 after 2 epochs of 3 batches")
    fit_loop = ckpt["loops"]["fit_loop"]
    check(set(ckpt["loops"]) == {"fit_loop", "validate_loop", "test_loop", "predict_loop"}, "loops: Lightning's four")
    check(fit_loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"]["total"]["completed"] == 6,
          "loops: the optimizer steps Lightning's global_step reads")
    check(fit_loop["epoch_progress"]["current"]["completed"] == 2, "loops: 2 epochs completed")
    check(ckpt["hyper_parameters"] == {"hidden": 8, "lr": 0.01} and ckpt["hparams_name"] == "kwargs",
          "hyper_parameters as save_hyperparameters gave them")
    model = Mlp()
    model.load_state_dict(ckpt["state_dict"])  # what load_from_checkpoint does (strict)
    check(True, "state_dict loads into the Python module (strict)")
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    adam.load_state_dict(ckpt["optimizer_states"][0])
    check(int(adam.state_dict()["state"][0]["step"]) == 6, "optimizer_states[0]: Adam's state, step 6")
    scheduler = torch.optim.lr_scheduler.StepLR(adam, step_size=2, gamma=0.5)
    scheduler.load_state_dict(ckpt["lr_schedulers"][0])
    check(scheduler.last_epoch == 6 and abs(scheduler.get_last_lr()[0] - 0.01 * 0.5 ** 3) < 1e-12,
          "lr_schedulers[0]: StepLR continues at step 6 (lr 0.01 * 0.5^3)")
    weights = load_ours(path("ours.ckpt.weights"))
    check("state_dict" in weights and "optimizer_states" not in weights and "loops" in weights,
          "weights_only: Lightning's weights-only layout")

    # Lightning's, resumed by trainloop: a checkpoint as Lightning's dump_checkpoint writes it (OrderedDict weights,
    # Adam's state after 4 steps, StepLR, the fit loop's progress at an epoch's end), and the next step compared.
    torch.manual_seed(2)
    model = Mlp()
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(adam, step_size=2, gamma=0.5)
    for _ in range(4):
        adam.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        adam.step()
        scheduler.step()

    def tracker(n, started=True, processed=True):
        t = {"ready": n, "completed": n}
        if started:
            t["started"] = n
        if processed:
            t["processed"] = n
        return t

    def progress(n, **kw):
        return {"total": tracker(n, **kw), "current": tracker(n, **kw)}

    lightning = {
        "epoch": 3, "global_step": 4, "pytorch-lightning_version": "2.4.0",
        "state_dict": model.state_dict(),  # an OrderedDict with _metadata, as Lightning's
        "loops": {"fit_loop": {
            "state_dict": {}, "epoch_progress": {"total": dict(tracker(4), completed=3), "current": dict(tracker(4), completed=3)},
            "epoch_loop.state_dict": {"_batches_that_stepped": 4},
            "epoch_loop.batch_progress": dict(progress(4), is_last_batch=True),
            "epoch_loop.scheduler_progress": progress(4, started=False, processed=False),
            "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {
                "step": progress(4, started=False, processed=False), "zero_grad": progress(4, processed=False)}},
        }, "validate_loop": {}, "test_loop": {}, "predict_loop": {}},
        "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
                      "'train_time_interval': None}": {"best_model_score": None, "best_model_path": "x.ckpt"}},
        "optimizer_states": [adam.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "hparams_name": "kwargs", "hyper_parameters": {"hidden": 8, "lr": 0.01},
    }
    torch.save(lightning, path("theirs.ckpt"))
    torch.save({"x": x, "y": y, "global_step": 4}, path("theirs.ckpt.data"))
    r = probe("resume_lightning", path("theirs.ckpt"), path("resumed.pt"))
    check("ModelCheckpoint{" in r.stderr and "not mapped" in r.stderr, "what is not mapped is named in one warning")
    adam.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    adam.step()
    scheduler.step()
    resumed = load_ours(path("resumed.pt"))
    check(resumed["global_step"] == 5 and resumed["epoch"] == 5,
          "resumed at epoch 4, global step 4: one step (max_steps 5) ends the fit after epoch 4, as in Lightning")
    check(all(torch.allclose(v, resumed["state_dict"][k], atol=1e-6, rtol=0) for k, v in model.state_dict().items()),
          "a Lightning checkpoint resumed here takes PyTorch's next step (Adam's state, 1e-6)")
    check(abs(resumed["lr"] - scheduler.get_last_lr()[0]) < 1e-12, "and the scheduler continues (StepLR's lr)")

    # 5. Bad files: each a clear error naming the file (and the key where there is one).
    torch.save({"hyper_parameters": {"config": Opaque()}, "state_dict": {}}, path("opaque.ckpt"))
    r = probe("read", path("opaque.ckpt"), ok=False)
    check("opaque.ckpt" in r.stdout and "hyper_parameters/config" in r.stdout and "Opaque" in r.stdout,
          f"a user's class: the file, key and class named ({r.stdout.strip()})")
    raw = open(path("python.pt"), "rb").read()
    open(path("truncated.pt"), "wb").write(raw[: len(raw) // 2])
    r = probe("read", path("truncated.pt"), ok=False)
    check("truncated.pt" in r.stdout and "error" in r.stdout, f"truncated: {r.stdout.strip()}")
    torch.save({"a": torch.ones(2)}, path("legacy.pt"), _use_new_zipfile_serialization=False)
    r = probe("read", path("legacy.pt"), ok=False)
    check("legacy" in r.stdout, f"legacy format: {r.stdout.strip()}")
    open(path("text.pt"), "w").write("not a checkpoint\n")
    r = probe("read", path("text.pt"), ok=False)
    check("text.pt" in r.stdout and "not a zip" in r.stdout, f"not a file of either format: {r.stdout.strip()}")
    wrong = Mlp().state_dict()
    wrong["fc1.weight"] = torch.zeros(8, 5)
    del wrong["fc2.bias"]
    wrong["extra"] = torch.zeros(1)
    torch.save(wrong, path("wrong.pt"))
    r = probe("load_state", "mlp", path("wrong.pt"), path("unused.pt"), ok=False)
    check(all(s in r.stdout for s in ('Missing key(s) in state_dict: "fc2.bias"', 'Unexpected key(s) in state_dict: "extra"',
                                      "size mismatch for fc1.weight")),
          "a different model: missing, unexpected and shape mismatches in one error")
    check(not os.path.exists(path("unused.pt")), "and nothing written after it")

    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
