"""FinalCNNet as the reference notebook defines it (same parameter names), for any geometry.

At the notebook's 32x32 grayscale images of 10 classes it is the notebook's network, tensor
for tensor; for another `ImageSpec`, conv1 takes its channels, fc1 the features the
convolutions leave at its height and width, and fc5 gives its classes.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.functional import relu

from fcls.infer.common.spec import DEFAULT_SPEC, ImageSpec

from .networks import Network
from .predict import evaluate, predict_logits, to_input
from .registry import register_model


@register_model
class FinalCNNet(Network):
    """The notebook's final model; input float (N, C, H, W) of raw 0..255 pixels, output logits."""

    def __init__(self, spec: ImageSpec = DEFAULT_SPEC) -> None:
        super().__init__(spec)
        self.pool = nn.MaxPool2d(2, 2)

        self.conv1 = nn.Conv2d(spec.channels, 64, 2)
        self.conv1_bn = nn.BatchNorm2d(64)
        self.conv1_do = nn.Dropout2d(0.1)

        self.conv2 = nn.Conv2d(64, 128, 2)
        self.conv2_bn = nn.BatchNorm2d(128)
        self.conv2_do = nn.Dropout2d(0.3)

        self.conv3 = nn.Conv2d(128, 256, 2)
        self.conv3_bn = nn.BatchNorm2d(256)
        self.conv3_do = nn.Dropout2d(0.5)

        self.conv4 = nn.Conv2d(256, 512, 4)
        self.conv4_bn = nn.BatchNorm2d(512)
        self.conv4_do = nn.Dropout2d(0.5)

        convs = (self.conv1, self.pool, self.conv2, self.pool, self.conv3, self.conv4)
        self.fc1 = nn.Linear(self.flat_features(512, convs), 512)  # 4608 at 32x32
        self.fc1_bn = nn.BatchNorm1d(512)
        self.fc1_do = nn.Dropout(0.1)

        self.fc2 = nn.Linear(512, 256)
        self.fc2_bn = nn.BatchNorm1d(256)
        self.fc2_do = nn.Dropout(0.3)

        self.fc3 = nn.Linear(256, 128)
        self.fc3_bn = nn.BatchNorm1d(128)
        self.fc3_do = nn.Dropout(0.5)

        self.fc4 = nn.Linear(128, 64)
        self.fc4_bn = nn.BatchNorm1d(64)
        self.fc4_do = nn.Dropout(0.5)

        self.fc5 = nn.Linear(64, spec.n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional stack: (N, C, 32, 32) -> (N, 512, 3, 3) at the notebook's size."""
        x = self.pool(self.conv1_do(relu(self.conv1_bn(self.conv1(x)))))  # (N, 64, 15, 15)
        x = self.pool(self.conv2_do(relu(self.conv2_bn(self.conv2(x)))))  # (N, 128, 7, 7)
        x = self.conv3_do(relu(self.conv3_bn(self.conv3(x))))  # (N, 256, 6, 6)
        return self.conv4_do(relu(self.conv4_bn(self.conv4(x))))  # (N, 512, 3, 3)

    def classifier(self, x: torch.Tensor) -> torch.Tensor:
        """The fully connected head: (N, 4608) -> (N, K) logits."""
        x = self.fc1_do(relu(self.fc1_bn(self.fc1(x))))
        x = self.fc2_do(relu(self.fc2_bn(self.fc2(x))))
        x = self.fc3_do(relu(self.fc3_bn(self.fc3(x))))
        x = self.fc4_do(relu(self.fc4_bn(self.fc4(x))))
        return self.fc5(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))  # (N, 4608) in (c, h, w) order

    def fast_forward(self, x: torch.Tensor) -> torch.Tensor:
        """`forward`'s function, in train and eval mode, computed in fewer passes over memory.

        Training and validation in torch run this; the exporter traces `serving_module()`,
        whose plain Conv -> ReLU -> MaxPool graph is what onnxruntime fuses best. Two
        changes, exact in real arithmetic (tests compare outputs and gradients):
        - ReLU and channel dropout run after max pooling, on a quarter of the values: both
          commute with a 2x2 max (ReLU is monotonic; Dropout2d scales a whole channel by 0 or
          a positive constant), and Dropout2d draws the same (N, C) mask either way.
        - conv4 runs as one matrix product over its channels-last patches: oneDNN's direct
          kernels do not suit a 4x4 kernel on a 6x6 map (`fcls-bench --train` times both).
        """
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.conv1_do(relu(self.pool(self.conv1_bn(self.conv1(x)))))
        x = self.conv2_do(relu(self.pool(self.conv2_bn(self.conv2(x)))))
        x = self.conv3_do(relu(self.conv3_bn(self.conv3(x))))
        x = self.conv4_do(relu(self.conv4_bn(patch_matmul(x, self.conv4))))
        return self.classifier(torch.flatten(x, 1))

    def batchnorm_pairs(self) -> tuple[tuple[str, str], ...]:
        """(layer, its BatchNorm) in forward order: conv1..conv4, then fc1..fc4."""
        return (
            *((f"conv{i}", f"conv{i}_bn") for i in range(1, 5)),
            *((f"fc{i}", f"fc{i}_bn") for i in range(1, 5)),
        )

    def serving_module(self) -> nn.Module:
        """An eval-mode copy that flattens the conv features in (h, w, c) order, fc1's
        columns permuted to match: the same function. onnxruntime runs int8 convolutions
        channels-last, so this lets its transpose optimizer cancel the NHWC->NCHW transpose
        it would otherwise insert before fc1 (the int8 gain is measured in bench/README.md)."""
        return _ChannelsLastHead(self).eval()


class _ChannelsLastHead(nn.Module):
    """FinalCNNet's serving form: NCHW float in, logits out, features flattened as (h, w, c)."""

    def __init__(self, net: FinalCNNet) -> None:
        super().__init__()
        self.model = copy.deepcopy(net).eval()  # later changes to `net` do not reach it
        c, h, w = net.feature_shape
        self.flat = c * h * w
        fc1 = self.model.fc1.weight.data  # (512, c*h*w) over (c, h, w)
        permuted = fc1.reshape(-1, c, h, w).permute(0, 2, 3, 1).reshape(-1, self.flat)
        self.model.fc1.weight.data = permuted.contiguous()  # now over (h, w, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.features(x).permute(0, 2, 3, 1).reshape(-1, self.flat)
        return self.model.classifier(features)


class _Patches(torch.autograd.Function):
    """(N, H, W, C) -> (N, H-k+1, W-k+1, k*k*C): every k x k patch as one row, features in
    (i, j, channel) order. Its gradient is one zero-filled buffer and k*k in-place adds,
    where a `torch.cat` of slices would fill a zero copy of the input for each slice."""

    @staticmethod
    def forward(ctx: Any, nhwc: torch.Tensor, k: int) -> torch.Tensor:
        ctx.k, ctx.shape = k, nhwc.shape
        oh, ow = nhwc.shape[1] - k + 1, nhwc.shape[2] - k + 1
        views = [nhwc[:, i : i + oh, j : j + ow] for i in range(k) for j in range(k)]
        return torch.cat(views, dim=-1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        k, (n, h, w, c) = ctx.k, ctx.shape
        oh, ow = h - k + 1, w - k + 1
        out = grad.new_zeros((n, h, w, c))
        for p, (i, j) in enumerate((i, j) for i in range(k) for j in range(k)):
            out[:, i : i + oh, j : j + ow] += grad[..., p * c : (p + 1) * c]
        return out, None


def patch_matmul(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv(x)` (stride 1, no padding, square kernel) as one GEMM; x and the result are
    channels-last NCHW of any height and width."""
    out_c, in_c, k, _ = conv.weight.shape
    nhwc = x.permute(0, 2, 3, 1)  # a view: channels-last storage is NHWC
    oh, ow = nhwc.shape[1] - k + 1, nhwc.shape[2] - k + 1
    patches = _Patches.apply(nhwc, k)
    weight = conv.weight.permute(2, 3, 1, 0).reshape(k * k * in_c, out_c)  # rows (i, j, channel)
    assert conv.bias is not None
    out = torch.addmm(conv.bias, patches.reshape(-1, k * k * in_c), weight)
    return out.reshape(nhwc.shape[0], oh, ow, out_c).permute(0, 3, 1, 2)


__all__ = ["FinalCNNet", "evaluate", "patch_matmul", "predict_logits", "to_input"]
