"""One epoch of training: batches, optimizer steps, learning-rate schedule and weight EMA."""

from __future__ import annotations

import copy
import ctypes
import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fcls.infer.common.spec import DEFAULT_SPEC, ImageSpec

from . import augment
from .config import Recipe, Stage
from .predict import forward_of, to_input

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (whose malloc these settings are for), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (musl, ...): its allocator, as it is
        return None


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for the next batch; False where it cannot.

    A training step allocates and frees activations of tens of MB. By default glibc serves
    each from a fresh mmap and unmaps it when freed, so every step faults all of its pages in
    again, zero-filled by the kernel. With mmap off and no trimming, the next step reuses the
    same pages. Process-wide, until `release_freed_memory`.
    """
    libc = _glibc()
    return bool(
        libc and libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    )


def release_freed_memory() -> bool:
    """Hand the memory training kept (`keep_freed_memory`) and no longer uses back to the
    system, so that what runs after training (the report, its plots) does not add to it."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)  # its result says only whether anything was released
    return True


def make_optimizer(stage: Stage, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The stage's optimizer; fused kernels where torch has them (CPU and CUDA)."""
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    params, lr, wd = model.parameters(), stage.lr, stage.weight_decay
    if stage.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, fused=fused or None)
    if stage.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, fused=fused or None)
    return torch.optim.SGD(
        params,
        lr=lr,
        weight_decay=wd,
        momentum=stage.momentum,
        nesterov=stage.nesterov,
        fused=fused or None,
    )


def learning_rate(stage: Stage, step: int, total: int) -> float:
    """The stage's learning rate at optimizer step `step` of `total` (Stage.schedule)."""
    if stage.schedule == "constant":
        return stage.lr
    warm = max(1, round(stage.warmup * total))
    if step < warm:
        return stage.lr * (step + 1) / warm
    done = (step - warm) / max(1, total - warm)
    return stage.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))


class Ema:
    """An exponential moving average of a model's weights and BatchNorm statistics.

    The decay ramps up as (1 + n) / (10 + n) over the first updates, so that the average of
    a short run is not dominated by the random initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float, updates: int = 0) -> None:
        self.model = copy.deepcopy(model).eval()
        self.decay, self.updates = decay, updates
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        mine, theirs = self.model.state_dict(), model.state_dict()
        floats = [k for k, v in mine.items() if v.dtype.is_floating_point]
        torch._foreach_lerp_([mine[k] for k in floats], [theirs[k] for k in floats], 1 - decay)
        for k, v in mine.items():
            if not v.dtype.is_floating_point:  # BatchNorm's num_batches_tracked
                v.copy_(theirs[k])


@dataclass(frozen=True)
class EpochPlan:
    """What one pass over the training rows needs beyond the model and its optimizer."""

    recipe: Recipe
    stage: Stage
    batch_size: int
    first_step: int  # optimizer steps the stage has taken before this epoch
    total_steps: int  # the stage's length in steps, for its schedule
    order: torch.Tensor | None  # (N,) int64 permutation; None keeps file order
    rng: np.random.Generator | None  # draws per-batch augmentation; None: rows as they are
    amp: bool = False
    zoom_k: int = 2
    spec: ImageSpec = DEFAULT_SPEC  # the rows' geometry


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch bounds; a trailing batch of one row is dropped (BatchNorm cannot train on it)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    return [b for b in bounds if b[1] - b[0] > 1 or len(bounds) == 1]


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,  # (N, H*W*C) uint8 HWC rows on the training device
    y: torch.Tensor,  # (N,) int64
    plan: EpochPlan,
    ema: Ema | None = None,
    desc: str = "",
    progress: bool = True,
) -> tuple[float, float]:
    """One pass over the data; returns (accuracy, mean loss per sample) on the batches seen."""
    model.train()
    device = x.device
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    bounds = batch_bounds(len(y), plan.batch_size)
    show = progress and sys.stderr.isatty()
    forward, spec = forward_of(model), plan.spec
    for i, (start, stop) in enumerate(tqdm(bounds, desc=desc, leave=False, disable=not show)):
        idx = plan.order[start:stop] if plan.order is not None else slice(start, stop)
        rows, yb = x[idx], y[idx]
        if plan.rng is not None:
            draws = augment.draw(plan.rng, len(yb), plan.recipe.shift, plan.recipe.erase, spec)
            rows = augment.apply(rows, draws, plan.zoom_k, spec)
        if plan.stage.schedule != "constant":
            lr = learning_rate(plan.stage, plan.first_step + i, plan.total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=plan.amp):
            logits = forward(to_input(rows, spec))
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=plan.recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update(model)
        # accumulate on the device: no host sync per batch
        total_loss += loss.detach() * (stop - start)
        correct += (logits.argmax(1) == yb).sum()
        seen += stop - start
    return correct.item() / seen, total_loss.item() / seen
