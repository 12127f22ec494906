"""Real images for the export gates: calibration rows and held-out rows, never mixed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcls.infer.common.spec import ImageSpec
from fcls.infer.formats.sources import input_kind, open_chunks, read_pixels, source_digest
from fcls.train.data import DIGITS_SOURCE, load_digits_32, split

if TYPE_CHECKING:  # torch-free: fcls-bench resolves a model's recorded data without torch
    from fcls.train.checkpoint import Checkpoint

RANDOM_SOURCE = "random uint8 images"


@dataclass(frozen=True)
class GateData:
    """Images for calibration (training rows) and for the gates (held-out rows)."""

    source: str
    calibration: np.ndarray  # (C, P) uint8, from the training split
    heldout: np.ndarray  # (H, P) uint8, never seen by training or calibration
    heldout_labels: np.ndarray | None  # (H,) int64 where the data has labels
    note: str  # how the held-out rows were chosen
    real: bool = True  # False: random images only, fit for fp32 parity, never for int8
    val: np.ndarray | None = None  # (V, P) uint8 validation rows: calibration is fitted here
    val_labels: np.ndarray | None = None  # (V,) int64

    def parity_set(self, n_real: int, seed: int = 0) -> np.ndarray:
        """Held-out real images followed by as many random uint8 images."""
        real = self.heldout[:n_real]
        noise = np.random.default_rng(seed).integers(0, 256, size=real.shape, dtype=np.uint8)
        return np.concatenate([real, noise])


def _from_labelled(
    pixels: np.ndarray, labels: np.ndarray, split_seed: int, source: str, note: str
) -> GateData:
    parts = split(pixels, labels, seed=split_seed)
    return GateData(
        source,
        parts.x_train,
        parts.x_test,
        parts.y_test,
        note,
        val=parts.x_val,
        val_labels=parts.y_val,
    )


def _random(reason: str, spec: ImageSpec, rows: int = 1000, seed: int = 2) -> GateData:
    """No real images: random ones for fp32 parity, and a note that says why."""
    size = (2 * rows, spec.n_pixels)
    pixels = np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8)
    return GateData(RANDOM_SOURCE, pixels[:rows], pixels[rows:], None, reason, real=False)


def recorded_data(recorded: Mapping[str, Any] | None) -> tuple[Path | str | None, str]:
    """Where a run's recorded training data is now: (path, ""), (DIGITS_SOURCE, ""), or
    (None, why not) when none is recorded, or the file moved or changed (sha256 differs).

    The one owner of "the model's own data": the export gates and fcls-bench's agreement
    checks both use it, and neither ever substitutes another dataset.
    """
    source = (recorded or {}).get("source")
    if source is None:
        return None, "the checkpoint records no training data"
    if source == DIGITS_SOURCE:
        return DIGITS_SOURCE, ""
    candidate = Path(source)
    if not candidate.exists():
        return None, f"the checkpoint's training data {candidate} is not here"
    sha = (recorded or {}).get("sha256")
    if sha and source_digest(candidate)[0] != sha:
        return None, f"{candidate} changed since training (sha256 differs)"
    return candidate, ""


def load_gate_data(data: Path | None, ckpt: Checkpoint, eval_rows: int) -> GateData:
    """Rows of `data`, else of the checkpoint's own training data; never another dataset."""
    return gate_data(data, ckpt.data, eval_rows, ckpt.spec)


def read_labelled(data: Path, rows: int | None, spec: ImageSpec) -> tuple[np.ndarray, np.ndarray]:
    """The first `rows` rows of a labelled file as (N, P) uint8 and (N,) class indices of
    `spec`'s classes; the reader refuses another pixel count or an unknown label."""
    chunks = list(open_chunks(data, "labelled", rows, pixels=spec, classes=spec.class_names))
    if not chunks:
        return np.empty((0, spec.n_pixels), np.uint8), np.empty(0, np.int64)
    labels = [c.labels for c in chunks if c.labels is not None]
    return np.concatenate([c.pixels for c in chunks]), np.concatenate(labels)


def gate_data(
    data: Path | None, recorded: Mapping[str, Any] | None, eval_rows: int, spec: ImageSpec
) -> GateData:
    """Rows of `data`, else of the run's recorded training data (`recorded`, a checkpoint's
    `data`); never another dataset. Any fcls input: CSV, .csv.gz, Parquet, Arrow IPC.

    When neither is available (the recorded file moved or changed, or a bare state_dict
    records none), the gates get random images and `real=False`: fp32 parity still means
    something, int8 calibration does not, so export refuses int8 until `--data` is given.
    """
    recorded = recorded or {}
    split_seed = int(recorded.get("split_seed", 42))
    if data is None:
        found, why = recorded_data(recorded)
        if found is None:
            return _random(why, spec)
        if found == DIGITS_SOURCE:
            pixels, labels = load_digits_32()
            if recorded.get("limit"):
                pixels, labels = pixels[: recorded["limit"]], labels[: recorded["limit"]]
            note = "test split of the digits"
            return _from_labelled(pixels, labels, split_seed, DIGITS_SOURCE, note)
        data = Path(found)
    if input_kind(data) == "unlabelled":
        pixels = read_pixels(data, "unlabelled", limit=eval_rows, pixels=spec)
        half = len(pixels) // 2
        return GateData(
            str(data), pixels[:half], pixels[half:], None, "second half of unlabelled rows"
        )
    rows: int | None = eval_rows
    note = f"test split of the first {eval_rows} rows"
    if recorded.get("sha256") and source_digest(data)[0] == recorded["sha256"]:
        # the checkpoint's own data: re-split exactly as training did, so held-out is held out
        rows = recorded.get("limit")
        note = "the training run's own test split"
    pixels, labels = read_labelled(data, rows, spec)
    gate = _from_labelled(pixels, labels, split_seed, str(data), note)
    if len(gate.heldout) > eval_rows:
        return GateData(
            gate.source,
            gate.calibration,
            gate.heldout[:eval_rows],
            None if gate.heldout_labels is None else gate.heldout_labels[:eval_rows],
            note,
            val=None if gate.val is None else gate.val[:eval_rows],
            val_labels=None if gate.val_labels is None else gate.val_labels[:eval_rows],
        )
    return gate
