"""The manifest: listing, hashing, hash reuse by ETag."""

import pytest

from acs_pipeline.ingest.manifest import IngestError, build_manifest
from acs_pipeline.io.storage import Storage


def test_empty_root_is_a_clear_error(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(IngestError, match="no 'ecg-waveforms-npz"):
        build_manifest(Storage(str(tmp_path / "raw")))
