"""Leaderboard submissions: one CSV of ``ecg_id,prediction`` per task and model.

Every file is validated before it is written: each holdout ECG exactly once, no other ids,
predictions finite probabilities in [0, 1]. :func:`build_submission` returns the CSV bytes (the
caller writes them through its storage); :func:`check_submission_csv` re-validates bytes read back.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence

import numpy as np
import polars as pl

from acs_pipeline.evaluation.checks import examples

__all__ = [
    "TASKS",
    "SubmissionError",
    "build_submission",
    "check_submission_csv",
    "submission_key",
]

TASKS = ("acs", "mace")


class SubmissionError(ValueError):
    """A submission that the leaderboard would reject (ids or predictions)."""


def _check_columns(id_column: str, prediction_column: str) -> None:
    for label, col in (("id_column", id_column), ("prediction_column", prediction_column)):
        if not col or any(c in col for c in ',"\r\n'):
            raise SubmissionError(
                f"{label} {col!r} must be non-empty without commas/quotes/newlines"
            )
    if id_column == prediction_column:
        raise SubmissionError(f"id_column and prediction_column are both {id_column!r}")


def _validate(
    holdout_ids: Sequence[str], ids: Sequence[str], predictions: object
) -> tuple[list[str], np.ndarray]:
    """Check the ids and predictions; return them in holdout order."""
    holdout = [str(i) for i in holdout_ids]
    given = [str(i) for i in ids]
    if not holdout:
        raise SubmissionError("the holdout id list is empty")
    dup_holdout = [i for i, c in Counter(holdout).items() if c > 1]
    if dup_holdout:
        raise SubmissionError(
            f"the holdout id list itself repeats {len(dup_holdout)} ids: {examples(dup_holdout)}"
        )
    preds = np.asarray(predictions)
    if preds.ndim != 1 or preds.shape[0] != len(given):
        raise SubmissionError(
            f"{len(given)} ids but predictions have shape {preds.shape}; expected ({len(given)},)"
        )
    if not (np.issubdtype(preds.dtype, np.number) or preds.dtype == bool):
        raise SubmissionError(f"predictions must be numeric, got dtype {preds.dtype}")
    preds = preds.astype(np.float64)

    problems: list[str] = []
    counts = Counter(given)
    holdout_set = set(holdout)
    missing = [i for i in holdout if i not in counts]
    extra = [i for i in counts if i not in holdout_set]
    dups = [i for i, c in counts.items() if c > 1]
    if missing:
        problems.append(f"{len(missing)} holdout ids have no prediction: {examples(missing)}")
    if extra:
        problems.append(f"{len(extra)} ids are not in the holdout set: {examples(extra)}")
    if dups:
        problems.append(f"{len(dups)} ids appear more than once: {examples(dups)}")
    nan = np.flatnonzero(~np.isfinite(preds))
    if nan.size:
        problems.append(
            f"{nan.size} predictions are NaN/inf, for ids {examples([given[i] for i in nan])}"
        )
    finite = np.isfinite(preds)
    out = np.flatnonzero(finite & ((preds < 0.0) | (preds > 1.0)))
    if out.size:
        problems.append(
            f"{out.size} predictions are outside [0, 1] (range {preds[finite].min():.4g} to "
            f"{preds[finite].max():.4g}), for ids {examples([given[i] for i in out])}"
        )
    if problems:
        raise SubmissionError(
            f"invalid submission ({len(given)} rows for {len(holdout)} holdout ECGs): "
            + "; ".join(problems)
        )
    position = {i: k for k, i in enumerate(given)}
    ordered = preds[[position[i] for i in holdout]]
    return holdout, ordered


def build_submission(
    holdout_ids: Sequence[str],
    ids: Sequence[str],
    predictions: object,
    id_column: str = "ecg_id",
    prediction_column: str = "prediction",
) -> bytes:
    """Validate and return the submission CSV as UTF-8 bytes, rows in holdout-id order.

    Raises :class:`SubmissionError` naming the counts and example ids of every problem: holdout
    ids without a prediction, ids outside the holdout set, repeated ids, NaN/inf predictions,
    predictions outside [0, 1]. Probabilities are written at full float64 precision.
    """
    _check_columns(id_column, prediction_column)
    holdout, ordered = _validate(holdout_ids, ids, predictions)
    frame = pl.DataFrame(
        {id_column: holdout, prediction_column: ordered},
        schema={id_column: pl.String, prediction_column: pl.Float64},
    )
    buf = io.BytesIO()
    frame.write_csv(buf, line_terminator="\n")
    return buf.getvalue()


def check_submission_csv(
    holdout_ids: Sequence[str],
    data: bytes,
    id_column: str = "ecg_id",
    prediction_column: str = "prediction",
) -> int:
    """Re-validate submission CSV bytes (e.g. read back from storage); returns the row count."""
    _check_columns(id_column, prediction_column)
    try:
        frame = pl.read_csv(
            io.BytesIO(data), schema_overrides={id_column: pl.String}, infer_schema_length=0
        )
    except pl.exceptions.PolarsError as exc:
        raise SubmissionError(f"submission CSV cannot be parsed: {exc}") from exc
    if frame.columns != [id_column, prediction_column]:
        raise SubmissionError(
            f"submission CSV has columns {frame.columns}, expected [{id_column!r}, "
            f"{prediction_column!r}]"
        )
    try:
        preds = frame[prediction_column].cast(pl.Float64, strict=True).to_numpy()
    except pl.exceptions.PolarsError as exc:
        raise SubmissionError(f"column {prediction_column!r} is not numeric: {exc}") from exc
    _validate(holdout_ids, frame[id_column].to_list(), preds)
    return frame.height


def submission_key(task: str, model: str) -> str:
    """The storage key of a submission, ``submission/<task>/<model>.csv`` (task 'acs'/'mace')."""
    if task not in TASKS:
        raise SubmissionError(f"task must be one of {TASKS}, got {task!r}")
    if not model or "/" in model or model.startswith("."):
        raise SubmissionError(f"model name {model!r} is not a valid file name")
    return f"submission/{task}/{model}.csv"
