"""Fixtures for `pytest bench/`: models, images and CSV files, built once and cached.

The cache lives in `<repo>/.fcls-bench` (git-ignored); FCLS_BENCH_WORKDIR moves it and
FCLS_BENCH_ROWS sets the end-to-end file size (default 50,000 rows) and caps the CSV-parse
file (default 10,000 rows), so a smoke run (`--benchmark-disable`, CI) stays small.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from suite_helpers import BATCH_SIZES, E2E_ROWS

from fcls.bench.artifacts import Models, build_models, eval_csv, real_looking_images
from fcls.bench.backends import Backend, make_backend, openvino_missing, torch_backend


@pytest.fixture(scope="session")
def workdir(pytestconfig) -> Path:
    return Path(os.environ.get("FCLS_BENCH_WORKDIR", pytestconfig.rootpath / ".fcls-bench"))


@pytest.fixture(scope="session")
def models(workdir: Path) -> Models:
    return build_models(workdir, log=lambda s: None)


@pytest.fixture(scope="session")
def checkpoint(models: Models) -> Path:
    assert models.checkpoint is not None  # build_models always trains one
    return models.checkpoint


@pytest.fixture(scope="session")
def check_set() -> np.ndarray:
    """As many real-looking images as the largest batch: every backend is checked on them."""
    return real_looking_images(max(BATCH_SIZES), seed=1)


@pytest.fixture(scope="session")
def torch_labels(checkpoint: Path, check_set: np.ndarray) -> np.ndarray:
    return torch_backend(checkpoint).predict(check_set)


@pytest.fixture(scope="session")
def backends(models: Models, checkpoint: Path) -> dict[str, Backend]:
    made = {"torch": torch_backend(checkpoint)}
    made.update({name: make_backend(name, path) for name, path in models.onnx.items()})
    return made


@pytest.fixture(scope="session")
def peers_missing() -> str | None:
    """Why the OpenVINO rows are skipped here, or None."""
    return openvino_missing()


@pytest.fixture(scope="session")
def e2e_csv(workdir: Path) -> Path:
    return eval_csv(workdir, E2E_ROWS)
