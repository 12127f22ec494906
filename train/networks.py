"""The reference notebook's networks, built for any image size, channels and class count.

Each class has the notebook's layers (same widths, kernels, dropout rates) with three
changes: the first layer takes `spec.channels` channels (or `spec.n_pixels` inputs), the
first fully connected layer after the convolutions takes the size those convolutions leave
at `spec.height` x `spec.width` (computed from the layers, not written down), and the last
layer has `spec.n_classes` outputs. Every network's forward takes float (N, C, H, W) of the
raw 0..255 pixel values, as the notebook fed them. FinalCNNet lives in `fcls.train.model`.

`Network` holds what is generic: the geometry check (a network refuses images too small for
its convolutions and pools, naming the smallest size it takes), multiply-adds counted from a
forward pass, the (layer, BatchNorm) pairs an exporter folds, and the serving module.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn.functional import relu

from fcls.infer.common.errors import ConfigError
from fcls.infer.common.spec import DEFAULT_SPEC, ImageSpec

from .registry import register_model
from .tracing import count_multiply_adds, trace_batchnorm_pairs

_MAX_SIDE = 1 << 16  # the search bound for a network's smallest input side


class GeometryError(ConfigError):
    """A network that cannot take the data's image size (too small for its convs/pools)."""


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _out_side(side: int, layer: nn.Module, axis: int) -> int:
    """The output length along `axis` (0 height, 1 width) of a Conv2d or MaxPool2d/AvgPool2d."""
    if isinstance(layer, nn.Conv2d) and isinstance(layer.padding, str):
        if layer.padding == "same":
            return side
        padding = 0  # "valid"
    else:
        padding = _pair(layer.padding)[axis]  # type: ignore[arg-type]
    kernel = _pair(layer.kernel_size)[axis]  # type: ignore[arg-type]
    stride = _pair(layer.stride or layer.kernel_size)[axis]  # type: ignore[arg-type]
    dilation = _pair(getattr(layer, "dilation", 1))[axis]
    span = side + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    return (-(-span // stride) if getattr(layer, "ceil_mode", False) else span // stride) + 1


def spatial_size(height: int, width: int, layers: Iterable[nn.Module]) -> tuple[int, int]:
    """(height, width) after `layers` (convs and pools, in forward order); 0 = nothing left."""
    for layer in layers:
        height, width = _out_side(height, layer, 0), _out_side(width, layer, 1)
    return height, width


def smallest_input(layers: Sequence[nn.Module]) -> tuple[int, int]:
    """The smallest (height, width) that leaves `layers` at least one output position."""
    sides = []
    for axis in (0, 1):
        side = 1
        while side < _MAX_SIDE:
            size = side
            for layer in layers:
                size = _out_side(size, layer, axis)
            if size >= 1:
                break
            side += 1
        sides.append(side)
    return sides[0], sides[1]


def scale_dropout(model: nn.Module, factor: float) -> None:
    """Multiply every dropout probability of `model` by `factor` (training only: eval has none)."""
    kinds = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
    for m in model.modules():
        if isinstance(m, kinds):
            m.p = min(1.0, m.p * factor)


class Network(nn.Module):
    """A network built for one `ImageSpec`; forward takes float (N, C, H, W) raw 0..255."""

    def __init__(self, spec: ImageSpec = DEFAULT_SPEC) -> None:
        super().__init__()
        self.spec = spec

    def flat_features(self, channels: int, layers: Sequence[nn.Module]) -> int:
        """Values per image after `layers` (convs and pools in forward order, ending with
        `channels` channels); GeometryError when the spec's images are too small for them."""
        height, width = spatial_size(self.spec.height, self.spec.width, layers)
        if height < 1 or width < 1:
            need_h, need_w = smallest_input(layers)
            raise GeometryError(
                f"{type(self).__name__} needs images of at least {need_h}x{need_w}; "
                f"the data is {self.spec.height}x{self.spec.width}"
            )
        self.feature_shape = (channels, height, width)
        return channels * height * width

    def multiply_adds(self) -> int:
        """Multiply-adds of one image's forward pass at this network's spec."""
        return count_multiply_adds(self, self.spec)

    def batchnorm_pairs(self) -> tuple[tuple[str, str], ...]:
        """(layer, batchnorm) dotted submodule names, in forward order, for BN folding."""
        return trace_batchnorm_pairs(self, self.spec)

    @property
    def sgd_lr_cap(self) -> float | None:
        """The largest SGD learning rate this network trains at, or None for no cap.

        Networks take the raw 0..255 pixels, as the notebook fed them. One without a
        BatchNorm to rescale them takes SGD steps hundreds of times too large at the fast
        recipe's peak rate and diverges; Adam (the notebook's choice for them) is
        scale-free, and the notebook's SGD stages run at 1e-3 already."""
        return None if self.batchnorm_pairs() else 1e-3

    def serving_module(self) -> nn.Module:
        """An eval-mode module computing this network's function on NCHW float input, for
        export to trace: the network itself (switched to eval mode) unless a subclass
        has a layout onnxruntime runs faster."""
        return self.eval()

    def scale_dropout(self, factor: float) -> None:
        scale_dropout(self, factor)


def _mlp(widths: Sequence[int], norm: bool = False, dropout: Sequence[float] = ()) -> nn.Sequential:
    """Linear layers of `widths`, each but the last followed by [BatchNorm1d,] ReLU [, Dropout]."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(n_in, n_out))
        if i == len(widths) - 2:
            break
        if norm:
            layers.append(nn.BatchNorm1d(n_out))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout[i]))
    return nn.Sequential(*layers)


class _Dense(Network):
    """The notebook's fully connected networks: flatten, then `linear_relu_stack`."""

    def __init__(self, spec: ImageSpec, stack: nn.Sequential) -> None:
        super().__init__(spec)
        self.flatten = nn.Flatten()
        self.linear_relu_stack = stack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_relu_stack(self.flatten(x))


@register_model
class BaseNetwork(_Dense):
    def __init__(self, spec: ImageSpec = DEFAULT_SPEC) -> None:
        super().__init__(spec, _mlp((spec.n_pixels, 512, 128, 128, 128, spec.n_classes)))


@register_model
class WideNetwork(_Dense):
    def __init__(self, spec: ImageSpec = DEFAULT_SPEC) -> None:
        super().__init__(spec, _mlp((spec.n_pixels, 512, 512, 512, 256, spec.n_classes)))


@register_model
class DeepNetwork(_Dense):
    def __init__(self, spec: ImageSpec = DEFAULT_SPEC) -> None:
        widths = (spec.n_pixels, 512, *[128] * 7, spec.n_classes)
        super().__init__(spec, _mlp(widths))


@register_model
class BatchNormNetwork(_Dense):
    def __init__(self, spec: ImageSpec = DEFAULT_SPEC) -> None:
        widths = (spec.n_pixels, 512, 128, 128, 128, spec.n_classes)
        super().__init__(spec, _mlp(widths, norm=True))


@register_model
class DropoutNetwork(_Dense):
    def __init__(self, spec: ImageSpec = DEFAULT_SPEC) -> None:
        widths = (spec.n_pixels, 512, 128, 128, 128, spec.n_classes)
        super().__init__(spec, _mlp(widths, dropout=(0.5, 0.4, 0.3, 0.2)))


class _TwoConv(Network):
    """The notebook's CNN family: two 3x3 convolutions, each pooled 2x2, then a dense head."""

    def __init__(self, spec: ImageSpec, channels: tuple[int, int]) -> None:
        super().__init__(spec)
        self.conv1 = nn.Conv2d(spec.channels, channels[0], 3)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3)
        self.pool = nn.MaxPool2d(2, 2)

    def flat(self) -> int:
        return self.flat_features(
            self.conv2.out_channels, (self.conv1, self.pool, self.conv2, self.pool)
        )


@register_model
class CNN(_TwoConv):
    def __init__(self, spec: ImageSpec = DEFAULT_SPEC, hidden: int = 64) -> None:
        super().__init__(spec, (32, 64))
        self.fc1 = nn.Linear(self.flat(), hidden)
        self.fc2 = nn.Linear(hidden, spec.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(relu(self.conv1(x)))
        x = self.pool(relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc2(relu(self.fc1(x)))


@register_model
class WideCNN(CNN):
    def __init__(self, spec: ImageSpec = DEFAULT_SPEC) -> None:
        super().__init__(spec, hidden=128)


@register_model
class DeepCNN(_TwoConv):
    def __init__(self, spec: ImageSpec = DEFAULT_SPEC) -> None:
        super().__init__(spec, (64, 128))
        self.fc1 = nn.Linear(self.flat(), 64)
        self.fc2 = nn.Linear(64, 64)
        self.fc3 = nn.Linear(64, 32)
        self.fc4 = nn.Linear(32, spec.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(relu(self.conv1(x)))
        x = self.pool(relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = relu(self.fc1(x))
        x = relu(self.fc2(x))
        x = relu(self.fc3(x))
        return self.fc4(x)


@register_model
class BatchNormCNN(_TwoConv):
    def __init__(self, spec: ImageSpec = DEFAULT_SPEC) -> None:
        super().__init__(spec, (32, 64))
        self.conv1_bn = nn.BatchNorm2d(32)
        self.conv2_bn = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(self.flat(), 64)
        self.fc2 = nn.Linear(64, spec.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(relu(self.conv1_bn(self.conv1(x))))
        x = self.pool(relu(self.conv2_bn(self.conv2(x))))
        x = torch.flatten(x, 1)
        return self.fc2(relu(self.fc1(x)))


@register_model
class DropoutCNN(_TwoConv):
    def __init__(self, spec: ImageSpec = DEFAULT_SPEC) -> None:
        super().__init__(spec, (32, 64))
        self.dropout = nn.Dropout2d(0.5)
        self.fc1 = nn.Linear(self.flat(), 64)
        self.fc2 = nn.Linear(64, spec.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.dropout(relu(self.conv1(x))))
        x = self.pool(self.dropout(relu(self.conv2(x))))
        x = torch.flatten(x, 1)
        return self.fc2(relu(self.fc1(x)))


__all__ = [
    "CNN",
    "BaseNetwork",
    "BatchNormCNN",
    "BatchNormNetwork",
    "DeepCNN",
    "DeepNetwork",
    "DropoutCNN",
    "DropoutNetwork",
    "GeometryError",
    "Network",
    "WideCNN",
    "WideNetwork",
    "batchnorm_pairs",
    "count_multiply_adds",
    "scale_dropout",
    "serving_module",
    "smallest_input",
    "spatial_size",
    "trace_batchnorm_pairs",
]


def batchnorm_pairs(model: nn.Module) -> tuple[tuple[str, str], ...]:
    """A network's (layer, batchnorm) pairs for folding; none for a module without the method
    (a user's network: folding is an optimisation, never needed for correctness)."""
    method = getattr(model, "batchnorm_pairs", None)
    return tuple(method()) if callable(method) else ()


def serving_module(model: nn.Module) -> nn.Module:
    """What an exporter traces: the network's `serving_module()`, else the module in eval mode."""
    method = getattr(model, "serving_module", None)
    found = method() if callable(method) else model.eval()
    if not isinstance(found, nn.Module):
        raise TypeError(f"{type(model).__name__}.serving_module() returned {type(found).__name__}")
    return found
