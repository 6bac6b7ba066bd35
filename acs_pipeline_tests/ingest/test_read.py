"""Reading a view back: whole, part by part, row counts from footers."""

import numpy as np

from acs_pipeline.ingest.manifest import build_manifest
from acs_pipeline.ingest.read import iter_view, load_view, shard_paths, view_rows
from acs_pipeline.ingest.views import ingest_view
from acs_pipeline.io.storage import Storage
from acs_pipeline_tests.ingest.raw_tree import write_tree


def test_view_read_part_by_part_and_counted_from_footers(tmp_path):
    write_tree(tmp_path / "raw")
    source, storage = Storage(str(tmp_path / "raw")), Storage(str(tmp_path / "store"))
    manifest, _ = build_manifest(source)
    ingest_view(source, storage, manifest.head(6), "ecg_3by4", code_version="t1")
    ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1")  # 2nd parts
    whole = load_view(storage, "ecg_3by4")
    parts = list(iter_view(storage, "ecg_3by4"))
    assert len(parts) == len(shard_paths(storage, "ecg_3by4")) > 3
    by_id = {e: x for p in parts for e, x in zip(p.ecg_ids, p.x, strict=True)}
    assert sorted(by_id) == whole.ecg_ids.tolist()
    for e, x in zip(whole.ecg_ids, whole.x, strict=True):
        np.testing.assert_array_equal(by_id[e], x)
    assert view_rows(storage, "ecg_3by4") == len(whole)
