"""S4 kernel: our plain-PyTorch Cauchy evaluation against the naive float64 reference.

Prints one JSON line::

    python benchmarks/s4_kernel.py                       # d_model 512, d_state 64, L 5000, CPU
    python benchmarks/s4_kernel.py --device cuda

Both sides compute the full bidirectional S4 kernel of one layer (Cauchy sum, Woodbury
correction, bilinear factor, inverse FFT) for the paper configuration: H = 512 features, a
64-dimensional state stored as 32 conjugate pairs, 2 channels, a 5000-sample input (the kernel
grows to 8192, i.e. 4097 frequencies). "ours" is ``NPLRKernel.forward`` in float32 (pair terms
folded into one real-weighted term, denominators in real arithmetic, chunked, one batched matrix
product); "naive" is ``reference_kernel``: every buffer promoted to float64 and the Cauchy sum
``sum_n c_n b_n / (z - lambda_n)`` broadcast over the full 64-dimensional state.
``max_rel_err`` is the largest, over channels and features, of ``max_t |k - k_ref| / max_t
|k_ref|``. Times: best of ``--repeats`` for ours, one run for the naive reference, after a
warm-up call that grows the kernel (not timed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acs_pipeline.models.s4_kernel import NPLRKernel, hippo_legs_nplr, reference_kernel  # noqa: E402


def build_kernel(d_model: int, d_state: int, l_max: int, seed: int) -> NPLRKernel:
    torch.manual_seed(seed)
    w, p, b = hippo_legs_nplr(d_state)
    c = torch.randn(2, d_model, d_state // 2, dtype=torch.complex64)
    log_dt = torch.rand(d_model) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)
    return NPLRKernel(w, p, b, c, log_dt, l_max=l_max)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--d-state", type=int, default=64)
    parser.add_argument("--length", type=int, default=5000)
    parser.add_argument("--l-max", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = torch.device(args.device)
    kernel = build_kernel(args.d_model, args.d_state, args.l_max, args.seed).to(device)
    with torch.no_grad():
        kernel(args.length)  # warm-up; grows the kernel length and its buffers
        sync(device)
        ours_s = math.inf
        for _ in range(args.repeats):
            t = time.perf_counter()
            k = kernel(args.length)
            sync(device)
            ours_s = min(ours_s, time.perf_counter() - t)
        t = time.perf_counter()
        ref = reference_kernel(kernel, args.length)
        sync(device)
        naive_s = time.perf_counter() - t
    err = (k.double() - ref).abs().amax(-1) / ref.abs().amax(-1)
    print(
        json.dumps(
            {
                "bench": "s4_kernel",
                "ours_s": round(ours_s, 4),
                "naive_s": round(naive_s, 4),
                "speedup": round(naive_s / ours_s, 2),
                "max_rel_err": float(err.max()),
                "d_model": args.d_model,
                "d_state": args.d_state,
                "channels": 2,
                "length": args.length,
                "kernel_length": kernel.l_kernel,
                "device": str(device),
                "threads": torch.get_num_threads(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
