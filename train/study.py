"""`fcls-study`: the reference notebook's comparison of networks and optimizers as one run.

Every run of a study trains one network with one optimizer on the same split and the same
x4-augmented rows, with the notebook's early stopping, through `fcls.train.trainer.train`
(so each run is an ordinary fcls run: model.pt, history.csv, report.json, resumable). The
study then writes one table (`study.csv`, `study.md`) and the notebook's two pictures
(validation loss per epoch of every run, best validation accuracy per run).

A run that finished leaves `result.json` beside its model; a study started again with the
same settings skips those runs and resumes the one it was killed in from its last epoch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcls.infer.common.errors import ConfigError, OutputError
from fcls.infer.common.output import atomic_write_text
from fcls.infer.common.spec import ImageSpec

from ._study_report import RunResult, write_pictures, write_table
from .config import Recipe, Stage, TrainConfig
from .registry import canonical_name, model_info

Log = Callable[[str], None]

# the notebook's optimizers: torch's defaults, and Adam with L2 (weight_decay 1e-2) as its
# regularisation experiment
OPTIMIZERS: dict[str, Stage] = {
    "adam": Stage("adam", "adam"),
    "sgd": Stage("sgd", "sgd"),
    "l2": Stage("adam_l2", "adam", weight_decay=1e-2),
}
OPTIMIZER_LABELS = {"adam": "Adam", "sgd": "SGD", "l2": "Adam + L2 (1e-2)"}
# the notebook's two series, in its order: base, wide, deep, SGD, L2, batch norm, dropout
SERIES: dict[str, tuple[tuple[str, str], ...]] = {
    "dense": (
        ("BaseNetwork", "adam"),
        ("WideNetwork", "adam"),
        ("DeepNetwork", "adam"),
        ("BaseNetwork", "sgd"),
        ("BaseNetwork", "l2"),
        ("BatchNormNetwork", "adam"),
        ("DropoutNetwork", "adam"),
    ),
    "cnn": (
        ("CNN", "adam"),
        ("WideCNN", "adam"),
        ("DeepCNN", "adam"),
        ("CNN", "sgd"),
        ("CNN", "l2"),
        ("BatchNormCNN", "adam"),
        ("DropoutCNN", "adam"),
    ),
}
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class StudyRun:
    """One network trained with one optimizer; `series` groups runs in the pictures."""

    arch: str
    optimizer: str
    series: str = "selected networks"

    @property
    def label(self) -> str:
        """What the table and the pictures call the run: `CNN` or `CNN + SGD`."""
        if self.optimizer == "adam":
            return self.arch
        return f"{self.arch} + {OPTIMIZER_LABELS[self.optimizer].removeprefix('Adam + ')}"

    @property
    def slug(self) -> str:
        """The run's folder under `runs/`."""
        name = self.arch.replace(":", "-").replace(".", "-").lower()
        return name if self.optimizer == "adam" else f"{name}-{self.optimizer}"


def plan_runs(
    series: Sequence[str] = (), archs: Sequence[str] = (), optimizers: Sequence[str] = ("adam",)
) -> tuple[StudyRun, ...]:
    """The runs of a study: the notebook's `series`, then every network of `archs` with every
    one of `optimizers`. Nothing given: both series. A run named twice is trained once."""
    for name in optimizers:
        if name not in OPTIMIZERS:
            raise ConfigError(f"--optimizers: unknown optimizer {name!r} ({', '.join(OPTIMIZERS)})")
    for name in series:
        if name not in SERIES:
            raise ConfigError(f"--series: unknown series {name!r} ({', '.join(SERIES)})")
    if not series and not archs:
        series = tuple(SERIES)
    runs = [StudyRun(a, o, s) for s in series for a, o in SERIES[s]]
    runs += [StudyRun(canonical_name(a), o) for a in archs for o in optimizers]
    unique: dict[tuple[str, str], StudyRun] = {}
    for r in runs:  # the first mention of a network and optimizer is the one kept
        unique.setdefault((r.arch.lower(), r.optimizer), r)
    slugs = [r.slug for r in unique.values()]
    clash = sorted({s for s in slugs if slugs.count(s) > 1})
    if clash:
        raise ConfigError(f"--arch: two networks share the run folder {clash[0]!r}")
    return tuple(unique.values())


@dataclass(frozen=True)
class StudyConfig:
    """A whole study: its runs and the settings every run shares (the notebook's by default:
    at most 30 epochs, early stopping after 3 epochs without a better validation accuracy)."""

    runs: tuple[StudyRun, ...]
    out: Path = Path("study")
    data: Path | None = None
    limit: int | None = None
    max_epochs: int = 30
    patience: int = 3
    batch_size: int = 256
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"  # TrainConfig.precision of every run
    image_size: str | None = None
    class_names: tuple[str, ...] | None = None
    restart: bool = False
    progress: bool = True

    def train_config(self, run: StudyRun) -> TrainConfig:
        """The fcls-train run behind one study run: one stage, the notebook's x4 rows."""
        stage = OPTIMIZERS[run.optimizer]
        return TrainConfig(
            out=self.out / "runs" / run.slug,
            data=self.data,
            limit=self.limit,
            device=self.device,
            precision=self.precision,
            max_epochs=self.max_epochs,
            patience=self.patience,
            batch_size=self.batch_size,
            seed=self.seed,
            restart=self.restart,
            progress=self.progress,
            recipe=Recipe(f"study-{run.optimizer}", (stage,), patience=self.patience),
            class_names=self.class_names,
            arch=run.arch,
            image_size=self.image_size,
        )


@dataclass(frozen=True)
class StudyResult:
    """What `run_study` produced: one result per run, in plan order, and its files."""

    out: Path
    results: tuple[RunResult, ...]
    trained: int  # runs trained (or resumed) by this call; the others were already done
    seconds: float
    files: tuple[Path, ...]


def run_study(config: StudyConfig, log: Log = print) -> StudyResult:
    """Train every run of `config` not already done, then write the table and pictures.

    The table and pictures are rewritten after each run, so a long study shows its progress.
    Raises what `train` raises (DataError, ConfigError, OutputError ...) for the first run
    that fails; runs finished before it stay done."""
    from .trainer import data_identity, train

    t0 = time.perf_counter()
    if not config.runs:
        raise ConfigError("a study needs at least one run")
    # the data's digest, once: unreadable data is refused before any folder is made
    data_sha = data_identity(config.train_config(config.runs[0]))["sha256"]
    results: list[RunResult] = []
    trained = 0
    for i, run in enumerate(config.runs, 1):
        train_config = config.train_config(run)
        identity = _identity(train_config, data_sha)
        done = _finished(train_config, identity)
        if done is not None:
            log(f"run {i}/{len(config.runs)} {run.label}: done before, kept")
            results.append(_result_of(run, done, config.patience))
            continue
        log(f"run {i}/{len(config.runs)} {run.label}: training ({train_config.out})")
        trained_run = train(train_config, log=log)
        trained += 1
        what = f"{hardware(trained_run.device)}, {trained_run.precision.precision}"
        result = _result_of(run, _record(train_config, identity, what), config.patience)
        log(
            f"run {i}/{len(config.runs)} {run.label}: best val {result.best_val_accuracy:.4f}, "
            f"test {result.test_accuracy:.4f}, {result.epochs} epochs, {result.seconds:.0f}s"
        )
        results.append(result)
        _write_outputs(config, results)
    files = _write_outputs(config, results)
    return StudyResult(config.out, tuple(results), trained, time.perf_counter() - t0, files)


def _identity(config: TrainConfig, data_sha: str | None) -> dict[str, Any]:
    """What a finished run must share with the run asked for to be kept: the trainer's
    identity and the data's digest, as JSON gives them back (lists, not tuples)."""
    identity: dict[str, Any] = json.loads(json.dumps(config.identity()))
    return {**identity, "data_sha256": data_sha}


def _finished(config: TrainConfig, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The saved record of a finished run with this identity; None when it must be trained.

    A finished run of other settings is refused as fcls-train refuses it (--restart)."""
    path = config.out / RESULT_FILE
    if config.restart:
        path.unlink(missing_ok=True)
        return None
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise OutputError(f"{path}: unreadable run record ({e}); use --restart") from None
    if record.get("identity") != identity:
        raise ConfigError(
            f"{config.out} holds a run of other settings; use --restart to start over "
            "or choose another --output"
        )
    return record


def _record(config: TrainConfig, identity: dict[str, Any], trained_on: str) -> dict[str, Any]:
    """Gather a finished run's figures from its report and history; save them as result.json."""
    report = json.loads((config.out / "report.json").read_text())
    history = _read_history(config.out / "history.csv")
    spec = ImageSpec.from_dict(report["image_spec"])
    info = model_info(config.arch, spec)
    record = {
        "identity": identity,
        "hardware": trained_on,
        "train_images": report["split"]["train"] * (4 if config.recipe.augment == "x4" else 1),
        "parameters": info.parameters,
        "multiply_adds": info.multiply_adds,
        "test_accuracy": report["test_accuracy"],
        "history": history,
    }
    atomic_write_text(config.out / RESULT_FILE, json.dumps(record, indent=1) + "\n")
    return record


def _read_history(path: Path) -> list[dict[str, float]]:
    import csv

    with path.open(newline="") as f:
        return [
            {k: float(row[k]) for k in ("val_accuracy", "val_loss", "seconds")}
            for row in csv.DictReader(f)
        ]


def _result_of(run: StudyRun, record: dict[str, Any], patience: int) -> RunResult:
    history = record["history"]
    seconds = sum(h["seconds"] for h in history)
    accuracies = [h["val_accuracy"] for h in history]
    best_epoch = accuracies.index(max(accuracies))  # the first best: improvement is strict
    stopped_early = len(history) - 1 - best_epoch >= patience
    images = record["train_images"] * len(history)
    return RunResult(
        run=run.label,
        network=run.arch,
        optimizer=OPTIMIZER_LABELS[run.optimizer],
        series=run.series,
        parameters=record["parameters"],
        multiply_adds=record["multiply_adds"],
        epochs=len(history),
        stopped_by="early stopping" if stopped_early else "epoch limit",
        best_val_accuracy=max(accuracies),
        test_accuracy=record["test_accuracy"],
        hardware=record["hardware"],
        seconds=seconds,
        images_per_second=images / seconds if seconds > 0 else 0.0,
        val_loss=[h["val_loss"] for h in history],
        val_accuracy=accuracies,
    )


def _write_outputs(config: StudyConfig, results: list[RunResult]) -> tuple[Path, ...]:
    heading = f"{len(results)} of {len(config.runs)} runs; {settings_line(config)}."
    return (*write_table(config.out, heading, results), *write_pictures(results, config.out))


def hardware(device: str) -> str:
    """The hardware behind a device name, as the table names it."""
    if device.startswith("cuda"):
        import torch

        return f"cuda: {torch.cuda.get_device_name(torch.device(device))}"
    from fcls.infer.common.system import describe_cpu

    return f"{device}: {describe_cpu()}"


def settings_line(config: StudyConfig) -> str:
    """The settings every run shared, for the table's heading."""
    data = str(config.data) if config.data is not None else "scikit-learn's digits"
    limit = f", first {config.limit:,} rows" if config.limit else ""
    return (
        f"data {data}{limit}; 60/20/20 split (random_state 42), train and validation x4 "
        f"augmented; batch {config.batch_size}; at most {config.max_epochs} epochs, early "
        f"stopping after {config.patience} without a better validation accuracy; seed "
        f"{config.seed}"
    )


__all__ = [
    "OPTIMIZERS",
    "SERIES",
    "RunResult",
    "StudyConfig",
    "StudyResult",
    "StudyRun",
    "plan_runs",
    "run_study",
]
