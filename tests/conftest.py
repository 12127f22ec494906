"""Shared fixtures: tiny data made here, and artefacts built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import write_train_csv

sys.path.insert(0, str(Path(__file__).parent))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data" / "fashion"
SHARED_FILES = ("train.csv.gz", "evaluate.csv.gz")
NO_SHARED = (
    "real data: the folder ../shared is absent (real data is never committed to the project)"
)


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
    from fcls.train.config import DEFAULT_STAGES, Recipe, TrainConfig
    from fcls.train.trainer import train

    out = tmp_path_factory.mktemp("fashion")
    config = TrainConfig(
        out=out,
        data=shared_data / "train.csv.gz",
        limit=3000,
        max_epochs=3,
        recipe=Recipe("adam", DEFAULT_STAGES[:1]),
    )
    train(config, log=lambda s: None)
    return out / "model.pt"
