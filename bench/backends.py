"""The backends under test, each a `predict(pixels) -> labels` plus how it was set up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Variants that are not bit-for-bit fp32 are held to top-1 agreement with PyTorch instead.
MIN_AGREEMENT = {"ort-int8": 0.99, "cuda-fp16": 0.999}


@dataclass
class Backend:
    """A named way to turn (n, 1024) uint8 rows into labels."""

    name: str
    predict: Callable[[np.ndarray], np.ndarray]
    prepare: Callable[[np.ndarray], object]  # done once per batch, outside the timing
    run: Callable[[object], object]  # the timed call
    provider: str
    threads: int


def torch_backend(checkpoint: Path) -> Backend:
    """The notebook's way: eager FinalCNNet in eval mode on float tensors prepared upfront."""
    import torch

    from fcls.train.checkpoint import Checkpoint

    model = Checkpoint.load(checkpoint).model

    def prepare(pixels: np.ndarray) -> torch.Tensor:
        return torch.Tensor(pixels).reshape((-1, 1, 32, 32))  # as the notebook built its dataset

    def run(x: object) -> torch.Tensor:
        with torch.no_grad():
            return model(x)  # type: ignore[arg-type]

    def predict(pixels: np.ndarray) -> np.ndarray:
        return run(prepare(pixels)).argmax(1).numpy()  # type: ignore[union-attr]

    return Backend("torch", predict, prepare, run, "cpu (eager)", torch.get_num_threads())


def ort_backend(name: str, path: Path, threads: int | None = None) -> Backend:
    """An fcls Predictor: uint8 rows in, labels out (CUDA for names starting with 'cuda')."""
    from fcls.infer.predictor import Predictor

    predictor = Predictor(
        path, provider="cuda" if name.startswith("cuda") else "cpu", threads=threads
    )
    return Backend(
        name,
        predictor.predict,
        lambda pixels: np.ascontiguousarray(pixels),
        predictor.predict,  # type: ignore[arg-type]
        f"{predictor.session.get_providers()[0]} ({path.name})",
        predictor.threads,
    )
