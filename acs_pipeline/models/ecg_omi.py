"""ECG-OMI ("ResNet-6") of the ACS-BenchWork benchmark: two strided convolutions, six residual
blocks and a small fully connected head (210,783 parameters for (3, 5000) inputs).

Names and shapes equal ``reference/acs_benchwork_state_dicts.json`` ('ECGOMI'); strides follow the
benchmark authors' published model code:

    x (B, 3, 5000)
    conv1 Conv1d(3, 24, 7, stride 2, padding 3) -> bn1 -> ReLU       (B, 24, 2500)
    res_blocks_24: 3 x ``BasicBlock1D(24)``                          (B, 24, 2500)
    conv2 Conv1d(24, 48, 7, stride 25, padding 3) -> bn2 -> ReLU     (B, 48, 100)
    res_blocks_48: 3 x ``BasicBlock1D(48)``                          (B, 48, 100)
    flatten -> fc1 Linear(4800, 31) -> ReLU -> fc2 Linear(31, 1)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock1D(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN, add the input, ReLU (width and length preserved)."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, padding=padding)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, padding=padding)
        self.bn2 = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


def _conv_length(length: int, kernel: int, stride: int, padding: int) -> int:
    return (length + 2 * padding - kernel) // stride + 1


class ECGOMI(nn.Module):
    """ECG-OMI ResNet-6. ``forward(x)`` takes (B, 3, input_length) and returns logits (B,).

    The flattened head fixes the input length: other lengths raise a ValueError.
    ``hidden_dim`` defaults to the benchmark's 150000 // (4800 + 1) = 31.
    """

    def __init__(
        self,
        input_channels: int = 3,
        input_length: int = 5000,
        hidden_dim: int = 31,
        num_classes: int = 1,
    ) -> None:
        super().__init__()
        self.input_channels = input_channels
        self.input_length = input_length
        self.num_classes = num_classes

        self.conv1 = nn.Conv1d(input_channels, 24, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm1d(24)
        self.res_blocks_24 = nn.Sequential(*[BasicBlock1D(24) for _ in range(3)])
        self.conv2 = nn.Conv1d(24, 48, kernel_size=7, stride=25, padding=3)
        self.bn2 = nn.BatchNorm1d(48)
        self.res_blocks_48 = nn.Sequential(*[BasicBlock1D(48) for _ in range(3)])

        length = _conv_length(_conv_length(input_length, 7, 2, 3), 7, 25, 3)
        self.fc1 = nn.Linear(48 * length, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.input_channels, self.input_length)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected input of shape (B, {expected[0]}, {expected[1]}), got {tuple(x.shape)}"
            )
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.res_blocks_24(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.res_blocks_48(out)
        out = self.fc2(F.relu(self.fc1(out.flatten(1))))
        return out.squeeze(-1) if self.num_classes == 1 else out
