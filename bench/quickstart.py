"""The README's first command, once fcls is installed: train -> export -> infer -> eval on
scikit-learn's digits, each step the real fcls command, timed, with its peak memory.

`python -m fcls.bench.quickstart [OUT]` (default `quickstart/`); `.ci/quickstart` makes the
virtual environment, installs fcls and then runs this. A step that fails ends the chain with
its exit code. Re-running into the same OUT starts over: the demo is meant to be timed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fcls.infer.common.system import describe_cpu

# The fast recipe, 20 epochs of its schedule: on 1,077 training images it reaches the
# digits' accuracy in a fraction of the notebook recipe's images. Batch 128: twice the steps
# an epoch on so few images, and half the activations of batch 256 in memory.
TRAIN_ARGS = ("--recipe", "fast", "--max-epochs", "20", "--batch-size", "128", "--write-test-csv")


@dataclass(frozen=True)
class Step:
    """One finished command of the chain."""

    name: str
    argv: tuple[str, ...]
    seconds: float
    peak_rss: int  # bytes, of the command's process


class StepFailed(Exception):
    """A command of the chain exited with a non-zero code."""

    def __init__(self, step: str, code: int) -> None:
        super().__init__(f"quickstart: the {step} step failed (exit {code}); its error is above")
        self.code = code


def commands(out: Path) -> list[tuple[str, list[str]]]:
    """The chain, as a user would type it."""
    model = str(out / "model.onnx")
    return [
        ("train", ["fcls-train", *TRAIN_ARGS, "-o", str(out)]),
        ("export", ["fcls-export", str(out / "model.pt"), "-o", model]),
        ("infer", ["fcls-infer", str(out / "test.csv"), "-m", model, "-o", str(out / "results.csv")]),
        ("eval", ["fcls-eval", str(out / "test_labelled.csv"), "-m", model, "-o", str(out / "eval"),
                  "--summary-json", str(out / "eval.json")]),
    ]  # fmt: skip


def _executable(name: str) -> str:
    """The command beside this Python (its virtual environment), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def run_step(name: str, argv: list[str]) -> Step:
    """Run one command, its output shown as it comes; its wall time and peak RSS.

    The peak is at least this process's size when the command starts (Linux keeps the
    high-water mark across exec): run from a small process, as `main` is.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen([_executable(argv[0]), *argv[1:]])
    try:
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
    except BaseException:  # Ctrl-C: the command gets it too; never leave it running
        proc.kill()
        proc.wait()
        raise
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise StepFailed(name, code)
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return Step(name, tuple(argv), time.perf_counter() - t0, usage.ru_maxrss * scale)


def summary(steps: list[Step], out: Path) -> list[str]:
    """The lines printed after the chain: each step's time and memory, where things are."""
    lines = [
        f"fcls quickstart on {describe_cpu()}",
        f"{'step':8}{'seconds':>9}{'peak RSS':>11}  command",
    ]
    for s in steps:
        lines.append(f"{s.name:8}{s.seconds:9.1f}{s.peak_rss / 2**20:8.0f} MB  {' '.join(s.argv)}")
    total = sum(s.seconds for s in steps)
    peak = max(s.peak_rss for s in steps) / 2**20
    lines.append(f"{'total':8}{total:9.1f}{peak:8.0f} MB  (the most any step used)")
    found = json.loads((out / "eval.json").read_text())
    model = found["models"][0]
    lines += [
        f"accuracy of {model['path']} on the {found['rows']} held-out test images: "
        f"{model['accuracy']:.4f} (fcls-eval; report: {found['output']})",
        f"labels: {out / 'results.csv'} (ID,label); training report: {out / 'report.json'}",
        "next: the same chain on your own data, README.md 'The chain in three commands'",
    ]  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "quickstart")
    shutil.rmtree(out, ignore_errors=True)
    steps: list[Step] = []
    try:
        for name, command in commands(out):
            print(f"\n$ {' '.join(command)}", flush=True)
            steps.append(run_step(name, command))
    except StepFailed as e:
        print(e, file=sys.stderr)
        return e.code
    print("\n" + "\n".join(summary(steps, out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
