"""Training configuration as data: a `Recipe` is a list of `Stage` plus how batches are made."""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from fcls.infer.common.errors import ConfigError, FclsError
from fcls.infer.common.spec import parse_image_size

from .registry import DEFAULT_ARCH

Optimizer = Literal["adam", "adamw", "sgd"]
Schedule = Literal["constant", "onecycle"]
Augment = Literal["x4", "batch"]
PRECISION_REQUESTS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Stage:
    """One training stage: an optimizer and its settings, trained until early stopping."""

    name: str
    optimizer: Optimizer
    lr: float = 1e-3  # torch's default for both Adam and SGD, which the notebook relied on
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd only
    nesterov: bool = False  # sgd only
    # onecycle: the learning rate rises linearly from 0 to `lr` over the first `warmup` share
    # of the stage's steps, then falls to 0 along a half cosine at the stage's last epoch
    schedule: Schedule = "constant"
    warmup: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The notebook's four fields always; later ones only when set, so that a run saved
        before they existed keeps the same identity and still resumes."""
        d = asdict(self)
        for f in fields(self)[4:]:
            if d[f.name] == f.default:
                del d[f.name]
        return d


@dataclass(frozen=True)
class Recipe:
    """How a run trains: its stages, how it makes batches and what it saves.

    `augment="x4"` is the notebook's: every train and validation row becomes four images
    (original, mirror, centre zoom, mirrored zoom) before training. `augment="batch"` keeps
    one copy of each row and draws, per image and per epoch, one of those four views, a shift
    of up to `shift` pixels and, with probability `erase`, a blanked rectangle
    (`fcls.train.augment`); validation then scores the rows as they are.
    With `ema_decay` > 0, validation, early stopping and model.pt use an exponential moving
    average of the weights instead of the weights themselves.
    """

    name: str
    stages: tuple[Stage, ...]
    augment: Augment = "x4"
    shift: int = 0
    erase: float = 0.0
    label_smoothing: float = 0.0
    ema_decay: float = 0.0
    dropout: float = 1.0  # scales every dropout probability of the network (1: the notebook's)
    epochs: int | None = None  # a stage's length when its schedule needs one (--max-epochs caps it)
    patience: int = 4  # early stopping's default (--patience overrides it)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = [s.to_dict() for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        return cls(**{**d, "stages": tuple(Stage(**s) for s in d["stages"])})

    @classmethod
    def of_run(cls, config: dict[str, Any]) -> Recipe:
        """The recipe a checkpoint's or state's `TrainConfig.to_dict()` records."""
        if "recipe" not in config:  # the notebook's, possibly from before recipes existed
            return cls("notebook", tuple(Stage(**s) for s in config["stages"]))
        return cls.from_dict({**config["recipe"], "stages": config["stages"]})


# The notebook's final recipe: Adam with L2, then SGD with L2, then plain SGD.
DEFAULT_STAGES: tuple[Stage, ...] = (
    Stage("adam", "adam", weight_decay=1e-3),
    Stage("sgd_wd", "sgd", weight_decay=1e-3),
    Stage("sgd", "sgd"),
)
NOTEBOOK = Recipe("notebook", DEFAULT_STAGES)
FAST = Recipe(
    "fast",
    (
        Stage(
            "onecycle",
            "sgd",
            lr=0.1,
            weight_decay=5e-4,
            momentum=0.9,
            nesterov=True,
            schedule="onecycle",
            warmup=0.15,
        ),
    ),
    augment="batch",
    shift=2,
    erase=0.25,
    label_smoothing=0.1,
    ema_decay=0.998,
    dropout=0.0,
    epochs=36,
    # the averaged weights improve slowly while the learning rate is high: a short patience
    # would stop the schedule before its decay, where most of its accuracy comes
    patience=8,
)
RECIPES: dict[str, Recipe] = {r.name: r for r in (NOTEBOOK, FAST)}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; built at the CLI edge."""

    out: Path = Path("artifacts")
    data: Path | None = None  # None: scikit-learn's bundled digits
    limit: int | None = None
    device: str = "auto"
    max_epochs: int = 200
    patience: int | None = None  # None: the recipe's
    batch_size: int = 256
    seed: int = 42
    split_seed: int = 42
    shuffle: bool = True
    # auto: bf16 autocast where the device computes bf16 natively, else fp32 (train/precision.py)
    precision: str = "auto"
    restart: bool = False
    augment_k: int = 2
    write_test_csv: bool = False  # also write the held-out test split as out/test.csv
    progress: bool = True  # a per-epoch bar on a terminal (fcls-train -q turns it off)
    recipe: Recipe = field(default=NOTEBOOK)
    # names of the data's integer classes 0..K-1; None: their numbers (text labels name
    # themselves, and refuse this)
    class_names: tuple[str, ...] | None = None
    arch: str = DEFAULT_ARCH  # a registered network (fcls-train --arch list) or module:Class
    image_size: str | None = None  # HxW or HxWxC; None: square grayscale from the row length

    def __post_init__(self) -> None:
        if self.patience is None:  # frozen: set once, here, as the identity must record it
            object.__setattr__(self, "patience", self.recipe.patience)
        if self.precision not in PRECISION_REQUESTS:
            raise ConfigError(
                f"--precision {self.precision}: expected one of {', '.join(PRECISION_REQUESTS)}"
            )
        if self.class_names is not None:
            check_class_names(self.class_names)
        if self.image_size is not None:
            try:
                parse_image_size(self.image_size)
            except FclsError as e:
                raise ConfigError(f"--image-size: {e}") from None

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self.recipe.stages

    @property
    def early_stopping(self) -> int:
        """Epochs without a better validation accuracy before a stage stops (`patience`,
        never None once built: `__post_init__` fills in the recipe's)."""
        assert self.patience is not None
        return self.patience

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so checkpoints load with `torch.load(weights_only=True)`.

        The notebook recipe is recorded as its `stages` alone, as before recipes existed; any
        other recipe also as `recipe` (name, augmentation, smoothing, EMA, epochs).
        """
        d = asdict(self)
        d["out"] = str(self.out)
        d["data"] = None if self.data is None else str(self.data)
        recipe = self.recipe.to_dict()
        del d["recipe"]
        d["stages"] = recipe.pop("stages")
        if self.recipe != NOTEBOOK:
            d["recipe"] = recipe
        d["class_names"] = None if self.class_names is None else list(self.class_names)
        return d

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues.

        The data file is identified by content (its sha256, added by the trainer), not by the
        path string: `./a.csv` and `a.csv` are the same data. Class names only label the
        outputs, so a resumed run may rename them. The network and image size are left out at
        their defaults, so that runs saved before they existed still resume.
        """
        d = self.to_dict()
        if d["arch"] == DEFAULT_ARCH:
            del d["arch"]
        if d["image_size"] is None:
            del d["image_size"]
        for volatile in (
            "out",
            "data",
            "device",
            "restart",
            "precision",  # a run may resume on other hardware; history.csv records each epoch's
            "write_test_csv",
            "class_names",
            "progress",
        ):
            d.pop(volatile)
        return d


def check_class_names(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Refuse names the output files cannot carry; return them as a tuple. How many the data
    needs is known once it is read (`fcls.train.data.load_dataset` checks the count)."""
    names = tuple(names)
    if len(names) < 2:
        raise ConfigError(
            f"--class-names: {len(names)} name given: a classifier has at least 2 classes"
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
