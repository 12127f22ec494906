"""Real images for the export gates: calibration rows and held-out rows, never mixed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fcls.infer.common.errors import DataError
from fcls.infer.common.system import file_sha256
from fcls.infer.formats.csvfile import CsvReader, read_header
from fcls.train.checkpoint import Checkpoint
from fcls.train.data import DIGITS_SOURCE, load_digits_32, split

RANDOM_SOURCE = "random uint8 images"


@dataclass(frozen=True)
class GateData:
    """Images for calibration (training rows) and for the gates (held-out rows)."""

    source: str
    calibration: np.ndarray  # (C, 1024) uint8, from the training split
    heldout: np.ndarray  # (H, 1024) uint8, never seen by training or calibration
    heldout_labels: np.ndarray | None  # (H,) int64 where the data has labels
    note: str  # how the held-out rows were chosen
    real: bool = True  # False: random images only, fit for fp32 parity, never for int8

    def parity_set(self, n_real: int, seed: int = 0) -> np.ndarray:
        """Held-out real images followed by as many random uint8 images."""
        real = self.heldout[:n_real]
        noise = np.random.default_rng(seed).integers(0, 256, size=real.shape, dtype=np.uint8)
        return np.concatenate([real, noise])


def _from_labelled(
    pixels: np.ndarray, labels: np.ndarray, split_seed: int, source: str, note: str
) -> GateData:
    parts = split(pixels, labels, seed=split_seed)
    return GateData(source, parts.x_train, parts.x_test, parts.y_test, note)


def _random(reason: str, rows: int = 1024, seed: int = 2) -> GateData:
    """No real images: random ones for fp32 parity, and a note that says why."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(2 * rows, 1024), dtype=np.uint8)
    return GateData(RANDOM_SOURCE, pixels[:rows], pixels[rows:], None, reason, real=False)


def load_gate_data(data: Path | None, ckpt: Checkpoint, eval_rows: int) -> GateData:
    """Rows of `data`, else of the checkpoint's own training data; never another dataset.

    When neither is available (the recorded file moved or changed, or a bare state_dict
    records none), the gates get random images and `real=False`: fp32 parity still means
    something, int8 calibration does not, so export refuses int8 until `--data` is given.
    """
    recorded = ckpt.data or {}
    split_seed = int(recorded.get("split_seed", 42))
    source = recorded.get("source")
    if data is None and source == DIGITS_SOURCE:
        pixels, labels = load_digits_32()
        if recorded.get("limit"):
            pixels, labels = pixels[: recorded["limit"]], labels[: recorded["limit"]]
        return _from_labelled(pixels, labels, split_seed, DIGITS_SOURCE, "test split of the digits")
    if data is None:
        if source is None:
            return _random("the checkpoint records no training data")
        candidate = Path(source)
        if not candidate.is_file():
            return _random(f"the checkpoint's training data {candidate} is not here")
        if recorded.get("sha256") and file_sha256(candidate) != recorded["sha256"]:
            return _random(f"{candidate} changed since training (sha256 differs)")
        data = candidate
    if _kind(data) == "unlabelled":
        chunks = list(CsvReader(data, "unlabelled", limit=eval_rows))
        pixels = (
            np.concatenate([c.pixels for c in chunks]) if chunks else np.empty((0, 1024), np.uint8)
        )
        half = len(pixels) // 2
        return GateData(
            str(data), pixels[:half], pixels[half:], None, "second half of unlabelled rows"
        )
    rows: int | None = eval_rows
    note = f"test split of the first {eval_rows} rows"
    if recorded.get("sha256") and file_sha256(data) == recorded["sha256"]:
        # the checkpoint's own data: re-split exactly as training did, so held-out is held out
        rows = recorded.get("limit")
        note = "the training run's own test split"
    chunks = list(CsvReader(data, "labelled", limit=rows))
    pixels = np.concatenate([c.pixels for c in chunks])
    labels = np.concatenate([c.labels for c in chunks if c.labels is not None])
    gate = _from_labelled(pixels, labels, split_seed, str(data), note)
    if len(gate.heldout) > eval_rows:
        return GateData(
            gate.source,
            gate.calibration,
            gate.heldout[:eval_rows],
            None if gate.heldout_labels is None else gate.heldout_labels[:eval_rows],
            note,
        )
    return gate


def _kind(path: Path) -> str:
    """'train' for a labelled file, 'eval' for an ID file; the train error if neither."""
    try:
        read_header(path, "labelled")
        return "labelled"
    except DataError as train_error:
        try:
            read_header(path, "unlabelled")
            return "unlabelled"
        except DataError:
            raise train_error from None
