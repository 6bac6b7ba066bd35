"""One-dimensional ResNets of the ACS-BenchWork benchmark (ResNet-18 1D and ResNet-50 1D).

The layout (module names, shapes) equals the authors' released checkpoints exactly, see
``reference/acs_benchwork_state_dicts.json``. The reference gives names and shapes only; strides,
pooling and dropout follow the benchmark authors' published model code, so released weights
compute the same function here:

    x (B, 3, 5000)
    initial_conv  Conv1d(3, c, 15, stride 2, padding 7) -> bn1 -> ReLU       (B, c, 2500)
    MaxPool1d(3, stride 2, padding 1)                                         (B, c, 1250)
    res_block1..4 stages of ``ResidualBlock1D`` with widths c, 2c, 4c, 8c
    AdaptiveMaxPool1d(1) -> flatten                                           (B, 8c)
    fc = Linear(8c, hidden) -> BatchNorm1d -> Dropout(0.5) -> ReLU -> Linear(hidden, 1)

ResNet-18 1D: c=32, 4/4/4/4 blocks, stage strides 1/2/2/1, hidden 256 (2,254,273 parameters).
ResNet-50 1D: c=64, 8/11/17/8 blocks, stage strides 1/1/1/2, hidden 512 (23,238,657 parameters).
The names are historical: each block holds one convolution, not the bottlenecks of the 2-D nets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class ResidualBlock1D(nn.Module):
    """conv -> BN -> ReLU -> dropout, plus a shortcut, then ReLU.

    The shortcut is the identity, or ``Conv1d(k=1, stride) -> BatchNorm1d`` when the width or the
    stride changes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 7,
        stride: int = 1,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2
        self.conv1 = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding
        )
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv1d(in_channels, out_channels, kernel_size=1, stride=stride),
                nn.BatchNorm1d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(F.relu(self.bn1(self.conv1(x))))
        return F.relu(out + self.shortcut(x))


class ResNet1D(nn.Module):
    """A 1-D ResNet with four stages of single-convolution residual blocks and an MLP head.

    ``forward(x)`` takes (B, input_channels, L) and returns logits (B,) when ``num_classes == 1``,
    else (B, num_classes). ``input_length`` is kept for the benchmark's constructor signature; the
    global max-pool makes the network independent of it.
    """

    def __init__(
        self,
        input_channels: int = 3,
        input_length: int = 5000,
        channels: int = 64,
        blocks: Sequence[int] = (8, 11, 17, 8),
        strides: Sequence[int] = (1, 1, 1, 2),
        hidden_dim: int = 512,
        block_kernel: int = 7,
        num_classes: int = 1,
        dropout: float = 0.5,
        block_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if len(blocks) != 4 or len(strides) != 4:
            raise ValueError(f"blocks and strides need 4 stages, got {blocks} and {strides}")
        self.input_channels = input_channels
        self.input_length = input_length
        self.num_classes = num_classes

        self.initial_conv = nn.Conv1d(input_channels, channels, kernel_size=15, stride=2, padding=7)
        self.bn1 = nn.BatchNorm1d(channels)
        self.maxpool1 = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

        widths = [channels, channels * 2, channels * 4, channels * 8]
        in_width = channels
        stages = []
        for width, n_blocks, stride in zip(widths, blocks, strides, strict=True):
            stages.append(
                self._make_stage(in_width, width, n_blocks, stride, block_kernel, block_dropout)
            )
            in_width = width
        self.res_block1, self.res_block2, self.res_block3, self.res_block4 = stages

        self.maxpool2 = nn.AdaptiveMaxPool1d(1)
        self.fc = nn.Sequential(
            nn.Linear(widths[-1], hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(hidden_dim, num_classes),
        )

    @staticmethod
    def _make_stage(
        in_channels: int,
        out_channels: int,
        n_blocks: int,
        stride: int,
        kernel_size: int,
        dropout: float,
    ) -> nn.Sequential:
        layers = [ResidualBlock1D(in_channels, out_channels, kernel_size, stride, dropout)]
        layers += [
            ResidualBlock1D(out_channels, out_channels, kernel_size, 1, dropout)
            for _ in range(1, n_blocks)
        ]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != self.input_channels:
            raise ValueError(
                f"expected input of shape (B, {self.input_channels}, L), got {tuple(x.shape)}"
            )
        x = self.maxpool1(F.relu(self.bn1(self.initial_conv(x))))
        x = self.res_block1(x)
        x = self.res_block2(x)
        x = self.res_block3(x)
        x = self.res_block4(x)
        x = self.fc(self.maxpool2(x).flatten(1))
        return x.squeeze(-1) if self.num_classes == 1 else x


def resnet18_1d(**kwargs: object) -> ResNet1D:
    """ResNet-18 1D as benchmarked: 32 channels, 4/4/4/4 blocks, strides 1/2/2/1, hidden 256."""
    params: dict = {
        "channels": 32,
        "blocks": (4, 4, 4, 4),
        "strides": (1, 2, 2, 1),
        "hidden_dim": 256,
    }
    params.update(kwargs)
    return ResNet1D(**params)


def resnet50_1d(**kwargs: object) -> ResNet1D:
    """ResNet-50 1D as benchmarked: 64 channels, 8/11/17/8 blocks, strides 1/1/1/2, hidden 512."""
    params: dict = {
        "channels": 64,
        "blocks": (8, 11, 17, 8),
        "strides": (1, 1, 1, 2),
        "hidden_dim": 512,
    }
    params.update(kwargs)
    return ResNet1D(**params)
