"""FinalCNNet exactly as the reference notebook defines it (same parameter names)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.functional import relu

# Multiply-adds per image, counted layer by layer (conv: out_h*out_w*out_c*in_c*k*k).
MACS_PER_IMAGE = (
    31 * 31 * 64 * 1 * 4  # conv1 2x2 -> (64, 31, 31)
    + 14 * 14 * 128 * 64 * 4  # conv2 on the pooled (64, 15, 15)
    + 6 * 6 * 256 * 128 * 4  # conv3 on the pooled (128, 7, 7)
    + 3 * 3 * 512 * 256 * 16  # conv4 4x4 -> (512, 3, 3)
    + 4608 * 512
    + 512 * 256
    + 256 * 128
    + 128 * 64
    + 64 * 10
)


class FinalCNNet(nn.Module):
    """The notebook's final model; input float (N, 1, 32, 32) of raw 0..255 pixels, output logits."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2, 2)

        self.conv1 = nn.Conv2d(1, 64, 2)
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

        self.fc1 = nn.Linear(4608, 512)
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

        self.fc5 = nn.Linear(64, 10)

    def scale_dropout(self, factor: float) -> None:
        """Multiply every dropout probability by `factor` (training only: eval has none)."""
        for m in self.modules():
            if isinstance(m, nn.Dropout | nn.Dropout2d):
                m.p = min(1.0, m.p * factor)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional stack: (N, 1, 32, 32) -> (N, 512, 3, 3)."""
        x = self.pool(self.conv1_do(relu(self.conv1_bn(self.conv1(x)))))  # (N, 64, 15, 15)
        x = self.pool(self.conv2_do(relu(self.conv2_bn(self.conv2(x)))))  # (N, 128, 7, 7)
        x = self.conv3_do(relu(self.conv3_bn(self.conv3(x))))  # (N, 256, 6, 6)
        return self.conv4_do(relu(self.conv4_bn(self.conv4(x))))  # (N, 512, 3, 3)

    def classifier(self, x: torch.Tensor) -> torch.Tensor:
        """The fully connected head: (N, 4608) -> (N, 10) logits."""
        x = self.fc1_do(relu(self.fc1_bn(self.fc1(x))))
        x = self.fc2_do(relu(self.fc2_bn(self.fc2(x))))
        x = self.fc3_do(relu(self.fc3_bn(self.fc3(x))))
        x = self.fc4_do(relu(self.fc4_bn(self.fc4(x))))
        return self.fc5(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))  # (N, 4608) in (c, h, w) order

    def fast_forward(self, x: torch.Tensor) -> torch.Tensor:
        """`forward`'s function, in train and eval mode, computed in fewer passes over memory.

        Training and validation in torch run this; the exporter traces `forward`, whose plain
        Conv -> ReLU -> MaxPool graph is what onnxruntime fuses best. Two changes, exact in
        real arithmetic (tests compare outputs and gradients):
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


class _Patches(torch.autograd.Function):
    """(N, H, W, C) -> (N, H-k+1, W-k+1, k*k*C): every k x k patch as one row, features in
    (i, j, channel) order. Its gradient is one zero-filled buffer and k*k in-place adds,
    where a `torch.cat` of slices would fill a zero copy of the input for each slice."""

    @staticmethod
    def forward(ctx: Any, nhwc: torch.Tensor, k: int) -> torch.Tensor:
        ctx.k, ctx.shape = k, nhwc.shape
        side = nhwc.shape[1] - k + 1
        views = [nhwc[:, i : i + side, j : j + side] for i in range(k) for j in range(k)]
        return torch.cat(views, dim=-1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        k, (n, h, w, c) = ctx.k, ctx.shape
        side = h - k + 1
        out = grad.new_zeros((n, h, w, c))
        for p, (i, j) in enumerate((i, j) for i in range(k) for j in range(k)):
            out[:, i : i + side, j : j + side] += grad[..., p * c : (p + 1) * c]
        return out, None


def patch_matmul(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv(x)` (stride 1, no padding) as one GEMM; x and the result are channels-last NCHW."""
    out_c, in_c, k, _ = conv.weight.shape
    nhwc = x.permute(0, 2, 3, 1)  # a view: channels-last storage is NHWC
    side = nhwc.shape[1] - k + 1
    patches = _Patches.apply(nhwc, k)
    weight = conv.weight.permute(2, 3, 1, 0).reshape(k * k * in_c, out_c)  # rows (i, j, channel)
    assert conv.bias is not None
    out = torch.addmm(conv.bias, patches.reshape(-1, k * k * in_c), weight)
    return out.reshape(nhwc.shape[0], side, side, out_c).permute(0, 3, 1, 2)


def to_input(pixels: torch.Tensor) -> torch.Tensor:
    """(N, 1024) uint8 rows -> (N, 1, 32, 32) float32 raw 0..255, as the notebook fed the model."""
    return pixels.reshape(-1, 1, 32, 32).float()


@torch.inference_mode()
def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int = 1024, amp: bool = False
) -> torch.Tensor:
    """(N, 10) float32 logits of the eval-mode model for (N, 1024) uint8 rows."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(_logits(model, to_input(x[start : start + batch_size])).float())
    return torch.cat(out) if out else torch.empty((0, 10), device=x.device)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits, through `fast_forward` where the model has one."""
    return model.fast_forward(x) if isinstance(model, FinalCNNet) else model(x)


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool = False
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the eval-mode model on (N, 1024) uint8 rows."""
    logits = predict_logits(model, x, amp=amp)
    loss = F.cross_entropy(logits, y).item()
    return (logits.argmax(1) == y).float().mean().item(), loss
