"""What every stage's wiring shares: storage paths, automation conditions, the I/O retry
policy and table metadata."""

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import dagster as dg
import polars as pl

from acs_pipeline.io import frames
from acs_pipeline.io.objects import TransientStorageError

# Storage paths (under the storage root) that more than one stage reads.
MANIFEST = "tables/manifest.parquet"
HOLDOUT_MANIFEST = "tables/holdout_manifest.parquet"
COHORT = "tables/cohort.parquet"
HOLDOUT_PREFIX = "tensors/holdout"


def model_key(model: str, name: str) -> dg.AssetKey:
    """The key of ``model``'s asset ``name``: ``resnet18_acs_checkpoint``. One flat name, not a
    ``resnet18/acs_checkpoint`` path: the asset graph labels a node with the last part of its
    key only, and five nodes all titled ``acs_checkpoint`` cannot be told apart."""
    return dg.AssetKey(f"{model}_{name}")

# Dagster retries a step for ANY exception under a RetryPolicy: steps with RETRY_IO also take
# @transient_only, which turns every other failure into dg.Failure(allow_retries=False).
RETRY_IO = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)
# What a later attempt may get past: the store's faults that outlasted the client's retries.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientStorageError, ConnectionError, TimeoutError)

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def _permanent_failures_not_retried() -> Iterator[None]:
    try:
        yield
    except (dg.Failure, dg.RetryRequested, dg.DagsterError):
        raise
    except TRANSIENT_ERRORS:
        raise  # RETRY_IO retries the step
    except Exception as exc:  # an access fault, bad data, a bug: another attempt cannot help
        raise dg.Failure(description=f"{type(exc).__name__}: {exc} (not retried: a permanent "
                         "error)", allow_retries=False) from exc


def transient_only(fn: F) -> F:
    """Make a step's RETRY_IO retry only transient faults: a storage fault that outlasted the
    client's retries (``TransientStorageError``), a connection error or a timeout. Any other
    exception (an access fault such as 403 or an expired token, a missing table, a bug) fails
    the step at once as ``dg.Failure(allow_retries=False)`` with the error's message.

    Put it under ``@dg.asset``/``@dg.op``; works for plain and generator functions.
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def steps(*args, **kwargs):
            with _permanent_failures_not_retried():
                return (yield from fn(*args, **kwargs))
        return steps  # type: ignore[return-value]

    @functools.wraps(fn)
    def step(*args, **kwargs):
        with _permanent_failures_not_retried():
            return fn(*args, **kwargs)
    return step  # type: ignore[return-value]

# Declarative automation (evaluated only while the `acs_automation` sensor is on): derived data
# refreshes as soon as its inputs change; training only when an input's content (data version)
# or the asset's code version changed.
EAGER = dg.AutomationCondition.eager()
WHEN_CHANGED = (
    (
        dg.AutomationCondition.missing()
        | dg.AutomationCondition.code_version_changed()
        | dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed())
    )
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("inputs or code changed")


def table_metadata(written: frames.Written, **extra) -> dict:
    """A written table's URI, rows, bytes, hash and column schema, plus ``extra``."""
    return {
        "uri": dg.MetadataValue.path(written.uri),
        "dagster/row_count": written.rows,
        "bytes": written.bytes,
        "sha256": written.sha256,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(k, v) for k, v in written.columns.items()]
        ),
        **extra,
    }


def md_table(df: pl.DataFrame) -> dg.MetadataValue:
    """A small frame as a Markdown metadata value."""
    return dg.MetadataValue.md(frames.to_markdown(df))
