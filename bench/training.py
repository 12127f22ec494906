"""`fcls-bench --train`: training speed per recipe, the validation forward and per-layer cost.

Every figure is measured in a fresh process of its own, one after the other, on the same
images (fcls's processes set up memory as fcls-train does, the notebook's keep the defaults):
- per recipe, fcls's own `train_epoch` (the recipe's optimizer, augmentation, EMA and
  memory format) over `rows` rows at batch 256, in fp32 and, where the CPU computes bf16
  natively, under bf16 autocast (each against its own precision's matmul ceiling);
- the notebook's way: eval-free plain loop over the same rows (NCHW float input, Adam,
  `model(x)`), the baseline the recipes are compared with;
- the eval-mode forward fcls validates with, against the plain module at the same batch;
- each layer's forward + backward at batch 256, as fcls computes it and as plain NCHW.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fcls.infer.common.spec import DEFAULT_SPEC
from fcls.infer.engine.runtimes import PRECISIONS
from fcls.train.config import RECIPES, Recipe
from fcls.train.model import patch_matmul
from fcls.train.predict import eval_batch, predict_logits, to_input
from fcls.train.registry import DEFAULT_ARCH, create_model
from fcls.train.steps import (
    Ema,
    EpochPlan,
    batch_bounds,
    keep_freed_memory,
    make_optimizer,
    train_epoch,
)

BATCH = 256


def _network() -> torch.nn.Module:
    """The default network at the notebook's geometry: what this section times."""
    return create_model(DEFAULT_ARCH, DEFAULT_SPEC)


def _flops() -> float:
    """FLOP of one image's forward pass (2 per multiply-add)."""
    return 2.0 * _network().multiply_adds()  # type: ignore[operator]


def _median_seconds(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernels on the first call
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _recipe_epoch(
    recipe: Recipe, x: torch.Tensor, y: torch.Tensor, bf16: bool
) -> Callable[[], object]:
    """One fcls epoch of `recipe` over x, as fcls-train runs it (first stage)."""
    torch.manual_seed(0)
    model = _network().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.scale_dropout(recipe.dropout)
    stage = recipe.stages[0]
    optimizer = make_optimizer(stage, model)
    ema = Ema(model, recipe.ema_decay) if recipe.ema_decay > 0 else None
    steps = len(batch_bounds(len(y), BATCH))

    def epoch() -> object:
        rng = np.random.default_rng(0) if recipe.augment == "batch" else None
        order = torch.from_numpy(np.random.default_rng(1).permutation(len(y)))
        plan = EpochPlan(recipe, stage, BATCH, 0, 10 * steps, order, rng, amp=bf16)
        return train_epoch(model, optimizer, x, y, plan, ema, progress=False)

    return epoch


def _plain_epoch(x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    """The notebook's loop: NCHW float input made once, Adam, the module's own forward."""
    torch.manual_seed(0)
    model = _network().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    xf = to_input(x)

    def epoch() -> object:
        for start, stop in batch_bounds(len(y), BATCH):
            optimizer.zero_grad()
            F.cross_entropy(model(xf[start:stop]), y[start:stop]).backward()
            optimizer.step()
        return None

    return epoch


def _fwd_bwd(
    layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, bf16: bool = False
) -> Callable[[], None]:
    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = layer(x)
        y.backward(torch.ones_like(y))

    return step


def _layer_costs(rounds: int, bf16: bool) -> list[dict[str, Any]]:
    """Forward + backward ms per layer at batch 256: fcls's formulation (also under bf16
    autocast when `bf16`) and plain NCHW."""
    torch.manual_seed(0)
    model = _network()
    shapes = {"conv1": (1, 32), "conv2": (64, 15), "conv3": (128, 7), "conv4": (256, 6)}
    out = []
    for name, (channels, side) in shapes.items():
        conv = getattr(model, name)
        gemm = name == "conv4"  # the default network's fast_forward choice
        x = torch.randn(BATCH, channels, side, side)
        grad_in = name != "conv1"  # the image needs no gradient
        cl = x.contiguous(memory_format=torch.channels_last).requires_grad_(grad_in)
        fcls_way = partial(patch_matmul, conv=conv) if gemm else conv
        out.append(
            {
                "layer": name,
                "fcls_ms": 1000 * _median_seconds(_fwd_bwd(fcls_way, cl), rounds),
                "fcls_how": "patch GEMM" if gemm else "oneDNN, channels-last",
                "nchw_ms": 1000
                * _median_seconds(_fwd_bwd(conv, x.requires_grad_(grad_in)), rounds),
            }
        )
        if bf16:
            step = _fwd_bwd(fcls_way, cl, bf16=True)
            out[-1]["fcls_bf16_ms"] = 1000 * _median_seconds(step, rounds)
    return out


def _timed(what: str, x: torch.Tensor, y: torch.Tensor, rounds: int) -> Any:
    """Seconds per pass of one measurement, or the layer table; runs in its own process."""
    if what.startswith("fcls"):
        keep_freed_memory()  # as fcls-train does on full-size data
    if what.startswith("fcls recipe "):  # "fcls recipe NAME PRECISION"
        _, _, name, precision = what.split()
        epoch = _recipe_epoch(RECIPES[name], x, y, bf16=precision == "bf16")
        return _median_seconds(epoch, rounds)
    if what == "fcls forward":
        model = _network().to(memory_format=torch.channels_last).eval()  # type: ignore[call-overload]
        return _median_seconds(lambda: predict_logits(model, x), rounds)
    if what.startswith("fcls layers"):  # "fcls layers" or "fcls layers bf16"
        return _layer_costs(rounds, bf16=what.endswith("bf16"))
    if what == "notebook loop":
        return _median_seconds(_plain_epoch(x, y), rounds)
    plain = _network().eval()  # "notebook forward", at fcls's own batch size
    batch = eval_batch(x.device)

    def forward() -> None:
        with torch.no_grad():
            for start in range(0, len(x), batch):
                plain(to_input(x[start : start + batch]))

    return _median_seconds(forward, rounds)


def _isolated(what: str, x: torch.Tensor, y: torch.Tensor, rounds: int) -> Any:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as worker:
        return worker.submit(_timed, what, x, y, rounds).result()


def measure_training(
    images: np.ndarray,
    ceilings: dict[str, float],
    rounds: int = 3,
    rows: int = 2560,
) -> dict[str, Any]:
    """The training section of fcls-bench's report (module docstring). `ceilings`: GFLOP/s
    per precision (fp32 always; bf16 where the CPU computes it natively: its rows are
    measured only then, as emulated bf16 is many times slower than fp32)."""
    pool = images[np.arange(rows) % len(images)]
    x = torch.from_numpy(np.ascontiguousarray(pool))
    y = torch.from_numpy(np.arange(rows) % 10).long()  # labels do not change the cost

    def row(name: str, what: str, flops: float, precision: str = "fp32") -> dict[str, Any]:
        img_s = rows / _isolated(what, x, y, rounds)
        gflops = img_s * flops / 1e9
        return {
            "what": name,
            "precision": precision,
            "img_per_s": img_s,
            "gflops": gflops,
            "pct_ceiling": 100 * gflops / ceilings[precision],
        }

    step = 3 * _flops()  # a training step: forward, and a backward of twice that
    recipes = [
        row(f"train, recipe {n}", f"fcls recipe {n} {p}", step, p)
        for p in PRECISIONS
        if p in ceilings
        for n in RECIPES
    ]
    loop = row("train, the notebook's loop", "notebook loop", step)
    for r in recipes:
        r["vs_notebook_loop"] = r["img_per_s"] / loop["img_per_s"]
    forward = row("validation forward", "fcls forward", _flops())
    plain_forward = row("forward, the notebook's way", "notebook forward", _flops())
    forward["vs_notebook_loop"] = forward["img_per_s"] / plain_forward["img_per_s"]
    return {
        "rows": rows,
        "batch": BATCH,
        "eval_batch": eval_batch(x.device),
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "ceilings_gflops": ceilings,
        "throughput": [*recipes, loop, forward, plain_forward],
        "layers": _isolated("fcls layers" + (" bf16" if "bf16" in ceilings else ""), x, y, rounds),
    }


def format_training(section: dict[str, Any]) -> list[str]:
    """The training section's lines for the text report."""
    ceilings = section.get("ceilings_gflops", {})
    lines = [
        "",
        f"training: {section['rows']} rows per epoch, batch {section['batch']} (forward "
        f"{section['eval_batch']}), median of {section['rounds']}, {section['threads']} torch threads",
        "matmul ceilings: " + ", ".join(f"{p} {g:.1f} GFLOP/s" for p, g in ceilings.items()),
        f"{'':34s} {'prec':>5s} {'img/s':>8s} {'GFLOP/s':>8s} {'%ceil':>6s} {'x notebook':>10s}",
    ]
    for r in section["throughput"]:
        ratio = r.get("vs_notebook_loop")
        shown = f"{ratio:10.2f}" if ratio is not None else f"{'':10s}"
        lines.append(
            f"{r['what']:34s} {r.get('precision', 'fp32'):>5s} {r['img_per_s']:8.0f} "
            f"{r['gflops']:8.1f} {r['pct_ceiling']:6.1f} {shown}"
        )
    bf16 = all("fcls_bf16_ms" in layer for layer in section["layers"])
    lines.append(
        f"{'layer, forward + backward':26s} {'fcls ms':>8s} {'NCHW ms':>8s}"
        + (f" {'bf16 ms':>8s}" if bf16 else "")
        + "  fcls computes it as"
    )
    for layer in section["layers"]:
        lines.append(
            f"{layer['layer']:26s} {layer['fcls_ms']:8.1f} {layer['nchw_ms']:8.1f}"
            + (f" {layer['fcls_bf16_ms']:8.1f}" if bf16 else "")
            + f"  {layer['fcls_how']}"
        )
    return lines
