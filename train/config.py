"""Training configuration as data: the staged recipe is a list of `Stage`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Optimizer = Literal["adam", "sgd"]


@dataclass(frozen=True)
class Stage:
    """One training stage: an optimizer and its settings, trained until early stopping."""

    name: str
    optimizer: Optimizer
    lr: float = 1e-3  # torch's default for both Adam and SGD, which the notebook relied on
    weight_decay: float = 0.0


# The notebook's final recipe: Adam with L2, then SGD with L2, then plain SGD.
DEFAULT_STAGES: tuple[Stage, ...] = (
    Stage("adam", "adam", weight_decay=1e-3),
    Stage("sgd_wd", "sgd", weight_decay=1e-3),
    Stage("sgd", "sgd"),
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; built at the CLI edge."""

    out: Path = Path("artifacts")
    data: Path | None = None  # None: scikit-learn's bundled digits
    limit: int | None = None
    device: str = "auto"
    max_epochs: int = 200
    patience: int = 4
    batch_size: int = 256
    seed: int = 42
    split_seed: int = 42
    shuffle: bool = True
    amp: bool = False
    restart: bool = False
    augment_k: int = 2
    write_test_csv: bool = False  # also write the held-out test split as out/test.csv
    progress: bool = True  # a per-epoch bar on a terminal (fcls-train -q turns it off)
    stages: tuple[Stage, ...] = field(default=DEFAULT_STAGES)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so checkpoints load with `torch.load(weights_only=True)`."""
        d = asdict(self)
        d["out"] = str(self.out)
        d["data"] = None if self.data is None else str(self.data)
        d["stages"] = [asdict(s) for s in self.stages]
        return d

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues.

        The data file is identified by content (its sha256, added by the trainer), not by the
        path string: `./a.csv` and `a.csv` are the same data.
        """
        d = self.to_dict()
        for volatile in ("out", "data", "device", "restart", "amp", "write_test_csv", "progress"):
            d.pop(volatile)
        return d
