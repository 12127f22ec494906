"""Training configuration as data: the staged recipe is a list of `Stage`."""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from fcls.infer.common.errors import ConfigError

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
    # None: Fashion-MNIST's names for a CSV, "0".."9" for the bundled digits
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.class_names is not None:
            check_class_names(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so checkpoints load with `torch.load(weights_only=True)`."""
        d = asdict(self)
        d["out"] = str(self.out)
        d["data"] = None if self.data is None else str(self.data)
        d["stages"] = [asdict(s) for s in self.stages]
        d["class_names"] = None if self.class_names is None else list(self.class_names)
        return d

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues.

        The data file is identified by content (its sha256, added by the trainer), not by the
        path string: `./a.csv` and `a.csv` are the same data. Class names only label the
        outputs, so a resumed run may rename them.
        """
        d = self.to_dict()
        for volatile in (
            "out",
            "data",
            "device",
            "restart",
            "amp",
            "write_test_csv",
            "class_names",
            "progress",
        ):
            d.pop(volatile)
        return d


def check_class_names(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Refuse names the model head and the output files cannot carry; return them as a tuple."""
    from fcls.infer.common.spec import N_CLASSES

    names = tuple(names)
    if len(names) != N_CLASSES:
        raise ConfigError(
            f"--class-names: {len(names)} names given, the model has {N_CLASSES} classes "
            f"(labels 0..{N_CLASSES - 1}): give exactly {N_CLASSES}"
        )
    for i, name in enumerate(names):
        if not name.strip():
            raise ConfigError(f"--class-names: name {i + 1} is empty")
        if any(c in name for c in "\r\n"):
            raise ConfigError(f"--class-names: name {i + 1} ({name!r}) contains a line break")
        if any(unicodedata.category(c) == "Cc" for c in name):
            raise ConfigError(
                f"--class-names: name {i + 1} ({name!r}) contains a control character"
            )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--class-names: names repeat ({', '.join(map(repr, repeated))})")
    return names


def parse_class_names(value: str) -> tuple[str, ...]:
    """`a,b,...` (names trimmed of spaces) or `@FILE` (one name per line) as checked names."""
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise ConfigError(f"--class-names {value}: cannot read {path} ({why})") from None
        # only "\n" ends a line (as in fcls's CSV files); a "\r" before it is dropped
        lines = [line.removesuffix("\r") for line in text.split("\n")]
        while lines and not lines[-1].strip():  # a trailing blank line is not a name
            lines.pop()
        names = [line.strip(" \t") for line in lines]
    else:
        names = [name.strip(" \t") for name in value.split(",")]
    return check_class_names(names)
