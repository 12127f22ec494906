"""What one forward pass of zero images shows of any network: its multiply-adds and which
BatchNorm reads which layer. Used by the registry and the networks alike (no import of
either, so neither depends on the other for it)."""

from __future__ import annotations

import torch
from torch import nn

from fcls.infer.common.spec import ImageSpec


def _example(model: nn.Module, spec: ImageSpec, n: int) -> torch.Tensor:
    """Zero images of `spec` on the model's device and in its floating dtype."""
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    return torch.zeros((n, spec.channels, spec.height, spec.width), device=device, dtype=dtype)


def _traced(model: nn.Module, spec: ImageSpec, hook: object, n: int = 1) -> None:
    """Run one eval-mode forward of zero images with `hook` on every submodule, then restore
    the hooks and the training flags (eval: BatchNorm1d cannot run one image in train mode)."""
    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook) for m in model.modules()]  # type: ignore[arg-type]
    try:
        model.eval()
        with torch.no_grad():
            model(_example(model, spec, n))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode


def count_multiply_adds(model: nn.Module, spec: ImageSpec) -> int:
    """Multiply-adds of one image's forward pass through every Conv2d and Linear, counted
    from the output shapes a real pass produces (so it is exact for any geometry)."""
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += out.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += out.numel() * module.in_features

    _traced(model, spec, count)
    return total


def trace_batchnorm_pairs(model: nn.Module, spec: ImageSpec) -> tuple[tuple[str, str], ...]:
    """(layer, batchnorm) dotted names, in forward order, of each BatchNorm that reads the
    output of a Conv2d or Linear directly: what an exporter may fold into that layer."""
    names = {m: name for name, m in model.named_modules()}
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # id(output) -> (layer, kept alive)
    pairs: list[tuple[str, str]] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d | nn.Linear):
            produced[id(out)] = (names[module], out)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and inputs:
            source = produced.get(id(inputs[0]))
            if source is not None and source[1] is inputs[0]:
                pairs.append((source[0], names[module]))

    _traced(model, spec, record, n=2)
    return tuple(pairs)


__all__ = ["count_multiply_adds", "trace_batchnorm_pairs"]
