"""The raw waveform listings: the dataset's and the holdout's manifests."""

import hashlib

import dagster as dg

from acs_pipeline.defs.common import (
    HOLDOUT_MANIFEST,
    MANIFEST,
    RETRY_IO,
    table_metadata,
    transient_only,
)
from acs_pipeline.defs.resources import RawDataResource, StorageResource
from acs_pipeline.ecg.leads import NPZ_DIR
from acs_pipeline.ingest.manifest import build_manifest
from acs_pipeline.io import frames
from acs_pipeline.io.storage import Storage


def _manifest_asset(context, source: Storage, storage: Storage, rel: str) -> dg.MaterializeResult:
    source.check()
    previous = frames.read_parquet(storage, rel) if storage.exists(rel) else None
    manifest, counts = build_manifest(source, previous)
    written = frames.write_parquet(storage, rel, manifest)
    version = hashlib.sha256(
        "".join(f"{k}{h}{s}" for k, h, s in manifest.select("key", "sha256", "status")
                .iter_rows()).encode()
    ).hexdigest()[:16]
    context.log.info(f"listed {counts['listed']} files, hashed {counts['hashed']}, "
                     f"reused {counts['reused']} hashes, rejected {counts['rejected']}")
    return dg.MaterializeResult(
        metadata=table_metadata(written, source=source.root,
                                **{f"files_{k}": v for k, v in counts.items()},
                                total_bytes=int(manifest["size"].sum())),
        data_version=dg.DataVersion(version),
    )


@dg.asset(group_name="raw", kinds={"parquet"}, code_version="1", retry_policy=RETRY_IO,
          description="Every raw npz waveform file with its size, ETag and SHA-256.")
@transient_only
def ecg_manifest(context: dg.AssetExecutionContext, raw: RawDataResource,
                 storage: StorageResource) -> dg.MaterializeResult:
    return _manifest_asset(context, raw.source(), storage.get(), MANIFEST)


@dg.asset(group_name="raw", kinds={"parquet"}, code_version="1", retry_policy=RETRY_IO,
          output_required=False,
          description="The unlabelled holdout waveform files with size, ETag and SHA-256. "
          "Optional: without a holdout root (ACS_HOLDOUT_URI unset, missing or empty) it says so "
          "and yields nothing, and the holdout views and predictions are skipped.")
@transient_only
def holdout_manifest(context: dg.AssetExecutionContext, raw: RawDataResource,
                     storage: StorageResource):
    source = raw.holdout()
    if source is None:
        context.log.info("no holdout root configured (ACS_HOLDOUT_URI): holdout skipped")
        return
    if not source.list_objects(NPZ_DIR + "/", suffix=".npz"):
        context.log.warning(f"the holdout root {source.root} holds no {NPZ_DIR}/**.npz file "
                            "(missing or empty): holdout skipped, no output")
        return
    yield _manifest_asset(context, source, storage.get(), HOLDOUT_MANIFEST)
