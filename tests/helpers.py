"""Helpers the tests share: tiny data and models made here, fault injection, deadlines.

Tests import from here (never from conftest or from one another); fixtures stay in conftest.
"""

from __future__ import annotations

import builtins
import contextlib
import csv
import errno
import os
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fcls.infer.common.output import TEMP_SUFFIX


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging) when the block runs past `seconds` (SIGALRM, main thread)."""

    def expire(*_: object) -> None:
        pytest.fail(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def dead_pid() -> int:
    """The pid of a process that has already exited (for leftovers of killed runs)."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def write_train_csv(path: Path, pixels: np.ndarray, labels: np.ndarray) -> Path:
    """Write rows in the notebook's train format (pix1..pix1024,label)."""
    header = ",".join([*(f"pix{i}" for i in range(1, 1025)), "label"])
    rows = np.column_stack([pixels, labels]).astype(np.int64)
    np.savetxt(path, rows, fmt="%d", delimiter=",", header=header, comments="")
    return path


def sparse_pixels(n: int, seed: int = 0) -> np.ndarray:
    """(n, 1024) uint8, mostly zeros like real images (keeps generated files small)."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 256, size=(n, 1024), dtype=np.uint8)
    out[rng.random((n, 1024)) < 0.7] = 0
    return out


def write_eval_csv(path: Path, pixels: np.ndarray, ids: list[str] | None = None) -> Path:
    """Write rows in the notebook's evaluate format (ID,pix1..pix1024)."""
    ids = ids if ids is not None else [str(i) for i in range(len(pixels))]
    header = ",".join(["ID", *(f"pix{i}" for i in range(1, 1025))])
    with path.open("w") as f:
        f.write(header + "\n")
        for i, row in zip(ids, pixels):
            if any(c in i for c in ',"\n'):
                i = '"' + i.replace('"', '""') + '"'
            f.write(i + "," + ",".join(map(str, row.tolist())) + "\n")
    return path


def tiny_weights() -> np.ndarray:
    """The (1024, 10) float32 weights of `tiny_model`."""
    return np.random.default_rng(0).normal(size=(1024, 10)).astype(np.float32) / 64


def tiny_model(path: Path) -> Path:
    """A one-layer graph with fcls's interface: uint8 [batch,1024] -> logits, label."""
    w = tiny_weights()
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["x", "w"], ["logits"]),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", 1024])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def naive_ece_nll(logits: np.ndarray, y: np.ndarray, bins: int = 15) -> tuple[float, float]:
    """ECE over `bins` equal-width confidence bins and the mean NLL, row by row in float64."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    members: dict[int, list[tuple[float, bool]]] = {}
    for p, label in zip(probs, y):
        conf = float(p.max())
        b = min(max(int(np.ceil(conf * bins)) - 1, 0), bins - 1)
        members.setdefault(b, []).append((conf, int(p.argmax()) == label))
    ece = sum(
        abs(np.mean([c for c, _ in m]) - np.mean([h for _, h in m])) * len(m) / len(y)
        for m in members.values()
    )
    nll = float(np.mean([-np.log(p[label]) for p, label in zip(probs, y)]))
    return float(ece), nll


def tiny_logits(pixels: np.ndarray) -> np.ndarray:
    """What `tiny_model` computes: (n, 10) float32 logits of (n, 1024) uint8 rows."""
    return pixels.astype(np.float32) @ tiny_weights()


def with_profile(model: Path, profile: Any) -> Path:
    """Store `profile` (a common.drift.Profile) in the ONNX model's metadata, as fcls-export does."""
    from fcls.infer.common.drift import PROFILE_KEY

    proto = onnx.load(str(model))
    proto.metadata_props.add(key=PROFILE_KEY, value=profile.to_json())
    onnx.save(proto, str(model))
    return model


ERRNOS = [errno.ENOSPC, errno.EIO, errno.EACCES]


def oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def is_temp(path: Any) -> bool:
    return isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).endswith(TEMP_SUFFIX)


class _Faulty:
    """A file object whose `at`-th `write`, or whose `close`, fails (after really closing)."""

    def __init__(self, f: Any, point: str, code: int, at: int) -> None:
        self._f, self._point, self._code, self._left = f, point, code, at

    def write(self, data: Any) -> int:
        self._left -= 1
        if self._point == "write" and self._left <= 0:
            raise oserror(self._code)
        return self._f.write(data)

    def close(self) -> None:
        self._f.close()
        if self._point == "close":
            raise oserror(self._code)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def inject(monkeypatch: pytest.MonkeyPatch, point: str, code: int, at: int = 1) -> dict[str, int]:
    """Make one output step fail with `code` (temp files only; `write`: the `at`-th write);
    returns a counter of the calls that reached the fault."""
    calls = {"n": 0}
    real_open, real_os_open = builtins.open, os.open
    real_fsync, real_replace = os.fsync, os.replace

    def fake_os_open(path: Any, flags: int, *a: Any, **k: Any) -> int:
        if point == "create" and is_temp(path) and flags & os.O_CREAT:
            calls["n"] += 1
            raise oserror(code)
        return real_os_open(path, flags, *a, **k)

    def fake_open(path: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        if is_temp(path) and ("w" in mode or "+" in mode):
            if point == "open":
                calls["n"] += 1
                raise oserror(code)
            if point in ("write", "close"):
                calls["n"] += 1
                return _Faulty(real_open(path, mode, *a, **k), point, code, at)
        return real_open(path, mode, *a, **k)

    def fake_fsync(fd: int) -> None:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        if (point == "fsync" and not is_dir) or (point == "fsync_dir" and is_dir):
            calls["n"] += 1
            raise oserror(code)
        real_fsync(fd)

    def fake_replace(src: Any, dst: Any) -> None:
        if point == "replace" and is_temp(src):
            calls["n"] += 1
            raise oserror(code)
        real_replace(src, dst)

    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "fsync", fake_fsync)
    monkeypatch.setattr(os, "replace", fake_replace)
    return calls


def handles(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler installed for `signum` (Linux: /proc SigCgt)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def wait_until(condition: Any, seconds: float, what: str, proc: Any = None) -> None:
    """Poll `condition()` every 10 ms; fail after `seconds` or when `proc` exits first."""
    import time

    end = time.monotonic() + seconds
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process exited ({proc.returncode}) before {what}")
        if time.monotonic() > end:
            pytest.fail(f"no {what} within {seconds} s: a hang")
        time.sleep(0.01)


def run_cli(command: Any, *args: object, code: int = 0) -> Any:
    """Run a click `command` in-process; check its exit status, that no exception escaped
    (under CliRunner an escaped exception is exit 1 with no traceback in the output) and that
    no traceback was printed. Returns click's Result."""
    from click.testing import CliRunner

    result = CliRunner().invoke(command, [str(a) for a in args])
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    assert escaped is None, f"{type(escaped).__name__}: {escaped}\n{result.output}"
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    return result


def one_error_line(result: Any) -> str:
    """The run's single `Error: ...` line (with -q, the whole output)."""
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def temps_under(directory: Path) -> list[Path]:
    """Temp and backup files of atomic writes anywhere under `directory`."""
    return sorted(
        p for p in Path(directory).rglob("*") if p.name.endswith((TEMP_SUFFIX, ".fcls-bak"))
    )


def write_rows_csv(
    path: Path,
    pixels: np.ndarray,
    labels: Any = None,
    *,
    ids: list[str] | None = None,
    prefix: str = "pix",
    first: int = 1,
    label_at: int = -1,
    id_name: str = "ID",
) -> Path:
    """Rows of any geometry: (n, P) pixels in columns `{prefix}{first}..`, plus the label
    column at position `label_at` (0: first, -1: last) or an `id_name` column first."""
    names = [f"{prefix}{first + j}" for j in range(pixels.shape[1])]
    cells = [[str(v) for v in row] for row in pixels.tolist()]
    if labels is not None:
        at = len(names) if label_at == -1 else label_at
        names.insert(at, "label")
        for row, label in zip(cells, labels):
            row.insert(at, str(label))
    else:
        names.insert(0, id_name)
        for i, row in enumerate(cells):
            row.insert(0, ids[i] if ids is not None else str(i))
    with path.open("w") as f:
        f.write(",".join(names) + "\n")
        f.writelines(",".join(row) + "\n" for row in cells)
    return path


def fashion_28x28(train_csv: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` rows of the shared 32x32 Fashion file cropped by 2 pixels on each side:
    (n, 784) uint8 28x28 images, as Kaggle's Fashion-MNIST has them, and their labels."""
    from fcls.train.data import read_train

    pixels, labels = read_train(train_csv, limit=n)
    crop = pixels.reshape(-1, 32, 32)[:, 2:30, 2:30]
    return np.ascontiguousarray(crop).reshape(len(pixels), 28 * 28), labels


def rgb_digits(size: int = 16, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits 0..classes-1 as `size`x`size` RGB images (`size` a multiple of 8),
    each tinted a random colour: (n, size*size*3) uint8 rows, HWC interleaved, and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = digits.target < classes
    images, labels = digits.images[keep], digits.target[keep].astype(np.int64)
    if size % 8:
        raise ValueError(f"size {size} is not a multiple of the digits' 8 pixels")
    scale = size // 8
    grey = np.kron(images, np.ones((scale, scale))) * (255 / 16)  # (n, size, size) 0..255
    tint = np.random.default_rng(seed).uniform(0.3, 1.0, size=(len(images), 1, 1, 3))
    rgb = np.rint(grey[..., None] * tint).clip(0, 255).astype(np.uint8)
    return rgb.reshape(len(images), -1), labels


# A user's own network for `--arch module:Tiny`: its constructor takes the ImageSpec.
USER_NET = """
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.conv = nn.Conv2d(spec.channels, 8, 3)
        self.fc = nn.Linear(8 * (spec.height - 2) * (spec.width - 2), spec.n_classes)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x / 255)), 1))
"""


def untimed_history(out: Path) -> list[dict[str, str]]:
    """A training run's history.csv rows without their timings: what a resumed run must
    reproduce exactly."""
    with (out / "history.csv").open(newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
