"""Staged training of any registered network, with early stopping, resumable after every epoch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcls.infer.common.errors import CheckpointError, ConfigError, DataError, OutputError
from fcls.infer.common.output import atomic_file, output_errors
from fcls.infer.common.spec import ImageSpec
from fcls.infer.common.system import fcls_version
from fcls.infer.formats.csvfile import write_eval_csv, write_labelled_csv
from fcls.infer.formats.sources import image_size_of, source_digest

from . import data as fdata
from .config import RECIPES, Stage, TrainConfig
from .networks import scale_dropout
from .precision import PrecisionChoice, choose_precision
from .predict import evaluate
from .registry import canonical_name, create_model, model_class
from .report import write_outputs
from .steps import (
    Ema,
    EpochPlan,
    batch_bounds,
    keep_freed_memory,
    make_optimizer,
    release_freed_memory,
    train_epoch,
)

Log = Callable[[str], None]
STATE_FILE = "state.pt"
HISTORY_FIELDS = (
    "stage",
    "epoch",
    "train_accuracy",
    "train_loss",
    "val_accuracy",
    "val_loss",
    "seconds",
    "precision",  # fp32 or bf16: what this epoch trained at (a resumed run may change it)
)
OUTPUTS = (
    "model.pt",
    "history.csv",
    "report.json",
    "learning_curves.png",
    "confusion_matrix.png",
    "roc.png",
)


@dataclass(frozen=True)
class TrainResult:
    """What one `train` call produced."""

    out: Path
    device: str
    test_accuracy: float
    split: dict[str, int]
    epochs: dict[str, int]
    seconds: float
    resumed_from: str | None  # e.g. "stage adam epoch 3", or "finished run"
    architecture: str  # the network trained, as model.pt records it
    spec: ImageSpec  # the images' geometry and classes
    precision: PrecisionChoice  # what this process trained at, and why


def resolve_device(name: str) -> torch.device:
    """Map --device to a torch device, refusing one that is not available."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device cuda: CUDA is not available to torch {torch.__version__}")
    if name == "mps" and not has_mps:
        raise ConfigError("--device mps: MPS is not available on this machine")
    if name not in ("cuda", "mps", "cpu"):
        raise ConfigError(f"--device {name}: expected auto, cuda, mps or cpu")
    return torch.device(name)


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_file(path) as f, output_errors(path):
        torch.save(obj, f.raw)


class _Run:
    """Mutable progress of a staged run; saved as `state.pt` after every epoch."""

    def __init__(self, identity: dict[str, Any]) -> None:
        self.identity = identity
        self.stage_index = 0
        self.epoch = 0  # epochs finished in the current stage
        self.best_acc = -1.0
        self.bad_epochs = 0
        self.finished = False
        self.model_state: dict[str, torch.Tensor] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.optimizer_state: dict[str, Any] | None = None
        self.ema_state: dict[str, torch.Tensor] | None = None  # recipes with ema_decay
        self.ema_updates = 0
        self.rng_state: torch.Tensor | None = None
        self.cuda_rng_state: list[torch.Tensor] | None = None  # CUDA runs: dropout draws there
        self.history: list[dict[str, Any]] = []

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Run:
        run = cls(d["identity"])
        vars(run).update(d)
        return run


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _describe_mismatch(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def _prepare_out(config: TrainConfig, identity: dict[str, Any], log: Log) -> _Run:
    """Create --out, or load the run it holds; refuse to mix two different runs."""
    out = config.out
    state_path = out / STATE_FILE
    if config.restart and out.exists():
        for name in (STATE_FILE, *OUTPUTS, "test.csv"):
            (out / name).unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".fcls-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"{out}: output directory is not writable ({e.strerror})") from None
    if not state_path.exists():
        if (out / "model.pt").exists():
            raise ConfigError(
                f"{out} holds a model.pt without {STATE_FILE} (not an fcls run to resume); "
                "use --restart to overwrite it or choose another --out"
            )
        return _Run(identity)
    try:
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        run = _Run.from_dict(saved)
    except Exception as e:
        raise CheckpointError(
            f"{state_path}: cannot resume from a corrupt state file ({e}); use --restart"
        ) from None
    previous = {k: v for k, v in run.identity.items() if k != "data"}  # fcls 0.1 kept the path
    if previous != identity:
        raise ConfigError(
            f"{out} holds a different run ({_describe_mismatch(previous, identity)}); "
            "use --restart to start over or choose another --out"
        )
    return run


def data_identity(config: TrainConfig) -> dict[str, Any]:
    """What a run records of its data: source (for information), sha256 and size of a file's
    content or of a folder's listing; the bundled digits have no sha256. DataError if absent."""
    if config.data is None:
        return {"source": fdata.DIGITS_SOURCE, "sha256": None}
    if not config.data.is_file() and not config.data.is_dir():
        raise DataError(str(config.data), "no such file")
    digest, size = source_digest(config.data)
    # the source is for information: identity is the content (a folder's: its listing)
    return {"source": str(config.data.resolve()), "sha256": digest, "size": size}


def train(config: TrainConfig, log: Log = print) -> TrainResult:
    """Run the staged recipe of `config`, writing every artefact under `config.out`.

    `config` says what to train (data, stages, epochs, seeds, device); `log` receives one line
    per epoch and per notice. A run already in `config.out` is resumed (or re-evaluated when
    finished) if its identity matches. Returns the test accuracy, split sizes, epochs per
    stage and where the run resumed from.

    Raises DataError (unreadable data, too few rows per class), ConfigError (a device that is
    not there, a different run in `config.out`), CheckpointError (a corrupt state file) and
    OutputError (`config.out` not writable, disk full).
    """
    t0 = time.perf_counter()
    model_class(config.arch)  # an unknown network is refused before any work
    device = resolve_device(config.device)
    precision, log = _precision_said_first(config, device, log)
    data_id = data_identity(config)
    identity = {**config.identity(), "data_sha256": data_id["sha256"]}
    run = _prepare_out(config, identity, log)
    resumed_from = _resumed_from(run, config, log)
    parts, spec = _load_data(config, device, log)
    model = _build_model(config, spec, device)  # refuses a geometry too small, before copying
    tensors = _device_data(parts, config, spec, device)
    if device.type == "cpu":
        keep_freed_memory()
    if run.model_state is not None:
        model.load_state_dict(run.model_state)
    _restore_rng(run, device)
    pace = _Pace()
    while not run.finished:
        _train_stage(config, run, model, spec, tensors, pace, precision, log)

    assert run.best_state is not None
    release_freed_memory()
    model.load_state_dict(run.best_state)
    test_acc = write_outputs(
        config=config,
        model=model,
        parts=parts,
        spec=spec,
        data_id=data_id,
        history=run.history,
        device=device,
        version=fcls_version(),
        precision=precision,
    )
    _write_test_split(config, parts)
    epochs = {s.name: sum(h["stage"] == s.name for h in run.history) for s in config.stages}
    return TrainResult(
        out=config.out,
        device=str(device),
        test_accuracy=test_acc,
        split=parts.sizes(),
        epochs=epochs,
        seconds=time.perf_counter() - t0,
        resumed_from=resumed_from,
        architecture=canonical_name(config.arch),
        spec=spec,
        precision=precision,
    )


def _precision_said_first(
    config: TrainConfig, device: torch.device, log: Log
) -> tuple[PrecisionChoice, Log]:
    """The run's precision, and a `log` that says it (then, without data, where the rows come
    from) before its first line: first, as every later figure depends on it, but only once
    there is something else to say, so that bad input is still refused in one line."""
    precision = choose_precision(config.precision, device)
    pending = [f"precision: {precision.describe()}"]
    if config.data is None:
        pending.append(
            "no --data given, training on scikit-learn's bundled digits (8x8 scaled to 32x32)"
        )

    def said_after_precision(line: str) -> None:
        for first in pending:
            log(first)
        pending.clear()
        log(line)

    return precision, said_after_precision


def _write_test_split(config: TrainConfig, parts: fdata.Split) -> None:
    """With --write-test-csv, the held-out rows for fcls-infer (test.csv) and fcls-eval
    (test_labelled.csv): the chain train -> export -> infer -> eval runs on them."""
    if config.write_test_csv:
        write_eval_csv(config.out / "test.csv", parts.x_test)
        write_labelled_csv(config.out / "test_labelled.csv", parts.x_test, parts.y_test)


def _resumed_from(run: _Run, config: TrainConfig, log: Log) -> str | None:
    """Where a run in --out left off (logged), or None for a fresh run."""
    if run.finished:
        log(f"{config.out}: training already finished; re-evaluating the saved best model")
        return "finished run"
    if not run.history:
        return None
    last = run.history[-1]
    resumed_from = f"stage {last['stage']} epoch {last['epoch']}"
    log(f"{config.out}: resuming after {resumed_from}")
    return resumed_from


def _load_data(
    config: TrainConfig, device: torch.device, log: Log
) -> tuple[fdata.Split, ImageSpec]:
    """The run's split and the spec of its images (geometry and class names), logged."""
    # a folder of images without --image-size: its first image's size, which rows then have
    size = (
        config.image_size if config.data is None else image_size_of(config.data, config.image_size)
    )
    pixels, labels, class_names, source = fdata.load_dataset(
        config.data, config.limit, config.class_names, image_size=size
    )
    spec = fdata.dataset_spec(pixels, class_names, size, source)
    parts = fdata.split(pixels, labels, seed=config.split_seed)
    for warning in fdata.check_split(parts, source):
        log(warning)
    recipe = config.recipe
    x4 = recipe.augment == "x4"
    log(
        f"data: {source} ({len(labels)} rows of {spec.describe()}; train {len(parts.y_train)}, "
        f"val {len(parts.y_val)}, test {len(parts.y_test)}; "
        f"{'x4 augmented train/val' if x4 else 'augmented per batch'}; "
        f"recipe {recipe.name}; network {config.arch}) on {device}"
    )
    return parts, spec


def _build_model(config: TrainConfig, spec: ImageSpec, device: torch.device) -> torch.nn.Module:
    """The network of --arch for `spec`, seeded, on `device`, its dropout scaled by the recipe."""
    torch.manual_seed(config.seed)
    model = create_model(config.arch, spec)
    # channels_last lets oneDNN/cuDNN pick their fastest conv kernels (figures: train/README.md);
    # torch's stubs lack Module.to's memory_format overload, which exists at run time
    model = model.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    scale_dropout(model, config.recipe.dropout)
    return model


def _device_data(
    parts: fdata.Split, config: TrainConfig, spec: ImageSpec, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and validation rows as uint8 on the device (batches are cast there): the x4
    copies for the notebook's augmentation, the rows themselves for per-batch augmentation."""
    if config.recipe.augment == "x4":
        arrays = (
            fdata.augment(parts.x_train, config.augment_k, spec),
            fdata.augment_labels(parts.y_train),
            fdata.augment(parts.x_val, config.augment_k, spec),
            fdata.augment_labels(parts.y_val),
        )
    else:
        arrays = (parts.x_train, parts.y_train, parts.x_val, parts.y_val)
    x_train, y_train, x_val, y_val = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    return x_train.to(device), y_train.to(device), x_val.to(device), y_val.to(device)


def _stage_epochs(config: TrainConfig) -> int:
    """A stage's epoch limit: --max-epochs, capped by the recipe's schedule length."""
    return min(config.max_epochs, config.recipe.epochs or config.max_epochs)


def _epoch_plan(
    config: TrainConfig,
    run: _Run,
    n_train: int,
    device: torch.device,
    spec: ImageSpec,
    stage: Stage,
    precision: PrecisionChoice,
) -> EpochPlan:
    """The epoch's batches: its shuffle, augmentation draws and place in the schedule."""
    steps = len(batch_bounds(n_train, config.batch_size))
    order, rng = None, None
    if config.shuffle:
        # derived from (seed, stage, epoch) so a resumed run sees the same order
        perm = np.random.default_rng([config.seed, run.stage_index, run.epoch])
        order = torch.from_numpy(perm.permutation(n_train)).to(device)
    if config.recipe.augment == "batch":
        rng = np.random.default_rng([config.seed, run.stage_index, run.epoch, 1])
    return EpochPlan(
        recipe=config.recipe,
        stage=stage,
        batch_size=config.batch_size,
        first_step=run.epoch * steps,
        total_steps=_stage_epochs(config) * steps,
        order=order,
        rng=rng,
        amp=precision.autocast,
        zoom_k=config.augment_k,
        spec=spec,
    )


class DivergedError(ConfigError):
    """A training loss that is no longer a number: nothing more can be learnt."""


@dataclass
class _Pace:
    """The epochs this process has trained and their seconds: what the rest of a run takes."""

    epochs: int = 0
    seconds: float = 0.0

    def per_epoch(self) -> float | None:
        return self.seconds / self.epochs if self.epochs else None


def epochs_left(config: TrainConfig, run: _Run) -> int:
    """The most epochs `run` can still train: the rest of its stage and every later stage."""
    if run.finished:
        return 0
    per_stage = _stage_epochs(config)
    later = len(config.stages) - run.stage_index - 1
    return max(per_stage - run.epoch, 0) + later * per_stage


def duration(seconds: float) -> str:
    """`seconds` as a person reads a wait: 45 s, 3.9 min, 2.1 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def pace_line(config: TrainConfig, run: _Run, pace: _Pace) -> str:
    """After the first epoch: seconds an epoch and the most the rest of the run can take."""
    per, left = pace.per_epoch() or 0.0, epochs_left(config, run)
    line = f"pace: {per:.1f} s an epoch; at most {left} more epoch(s), {duration(per * left)}"
    if left == 0:
        return line
    line += f"; early stopping (patience {config.early_stopping}) usually ends "
    line += "each stage sooner" if len(config.stages) > 1 else "it sooner"
    if config.recipe.name == "notebook" and per * left > 3600:
        fast = RECIPES["fast"].epochs
        line += f"; --recipe fast trains at most {fast} epochs, each a quarter of these"
    return line


def _capped(stage: Stage, model: torch.nn.Module, log: Log) -> Stage:
    """`stage` with its SGD learning rate lowered to the network's cap (`sgd_lr_cap`)."""
    cap = getattr(model, "sgd_lr_cap", None)
    if stage.optimizer != "sgd" or not isinstance(cap, float) or stage.lr <= cap:
        return stage
    log(
        f"notice: stage {stage.name}: learning rate {stage.lr:g} lowered to {cap:g}, the most "
        f"{type(model).__name__} trains at on raw pixels (it has no BatchNorm)"
    )
    return replace(stage, lr=cap)


def _check_finite(loss: float, stage: Stage, epoch: int, arch: str) -> None:
    if not math.isfinite(loss):
        raise DivergedError(
            f"training diverged: stage {stage.name} epoch {epoch} ended with train loss {loss} "
            f"({arch}, {stage.optimizer} at learning rate {stage.lr:g}); try --recipe "
            "notebook; model.pt is not written"
        )


def _train_stage(
    config: TrainConfig,
    run: _Run,
    model: torch.nn.Module,
    spec: ImageSpec,
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    pace: _Pace,
    precision: PrecisionChoice,
    log: Log,
) -> None:
    """Train the current stage until early stopping or max epochs, saving after every epoch;
    after this process's first epoch, say what the rest of the run can take (`pace_line`)."""
    x_train, y_train, x_val, y_val = tensors
    stage = _capped(config.stages[run.stage_index], model, log)
    optimizer = make_optimizer(stage, model)
    if run.optimizer_state is not None:
        optimizer.load_state_dict(run.optimizer_state)
    ema = _resumed_ema(config, run, model)
    scored = ema.model if ema is not None else model  # what validation and model.pt use
    # a saved state never sits on a finished stage (_next_stage runs before the save)
    stop = False
    while not stop:
        t = time.perf_counter()
        plan = _epoch_plan(config, run, len(y_train), x_train.device, spec, stage, precision)
        desc = f"{stage.name} {run.epoch + 1}" + _time_left(config, run, pace)
        tacc, tloss = train_epoch(
            model, optimizer, x_train, y_train, plan, ema, desc, config.progress
        )
        _check_finite(tloss, stage, run.epoch + 1, config.arch)
        vacc, vloss = evaluate(scored, x_val, y_val, amp=precision.autocast, spec=spec)
        run.epoch += 1
        # the notebook's EarlyStopping: the first epoch sets the mark, then strict improvement
        if vacc > run.best_acc:
            run.best_acc, run.bad_epochs, run.best_state = vacc, 0, _cpu_state(scored)
        else:
            run.bad_epochs += 1
        seconds = time.perf_counter() - t
        pace.epochs, pace.seconds = pace.epochs + 1, pace.seconds + seconds
        values = (stage.name, run.epoch, tacc, tloss, vacc, vloss, seconds, precision.precision)
        row = dict(zip(HISTORY_FIELDS, values))
        run.history.append(row)
        log(
            f"stage {stage.name} epoch {run.epoch}: train loss {tloss:.4f} acc {tacc:.4f} | "
            f"val loss {vloss:.4f} acc {vacc:.4f} | {seconds:.1f}s"
        )
        stop = run.epoch >= _stage_epochs(config) or run.bad_epochs >= config.early_stopping
        if stop:
            _next_stage(config, run, model)
        else:
            run.model_state = _cpu_state(model)
            run.optimizer_state = optimizer.state_dict()
            if ema is not None:
                run.ema_state, run.ema_updates = _cpu_state(ema.model), ema.updates
        run.rng_state, run.cuda_rng_state = _rng_states(x_train.device)
        _save_history(run.history, config.out / "history.csv")
        _atomic_save(run.to_dict(), config.out / STATE_FILE)
        if pace.epochs == 1:
            log(pace_line(config, run, pace))


def _resumed_ema(config: TrainConfig, run: _Run, model: torch.nn.Module) -> Ema | None:
    """The recipe's moving average of the weights, continued from the saved run; None when
    the recipe keeps none."""
    if config.recipe.ema_decay <= 0:
        return None
    ema = Ema(model, config.recipe.ema_decay, run.ema_updates)
    if run.ema_state is not None:
        ema.model.load_state_dict(run.ema_state)
    return ema


def _time_left(config: TrainConfig, run: _Run, pace: _Pace) -> str:
    """The progress bar's bound on the rest of the run, once an epoch has been timed."""
    per = pace.per_epoch()
    return "" if per is None else f" (run: at most {duration(per * epochs_left(config, run))})"


def _rng_states(device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """The CPU generator's state and, when training on CUDA, every CUDA generator's."""
    cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _restore_rng(run: _Run, device: torch.device) -> None:
    """Undo the fresh manual_seed: continue the saved generators (CUDA's only on CUDA)."""
    if run.rng_state is not None:
        torch.set_rng_state(run.rng_state)
    if run.cuda_rng_state is not None and device.type == "cuda":
        torch.cuda.set_rng_state_all(run.cuda_rng_state)


def _next_stage(config: TrainConfig, run: _Run, model: torch.nn.Module) -> None:
    """Close the current stage: the next one starts from its best weights (not its last)."""
    assert run.best_state is not None
    model.load_state_dict(run.best_state)
    run.model_state = run.best_state
    run.optimizer_state = None
    run.ema_state, run.ema_updates = None, 0  # a next stage averages from its start
    run.stage_index += 1
    run.epoch, run.bad_epochs = 0, 0
    # a new stage tracks its own best: like the notebook, its first epoch sets the mark
    if run.stage_index >= len(config.stages):
        run.finished = True
        run.stage_index = len(config.stages) - 1
    else:
        run.best_acc = -1.0


def _save_history(rows: list[dict[str, Any]], path: Path) -> None:
    with atomic_file(path, "w", durable=False) as f:
        f.write(",".join(HISTORY_FIELDS) + "\n")
        for r in rows:
            f.write(
                f"{r['stage']},{r['epoch']},{r['train_accuracy']:.6f},{r['train_loss']:.6f},"
                f"{r['val_accuracy']:.6f},{r['val_loss']:.6f},{r['seconds']:.3f},"
                f"{r.get('precision', '')}\n"  # runs saved before it existed: not recorded
            )


__all__ = [
    "OUTPUTS",
    "TrainResult",
    "resolve_device",
    "train",
]
