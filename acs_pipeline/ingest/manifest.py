"""The raw npz listing -> the manifest: one row per file with its size, ETag and SHA-256.

Nightingale stores each ECG as ``ecg-waveforms-npz/<hex2>/<10 hex>.npz``; files named otherwise
are kept in the manifest as rejections. Content hashes are reused for files whose ETag did not
change since the previous manifest, so a re-listing reads only new or changed files. A file
that vanished between listing and reading is a rejection; any other read failure (transient or
access) raises: the manifest is not written, and no file is marked bad for the store's fault.
"""

from __future__ import annotations

import hashlib
import re

import polars as pl

from acs_pipeline.ecg.leads import NPZ_DIR
from acs_pipeline.io.storage import Storage

_KEY = re.compile(rf"^{NPZ_DIR}/([0-9a-f]{{2}})/([0-9a-f]{{10}})\.npz$")
MANIFEST_SCHEMA = {
    "key": pl.String, "ecg_id": pl.String, "shard": pl.String, "size": pl.Int64,
    "etag": pl.String, "sha256": pl.String, "status": pl.String, "detail": pl.String,
}


class IngestError(RuntimeError):
    """The raw root cannot be ingested at all (for example it holds no waveform files)."""


def ecg_id_for_key(key: str) -> str | None:
    """``ecg-waveforms-npz/3d/3df45120a4.npz`` -> ``ecg3df45120a4``; None if malformed."""
    m = _KEY.match(key)
    if not m or not m.group(2).startswith(m.group(1)):
        return None
    return "ecg" + m.group(2)


def build_manifest(
    source: Storage, previous: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, dict[str, int]]:
    """List the npz files and their content hashes; reuse hashes whose ETag did not change.

    Returns the manifest (one row per listed file, ``status`` ``ok`` or a rejection reason) and
    counts ``{'listed', 'hashed', 'reused', 'rejected'}``.
    """
    objects = source.list_objects(NPZ_DIR + "/", suffix=".npz")
    if not objects:
        raise IngestError(f"no '{NPZ_DIR}/**.npz' files under the raw root {source.root!r}")
    listed = pl.DataFrame({"key": [o.key for o in objects], "size": [o.size for o in objects],
                           "etag": [o.etag for o in objects]},
                          schema={k: MANIFEST_SCHEMA[k] for k in ("key", "size", "etag")})
    folder = pl.col("key").str.extract(_KEY.pattern, 1)
    hex_id = pl.col("key").str.extract(_KEY.pattern, 2)
    ecg_id = pl.when(hex_id.str.starts_with(folder)).then(pl.lit("ecg") + hex_id)
    manifest = listed.with_columns(ecg_id=ecg_id).with_columns(
        shard=pl.col("ecg_id").str.slice(3, 2))
    known = (previous.select("key", "etag", "sha256").filter(pl.col("sha256").is_not_null())
             if previous is not None and len(previous)
             else pl.DataFrame(schema={k: MANIFEST_SCHEMA[k] for k in ("key", "etag", "sha256")}))
    manifest = manifest.join(known, on=["key", "etag"], how="left").with_columns(
        status=pl.when(pl.col("ecg_id").is_null()).then(pl.lit("unexpected_file_name"))
        .otherwise(pl.lit("ok")),
        detail=pl.when(pl.col("ecg_id").is_null())
        .then(pl.lit("expected ecg-waveforms-npz/<hex2>/<10 hex>.npz")),
    )
    to_hash = manifest.filter(pl.col("ecg_id").is_not_null() & pl.col("sha256").is_null())["key"]
    hashed: dict[str, tuple[str | None, str, str | None]] = {}
    for key, data in source.read_files(to_hash.to_list()):  # only a vanished file is an error
        hashed[key] = ((None, "unreadable", str(data)) if isinstance(data, Exception)
                       else (hashlib.sha256(data).hexdigest(), "ok", None))
    if hashed:
        new = pl.DataFrame([(k, *v) for k, v in hashed.items()], orient="row",
                           schema={"key": pl.String, "new_sha256": pl.String,
                                   "new_status": pl.String, "new_detail": pl.String})
        manifest = manifest.join(new, on="key", how="left").with_columns(
            sha256=pl.coalesce("new_sha256", "sha256"),
            status=pl.coalesce("new_status", "status"),
            detail=pl.when(pl.col("new_status").is_not_null()).then("new_detail")
            .otherwise("detail"),
        )
    manifest = manifest.select(list(MANIFEST_SCHEMA)).cast(MANIFEST_SCHEMA).sort("key")
    unexpected = manifest.filter(pl.col("status") == "unexpected_file_name").height
    counts = {
        "listed": manifest.height,
        "hashed": len(to_hash),
        "reused": manifest.height - len(to_hash) - unexpected,
        "rejected": manifest.filter(pl.col("status") != "ok").height,
    }
    return manifest, counts
