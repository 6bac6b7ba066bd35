"""Numeric checks on tensors: one ECG's amplitude at ingest, a view's values (combined from
the statistics recorded beside each part when it was written), whether a view's rejections are
systemic, and a check's result remembered by the version of what it checked (no Dagster here)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from acs_pipeline.ingest.read import _index
from acs_pipeline.io import tensors
from acs_pipeline.io.storage import Storage

# Physiological range of one ECG after its view's processing (docs/data-contract.md §1: samples
# are millivolts). A QRS complex reaches 0.5-3 mV; the synthetic demo cohort's per-ECG peaks
# |x| lie in 0.5-3.8 mV. Beyond MAX_ABS_MV a sample is not physiological (microvolts stored as
# millivolts give hundreds); a peak under MIN_PEAK_MV shows no QRS in any lead (volts, or blank).
MAX_ABS_MV = 20.0
MIN_PEAK_MV = 0.05
# A view's rejections are systemic when one reason takes more than this share of a shard's
# listed files, and at least SYSTEMIC_MIN of them (a single bad file in a tiny shard is not).
SYSTEMIC_FRACTION = 0.01
SYSTEMIC_MIN = 5


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

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> TensorStats:
        return cls(**doc)


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


def amplitude_problems(x: np.ndarray, raw: list[np.ndarray] | None = None
                       ) -> list[tuple[str, str] | None]:
    """Per ECG of an (N, C, L) view batch (float, mV): ``(reason, detail)`` for one outside the
    physiological range (``amplitude``) or with a non-finite sample (``non_finite``), else None.

    ``raw`` (the N decoded (15, 5000) inputs) adds the file's own range to the detail.
    """
    finite = np.isfinite(x).all(axis=(1, 2)) if x.size else np.ones(len(x), dtype=bool)
    peak = np.abs(np.where(np.isfinite(x), x, 0.0)).max(axis=(1, 2)) if x.size \
        else np.zeros(len(x))
    out: list[tuple[str, str] | None] = []
    for i in range(len(x)):
        if not finite[i]:
            n = int((~np.isfinite(x[i])).sum())
            out.append(("non_finite", f"{n} non-finite samples after processing"))
        elif peak[i] > MAX_ABS_MV or peak[i] < MIN_PEAK_MV:
            lo, hi = float(x[i].min()), float(x[i].max())
            detail = (f"values span [{lo:.4g}, {hi:.4g}] mV after processing (peak |x| "
                      f"{peak[i]:.4g} mV); expected a peak in [{MIN_PEAK_MV:g}, {MAX_ABS_MV:g}] "
                      "mV: microvolts or volts stored as millivolts?")
            if raw is not None:
                r = raw[i]
                detail += f"; the file's values span [{np.nanmin(r):.4g}, {np.nanmax(r):.4g}]"
            out.append(("amplitude", detail))
        else:
            out.append(None)
    return out


def systemic_rejections(rejects: pl.DataFrame, manifest: pl.DataFrame) -> pl.DataFrame:
    """The (shard, reason) pairs whose rejections are systemic: more than
    :data:`SYSTEMIC_FRACTION` of the shard's listed files and at least :data:`SYSTEMIC_MIN`.

    ``rejects`` has ``key`` and ``reason`` (a view's rejections); ``manifest`` has ``key`` and
    ``shard`` (every listed file; files outside the shard folders count as shard ``_``).
    Returns ``shard, reason, rejected, listed``, largest share first.
    """
    shards = manifest.select("key", shard=pl.col("shard").fill_null("_"))
    listed = shards.group_by("shard").agg(listed=pl.len())
    return (
        rejects.select("key", "reason").join(shards, on="key", how="left")
        .with_columns(pl.col("shard").fill_null("_"))
        .group_by("shard", "reason").agg(rejected=pl.len())
        .join(listed, on="shard", how="left")
        .filter((pl.col("rejected") >= SYSTEMIC_MIN)
                & (pl.col("rejected") > SYSTEMIC_FRACTION * pl.col("listed").fill_null(0)))
        .sort(pl.col("rejected") / pl.col("listed"), "shard", "reason", descending=[True, False,
                                                                                  False])
        .select("shard", "reason", "rejected", "listed")
    )


def view_stats(storage: Storage, view: str, prefix: str = "tensors"
               ) -> tuple[TensorStats, int]:
    """A view's statistics combined from those its index records per part (one read, no
    samples); a part recorded without them (written before they were) is read and measured.
    Returns the stats and how many parts had to be read."""
    index = _index(storage, view, prefix)
    parts, read = [], 0
    for shard in sorted(index["shards"]):
        for entry in index["shards"][shard]:
            if entry.get("stats"):
                parts.append(TensorStats.from_json(entry["stats"]))
            else:
                parts.append(tensor_stats(tensors.load(storage, entry["path"]).x))
                read += 1
    return combine_stats(parts), read


def remembered(storage: Storage, rel: str, version: str, compute: Callable[[], dict],
               outputs: Sequence[str] = ()) -> tuple[dict, bool]:
    """``compute()`` (a JSON-ready result), or the result recorded in ``rel`` for the same
    ``version`` of what it checks. Returns the result and whether it was reused; a new result
    replaces the record (a missing or unreadable record is recomputed). ``outputs``: the files
    ``compute`` writes; a record is reused only while they all exist (else computed again)."""
    try:
        doc = json.loads(storage.read_bytes(rel))
        if doc.get("version") == version and all(storage.exists(o) for o in outputs):
            return doc["result"], True
    except (FileNotFoundError, ValueError, KeyError, AttributeError):
        pass
    result = compute()
    storage.write_bytes(rel, json.dumps({"version": version, "result": result}).encode())
    return result, False
