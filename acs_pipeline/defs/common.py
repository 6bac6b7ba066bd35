"""What every stage's wiring shares: storage paths, automation conditions, the I/O retry
policy and table metadata."""

import dagster as dg
import polars as pl

from acs_pipeline.io import frames

# Storage paths (under the storage root) that more than one stage reads.
MANIFEST = "tables/manifest.parquet"
HOLDOUT_MANIFEST = "tables/holdout_manifest.parquet"
COHORT = "tables/cohort.parquet"
HOLDOUT_PREFIX = "tensors/holdout"

RETRY_IO = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)

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
