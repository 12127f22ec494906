"""Labelled evaluation of exported models: a labelled file through one or more ONNX models.

The file (pixel columns and a label) is streamed once in chunks; every batch goes through each model
in turn, so all models see the same rows in the same batches. Per model only its (classes x
classes) confusion matrix is kept, and per pair of models an agreement tally (a label-vs-label
matrix and the disagreements by true class): memory does not grow with the file.

Metrics come from the confusion matrix (fcls.infer.common.metrics, shared with fcls-train:
scikit-learn's definitions and its `zero_division=0` convention). Torch-free and sklearn-free:
this is the deployment half.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .common.calibration import Reliability
from .common.errors import ConfigError, DataError, ModelError, OutputError
from .common.metrics import (
    Metrics,
    confusion_png,
    label_matrix,
    metrics_from_confusion,
    reliability_png,
)
from .common.output import OutputSet, output_errors
from .common.spec import DEFAULT_BATCH_SIZE, ImageSpec
from .common.system import fcls_version, file_sha256
from .engine.predictor import Predictor
from .formats.csvfile import source_name
from .formats.sources import is_table, is_unlabelled, open_chunks

Log = Callable[[str], None]
REPORT = "report.json"
UNLABELLED = (
    "has ID and pixel columns but no label column; fcls-eval needs a label column "
    "(pix1..pixN,label); fcls-infer scores unlabelled files"
)
PNG_HINT = (
    "matplotlib is not installed: wrote report.json only; "
    'pip install matplotlib (or "fcls[train]") adds a confusion-matrix PNG per model'
)


@dataclass(frozen=True)
class EvalConfig:
    """What `evaluate` scores and where it writes; built at the CLI edge."""

    data: str | Path  # labelled: CSV (pix1..pixN,label), .gz, '-', Parquet, Arrow IPC, image folder
    models: tuple[Path, ...]
    out: Path = Path("eval-report")  # directory for report.json and the PNGs
    provider: str = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int | None = None
    runtime: str = "onnxruntime"  # or openvino (CPU)
    precision: str = "fp32"  # or bf16 (openvino)
    png: bool = True  # confusion-matrix PNGs when matplotlib is importable


@dataclass
class Pair:
    """Agreement of two models on the same rows, in constant memory."""

    a: int  # index of the first model
    b: int
    k: int
    labels: np.ndarray = field(init=False)  # (k, k) int64: rows model a's label, columns b's
    disagree_by_true: np.ndarray = field(init=False)  # (k,) int64

    def __post_init__(self) -> None:
        self.labels = np.zeros((self.k, self.k), np.int64)
        self.disagree_by_true = np.zeros(self.k, np.int64)

    def add(self, y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> None:
        """Count one batch."""
        self.labels += label_matrix(pred_a, pred_b, self.k)
        self.disagree_by_true += np.bincount(y_true[pred_a != pred_b], minlength=self.k)

    @property
    def same(self) -> int:
        """Rows where both models gave the same label."""
        return int(np.trace(self.labels))


def read_labelled(src: str | Path, spec: ImageSpec) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(n, P) uint8 pixels and (n,) int64 class indices of a labelled file, chunk by chunk.

    Any fcls input (CSV, .csv.gz, '-', Parquet, Arrow IPC, a folder of images in class
    folders), opened by `sources.open_chunks`;
    its pixel count must be the model's and its labels the model's classes (by index or name).
    An unlabelled file (ID, no label) is refused with a message that says which command takes it.
    """
    started = False
    try:
        # the model's spec: its size in an error, and what a folder's images are converted to
        for chunk in open_chunks(src, "labelled", pixels=spec, classes=spec.class_names):
            started = True
            assert chunk.labels is not None  # labelled files always carry labels
            yield chunk.pixels, chunk.labels
    except DataError as e:
        if not started and is_unlabelled(src):
            raise DataError(e.source, UNLABELLED, e.line) from None
        raise


def _check_models(predictors: list[Predictor]) -> ImageSpec:
    """The image spec all models share; refuse models that cannot be compared on one file."""
    first = predictors[0]
    for p in predictors[1:]:
        if p.spec.size != first.spec.size:
            raise ModelError(
                f"{p.path}: the model takes {p.spec.describe()}, but {first.path} takes "
                f"{first.spec.describe()}; models are compared on one file"
            )
        names, theirs = p.class_names, first.class_names
        if len(names) != len(theirs):
            raise ModelError(
                f"{p.path}: the model has {len(names)} classes, {first.path} has {len(theirs)}"
            )
        if names != theirs:
            diff = next(i for i, (x, y) in enumerate(zip(theirs, names)) if x != y)
            raise ModelError(
                f"{p.path}: class {diff} is {names[diff]!r}, but {first.path} calls it "
                f"{theirs[diff]!r}; models with different class names are not "
                "compared (the report would give one index two names)"
            )
    return first.spec


@dataclass(frozen=True)
class EvalResult:
    """What one `evaluate` call measured and wrote."""

    report: dict[str, Any]
    outputs: list[Path]

    @property
    def report_path(self) -> Path:
        """Where report.json went."""
        return self.outputs[0]

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        r = self.report
        names = _short_names([m["path"] for m in r["models"]])
        parts = [f"{r['rows']} rows"]
        parts += [
            f"{n} accuracy {m['accuracy']:.4f} ECE {m['calibration']['ece']:.4f}"
            for n, m in zip(names, r["models"])
        ]
        for pair in r["agreement"]:
            a, b = (names[i] for i in pair["models_index"])
            parts.append(f"agreement {a} ~ {b} {pair['agreement']:.4f}")
        parts.append(f"{r['seconds']:.2f}s -> {self.report_path}")
        return " | ".join(parts)


def _short_names(paths: list[str]) -> list[str]:
    """File names, or the paths when two models share a file name."""
    names = [Path(p).name for p in paths]
    return names if len(set(names)) == len(names) else paths


def _png_names(paths: list[str], kind: str = "confusion") -> list[str]:
    """<kind>_<model>.png per model, numbered when two models share a file name."""
    stems = [Path(p).name.removesuffix(".onnx") for p in paths]
    if len(set(stems)) == len(stems):
        return [f"{kind}_{s}.png" for s in stems]
    return [f"{kind}_{i + 1}_{s}.png" for i, s in enumerate(stems)]


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _prepare_out(out: Path) -> bool:
    """Create the report directory if needed; return whether it was created here."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory (-o names the report directory)")
    if out.is_dir():
        return False
    with output_errors(out, "cannot create the report directory"):
        out.mkdir(parents=True)
    return True


def evaluate(config: EvalConfig, log: Log | None = None) -> EvalResult:
    """Score a labelled file with every model of `config` and write report.json (+ PNGs).

    Raises DataError (unreadable or unlabelled data, no rows), ConfigError (batch size < 1),
    ModelError (missing or unloadable model, models of other image sizes or class names
    than each other), ProviderError and OutputError. Nothing is written unless the whole evaluation succeeds.
    """
    say = log or (lambda _: None)
    if not config.models:
        raise ModelError("no model given (-m/--model model.onnx)")
    if config.batch_size < 1:
        raise ConfigError(f"--batch-size {config.batch_size}: must be at least 1")
    t0 = time.perf_counter()
    predictors = [
        Predictor(
            m,
            config.provider,
            config.threads,
            runtime=config.runtime,
            precision=config.precision,
        )
        for m in config.models
    ]
    for p in predictors:
        if p.notice:  # a float-input model fcls-export did not make: what scoring assumes
            say(p.notice)
    try:
        return _evaluate(config, predictors, say, t0)
    finally:
        for p in predictors:
            p.close()


def _evaluate(config: EvalConfig, predictors: list[Predictor], say: Log, t0: float) -> EvalResult:
    spec = _check_models(predictors)
    class_names = list(spec.class_names)
    png = config.png and _has_matplotlib()
    if config.png and not png:
        say(PNG_HINT)
    created = _prepare_out(config.out)
    report_path = config.out / REPORT
    dests = [report_path]
    try:
        with OutputSet() as outputs:
            outputs.stage(report_path)  # proves the directory writable before any work
            report = _score(config, predictors, class_names, t0)
            if png:
                dests += _pngs(config.out, report, class_names, outputs)
            with output_errors(report_path):
                outputs.temp(report_path).write_text(json.dumps(report, indent=2) + "\n")
            outputs.commit_all()
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                config.out.rmdir()  # only if still empty: never a directory holding a half report
        raise
    return EvalResult(report=report, outputs=dests)


@dataclass
class Tally:
    """What streaming the data through the models keeps: constant memory whatever the rows."""

    confusion: list[np.ndarray]  # per model, (k, k) int64
    pairs: list[Pair]
    model_seconds: list[float]
    calibrated: list[Reliability]  # per model, its probabilities divided by its temperature
    raw: list[Reliability]  # per model, plain softmax

    @property
    def rows(self) -> int:
        return int(self.confusion[0].sum())


def _tally(config: EvalConfig, predictors: list[Predictor], k: int) -> Tally:
    """Every batch of the data through every model, in turn."""
    n = len(predictors)
    tally = Tally(
        confusion=[np.zeros((k, k), np.int64) for _ in predictors],
        pairs=[Pair(a, b, k) for a, b in itertools.combinations(range(n), 2)],
        model_seconds=[0.0] * n,
        calibrated=[Reliability(p.temperature) for p in predictors],
        raw=[Reliability() for _ in predictors],
    )
    for pixels, labels in read_labelled(config.data, predictors[0].spec):
        preds = []
        for i, p in enumerate(predictors):
            t = time.perf_counter()
            logits = p.logits_batches(pixels, config.batch_size)
            tally.model_seconds[i] += time.perf_counter() - t
            preds.append(logits.argmax(axis=1))
            tally.confusion[i] += label_matrix(labels, preds[i], k)
            tally.calibrated[i].add(logits, labels)
            tally.raw[i].add(logits, labels)
        for pair in tally.pairs:
            pair.add(labels, preds[pair.a], preds[pair.b])
    return tally


def _score(
    config: EvalConfig, predictors: list[Predictor], class_names: list[str], t0: float
) -> dict[str, Any]:
    """Stream the data through every model; the report as plain types."""
    tally = _tally(config, predictors, len(class_names))
    rows = tally.rows
    name = source_name(config.data)
    if rows == 0:
        if is_table(config.data):
            raise DataError(name, "no data rows")
        raise DataError(name, "no data rows after the header", 2)
    models = [
        _model_report(p, metrics_from_confusion(cm), class_names, s)
        for p, cm, s in zip(predictors, tally.confusion, tally.model_seconds)
    ]
    for p, model, cal, raw in zip(predictors, models, tally.calibrated, tally.raw):
        model["calibration"] = {
            "temperature": p.temperature,
            "ece": cal.ece(),
            "nll": cal.nll(),
            "ece_raw": raw.ece(),
            "nll_raw": raw.nll(),
            "reliability": cal.to_dict(),
            "reliability_raw": raw.to_dict(),
        }
    paths = [str(p.path) for p in predictors]
    return {
        "fcls_version": fcls_version(),
        "data": name,
        "rows": rows,
        "seconds": time.perf_counter() - t0,
        "batch_size": config.batch_size,
        "class_names": class_names,
        "zero_division": 0,
        "models": models,
        "agreement": [_pair_report(pair, paths, class_names, rows) for pair in tally.pairs],
    }


def _pair_report(pair: Pair, paths: list[str], class_names: list[str], rows: int) -> dict[str, Any]:
    """How often two models gave the same label, and where they differed."""
    return {
        "models": [paths[pair.a], paths[pair.b]],
        "models_index": [pair.a, pair.b],
        "agreement": pair.same / rows,
        "same_label_rows": pair.same,
        "different_label_rows": rows - pair.same,
        "disagreements_by_true_class": dict(zip(class_names, pair.disagree_by_true.tolist())),
        "label_matrix": pair.labels.tolist(),
    }


def _model_report(
    p: Predictor, m: Metrics, class_names: list[str], seconds: float
) -> dict[str, Any]:
    meta = p.session.get_modelmeta().custom_metadata_map
    return {
        "path": str(p.path),
        "sha256": file_sha256(p.path),
        "variant": meta.get("variant"),
        "provider": p.provider,
        "runtime": p.runtime_line,
        "accuracy": m.accuracy,
        "per_class": m.per_class(class_names),
        "macro_avg": m.average("macro"),
        "weighted_avg": m.average("weighted"),
        "confusion_matrix": m.confusion.tolist(),
        "model_seconds": seconds,
        "confusion_png": None,
        "reliability_png": None,
    }


def _pngs(
    out: Path, report: dict[str, Any], class_names: list[str], outputs: OutputSet
) -> list[Path]:
    """A confusion matrix and a reliability diagram per model, staged in `outputs`."""
    paths = [m["path"] for m in report["models"]]
    written = []
    for model, name in zip(report["models"], _png_names(paths)):
        dest = out / name
        _confusion_png(model, report["rows"], class_names, outputs.stage(dest), dest)
        model["confusion_png"] = name
        written.append(dest)
    for model, name in zip(report["models"], _png_names(paths, "reliability")):
        dest = out / name
        cal = model["calibration"]
        title = (
            f"{Path(model['path']).name}: ECE {cal['ece']:.4f} at T={cal['temperature']:.3f} "
            f"(uncalibrated {cal['ece_raw']:.4f}), {report['rows']} rows"
        )
        with output_errors(dest):
            reliability_png(outputs.stage(dest), cal["reliability"], cal["reliability_raw"], title)
        model["reliability_png"] = name
        written.append(dest)
    return written


def _confusion_png(
    model: dict[str, Any], rows: int, class_names: list[str], temp: Path, dest: Path
) -> None:
    """The model's confusion matrix as a PNG at `temp` (errors name `dest`)."""
    title = f"{Path(model['path']).name}: accuracy {model['accuracy']:.4f} on {rows} rows"
    with output_errors(dest):
        confusion_png(temp, np.array(model["confusion_matrix"]), class_names, title)
