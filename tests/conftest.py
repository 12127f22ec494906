"""Shared fixtures: tiny data made here, and artefacts built once per session."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data" / "fashion"
SHARED_FILES = ("train.csv.gz", "evaluate.csv.gz")
NO_SHARED = (
    "real data: the folder ../shared is absent (real data is never committed to the project)"
)


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


@pytest.fixture(scope="module")
def ray_local():
    """A private local Ray instance (2 CPUs, loopback only) for one test module."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fcls[ray]')")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data/fashion: skip only when ../shared is absent; fail when a file went missing."""
    if not SHARED.is_dir():
        pytest.skip(NO_SHARED)
    missing = [name for name in SHARED_FILES if not (SHARED_DATA / name).is_file()]
    if missing:  # data drift must never turn the real-data tests off silently
        pytest.fail(f"{SHARED} is here but {SHARED_DATA} lacks {', '.join(missing)}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as (1797, 1024) uint8 32x32 rows and labels."""
    from fcls.train.data import load_digits_32

    return load_digits_32()


@pytest.fixture(scope="session")
def digits_csv(tmp_path_factory, digits) -> Path:
    """400 rows of real handwritten digits in the train CSV format."""
    pixels, labels = digits
    path = tmp_path_factory.mktemp("data") / "digits.csv"
    return write_train_csv(path, pixels[:400], labels[:400])


@pytest.fixture(scope="session")
def trained(tmp_path_factory, digits_csv) -> Path:
    """A real fcls-train run (1 epoch per stage) on 400 digit rows; returns its --out."""
    from fcls.train.config import TrainConfig
    from fcls.train.trainer import train

    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(out=out, data=digits_csv, max_epochs=1, device="cpu", write_test_csv=True)
    train(config, log=lambda s: None)
    return out


@pytest.fixture(scope="session")
def exported(tmp_path_factory, trained) -> Path:
    """model.onnx (+ .opt.onnx) exported from the `trained` checkpoint; returns the fp32 path."""
    from fcls.export import ExportConfig, export_onnx

    dest = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(trained / "model.pt", dest, ExportConfig(optimize=True), log=lambda s: None)
    return dest


@pytest.fixture(scope="session")
def fashion_trained(tmp_path_factory, shared_data) -> Path:
    """A checkpoint trained on 3,000 real Fashion-MNIST rows (skips without them).

    Adam only, 3 epochs (~1 minute): a model this weak still has confident enough logits for
    the int8 gate to mean something (with 1 epoch, int8 top-1 agreement is only ~97%).
    """
    from fcls.train.config import DEFAULT_STAGES, TrainConfig
    from fcls.train.trainer import train

    out = tmp_path_factory.mktemp("fashion")
    config = TrainConfig(
        out=out,
        data=shared_data / "train.csv.gz",
        limit=3000,
        max_epochs=3,
        stages=DEFAULT_STAGES[:1],
    )
    train(config, log=lambda s: None)
    return out / "model.pt"
