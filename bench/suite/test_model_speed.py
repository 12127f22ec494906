"""Model latency (batch 1) and throughput (larger batches) per backend, labels checked."""

from __future__ import annotations

import numpy as np
import pytest
from suite_helpers import BATCH_SIZES, ROUNDS, timings

from fcls.bench.backends import AGREES_WITH, BF16_NAMES, FCLS_OPENVINO, MIN_AGREEMENT, PEERS

BACKENDS = ("torch", "ort", "ort-opt", "ort-int8", "cuda", "cuda-fp16", *FCLS_OPENVINO, *PEERS)


@pytest.mark.parametrize("batch", BATCH_SIZES)
@pytest.mark.parametrize("name", BACKENDS)
def test_model(benchmark, backends, models, peers_missing, check_set, torch_labels, name, batch):
    if (name in PEERS or name in FCLS_OPENVINO) and peers_missing:
        pytest.skip(peers_missing)
    if name in BF16_NAMES and name not in backends:
        pytest.skip(f"{name}: needs a CPU with native bf16 (and, for fcls, a passed bf16 check)")
    if name not in backends:
        pytest.skip(f"{name}: not available here (needs onnxruntime with CUDA and a GPU)")
    backend = backends[name]
    benchmark.group = f"model batch {batch}"
    x = backend.prepare(check_set[:batch])
    benchmark.pedantic(backend.run, args=(x,), rounds=ROUNDS[batch], warmup_rounds=3, iterations=1)
    times = timings(benchmark)  # per-call seconds: our own percentiles
    if times is not None:  # none with --benchmark-disable: the labels are still checked
        img_s = batch / times.mean()
        benchmark.extra_info.update(
            p50_ms=float(np.percentile(times, 50) * 1e3),
            p90_ms=float(np.percentile(times, 90) * 1e3),
            p99_ms=float(np.percentile(times, 99) * 1e3),
            img_per_s=img_s,
            gflops=img_s * (models.flops_per_image or 0.0) / 1e9,
            provider=backend.provider,
        )
    # a fast wrong path cannot pass: labels on the whole check set against PyTorch eager, or
    # fcls's OpenVINO rows against onnxruntime on the same file
    partner = AGREES_WITH.get(name)
    expected = backends[partner].predict(check_set) if partner else torch_labels
    agreement = float((backend.predict(check_set) == expected).mean())
    assert agreement >= MIN_AGREEMENT.get(name, 1.0), f"{name}: agreement {agreement:.4f}"
