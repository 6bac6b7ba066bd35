"""Raw npz bytes -> a view's float16 tensors, or a rejection with its reason, per ECG.

Besides decoding errors, an ECG whose processed tensor is outside the physiological range
(``amplitude``, see :mod:`acs_pipeline.ingest.stats`) or not finite is rejected here, one by one,
so one file in microvolts never reaches (or fails) the view.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import polars as pl

from acs_pipeline.ecg.leads import N_SAMPLES, WaveformError, decode_npz, to_3by4
from acs_pipeline.ecg.reconstruct import reconstruct_12lead
from acs_pipeline.ingest.stats import amplitude_problems
from acs_pipeline.io import tensors

VIEWS = {"ecg_3by4": 3, "ecg_12lead": 12}
REJECT_SCHEMA = {"ecg_id": pl.String, "key": pl.String, "stage": pl.String,
                 "reason": pl.String, "detail": pl.String}


def transform_batch(view: str, raw: np.ndarray | list[np.ndarray]
                    ) -> tuple[np.ndarray, list[str | None]]:
    """Apply a view's processing to a (N, 15, 5000) batch (or a list of N (15, 5000) arrays);
    per-ECG failures are reported."""
    if view == "ecg_3by4":
        return to_3by4(raw), [None] * len(raw)
    if view == "ecg_12lead":
        out = np.zeros((len(raw), 12, N_SAMPLES), dtype=np.float32)
        errors: list[str | None] = []
        for i, one in enumerate(raw):
            try:
                out[i] = reconstruct_12lead(one)
                errors.append(None)
            except WaveformError as exc:
                errors.append(f"{exc.reason}: {exc}")
        return out, errors
    raise ValueError(f"unknown view {view!r}; expected one of {sorted(VIEWS)}")


Row = tuple[str, np.ndarray | None, dict | None]  # (ecg_id, float16 tensor, rejection)


def transform_rows(view: str, keys: Sequence[tuple[str, str]],
                   reads: Iterator[tuple[str, bytes | Exception]], batch: int) -> Iterator[Row]:
    """Decode and transform ``keys`` ((raw key, ecg_id) pairs; their bytes come from
    ``reads``, in order) in batches of ``batch``, yielding one row per key, in order: its
    float16 tensor or its rejection.

    Batches run across shard boundaries, so a run that adds a few files to many shards
    transforms them as efficiently as a full run.
    """

    def reject(ecg_id: str, key: str, reason: str, detail: str) -> Row:
        return ecg_id, None, {"ecg_id": ecg_id, "key": key, "stage": view, "reason": reason,
                              "detail": detail}

    done: list[Row | None] = []  # in key order; None = waiting for its batch
    pending: list[tuple[int, np.ndarray]] = []  # (index into done, decoded raw)
    meta: list[tuple[str, str]] = []

    def flush() -> None:
        if not pending:
            return
        raws = [raw for _, raw in pending]
        out, errors = transform_batch(view, raws)  # no stacked copy
        ranges = amplitude_problems(out, raws)
        out[[j for j, r in enumerate(ranges) if r]] = 0  # rejected: no float16 overflow
        out = out.astype(tensors.STORAGE_DTYPE)
        for j, ((i, _), (key, ecg_id), err) in enumerate(zip(pending, meta, errors,
                                                             strict=True)):
            if err is None and ranges[j] is None:
                done[i] = (ecg_id, out[j], None)
            elif err is None:
                done[i] = reject(ecg_id, key, *ranges[j])
            else:
                reason, _, detail = err.partition(": ")
                done[i] = reject(ecg_id, key, reason, detail)
        pending.clear()
        meta.clear()

    for (key, ecg_id), (got, data) in zip(keys, reads, strict=True):
        if got != key:
            raise RuntimeError(f"read {got!r} where {key!r} was expected")
        if isinstance(data, Exception):
            done.append(reject(ecg_id, key, "unreadable", str(data)))
        else:
            try:
                pending.append((len(done), decode_npz(data, source=key)))
                meta.append((key, ecg_id))
                done.append(None)
            except WaveformError as exc:
                done.append(reject(ecg_id, key, exc.reason, str(exc)))
        if len(pending) >= batch:
            flush()
        if not pending:  # everything so far is final
            yield from done  # type: ignore[misc]
            done.clear()
    flush()
    yield from done  # type: ignore[misc]


def collect_rows(view: str, rows: Iterable[Row]) -> tuple[list[str], np.ndarray, list[dict]]:
    """A shard's rows -> (ecg ids, (N, C, 5000) float16 tensors, rejections)."""
    ids: list[str] = []
    xs: list[np.ndarray] = []
    rejects: list[dict] = []
    for ecg_id, x, rejection in rows:
        if rejection is None:
            ids.append(ecg_id)
            xs.append(x)
        else:
            rejects.append(rejection)
    x = (np.stack(xs) if xs
         else np.zeros((0, VIEWS[view], N_SAMPLES), dtype=tensors.STORAGE_DTYPE))
    return ids, x, rejects


def rejects_frame(rejects: Sequence[dict]) -> pl.DataFrame:
    """Rejection dicts as a frame of ``REJECT_SCHEMA``."""
    return pl.DataFrame(list(rejects), schema=REJECT_SCHEMA)
