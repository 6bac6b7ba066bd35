"""Ingest throughput: ours (batched, sharded, float16 Parquet) vs a naive one-file-at-a-time
baseline written the way the original scripts did it (float64 .npy per ECG), in the same run.

Prints one JSON line per measurement. ``--quick`` uses a smaller cohort.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import signal

from acs_pipeline import ingest, synth
from acs_pipeline.rawsource import RawSource
from acs_pipeline.storage import Storage


def naive_3by4(npz_path: Path, out_dir: Path) -> int:
    """The original recipe, per file: load, per-lead mode, NaN->0, sum, filtfilt, float64 .npy."""
    with np.load(npz_path) as z:
        raw = z[z.files[0]].astype(np.float64)
    leads = raw[:12].copy()
    for j in range(12):
        valid = leads[j][np.isfinite(leads[j])]
        if valid.size:
            vals, counts = np.unique(valid, return_counts=True)
            leads[j] -= vals[np.argmax(counts)]
    leads = np.nan_to_num(leads)
    x = np.stack([leads[i] + leads[i + 3] + leads[i + 6] + leads[i + 9] for i in range(3)])
    b, a = signal.butter(5, [0.5, 50], btype="band", fs=500)
    x = np.stack([signal.filtfilt(b, a, row) for row in x])
    out = out_dir / (npz_path.stem + ".npy")
    np.save(out, x)
    return out.stat().st_size


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=400)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    patients = 120 if args.quick else args.patients
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        summary = synth.generate(tmp / "synth", n_patients=patients, seed=11)
        raw_root = summary.dataset_dir
        files = sorted((raw_root / "ecg-waveforms-npz").rglob("*.npz"))
        n = len(files)
        src = RawSource(str(raw_root), max_workers=4)

        for view in ("ecg_3by4", "ecg_12lead"):
            st = Storage(str(tmp / f"store_{view}"))
            t0 = time.perf_counter()
            manifest, _ = ingest.build_manifest(src)
            rep = ingest.ingest_view(src, st, manifest, view, code_version="bench")
            full = time.perf_counter() - t0
            t0 = time.perf_counter()
            manifest2, _ = ingest.build_manifest(src, previous=manifest)
            again = ingest.ingest_view(src, st, manifest2, view, code_version="bench")
            rerun = time.perf_counter() - t0
            assert again.shards_computed == 0
            row = dict(bench="ingest_local", view=view, ecgs=n, seconds=round(full, 3),
                       ecgs_per_s_per_core=round(rep.rows / full, 1),
                       bytes_per_ecg=round(rep.bytes / max(rep.rows, 1)),
                       float64_bytes_per_ecg=view_bytes(view),
                       storage_ratio_vs_float64=round(rep.bytes / max(rep.rows, 1)
                                                      / view_bytes(view), 3),
                       no_change_rerun_s=round(rerun, 3),
                       rerun_fraction=round(rerun / full, 4))
            if view == "ecg_3by4":
                out = tmp / "naive"
                out.mkdir()
                t0 = time.perf_counter()
                sizes = [naive_3by4(f, out) for f in files]
                naive = time.perf_counter() - t0
                row.update(baseline_ecgs_per_s=round(n / naive, 1),
                           baseline_bytes_per_ecg=round(float(np.mean(sizes))),
                           speedup_vs_baseline=round(naive / full, 2))
                local_rate = rep.rows / full
            emit(**row)

        s3_row = s3_rate(raw_root, n)
        if s3_row:
            s3_row["ratio_vs_local"] = round(s3_row["ecgs_per_s_per_core"] / local_rate, 3)
            emit(**s3_row)


def view_bytes(view: str) -> int:
    return ingest.VIEWS[view] * 5000 * 8


def s3_rate(raw_root: Path, n: int) -> dict | None:
    """The same 3by4 ingest reading from a moto S3 server on loopback."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        return None
    from acs_pipeline_tests.s3_fixtures import FAKE_AWS_ENV, s3_client, upload_tree

    os.environ.update(FAKE_AWS_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3_client(endpoint).create_bucket(Bucket="bench")
        upload_tree(endpoint, "bench", "v1/ecg-waveforms-npz", raw_root / "ecg-waveforms-npz")
        src = RawSource("s3://bench/v1", endpoint_url=endpoint, max_workers=8)
        with tempfile.TemporaryDirectory() as tmp:
            st = Storage(tmp)
            t0 = time.perf_counter()
            manifest, _ = ingest.build_manifest(src)
            rep = ingest.ingest_view(src, st, manifest, "ecg_3by4", code_version="bench")
            secs = time.perf_counter() - t0
        return dict(bench="ingest_s3_loopback", view="ecg_3by4", ecgs=n, seconds=round(secs, 3),
                    ecgs_per_s_per_core=round(rep.rows / secs, 1))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
