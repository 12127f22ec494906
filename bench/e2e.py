"""End to end CSV -> results.csv: fcls-infer against the notebook's own pipeline and against
the short polars + onnxruntime (or + OpenVINO) script a user would write instead."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .rss import peak_rss_mb


@dataclass(frozen=True)
class E2E:
    """One end-to-end run."""

    name: str
    rows: int
    seconds: float
    labels: np.ndarray
    peak_rss_mb: float = 0.0  # of the process that ran it (each run gets a fresh one)
    # CPU time of every thread of that process over the run: idle cores show as
    # cores_busy below the CPUs the run may use
    cpu_seconds: float = 0.0

    @property
    def cores_busy(self) -> float:
        """Average cores kept busy: CPU seconds over wall seconds."""
        return self.cpu_seconds / self.seconds

    @property
    def rows_per_s(self) -> float:
        """Rows per second, reading to writing."""
        return self.rows / self.seconds


def notebook_pipeline(src: Path, dst: Path, checkpoint: Path) -> E2E:
    """The notebook's way: pandas read_csv of the whole file, DataLoader batch 256, eager torch, to_csv."""
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from fcls.train.checkpoint import Checkpoint
    from fcls.train.predict import to_input

    ckpt = Checkpoint.load(checkpoint)
    model = ckpt.model
    # pandas 3 hands out read-only arrays; torch.Tensor(x) warns but copies, as the notebook did
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    t0, c0 = time.perf_counter(), time.process_time()
    edf = pd.read_csv(src)
    ids = edf.loc[:, "ID"]
    x_eval = edf.drop("ID", axis=1).to_numpy()
    loader = DataLoader(TensorDataset(to_input(torch.Tensor(x_eval), ckpt.spec)), batch_size=256)
    logits = []
    with torch.no_grad():
        for (x,) in loader:
            logits.append(model(x).numpy())
    labels = np.argmax(np.concatenate(logits), axis=1)
    out = pd.DataFrame()
    out["ID"] = ids
    out["label"] = labels
    out.to_csv(dst, index=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return E2E("notebook (pandas + torch)", len(labels), seconds, labels, peak_rss_mb(), cpu)


def fcls_pipeline(
    name: str,
    src: Path,
    dst: Path,
    model: Path,
    threads: int | None = None,
    parse_threads: int | None = None,
    runtime: str = "onnxruntime",
    precision: str = "fp32",
) -> E2E:
    """fcls-infer's library call (at `runtime` and `precision`); labels read back from its
    output."""
    import pyarrow.csv as pacsv

    from fcls.infer.engine.pipeline import predict_csv

    t0, c0 = time.perf_counter(), time.process_time()
    summary = predict_csv(
        src,
        dst,
        model,
        threads=threads,
        progress=False,
        parse_threads=parse_threads,
        runtime=runtime,
        precision=precision,
    )
    # the summary times reading to writing; the CPU share is taken over the whole call
    busy = (time.process_time() - c0) / (time.perf_counter() - t0)
    peak = peak_rss_mb()
    labels = pacsv.read_csv(dst).column("label").to_numpy()
    return E2E(name, summary.rows, summary.seconds, labels, peak, busy * summary.seconds)


SCRIPT_BATCH = 256


def script_pipeline(
    name: str, src: Path, dst: Path, model: Path, threads: int | None = None
) -> E2E:
    """The ten lines a user writes instead of fcls-infer: polars reads the whole file with a
    UInt8 schema, one onnxruntime session scores batches of 256, polars writes the CSV."""
    import onnxruntime as ort
    import polars as pl

    from fcls.infer.common.system import available_cpus

    from .ingest import pixel_columns

    t0, c0 = time.perf_counter(), time.process_time()
    df = pl.read_csv(src, schema={"ID": pl.String, **dict.fromkeys(pixel_columns(src), pl.UInt8)})
    x = df.drop("ID").to_numpy()  # (n, P) uint8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    labels = np.concatenate(
        [
            session.run(["label"], {feed: x[i : i + SCRIPT_BATCH]})[0]
            for i in range(0, len(x), SCRIPT_BATCH)
        ]
    )
    pl.DataFrame({"ID": df["ID"], "label": labels}).write_csv(dst)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return E2E(name, len(labels), seconds, labels, peak_rss_mb(), cpu)


def openvino_script_pipeline(
    name: str,
    src: Path,
    dst: Path,
    model: Path,
    precision: str = "fp32",
    threads: int | None = None,
) -> E2E:
    """script_pipeline's twin on OpenVINO: polars reads the whole file with a UInt8 schema, one
    model compiled for the CPU (LATENCY hint, all available CPUs, f32 or bf16 inference
    precision; an int8 file at f32 runs its int8 kernels) scores batches of 256 with one
    infer request, polars writes the CSV."""
    import openvino as ov
    import polars as pl

    from fcls.infer.common.system import available_cpus

    from .ingest import pixel_columns

    t0, c0 = time.perf_counter(), time.process_time()
    df = pl.read_csv(src, schema={"ID": pl.String, **dict.fromkeys(pixel_columns(src), pl.UInt8)})
    x = df.drop("ID").to_numpy()  # (n, P) uint8
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads or available_cpus(),
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
    }
    compiled = ov.Core().compile_model(str(model), "CPU", config)
    request = compiled.create_infer_request()
    label = compiled.output("label")
    labels = np.concatenate(
        [request.infer({0: x[i : i + SCRIPT_BATCH]})[label] for i in range(0, len(x), SCRIPT_BATCH)]
    )
    pl.DataFrame({"ID": df["ID"], "label": labels}).write_csv(dst)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return E2E(name, len(labels), seconds, labels, peak_rss_mb(), cpu)
