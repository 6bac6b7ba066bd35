"""Numeric checks on tensors and on the accounting of records (no Dagster here)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

MAX_ABS_MV = 20.0  # beyond this an ECG sample is not physiological (after band-pass)


@dataclass(frozen=True)
class TensorStats:
    rows: int
    channels: int
    length: int
    non_finite: int
    flat_channels: int
    out_of_range: int
    max_abs: float

    @property
    def ok(self) -> bool:
        return self.non_finite == 0 and self.out_of_range == 0 and self.rows > 0

    def describe(self) -> str:
        return (
            f"{self.rows} ECGs of shape ({self.channels}, {self.length}); "
            f"{self.non_finite} non-finite samples; {self.flat_channels} flat channels; "
            f"{self.out_of_range} ECGs with |x| > {MAX_ABS_MV} mV; max |x| {self.max_abs:.2f} mV"
        )


def combine_stats(parts: Iterable[TensorStats]) -> TensorStats:
    """One summary of several (N, C, L) arrays' stats (e.g. a view's parts, read one by one).

    ``channels`` and ``length`` are those of the non-empty parts; parts that disagree give -1.
    """
    parts = list(parts)
    shapes = {(p.channels, p.length) for p in parts if p.rows} or \
        {(p.channels, p.length) for p in parts[:1]}
    channels, length = shapes.pop() if len(shapes) == 1 else (-1, -1)
    return TensorStats(
        sum(p.rows for p in parts), channels, length, sum(p.non_finite for p in parts),
        sum(p.flat_channels for p in parts), sum(p.out_of_range for p in parts),
        max((p.max_abs for p in parts), default=0.0),
    )


def tensor_stats(x: np.ndarray, batch: int = 1024) -> TensorStats:
    """Count non-finite samples, flat channels and out-of-range ECGs in an (N, C, L) array."""
    if x.ndim != 3:
        raise ValueError(f"expected an (N, C, L) array, got shape {x.shape}")
    non_finite = flat = out = 0
    max_abs = 0.0
    for start in range(0, len(x), batch):
        b = np.asarray(x[start:start + batch], dtype=np.float32)
        finite = np.isfinite(b)
        non_finite += int((~finite).sum())
        b = np.where(finite, b, 0.0)
        flat += int((np.ptp(b, axis=-1) == 0).sum())
        amp = np.abs(b).max(axis=(1, 2)) if len(b) else np.zeros(0)
        out += int((amp > MAX_ABS_MV).sum())
        if len(amp):
            max_abs = max(max_abs, float(amp.max()))
    n, c, length = x.shape
    return TensorStats(n, c, length, non_finite, flat, out, max_abs)
