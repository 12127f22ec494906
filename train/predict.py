"""Pixel rows in, logits out: the one conversion of a data row to a network's input.

A row is an image's H*W*C uint8 values, row-major with channels interleaved (HWC, as the
files hold them); every network takes float (N, C, H, W) of the raw 0..255 values, as the
notebook fed them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fcls.infer.common.spec import DEFAULT_SPEC, ImageSpec

# Rows per forward pass when scoring (validation, tests, fcls-bench). A GPU wants large
# batches; a CPU scores no faster past a few hundred rows, and a pass holds its batch's
# activations at once: a quarter of the GPU's batch keeps training's peak memory down.
EVAL_BATCH = 1024
EVAL_BATCH_CPU = 256


def eval_batch(device: torch.device) -> int:
    """Rows per forward pass when scoring on `device`."""
    return EVAL_BATCH_CPU if device.type == "cpu" else EVAL_BATCH


def to_input(pixels: torch.Tensor, spec: ImageSpec = DEFAULT_SPEC) -> torch.Tensor:
    """(N, H*W*C) uint8 HWC rows -> (N, C, H, W) float32 raw 0..255 values."""
    h, w, c = spec.height, spec.width, spec.channels
    if c == 1:  # the notebook's own reshape: the same tensor layout as before specs existed
        return pixels.reshape(-1, 1, h, w).float()
    # a view: the result is stored channels-last, which convolutions take as they are
    return pixels.reshape(-1, h, w, c).permute(0, 3, 1, 2).float()


def spec_of(model: nn.Module, spec: ImageSpec | None = None) -> ImageSpec:
    """`spec`, else the spec the network was built for (fcls's networks keep it)."""
    found = spec if spec is not None else getattr(model, "spec", None)
    if not isinstance(found, ImageSpec):
        raise TypeError(f"{type(model).__name__} has no .spec: pass the ImageSpec")
    return found


def forward_of(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's `fast_forward` where it has one (same function, faster), else its call."""
    fast = getattr(model, "fast_forward", None)
    return fast if callable(fast) else model


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int | None = None,
    amp: bool = False,
    spec: ImageSpec | None = None,
) -> torch.Tensor:
    """(N, K) float32 logits of the eval-mode model for (N, H*W*C) uint8 rows, scored
    `batch_size` rows at a time (default: `eval_batch` of their device)."""
    spec = spec_of(model, spec)
    batch_size = batch_size or eval_batch(x.device)
    model.eval()
    forward = forward_of(model)
    out = []
    for start in range(0, len(x), batch_size):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(forward(to_input(x[start : start + batch_size], spec)).float())
    return torch.cat(out) if out else torch.empty((0, spec.n_classes), device=x.device)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    amp: bool = False,
    spec: ImageSpec | None = None,
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the eval-mode model on (N, H*W*C) uint8 rows."""
    logits = predict_logits(model, x, amp=amp, spec=spec)
    loss = F.cross_entropy(logits, y).item()
    return (logits.argmax(1) == y).float().mean().item(), loss


__all__ = ["eval_batch", "evaluate", "forward_of", "predict_logits", "spec_of", "to_input"]
