"""Driver peak memory of `fcls-infer --engine ray --proba` at two input sizes (must stay flat).

    python -m fcls.bench.ray_memory --model model.onnx [--rows 20000,200000] [--workers 2]

Each size runs in a fresh driver process: the input is made by repeating the rows of
../shared/data/fashion/evaluate.csv.gz with fresh IDs (in a temp folder, never in the
project), scored on a private local Ray, and the driver's peak RSS is read two ways
(ru_maxrss of RUSAGE_SELF, and psutil sampled every 50 ms). The output is checked byte for
byte against the single-process `predict_csv`, then the peaks are compared.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fcls.bench.rss import KIB_PER_MIB

EVALUATE = Path(__file__).resolve().parents[1].parent / "shared/data/fashion/evaluate.csv.gz"
LIMIT = 0.15  # the larger run's peak may exceed the smaller one's by at most this


def make_input(dest: Path, rows: int, source: Path = EVALUATE) -> Path:
    """`rows` evaluate rows: the real ones repeated, each with a unique ID."""
    with gzip.open(source, "rt") as f:
        header = f.readline()
        bodies = [line.split(",", 1)[1] for line in f]
    with dest.open("w") as out:
        out.write(header)
        for i in range(rows):
            out.write(f"r{i},{bodies[i % len(bodies)]}")
    return dest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def child(src: Path, model: Path, workers: int) -> dict[str, Any]:
    """Run the Ray engine once in this process; its driver's peak memory."""
    import psutil

    from fcls.infer.engine.ray import predict_csv_ray

    me, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], me.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    dest = src.with_suffix(".ray.csv")
    t0 = time.perf_counter()
    summary = predict_csv_ray([str(src)], dest, model, workers=workers, proba=True)[0]
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    return {
        "rows": summary.rows,
        "seconds": seconds,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MIB,
        "psutil_peak_mib": peak[0] / 2**20,
        "sha256": _sha256(dest),
    }


def main() -> None:
    """Measure each size in a fresh process, check the outputs, compare the peaks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--rows", default="20000,200000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.workers)))
        return
    from fcls.infer.engine.pipeline import predict_csv

    results = []
    with tempfile.TemporaryDirectory(prefix="fcls-ray-mem-") as tmp:
        for rows in map(int, args.rows.split(",")):
            src = make_input(Path(tmp) / f"eval{rows}.csv", rows)
            cmd = [sys.executable, "-m", "fcls.bench.ray_memory", "--model", str(args.model)]
            cmd += ["--workers", str(args.workers), "--child", str(src)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                sys.exit(f"{rows} rows: the Ray run failed\n{proc.stderr[-3000:]}")
            found = json.loads(proc.stdout.strip().splitlines()[-1])
            single = src.with_suffix(".single.csv")
            predict_csv(src, single, args.model, proba=True)
            assert found["rows"] == rows, found
            assert found["sha256"] == _sha256(single), f"{rows} rows: output differs"
            results.append(found)
            print(
                f"{rows:>9,} rows  {found['seconds']:7.1f} s  driver peak RSS "
                f"{found['ru_maxrss_mib']:7.1f} MiB (ru_maxrss)  "
                f"{found['psutil_peak_mib']:7.1f} MiB (psutil)  output identical",
                flush=True,
            )
            src.unlink()
    low, high = results[0]["ru_maxrss_mib"], results[-1]["ru_maxrss_mib"]
    growth = high / low - 1
    print(f"peak growth {growth:+.1%} (limit {LIMIT:.0%})")
    if growth > LIMIT:
        sys.exit(f"driver memory grows with the input: {low:.1f} -> {high:.1f} MiB")


if __name__ == "__main__":
    main()
