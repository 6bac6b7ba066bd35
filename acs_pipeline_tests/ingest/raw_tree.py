"""A small raw tree in the Nightingale layout (good, corrupt, misnamed files) and ingest runs."""

import io
from pathlib import Path

import numpy as np

from acs_pipeline.ingest.manifest import build_manifest
from acs_pipeline.ingest.read import load_view
from acs_pipeline.ingest.views import ingest_view
from acs_pipeline.io.storage import Storage


def beat_train(rng: np.random.Generator) -> np.ndarray:
    """(15, 5000) Nightingale-layout array: Gaussian QRS + T waves at ~70 bpm, printed windows."""
    t = np.arange(5000) / 500
    rr = 60 / rng.uniform(60, 80)
    sig = np.zeros(5000)
    for r in np.arange(0.3, 10, rr):
        sig += 1.2 * np.exp(-((t - r) / 0.012) ** 2) + 0.3 * np.exp(-((t - r - 0.3) / 0.05) ** 2)
    raw = np.full((15, 5000), np.nan, dtype=np.float32)
    for j in range(12):
        w = slice(1250 * (j // 3), 1250 * (j // 3 + 1))
        raw[j, w] = (sig[w] * (0.5 + j / 12) + rng.normal(0, 0.01, 1250)).astype(np.float32)
    raw[12:] = sig + rng.normal(0, 0.01, (3, 5000))
    return raw


def npz_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, ecg=arr)
    return buf.getvalue()


def write_tree(root: Path, n: int = 9, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    files = {}
    for i in range(n):
        hx = f"{['aa', 'ab', 'b0'][i % 3]}{i:08x}"
        files[f"ecg-waveforms-npz/{hx[:2]}/{hx}.npz"] = npz_bytes(beat_train(rng))
    files["ecg-waveforms-npz/aa/aa0000ffff.npz"] = b"PK\x03\x04 truncated"
    files["ecg-waveforms-npz/ab/ab0000eeee.npz"] = npz_bytes(np.zeros((12, 5000), np.float32))
    nan_long = beat_train(rng)
    nan_long[13] = np.nan
    files["ecg-waveforms-npz/b0/b00000dddd.npz"] = npz_bytes(nan_long)
    files["ecg-waveforms-npz/b0/notanid.npz"] = npz_bytes(beat_train(rng))
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files


def run(source: Storage, storage: Storage, view="ecg_3by4", code_version="t1"):
    manifest, counts = build_manifest(source)
    return manifest, counts, ingest_view(source, storage, manifest, view,
                                         code_version=code_version)


def ingest_fresh(tmp_path: Path, name: str, **kwargs):
    source, storage = Storage(str(tmp_path / "raw")), Storage(str(tmp_path / name))
    manifest, _ = build_manifest(source)
    rep = ingest_view(source, storage, manifest, "ecg_3by4", code_version="t1", **kwargs)
    return rep, load_view(storage, "ecg_3by4")


def multi_part_view(tmp: Path, n: int = 24) -> Storage:
    """A storage root under ``tmp`` with a 3by4 view of ``n`` ECGs in several shards, some of
    them holding two parts (ingested twice: the first 10 files, then all)."""
    write_tree(tmp / "raw", n=n)
    source, st = Storage(str(tmp / "raw")), Storage(str(tmp / "store"))
    manifest, _ = build_manifest(source)
    ingest_view(source, st, manifest.head(10), "ecg_3by4", code_version="t1")
    ingest_view(source, st, manifest, "ecg_3by4", code_version="t1")
    return st
