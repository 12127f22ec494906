"""The GPU check: full staged training on CUDA in bf16, export, parity, scoring; one JSON report.

Run through `bench/gpu_check.sh` (see README, "GPU setup"). `--dry-run` does every step on
CPU with a tiny config so CI keeps the script working between the rare runs on a GPU.
Stopped by SIGTERM (the shell's time budget), it writes what it has as a partial report.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import platform
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fcls.train.config import TrainConfig

REPORT = "gpu_report.json"
LOG = "gpu_check.log"
TIMED_OUT = 124  # like coreutils' timeout
# what run_check's steps import, in this order (fcls.export loads its submodules lazily)
STEP_MODULES = (
    "torch",
    "fcls.export.config",
    "fcls.export.api",
    "fcls.infer.engine.pipeline",
    "fcls.train.config",
    "fcls.train.trainer",
)


class Deadline(BaseException):  # not swallowed by `except Exception` in library code
    """The time budget ran out (SIGTERM)."""


def _on_term(signum: int, frame: object) -> None:
    raise Deadline(f"stopped by signal {signum} (time budget)")


def environment() -> dict[str, Any]:
    """Versions and devices: torch, CUDA, the GPU, onnxruntime and what it can really run."""
    import onnxruntime as ort
    import torch

    from fcls.export.variants import cuda_available
    from fcls.infer.engine.session import installed_onnxruntimes

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "onnxruntime": ort.__version__,
        "onnxruntime_distributions": installed_onnxruntimes(),
        "onnxruntime_providers": ort.get_available_providers(),
        "onnxruntime_cuda_usable": cuda_available(),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["gpu_capability"] = f"{props.major}.{props.minor}"
    return env


def _history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return [
            {k: (v if k in ("stage", "precision") else float(v)) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def training_figures(history: list[dict[str, Any]], images_per_epoch: int) -> dict[str, Any]:
    """Epochs per stage, seconds per epoch, epoch wall time and img/s from history rows."""
    stages: dict[str, int] = {}
    for row in history:
        stages[row["stage"]] = stages.get(row["stage"], 0) + 1
    seconds = [row["seconds"] for row in history]
    total = sum(seconds)
    return {
        "epochs_per_stage": stages,
        "epochs": len(history),
        "epoch_seconds_total": round(total, 2),  # each epoch: training pass + validation pass
        "seconds_per_epoch_mean": round(total / len(seconds), 3) if seconds else None,
        "seconds_per_epoch_min": round(min(seconds), 3) if seconds else None,
        "train_images_per_epoch": images_per_epoch,
        "train_img_per_s": (
            round(images_per_epoch * len(seconds) / total, 1)
            if total and images_per_epoch
            else None
        ),
        "best_val_accuracy": max((r["val_accuracy"] for r in history), default=None),
    }


def run_check(
    data: Path,
    work: Path,
    out: Path,
    dry_run: bool,
    log: Callable[[str], None],
    recipe: str = "notebook",
) -> dict[str, Any]:
    """Train, export, check parity, score; returns the report (also written as it grows)."""
    # every step's modules now: one that cannot load fails the check before anything is written
    for module in STEP_MODULES:
        importlib.import_module(module)
    report: dict[str, Any] = {
        "mode": "dry-run (CPU, tiny)" if dry_run else "cuda bf16, full",
        "recipe": recipe,
    }
    report["environment"] = environment()
    log(f"environment: {json.dumps(report['environment'])}")
    _write(out, report)
    run = work / "run"
    config = _train_config(data, run, dry_run, recipe)
    report["train_config"] = {
        k: v for k, v in config.to_dict().items() if k not in ("out", "restart")
    }
    _train_step(config, run, out, report, log)
    onnx_path = _export_step(run, work, out, report, dry_run, log)
    _score_step(data, run, work, onnx_path, report, dry_run, log)
    report["status"] = "passed"
    for name in ("learning_curves.png", "history.csv"):
        if (run / name).is_file():
            shutil.copy(run / name, out / name)
    return report


def _train_config(data: Path, run: Path, dry_run: bool, recipe: str) -> TrainConfig:
    """The dry run's tiny CPU config, or the whole recipe on CUDA (bf16 where it has it)."""
    from fcls.train.config import RECIPES, TrainConfig

    if dry_run:  # every step, tiny, on CPU: 600 digits rows (all classes in every split)
        # fp32: the same arithmetic on every CI machine, whatever its bf16 support
        return TrainConfig(
            out=run,
            data=None,
            limit=600,
            device="cpu",
            max_epochs=1,
            precision="fp32",
            restart=True,
            write_test_csv=True,
            recipe=RECIPES[recipe],
        )
    # the whole recipe: the notebook's runs each stage to early stopping
    return TrainConfig(
        out=run,
        data=data / "train.csv.gz",
        device="cuda",
        precision="auto",  # bf16 autocast on GPUs with bf16 (recorded in the report)
        restart=True,
        recipe=RECIPES[recipe],
    )


def _train_step(
    config: TrainConfig,
    run: Path,
    out: Path,
    report: dict[str, Any],
    log: Callable[[str], None],
) -> None:
    """Train; the figures so far go into the report and its file even when training stops."""
    import torch

    from fcls.train.trainer import train

    train_rows: list[int] = []

    def train_log(line: str) -> None:  # the trainer's "data: ... train N, ..." line: split size
        found = re.search(r"; train (\d+),", line)
        if found:
            train_rows.append(int(found.group(1)))
        log(line)

    cuda = config.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    report["status"] = "training"
    try:
        result = train(config, log=train_log)
    finally:  # figures so far, also when stopped mid-run
        history = _history(run / "history.csv")
        copies = 4 if config.recipe.augment == "x4" else 1  # x4: the notebook's copies
        images = copies * train_rows[0] if train_rows else 0
        report["training"] = training_figures(history, images)
        report["training"]["wall_seconds"] = round(time.perf_counter() - t0, 2)
        if cuda:
            report["training"]["peak_gpu_memory_gib"] = round(
                torch.cuda.max_memory_allocated() / 2**30, 3
            )
        _write(out, report)
    report["training"]["test_accuracy"] = result.test_accuracy
    report["training"]["split"] = result.split
    report["training"]["precision"] = result.precision.to_dict()
    log(f"training: {json.dumps(report['training'])}")


def _export_step(
    run: Path,
    work: Path,
    out: Path,
    report: dict[str, Any],
    dry_run: bool,
    log: Callable[[str], None],
) -> Path:
    """Export the trained model with an fp16 variant through every gate; returns the fp32 ONNX."""
    from fcls.export import ExportConfig, export_onnx

    report["status"] = "exporting"
    onnx_path = work / "model.onnx"
    gates = (
        ExportConfig(fp16=True, parity_real=64, eval_rows=500)
        if dry_run
        else ExportConfig(fp16=True)
    )
    exported = export_onnx(run / "model.pt", onnx_path, gates, log=log)
    report["export"] = {
        "exporter": exported.exporter,
        "opset": exported.opset,
        "parity_fp32_cpu": exported.parity.to_dict(),
        "variants": {k: v.to_dict() for k, v in exported.variant_parity.items()},
        "notices": exported.notices,
        "seconds": round(exported.seconds, 2),
    }
    _write(out, report)
    return onnx_path


def _score_step(
    data: Path,
    run: Path,
    work: Path,
    onnx_path: Path,
    report: dict[str, Any],
    dry_run: bool,
    log: Callable[[str], None],
) -> None:
    """Score the held-out CSV with the exported model on the provider `auto` picks."""
    from fcls.infer.engine.pipeline import predict_csv

    report["status"] = "scoring"
    source = run / "test.csv" if dry_run else data / "evaluate.csv.gz"
    summary = predict_csv(source, work / "results.csv", onnx_path, provider="auto")
    report["scoring"] = {
        "input": source.name,
        "rows": summary.rows,
        "seconds": round(summary.seconds, 2),
        "rows_per_s": round(summary.rows_per_s, 1),
        "provider": summary.provider,
    }
    log(summary.line())


def _write(out: Path, report: dict[str, Any]) -> None:
    """The report as it stands, replaced atomically (a reader never sees half of it)."""
    from fcls.infer.common.output import atomic_write_text

    atomic_write_text(out / REPORT, json.dumps(report, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the check, write the report; exit 0 only when every step passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny, on CPU (CI)")
    parser.add_argument("--data", type=Path, default=Path(".gpu-data"))
    parser.add_argument("--out", type=Path, required=True, help="report, plots and log")
    parser.add_argument("--work", type=Path, default=None, help="run folder [OUT/../work]")
    parser.add_argument("--recipe", choices=["notebook", "fast"], default="notebook")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work: Path = args.work or out.with_name(out.name + "-work")
    work.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _on_term)
    log_file = (out / LOG).open("a")

    def log(line: str) -> None:
        stamped = f"[{time.strftime('%H:%M:%S')}] {line}"
        print(stamped, flush=True)
        log_file.write(stamped + "\n")
        log_file.flush()

    if not args.dry_run:
        missing = [n for n in ("train.csv.gz", "evaluate.csv.gz") if not (args.data / n).is_file()]
        if missing:
            log(
                f"gpu_check: {args.data} lacks {', '.join(missing)}; copy them there: mkdir -p "
                f"{args.data} && cp ../shared/data/fashion/*.csv.gz {args.data}/ and carry it"
            )
            return 2
    report: dict[str, Any] = {}
    code = 0
    try:
        report = run_check(args.data, work, out, args.dry_run, log, args.recipe)
    except Deadline as e:
        report = _partial(out)
        report["status"] = f"timed out: {e}"
        code = TIMED_OUT
    except Exception as e:  # the report says which step failed and why
        report = _partial(out)
        report["status"] = f"failed: {type(e).__name__}: {e}"
        code = 1
    _write(out, report)
    log(f"gpu_check: {report.get('status')} -> {out / REPORT}")
    return code


def _partial(out: Path) -> dict[str, Any]:
    path = out / REPORT
    return json.loads(path.read_text()) if path.is_file() else {}


if __name__ == "__main__":
    sys.exit(main())
