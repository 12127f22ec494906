"""End to end CSV -> results.csv: fcls-infer against the notebook's own pipeline."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class E2E:
    """One end-to-end run."""

    name: str
    rows: int
    seconds: float
    labels: np.ndarray

    @property
    def rows_per_s(self) -> float:
        """Rows per second, reading to writing."""
        return self.rows / self.seconds


def notebook_pipeline(src: Path, dst: Path, checkpoint: Path) -> E2E:
    """The notebook's way: pandas read_csv of the whole file, DataLoader batch 256, eager torch, to_csv."""
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from fcls.train.checkpoint import Checkpoint

    model = Checkpoint.load(checkpoint).model
    # pandas 3 hands out read-only arrays; torch.Tensor(x) warns but copies, as the notebook did
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    t0 = time.perf_counter()
    edf = pd.read_csv(src)
    ids = edf.loc[:, "ID"]
    x_eval = edf.drop("ID", axis=1).to_numpy()
    loader = DataLoader(
        TensorDataset(torch.Tensor(x_eval).reshape((-1, 1, 32, 32))), batch_size=256
    )
    logits = []
    with torch.no_grad():
        for (x,) in loader:
            logits.append(model(x).numpy())
    labels = np.argmax(np.concatenate(logits), axis=1)
    out = pd.DataFrame()
    out["ID"] = ids
    out["label"] = labels
    out.to_csv(dst, index=False)
    return E2E("notebook (pandas + torch)", len(labels), time.perf_counter() - t0, labels)


def fcls_pipeline(name: str, src: Path, dst: Path, model: Path, threads: int | None = None) -> E2E:
    """fcls-infer's library call; labels read back from its output."""
    import pyarrow.csv as pacsv

    from fcls.infer.pipeline import predict_csv

    summary = predict_csv(src, dst, model, threads=threads, progress=False)
    labels = pacsv.read_csv(dst).column("label").to_numpy()
    return E2E(name, summary.rows, summary.seconds, labels)
