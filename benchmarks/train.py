"""Training throughput: the batch data loader against a naive one, and a training step per model.

Prints one JSON line per measurement::

    python benchmarks/train.py            # full: 4096 ECGs, paper-profile models
    python benchmarks/train.py --quick    # 1024 ECGs, smoke-profile models on CPU

Loader: ``ArrayDataset`` + ``EpochBatchSampler`` (one numpy index per batch of a float16 array of
shape (N, 3, 5000)) against a per-sample ``__getitem__`` that converts to float64, builds a tensor
per sample and lets the default collate stack them; batch 64, shuffled, no workers. The batch
loader is measured converting to float32 on the host (the CPU path) and keeping float16 (the GPU
path, where the conversion happens on the device).

Models: every model of ``acs_pipeline.models.registry`` that builds, as training builds it
(``recipes.trainable_model``), one training step (forward, BCE-with-logits, backward, Adam step)
on random input. On CUDA with the recipe batch
size, in float32 and in bf16 autocast, with the peak GPU memory; on CPU with a small batch and a
few steps (stated in the line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acs_pipeline.training.data import ArrayDataset, make_loader  # noqa: E402
from acs_pipeline.training.module import ECGClassifier  # noqa: E402


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class NaiveDataset(Dataset):
    """The usual per-sample dataset: float64 conversion and a tensor per sample."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.x[i].astype(np.float64)).float(), torch.tensor(float(self.y[i]))


def _epoch_rate(loader: DataLoader, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        seen = 0
        for xb, _yb in loader:
            seen += len(xb)
        best = min(best, time.perf_counter() - t)
        assert seen == n, (seen, n)
    return n / best


def bench_loader(n: int, batch: int = 64, repeats: int = 2) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3, 5000), dtype=np.float32).astype(np.float16)
    y = (rng.random(n) < 0.4).astype(np.float32)
    f32 = make_loader(ArrayDataset(x, y), batch, shuffle=True)
    f16 = make_loader(ArrayDataset(x, y, out_dtype=None), batch, shuffle=True)
    naive = DataLoader(NaiveDataset(x, y), batch_size=batch, shuffle=True, num_workers=0)
    r32, r16 = _epoch_rate(f32, n, repeats), _epoch_rate(f16, n, repeats)
    r_naive = _epoch_rate(naive, n, repeats)
    emit(
        bench="loader",
        n=n,
        shape=[3, 5000],
        dtype="float16",
        batch=batch,
        num_workers=0,
        naive_samples_per_s=round(r_naive, 1),
        array_batch_f32_samples_per_s=round(r32, 1),
        array_batch_f16_samples_per_s=round(r16, 1),
        speedup_f32=round(r32 / r_naive, 2),
        speedup_f16=round(r16 / r_naive, 2),
        note="f32: batches converted to float32 on the host (CPU training); "
        "f16: stored dtype kept, converted on the GPU (CUDA training)",
    )


def _steps(
    clf: ECGClassifier, opt: torch.optim.Optimizer, batch: tuple, steps: int, autocast: bool
) -> float:
    dev = batch[0].device

    def one() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            loss, _ = clf.loss(batch)
        loss.backward()
        opt.step()

    one()  # warm-up (lazy buffers, kernels, allocator)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        one()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def bench_model(
    name: str,
    build: Callable[[], torch.nn.Module],
    channels: int,
    batch: int,
    steps: int,
    profile: str,
) -> None:
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    try:
        model = build().to(dev)
    except Exception as e:  # noqa: BLE001 (report and go on with the next model)
        emit(bench="train_step", model=name, skipped=f"build failed: {type(e).__name__}: {e}")
        return
    n_params = sum(p.numel() for p in model.parameters())
    clf = ECGClassifier(model).to(dev)
    opt = clf.configure_optimizers()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, 5000, generator=g).to(dev)
    y = (torch.rand(batch, generator=g) < 0.4).float().to(dev)
    modes = [("float32", False)] + ([("bf16-mixed", True)] if cuda else [])
    for precision, autocast in modes:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            s = _steps(clf, opt, (x, y), steps, autocast)
        except Exception as e:  # noqa: BLE001
            emit(bench="train_step", model=name, precision=precision, skipped=f"{e}"[:300])
            continue
        line = dict(
            bench="train_step",
            model=name,
            profile=profile,
            device=torch.cuda.get_device_name() if cuda else "cpu",
            precision=precision,
            measures="forward+backward+adam step",
            input=[batch, channels, 5000],
            batch=batch,
            steps=steps,
            n_params=n_params,
            s_per_step=round(s, 4),
            samples_per_s=round(batch / s, 1),
        )
        if cuda:
            line["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        else:
            line["note"] = "CPU: small batch, few steps; not the recipe batch size"
        emit(**line)


def bench_models(profile: str, only: list[str] | None, cpu_batch: int, steps: int) -> None:
    try:
        from acs_pipeline.ingest.transform import VIEWS
        from acs_pipeline.models.specs import MODEL_NAMES, model_spec
        from acs_pipeline.training.recipes import trainable_model
    except ImportError as e:
        emit(bench="train_step", skipped=f"acs_pipeline.training unavailable: {e}")
        return
    names = list(only or MODEL_NAMES)
    for name in names:
        spec = model_spec(name)
        recipe_batch = spec.batch_size
        channels = VIEWS[spec.view]
        batch = recipe_batch if torch.cuda.is_available() else cpu_batch
        # the model as training builds it (HuBERT behind its one-logit, (B, 12, 5000) adapter)
        build = lambda n=name: trainable_model(n, profile)  # noqa: E731
        bench_model(name, build, channels, batch, steps, profile)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small loader set, smoke-profile models")
    ap.add_argument("--profile", choices=("paper", "smoke"), default=None)
    ap.add_argument("--models", default=None, help="comma-separated names (default: all)")
    ap.add_argument("--skip-loader", action="store_true")
    ap.add_argument("--skip-models", action="store_true")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    profile = args.profile or ("smoke" if args.quick and not cuda else "paper")
    if not args.skip_loader:
        bench_loader(1024 if args.quick else 4096)
    if not args.skip_models:
        only = args.models.split(",") if args.models else None
        steps = (3 if args.quick else 10) if cuda else (2 if args.quick else 3)
        bench_models(profile, only, cpu_batch=2 if args.quick else 4, steps=steps)


if __name__ == "__main__":
    main()
