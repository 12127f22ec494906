"""FinalCNNet exactly as the reference notebook defines it (same parameter names)."""

from __future__ import annotations

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


def to_input(pixels: torch.Tensor) -> torch.Tensor:
    """(N, 1024) uint8 rows -> (N, 1, 32, 32) float32 raw 0..255, as the notebook fed the model."""
    return pixels.reshape(-1, 1, 32, 32).float()


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int = 1024, amp: bool = False
) -> torch.Tensor:
    """(N, 10) float32 logits of the eval-mode model for (N, 1024) uint8 rows."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(model(to_input(x[start : start + batch_size])).float())
    return torch.cat(out) if out else torch.empty((0, 10), device=x.device)


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool = False
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the eval-mode model on (N, 1024) uint8 rows."""
    logits = predict_logits(model, x, amp=amp)
    loss = F.cross_entropy(logits, y).item()
    return (logits.argmax(1) == y).float().mean().item(), loss
