"""The S4 convolution kernel: HiPPO-LegS in normal-plus-low-rank (NPLR) form, discretised
bilinearly and evaluated at the roots of unity.

The state matrix is HiPPO-LegS in normal-plus-low-rank form, diagonalised: ``A = diag(w) - P Q^T``
over the full state of ``N`` modes, of which only one member of each conjugate pair is stored
(``N/2`` values; the other half is the complex conjugate). With the bilinear discretisation the
length-``L`` convolution kernel is read off its truncated generating function at the ``L``-th roots
of unity: a Cauchy sum ``sum_n v_n / (z - w_n)`` plus a rank-1 Woodbury correction, then an
inverse real FFT. ``C`` is stored premultiplied by ``(I - dA^L)`` (the truncation), which is why
doubling the kernel length rewrites ``C`` and regrows the ``omega``/``z`` buffers.

The Cauchy sum runs in plain PyTorch (CPU or GPU): both members of a conjugate pair are folded
into one real-weighted term ``2 (z Re(v) - Re(v conj(w))) / ((z - w)(z - conj(w)))``; per chunk
of frequencies the denominators come from one small matrix product, are inverted in place and
are contracted over the state with one batched matrix product (about 12x faster than the naive
float64 sum on 2 CPU threads, 1.6e-6 relative error; ``benchmarks/s4_kernel.py``). No pykeops,
no CUDA extension. The kernel is computed in float32 with autocast disabled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "NPLRKernel",
    "S4InputError",
    "cauchy_conj",
    "cauchy_naive",
    "hippo_legs_nplr",
    "reference_kernel",
]

CauchyFn = Callable[[Tensor, Tensor, Tensor], Tensor]
_FREQ_CHUNK_ELEMS = 1 << 24  # about 16M (h, n, f) elements per frequency chunk


class S4InputError(ValueError):
    """An S4 input or configuration is not what the model expects."""


def _conj_cat(x: Tensor) -> Tensor:
    """Append the complex conjugates along the last axis (half state -> full state)."""
    return torch.cat([x, x.conj()], dim=-1)


def hippo_legs_nplr(n: int) -> tuple[Tensor, Tensor, Tensor]:
    """HiPPO-LegS of size ``n`` in diagonal-plus-low-rank form, one half of each conjugate pair.

    Returns complex128 ``w`` (n/2,), ``p`` (1, n/2) and ``b`` (n/2,) such that, with ``V`` the
    (n, n/2) eigenvectors kept and ``V_full = [V, conj(V)]``:
    ``A_legs = V_full (diag([w, conj(w)]) - [p, conj(p)] [p, conj(p)]^*) V_full^*`` and
    ``B_legs = V_full [b, conj(b)]``.
    """
    if n < 2 or n % 2:
        raise S4InputError(f"d_state must be an even number >= 2, got {n}")
    q = np.arange(n, dtype=np.float64)
    r = np.sqrt(2.0 * q + 1.0)
    a = -np.tril(np.outer(r, r), -1) - np.diag(q + 1.0)  # LegS transition matrix
    p = np.sqrt(q + 0.5)  # rank-1 correction: A + p p^T = -I/2 + skew
    skew = a + np.outer(p, p) + 0.5 * np.eye(n)
    lam, vec = np.linalg.eigh(-1j * skew)  # skew v = i lam v, lam in +-pairs, ascending
    if np.min(np.abs(lam)) < 1e-6:
        raise S4InputError(f"HiPPO-LegS of size {n} has a zero mode; use another d_state")
    keep = slice(0, n // 2)  # the negative-frequency member of each pair
    v = torch.from_numpy(vec[:, keep])
    w = torch.from_numpy(-0.5 + 1j * lam[keep])
    vh = v.conj().T
    b = vh @ torch.from_numpy(r).to(v.dtype)
    pp = (vh @ torch.from_numpy(p).to(v.dtype)).unsqueeze(0)
    return w, pp, b


def _fft_nodes(length: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Roots of unity ``omega_k = exp(-2 pi i k / length)``, k = 0..length/2, and the bilinear
    nodes ``z = 2 (1 - omega) / (1 + omega)`` (computed in float64, stored complex64)."""
    k = np.arange(length // 2 + 1, dtype=np.float64)
    omega = np.exp(-2j * np.pi * k / length)
    z = 2.0 * (1.0 - omega) / (1.0 + omega)
    return (
        torch.from_numpy(omega).to(device=device, dtype=torch.complex64),
        torch.from_numpy(z).to(device=device, dtype=torch.complex64),
    )


def cauchy_conj(v: Tensor, z: Tensor, w: Tensor, chunk: int | None = None) -> Tensor:
    """``sum_n v_n / (z - w_n) + conj(v_n) / (z - conj(w_n))`` for every node ``z``.

    ``v``: (A, H, N) complex, ``w``: (H, N) complex, ``z``: (F,) complex -> (A, H, F) complex.
    Each conjugate pair is one term ``2 (z Re(v) - Re(v conj(w))) / d`` with
    ``d = (z - w)(z - conj(w)) = z^2 - 2 Re(w) z + |w|^2``. The denominators of a chunk of nodes
    come from one (H N, 3) x (3, f) matrix product, are inverted in place, and are contracted
    with the real numerator weights by one batched matrix product; everything is scaled by
    ``s = 1 / (1 + |z|^2)`` so nodes near the Nyquist pole (|z| huge) stay in float32 range.
    Differentiable in ``v`` only (``w`` and ``z`` are buffers of the S4 kernel, not trained);
    memory is bounded by chunking the nodes (``chunk`` at a time, default about 16M elements).
    """
    a_dim, h_dim, n_dim = v.shape
    if w.requires_grad or z.requires_grad:
        raise S4InputError("cauchy_conj differentiates with respect to v only")
    real_dtype = v.real.dtype
    if chunk is None:
        chunk = max(16, _FREQ_CHUNK_ELEMS // max(1, h_dim * n_dim))
    # numerator weights, with the pair sum's factor 2 folded in: rows [Re(v); Re(v conj(w))]
    weights = 2.0 * torch.cat([v.real, (v * w.conj()).real], dim=0).transpose(0, 1)  # (H, 2A, N)
    # s d = [1, -2 Re(w), |w|^2] . [s z^2, s z, s]
    coef = torch.stack([torch.ones_like(w.real), -2.0 * w.real, w.real.square() + w.imag.square()])
    coef = coef.reshape(3, h_dim * n_dim).T
    z128 = z.to(torch.complex128)
    s128 = 1.0 / (1.0 + z128.abs().square())
    zs = z128 * s128
    nodes = torch.stack([z128.square() * s128, zs, s128.to(torch.complex128)])  # (3, F)
    nodes = torch.view_as_real(nodes).to(device=v.device, dtype=real_dtype)  # (3, F, 2)
    zs_re, zs_im = zs.real.to(nodes), zs.imag.to(nodes)
    s = s128.to(nodes)
    out = []
    for lo in range(0, z.shape[0], chunk):
        hi = min(lo + chunk, z.shape[0])
        f = hi - lo
        den = coef @ nodes[:, lo:hi].reshape(3, 2 * f)  # (H N, 2 f): s d, re/im interleaved
        inv = torch.view_as_complex(den.view(h_dim * n_dim, f, 2)).reciprocal_()
        acc = torch.bmm(weights, torch.view_as_real(inv).view(h_dim, n_dim, 2 * f))
        acc = acc.view(h_dim, 2 * a_dim, f, 2)  # sums p + i q of weights / (s d)
        p0, q0 = acc[:, :a_dim, :, 0], acc[:, :a_dim, :, 1]
        p1, q1 = acc[:, a_dim:, :, 0], acc[:, a_dim:, :, 1]
        # result = z s X0 - s X1 with X = (p + i q) (the factors s cancel)
        alpha, beta, sc = zs_re[lo:hi], zs_im[lo:hi], s[lo:hi]
        re = (alpha * p0).addcmul_(beta, q0, value=-1.0).addcmul_(sc, p1, value=-1.0)
        im = (beta * p0).addcmul_(alpha, q0).addcmul_(sc, q1, value=-1.0)
        out.append(torch.complex(re, im))
    return torch.cat(out, dim=-1).transpose(0, 1)


def cauchy_naive(v: Tensor, z: Tensor, w: Tensor, h_chunk: int = 16) -> Tensor:
    """Slow float64 reference: ``sum_n c_n b_n / (z - lambda_n)`` over the full state (both
    members of each conjugate pair), by broadcasting; loops over blocks of ``h_chunk`` features
    only to bound memory. Shapes as :func:`cauchy_conj`; returns complex128."""
    v = _conj_cat(v.to(torch.complex128))
    w = _conj_cat(w.to(torch.complex128))
    z = z.to(torch.complex128)
    parts = []
    for lo in range(0, w.shape[0], h_chunk):
        hi = lo + h_chunk
        terms = v[:, lo:hi, :, None] / (z - w[lo:hi, :, None])  # (A, h, 2N, F)
        parts.append(terms.sum(dim=-2))
    return torch.cat(parts, dim=1)


class NPLRKernel(nn.Module):
    """Convolution kernel of ``x' = A x + B u, y = C x`` with ``A = diag(w) - P Q^T`` (NPLR),
    discretised with step ``exp(log_dt)`` by the bilinear transform.

    State-dict entries (names and order as the released checkpoints): ``C`` (channels, H, N/2, 2)
    parameter; buffers ``omega``, ``z`` (L/2+1, 2), ``log_dt`` (H,), ``B``, ``P``, ``Q``
    (1, H, N/2, 2), ``w`` (H, N/2, 2); complex numbers are stored as real views. ``C`` holds
    ``C (I - dA^L)`` for the current kernel length ``L`` (``l_kernel``).
    """

    def __init__(
        self,
        w: Tensor,
        p: Tensor,
        b: Tensor,
        c: Tensor,
        log_dt: Tensor,
        l_max: int,
        length_correction: bool = True,
    ) -> None:
        super().__init__()
        h = log_dt.shape[-1]
        n = w.shape[-1]
        if not (p.shape[-1] == b.shape[-1] == c.shape[-1] == n):
            raise S4InputError("w, p, b and c must share the (half) state size")
        if p.ndim != 2 or p.shape[0] != 1:
            raise S4InputError(f"the low-rank term must have rank 1 (HiPPO-LegS), got {p.shape}")
        cdtype = c.dtype
        self.l_kernel = int(l_max)
        self._power_cache: tuple[int, Tensor] | None = None  # (L, dA^L), not in the state dict
        self._set_nodes(self.l_kernel, device=c.device)
        self.C = nn.Parameter(torch.view_as_real(c.clone()))
        self.register_buffer("log_dt", log_dt.to(cdtype.to_real()))
        b_h = b.to(cdtype).expand(1, h, n)
        p_h = p.to(cdtype).unsqueeze(1).expand(1, h, n)
        self.register_buffer("B", torch.view_as_real(b_h.clone()))
        self.register_buffer("P", torch.view_as_real(p_h.clone()))
        self.register_buffer("w", torch.view_as_real(w.to(cdtype).expand(h, n).clone()))
        # A = diag(w) - P Q^T over the full state; Q = conj(P) gives HiPPO's A = W - P P^*
        self.register_buffer("Q", torch.view_as_real(p_h.conj().resolve_conj().clone()))
        if length_correction:
            self._correct_c(double=False)

    def _set_nodes(self, length: int, device: torch.device | None = None) -> None:
        omega, z = _fft_nodes(length, device)
        self.register_buffer("omega", torch.view_as_real(omega).contiguous())
        self.register_buffer("z", torch.view_as_real(z).contiguous())

    @torch.no_grad()
    def discrete_state_matrix(self) -> Tensor:
        """Bilinear ``dA = (I - dt/2 A)^-1 (I + dt/2 A) = 2 (I - dt/2 A)^-1 - I`` over the full
        state, complex128 (H, N, N); the inverse of diagonal-plus-low-rank by Woodbury."""
        dt = torch.exp(self.log_dt.double())[:, None]  # (H, 1)
        w = _conj_cat(torch.view_as_complex(self.w.double()))  # (H, N)
        p = _conj_cat(torch.view_as_complex(self.P.double()))[0]  # (H, N)
        q = _conj_cat(torch.view_as_complex(self.Q.double()))[0]
        # I - dt/2 A = diag(e) + u q^T with e = 1 - dt/2 w, u = dt/2 p (Sherman-Morrison)
        d = 1.0 / (1.0 - dt / 2 * w)  # diag(e)^-1
        du = d * (dt / 2 * p)
        qd = q * d
        core = qd / (1.0 + (qd * (dt / 2 * p)).sum(-1, keepdim=True))
        inv = torch.diag_embed(d) - du.unsqueeze(-1) * core.unsqueeze(-2)
        eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
        return 2.0 * inv - eye

    def _state_power(self) -> Tensor:
        """``dA^L`` for the current kernel length in the model's precision (as the original),
        cached between doublings (H, N, N)."""
        cached = self._power_cache
        if cached is None or cached[0] != self.l_kernel or cached[1].device != self.C.device:
            d_a = self.discrete_state_matrix().to(self.C.dtype.to_complex())
            power = torch.linalg.matrix_power(d_a, self.l_kernel)
            self._power_cache = (self.l_kernel, power)
        return self._power_cache[1]

    @torch.no_grad()
    def _correct_c(self, double: bool) -> None:
        """``C <- C (I - dA^L)``, or ``C <- C (I + dA^L)`` to go from length L to 2L."""
        d_a_l = self._state_power()
        c = _conj_cat(torch.view_as_complex(self.C))
        prod = torch.einsum("chn,hnm->chm", c, d_a_l)
        c = c + prod if double else c - prod
        half = c[..., : c.shape[-1] // 2]
        self.C.copy_(torch.view_as_real(half.to(self.C.dtype.to_complex())))

    @torch.no_grad()
    def double_length(self) -> None:
        """Double the kernel length: rewrite ``C`` and regrow ``omega``/``z``."""
        self._correct_c(double=True)
        d_a_l = self._state_power()
        self.l_kernel *= 2
        self._power_cache = (self.l_kernel, d_a_l @ d_a_l)
        self._set_nodes(self.l_kernel, device=self.C.device)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        errors: list[str],
    ) -> None:
        omega = state_dict.get(prefix + "omega")
        if (
            isinstance(omega, Tensor)
            and omega.ndim == 2
            and omega.shape[0] >= 2
            and omega.shape[0] != self.omega.shape[0]
        ):
            # a checkpoint taken after the kernel grew: adopt its length (its C matches it)
            self.l_kernel = 2 * (omega.shape[0] - 1)
            self._set_nodes(self.l_kernel, device=self.C.device)
        self._power_cache = None  # the state matrices may change
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )

    def kernel_spectrum(
        self, cauchy: CauchyFn = cauchy_conj, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Generating function of the length-``l_kernel`` kernel at the roots of unity,
        (channels, H, l_kernel/2+1) complex (before the inverse FFT). ``dtype`` (e.g.
        ``torch.float64``) promotes every stored tensor first; default: as stored."""

        def get(name: str) -> Tensor:
            t = getattr(self, name)
            return t if dtype is None else t.to(dtype)

        def cplx(name: str) -> Tensor:
            return torch.view_as_complex(get(name))

        dt = torch.exp(get("log_dt"))
        w = cplx("w") * dt.unsqueeze(-1)
        b_rows = torch.cat([cplx("B"), cplx("P")], 0)
        c_rows = torch.cat([cplx("C"), cplx("Q")], 0)
        # the resolvent r = dt * sum v / (z - w dt); dt folded into v
        v = b_rows.unsqueeze(1) * (c_rows * dt[:, None]).unsqueeze(0)  # (1+r, c+r, H, N)
        n_b, n_c, h, n = v.shape
        z = cplx("z")
        r = cauchy(v.reshape(n_b * n_c, h, n), z, w).view(n_b, n_c, h, -1)
        # rank-1 Woodbury: C R B - (C R P)(Q^T R B) / (1 + Q^T R P)
        k_f = r[:-1, :-1] - r[:-1, -1:] * r[-1:, :-1] / (1 + r[-1:, -1:])
        omega = cplx("omega").to(k_f.dtype)
        return (k_f * (2 / (1 + omega)))[-1]

    def forward(self, length: int) -> Tensor:
        """Kernel (channels, H, length), float32; grows the internal length as needed."""
        while self.l_kernel < length:
            self.double_length()
        device_type = self.C.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            k_f = self.kernel_spectrum()
            k = torch.fft.irfft(k_f, n=self.l_kernel)
        return k[..., :length].float()


def reference_kernel(kernel: NPLRKernel, length: int) -> Tensor:
    """The same kernel as ``kernel(length)`` computed the slow way in float64 (naive Cauchy
    sum over the full state) from the module's current buffers; for tests and benchmarks."""
    with torch.no_grad():
        while kernel.l_kernel < length:
            kernel.double_length()
        k_f = kernel.kernel_spectrum(cauchy=cauchy_naive, dtype=torch.float64)
        return torch.fft.irfft(k_f, n=kernel.l_kernel)[..., :length]
