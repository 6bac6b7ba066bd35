"""Released files under a root: names, finding, importing with a manifest, loading back."""

import hashlib
import json
import subprocess
import sys

import pytest
import torch

from acs_pipeline.io.storage import Storage
from acs_pipeline.models.checkpoints import CheckpointError
from acs_pipeline.models.released import MANIFEST, RELEASED_VIEWS
from acs_pipeline.models.released.files import find_released, import_released, load_imported
from acs_pipeline.models.released.load import ReleasedWeightsError
from acs_pipeline_tests.released_fakes import Exploit, assert_same_state, lightning_checkpoint
from acs_pipeline_tests.s3_fixtures import s3_client

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_released_names_need_no_torch():
    code = "import sys, acs_pipeline.models.released; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert RELEASED_VIEWS == {"s4": "ecg_3by4", "resnet18": "ecg_3by4", "resnet50": "ecg_3by4",
                              "ecg_omi": "ecg_3by4", "hubert": "ecg_12lead"}


def test_find_released_names_aliases_and_ambiguity(tmp_path):
    for name in ("S4.CKPT", "resnet18_1d.ckpt", "hubert_ecg.pt", "notes.txt", "sub/s4.ckpt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = find_released(Storage(str(tmp_path)))
    assert found == {"s4": "S4.CKPT", "resnet18": "resnet18_1d.ckpt", "hubert": "hubert_ecg.pt"}
    (tmp_path / "resnet18.ckpt").write_bytes(b"x")
    with pytest.raises(ReleasedWeightsError, match=r"resnet18: resnet18\.ckpt, resnet18_1d\.ckpt"):
        find_released(Storage(str(tmp_path)))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "weights.bin").write_bytes(b"x")
    with pytest.raises(
        ReleasedWeightsError,
        match=r"no released weights found.*"
        r"s4: s4\.ckpt.*top-level files: \['weights\.bin'\]",
    ):
        import_released(Storage(str(empty)), Storage(str(tmp_path / "st")))


def test_import_from_s3_copies_verifies_and_reloads(tmp_path, resnet18, s3_server, s3_bucket):
    local = tmp_path / "resnet18.ckpt"
    torch.save(lightning_checkpoint(resnet18.state_dict()), local)
    client = s3_client(s3_server)
    client.put_object(Bucket=s3_bucket, Key="released/resnet18.ckpt", Body=local.read_bytes())
    client.put_object(Bucket=s3_bucket, Key="released/README.md", Body=b"weights")
    source = Storage(f"s3://{s3_bucket}/released", endpoint_url=s3_server)
    target = Storage(str(tmp_path / "storage"))

    (info,) = import_released(source, target)
    assert info.source_uri == f"s3://{s3_bucket}/released/resnet18.ckpt"
    assert info.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    stored = tmp_path / "storage" / info.stored_rel
    assert info.stored_rel == "models/released/resnet18/resnet18.ckpt"
    assert stored.read_bytes() == local.read_bytes()
    manifest = json.loads((tmp_path / "storage" / MANIFEST).read_text())
    assert manifest["source"] == f"s3://{s3_bucket}/released"
    assert manifest["models"]["resnet18"]["n_params"] == 2_254_273

    mtime = stored.stat().st_mtime_ns
    import_released(source, target)  # unchanged: not copied again
    assert stored.stat().st_mtime_ns == mtime

    loaded = load_imported(target, "resnet18")
    assert loaded is not None and loaded.info.stored_rel == info.stored_rel
    assert_same_state(loaded.module, resnet18)
    assert load_imported(target, "s4") is None

    data = stored.read_bytes()
    stored.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ReleasedWeightsError, match="differs from the .* recorded"):
        load_imported(target, "resnet18")

    marker = tmp_path / "pwned"
    evil = lightning_checkpoint(resnet18.state_dict(), callbacks={"x": Exploit(str(marker))})
    path = tmp_path / "evil.ckpt"
    torch.save(evil, path)
    client.put_object(Bucket=s3_bucket, Key="released/resnet18.ckpt", Body=path.read_bytes())
    with pytest.raises(
        CheckpointError,
        match=rf"s3://{s3_bucket}/released/resnet18\.ckpt: "
        r"refusing to unpickle posix\.system",
    ):
        import_released(source, target)
    assert not marker.exists()
