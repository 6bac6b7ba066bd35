"""Ingest throughput: ours (batched, sharded, float16 Parquet) vs a naive one-file-at-a-time
baseline written the way the original scripts did it (float64 .npy per ECG), in the same run.

Prints one JSON line per measurement:
- ``ingest_local``: ECGs/s per core for each view from local npz, bytes per ECG, a no-change
  re-run and an update after adding 1 % new files, as fractions of the full run; for 3by4 the
  naive baseline's rate and our speed-up over it.
- ``ingest_whole_update``: adding 1 % new files to the whole ingest as the assets run it (one
  manifest, then both views) as a fraction of a full one, wall and CPU.
- ``ingest_s3_loopback``: the same 3by4 ingest reading from a moto S3 server on loopback (run in
  its own process, like a real remote server) and its ratio to the local rate.
- ``parquet_reads_s3_loopback``: the 3by4 view's parts read back from that server through boto3
  (``load_view``, ``view_rows``) and through ``pyarrow.fs`` (the choice in ``io/tensors.py``).
- ``ingest_processes``: the 3by4 ingest with shards in two worker processes.

For 3by4, the full ingest and both naive baselines run ``--repeats`` times (default 3),
interleaved, and the medians are compared (this machine's CPU time varies by +-20 % from run to
run). "Per core" divides by the CPU seconds the ingest used (this process and its worker processes),
so it does not depend on how many cores the machine has or how busy it is. ``--quick`` uses a
smaller cohort.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas  # noqa: F401  pyarrow imports it on first use: a one-time cost, not timed
import polars as pl
from scipy import signal, stats

from acs_pipeline.ingest.manifest import build_manifest
from acs_pipeline.ingest.read import load_view, shard_paths, view_rows
from acs_pipeline.ingest.transform import VIEWS
from acs_pipeline.ingest.views import ingest_view
from acs_pipeline.io.storage import Storage
from acs_pipeline.synth import cohort as synth


def naive_3by4(npz_path: Path, out_dir: Path, mode: str = "scipy") -> int:
    """The original recipe, per file: load, per-lead mode, NaN->0, sum, filtfilt, float64 .npy.

    ``mode="scipy"``: the original's ``scipy.stats.mode(x)[0][0]`` with ``keepdims=True``, the
    one change that makes that call work on SciPy >= 1.11 (docs/data-contract.md §3);
    ``mode="unique"``: a faster hand-written mode (``np.unique`` counts), for reference.
    """
    with np.load(npz_path) as z:
        raw = z[z.files[0]].astype(np.float64)
    leads = raw[:12].copy()
    for j in range(12):
        valid = leads[j][np.isfinite(leads[j])]
        if not valid.size:
            continue
        if mode == "scipy":
            leads[j] -= stats.mode(valid, keepdims=True)[0][0]
        else:
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


class Clock:
    """Wall time and CPU time of this process and its finished children."""

    def __enter__(self) -> Clock:
        self.w0, self.c0 = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.w0
        self.cpu = self._cpu() - self.c0

    @staticmethod
    def _cpu() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


SHARD_DIGITS = 1  # set from --shard-digits
REPEATS = 3  # full 3by4 ingests and naive runs, interleaved; set from --repeats


def full_ingest(src: Storage, st: Storage, view: str, workers: int = 1, manifest=None,
                shard_digits: int | None = None):
    if manifest is None:
        manifest, _ = build_manifest(src)
    return ingest_view(src, st, manifest, view, code_version="bench", workers=workers,
                       min_parallel=0, shard_digits=shard_digits or SHARD_DIGITS)


def one_percent_update(src: Storage, manifest: pl.DataFrame, view: str, store: Path,
                       seed: int) -> tuple[Clock, Clock, int]:
    """Ingest 99 % of the files, then time what adding the other 1 % costs: the manifest
    (list everything, hash the new files) and the tensor update."""
    drop = manifest.sample(fraction=0.01, seed=seed)["key"]
    before = manifest.filter(~pl.col("key").is_in(drop.implode()))
    st = Storage(str(store))
    ingest_view(src, st, before, view, code_version="bench", shard_digits=SHARD_DIGITS)
    with Clock() as incr:
        m, counts = build_manifest(src, previous=before)
        with Clock() as incr_view:
            plus = ingest_view(src, st, m, view, code_version="bench",
                               shard_digits=SHARD_DIGITS)
    assert counts["hashed"] == len(drop) == plus.ecgs_computed, (counts, len(drop))
    return incr, incr_view, len(drop)


def local_rows(raw_root: Path, tmp: Path, n: int, naive_files: list[Path]) -> float:
    src = Storage(str(raw_root), max_workers=4)
    local_rate = 0.0
    whole: dict[str, tuple[Clock, Clock, Clock, Clock]] = {}
    for view in ("ecg_3by4", "ecg_12lead"):
        st = Storage(str(tmp / f"store_{view}"))
        with Clock() as listed:  # the ecg_manifest asset: list and hash every file
            manifest, _ = build_manifest(src)
        with Clock() as full:
            rep = full_ingest(src, st, view, manifest=manifest)
        with Clock() as again:
            m2, _ = build_manifest(src, previous=manifest)
            rerun = ingest_view(src, st, m2, view, code_version="bench",
                                shard_digits=SHARD_DIGITS)
        assert rerun.shards_computed == 0
        # 1 % new files: ingest 99 %, then list and hash again and update (3 samples).
        updates = sorted((one_percent_update(src, manifest, view, tmp / f"{view}_incr{i}", i)
                          for i in range(3)), key=lambda u: u[0].wall)
        incr, incr_view, new_files = updates[1]  # the median by wall time
        rate = rep.rows / full.cpu
        row = dict(bench="ingest_local", view=view, ecgs=n, shards=rep.shards_total,
                   ecgs_per_shard=round(n / rep.shards_total, 1),
                   seconds=round(full.wall, 3), cpu_s=round(full.cpu, 3),
                   ecgs_per_s_per_core=round(rate, 1),
                   bytes_per_ecg=round(rep.bytes / max(rep.rows, 1)),
                   float64_bytes_per_ecg=view_bytes(view),
                   storage_ratio_vs_float64=round(rep.bytes / max(rep.rows, 1)
                                                  / view_bytes(view), 3),
                   manifest_s=round(listed.wall, 3),
                   no_change_rerun_s=round(again.wall, 3),
                   rerun_fraction=round(again.wall / full.wall, 4),
                   one_percent_new_files=new_files,
                   one_percent_new_s=round(incr.wall, 3),
                   one_percent_new_fraction=round(incr.wall / full.wall, 4),
                   # both stages, as a user runs them: manifest + tensors, new vs full
                   one_percent_new_fraction_of_manifest_and_tensors=round(
                       incr.wall / (listed.wall + full.wall), 4),
                   one_percent_new_cpu_fraction_of_manifest_and_tensors=round(
                       incr.cpu / (listed.cpu + full.cpu), 4),
                   one_percent_new_tensor_step_s=round(incr_view.wall, 3),
                   one_percent_new_tensor_step_fraction=round(incr_view.wall / full.wall, 4))
        if view == "ecg_3by4":
            # Ours and the two naive baselines, interleaved, REPEATS times: the medians.
            out = tmp / "naive"
            out.mkdir()
            rates, base_rates, unique_rates, sizes = [rate], [], [], []
            for i in range(REPEATS):
                if i:
                    with Clock() as c:
                        r = full_ingest(src, Storage(str(tmp / f"store_repeat{i}")), view,
                                        manifest=manifest)
                    rates.append(r.rows / c.cpu)
                with Clock() as naive:
                    sizes = [naive_3by4(f, out) for f in naive_files]
                base_rates.append(len(naive_files) / naive.cpu)
                with Clock() as naive_unique:
                    for f in naive_files:
                        naive_3by4(f, out, mode="unique")
                unique_rates.append(len(naive_files) / naive_unique.cpu)
            rate = statistics.median(rates)
            base_rate = statistics.median(base_rates)
            unique_rate = statistics.median(unique_rates)
            row.update(ecgs_per_s_per_core=round(rate, 1),
                       runs_ecgs_per_s_per_core=[round(x, 1) for x in rates],
                       baseline_ecgs=len(naive_files),
                       baseline_ecgs_per_s_per_core=round(base_rate, 1),
                       runs_baseline_ecgs_per_s_per_core=[round(x, 1) for x in base_rates],
                       baseline_bytes_per_ecg=round(float(np.mean(sizes))),
                       speedup_vs_baseline=round(rate / base_rate, 2),
                       unique_mode_baseline_ecgs_per_s_per_core=round(unique_rate, 1),
                       speedup_vs_unique_mode_baseline=round(rate / unique_rate, 2))
            local_rate = rate
            # The same full ingest with the other shard grouping, for comparison.
            other = 3 - SHARD_DIGITS
            with Clock() as alt:
                rep_alt = full_ingest(src, Storage(str(tmp / "store_alt")), view,
                                      manifest=manifest, shard_digits=other)
            row.update(**{f"shard_digits_{other}_shards": rep_alt.shards_total,
                          f"shard_digits_{other}_ecgs_per_s_per_core":
                              round(rep_alt.rows / alt.cpu, 1)})
        emit(shard_digits=SHARD_DIGITS, **row)
        whole[view] = (listed, full, incr, incr_view)
    # The whole ingest as the assets run it: one manifest, then both views.
    manifest_full = min(v[0].wall for v in whole.values())
    manifest_incr = statistics.median(v[2].wall - v[3].wall for v in whole.values())
    full_s = manifest_full + sum(v[1].wall for v in whole.values())
    incr_s = manifest_incr + sum(v[3].wall for v in whole.values())
    cpu_full = min(v[0].cpu for v in whole.values()) + sum(v[1].cpu for v in whole.values())
    cpu_incr = (statistics.median(v[2].cpu - v[3].cpu for v in whole.values())
                + sum(v[3].cpu for v in whole.values()))
    emit(bench="ingest_whole_update", views=list(whole), ecgs=n, full_ingest_s=round(full_s, 3),
         one_percent_new_s=round(incr_s, 3),
         one_percent_new_fraction=round(incr_s / full_s, 4),
         one_percent_new_cpu_fraction=round(cpu_incr / cpu_full, 4))
    return local_rate


def view_bytes(view: str) -> int:
    return VIEWS[view] * 5000 * 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_row(raw_root: Path, n: int, local_rate: float) -> dict | None:
    """The 3by4 ingest reading from a moto S3 server on loopback, in its own process."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        return None
    from acs_pipeline_tests.s3_fixtures import FAKE_AWS_ENV, s3_client, upload_tree

    os.environ.update(FAKE_AWS_ENV)
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        s3_client(endpoint).create_bucket(Bucket="bench")
        upload_tree(endpoint, "bench", "v1/ecg-waveforms-npz", raw_root / "ecg-waveforms-npz")
        src = Storage("s3://bench/v1", endpoint_url=endpoint, max_workers=8)
        with tempfile.TemporaryDirectory() as tmp:
            st = Storage(tmp)
            with Clock() as m:
                manifest, _ = build_manifest(src)  # the ecg_manifest asset
            with Clock() as c:  # the tensor asset
                rep = full_ingest(src, st, "ecg_3by4", manifest=manifest)
            emit(**parquet_read_row(st, endpoint))
        rate = rep.rows / c.cpu
        # What one object costs the client: reading alone, through S3 and from local files.
        keys = manifest["key"].to_list()[:600]
        with Clock() as s3_reads:
            for _ in src.read_many(keys):
                pass
        local_src = Storage(str(raw_root), max_workers=8)
        with Clock() as local_reads:
            for _ in local_src.read_many(keys):
                pass
        get_ms = 1e3 * s3_reads.cpu / len(keys)
        extra_ms = get_ms - 1e3 * local_reads.cpu / len(keys)
        return dict(bench="ingest_s3_loopback", view="ecg_3by4", ecgs=n,
                    get_cpu_ms_per_object=round(get_ms, 3),
                    local_read_cpu_ms_per_file=round(1e3 * local_reads.cpu / len(keys), 3),
                    # the best ratio any ingest could reach with this client and server
                    ratio_ceiling_for_this_client=round((1e3 / local_rate)
                                                        / (1e3 / local_rate + extra_ms), 3),
                    manifest_s=round(m.wall, 3), seconds=round(c.wall, 3),
                    cpu_s=round(c.cpu, 3),
                    ecgs_per_s_per_core=round(rate, 1),
                    ecgs_per_s_wall=round(rep.rows / c.wall, 1),
                    ratio_vs_local=round(rate / local_rate, 3))
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def parquet_read_row(local: Storage, endpoint: str, repeats: int = 5) -> dict:
    """A view's Parquet parts read back from S3 on loopback: through boto3 as
    ``load_view``/``view_rows`` do (their figures include reading the view's index), and
    through pyarrow.fs with frozen credentials."""
    import boto3
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    st = Storage("s3://bench/store", endpoint_url=endpoint, max_workers=8)
    rels = local.list("tensors/ecg_3by4/")
    for rel in rels:
        st.write_bytes(rel, local.read_bytes(rel))
    parts = shard_paths(st, "ecg_3by4")
    frozen = boto3.session.Session().get_credentials().get_frozen_credentials()
    fs = pafs.S3FileSystem(access_key=frozen.access_key, secret_key=frozen.secret_key,
                           region="us-east-1", scheme="http",
                           endpoint_override=endpoint.removeprefix("http://"))

    def fs_parts(read) -> list:
        with ThreadPoolExecutor(8) as pool:  # as load_view and view_rows read
            return list(pool.map(lambda rel: read(f"bench/store/{rel}", filesystem=fs), parts))

    runs = {"boto3_load_view": lambda: load_view(st, "ecg_3by4"),
            "pyarrow_fs_parts": lambda: fs_parts(pq.read_table),
            "boto3_view_rows": lambda: view_rows(st, "ecg_3by4"),
            "pyarrow_fs_footers": lambda: fs_parts(pq.read_metadata)}
    ms = {}
    for name, run in runs.items():
        times = []
        for _ in range(repeats):
            with Clock() as c:
                run()
            times.append(c.wall)
        ms[f"{name}_ms"] = round(1e3 * statistics.median(times), 1)
    return dict(bench="parquet_reads_s3_loopback", view="ecg_3by4", parts=len(parts),
                part_bytes=st.size(parts[0]), **ms)


def process_row(raw_root: Path, tmp: Path, n: int, local_rate: float) -> dict:
    src = Storage(str(raw_root), max_workers=4)
    st = Storage(str(tmp / "store_processes"))
    with Clock() as c:
        rep = full_ingest(src, st, "ecg_3by4", workers=2)
    return dict(bench="ingest_processes", view="ecg_3by4", ecgs=n, workers=2,
                seconds=round(c.wall, 3), cpu_s=round(c.cpu, 3),
                ecgs_per_s_wall=round(rep.rows / c.wall, 1),
                ecgs_per_s_per_core=round(rep.rows / c.cpu, 1),
                per_core_ratio_vs_one_process=round(rep.rows / c.cpu / local_rate, 3))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=1200)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--shard-digits", type=int, default=1, choices=(1, 2),
                    help="ingest shard grouping (1: 16 shards, about 180 ECGs each on the "
                    "default cohort, nearer the full dataset's 440 per shard than 2 gives)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="3by4: full ingests and naive runs to take the median of")
    args = ap.parse_args()
    global SHARD_DIGITS, REPEATS
    SHARD_DIGITS = args.shard_digits
    REPEATS = max(1, args.repeats)
    patients = 300 if args.quick else args.patients
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        summary = synth.generate(tmp / "synth", n_patients=patients, seed=11)
        raw_root = summary.dataset_dir
        files = sorted((raw_root / "ecg-waveforms-npz").rglob("*.npz"))
        n = len(files)
        naive_files = files[:: max(1, n // 500)]  # the baseline's rate from up to ~500 files
        local_rate = local_rows(raw_root, tmp, n, naive_files)
        row = s3_row(raw_root, n, local_rate)
        if row:
            emit(**row)
        emit(**process_row(raw_root, tmp, n, local_rate))


if __name__ == "__main__":
    main()
