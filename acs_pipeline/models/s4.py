"""S4: a bidirectional structured state-space classifier (the benchmark's best model).

Layout and maths follow the "standalone S4" of the state-spaces project as used by the benchmark
(``S4Model`` with a ``Conv1d`` encoder, post-LayerNorm residual S4 blocks, mean pooling and a
linear decoder), so the released Lightning checkpoints load by name and shape. The convolution
kernel of each block is :class:`~acs_pipeline.models.s4_kernel.NPLRKernel`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from acs_pipeline.models.s4_kernel import NPLRKernel, S4InputError, hippo_legs_nplr

__all__ = ["S4_SMOKE_KWARGS", "S4Block", "S4Model"]

S4_SMOKE_KWARGS: dict[str, int] = {"d_model": 32, "n_layers": 2, "d_state": 16}
"""Constructor overrides for a tiny S4 that trains in CPU seconds (tests, smoke runs)."""


class TransposedLinear(nn.Module):
    """Linear map over the channel axis of (B, C, L): weight (out, in), bias (out, 1)."""

    def __init__(self, d_input: int, d_output: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_output, d_input))
        self.bias = nn.Parameter(torch.empty(d_output, 1))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(d_input)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(self.weight, x) + self.bias


class S4Block(nn.Module):
    """One S4 layer on (B, H, L): SSM convolution (bidirectional: a causal and an anti-causal
    kernel), ``D`` skip, GELU, dropout, then a position-wise linear with GLU back to H."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        l_max: int = 1024,
        bidirectional: bool = True,
        dropout: float = 0.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ) -> None:
        super().__init__()
        self.h = d_model
        self.bidirectional = bidirectional
        self.D = nn.Parameter(torch.randn(1, d_model))
        channels = 2 if bidirectional else 1
        self.kernel = _HippoKernel(d_model, d_state, l_max, channels, dt_min, dt_max)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout1d(dropout) if dropout > 0 else nn.Identity()
        self.output_linear = nn.Sequential(TransposedLinear(d_model, 2 * d_model), nn.GLU(dim=-2))

    def forward(self, u: Tensor) -> Tensor:
        length = u.shape[-1]
        k = self.kernel(length)  # (channels, H, L)
        u32 = u.float()
        if self.bidirectional:
            k = F.pad(k[0], (0, length)) + F.pad(k[1].flip(-1), (length, 0))
        else:
            k = k[0]
        k_f = torch.fft.rfft(k, n=2 * length)  # (H, F)
        u_f = torch.fft.rfft(u32, n=2 * length)  # (B, H, F)
        y = torch.fft.irfft(u_f * k_f, n=2 * length)[..., :length]
        y = y + u32 * self.D[0].unsqueeze(-1)
        y = self.dropout(self.activation(y))
        return self.output_linear(y)


class _HippoKernel(nn.Module):
    """Builds the HiPPO-LegS NPLR kernel with random ``dt`` and ``C`` (module ``kernel.kernel``)."""

    def __init__(
        self, h: int, n: int, l_max: int, channels: int, dt_min: float, dt_max: float
    ) -> None:
        super().__init__()
        log_dt = torch.rand(h) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        w, p, b = hippo_legs_nplr(n)
        c = torch.randn(channels, h, n // 2, dtype=torch.complex64)
        self.kernel = NPLRKernel(w, p, b, c, log_dt, l_max=l_max or 1)

    def forward(self, length: int) -> Tensor:
        return self.kernel(length)


class S4Model(nn.Module):
    """The benchmark's S4 classifier: ``Conv1d(d_input, d_model, 1)`` encoder, ``n_layers``
    residual S4 blocks (dropout, residual, post-LayerNorm, or pre-norm / BatchNorm by flags),
    mean pooling over time and ``Linear(d_model, d_output)``.

    ``forward(x)`` takes (B, d_input, L) and returns logits (B,) when ``d_output == 1``, else
    (B, d_output); with ``pooling=False`` it returns per-time-step outputs (B, L, d_output).
    The kernels grow (buffers ``omega``/``z``) on the first input longer than ``l_max``.
    """

    def __init__(
        self,
        d_input: int = 3,
        d_output: int = 1,
        d_state: int = 64,
        d_model: int = 512,
        n_layers: int = 4,
        dropout: float = 0.2,
        prenorm: bool = False,
        l_max: int = 1024,
        bidirectional: bool = True,
        layer_norm: bool = True,
        pooling: bool = True,
    ) -> None:
        super().__init__()
        if min(d_input, d_output, d_model, n_layers) < 1:
            raise S4InputError("d_input, d_output, d_model and n_layers must be positive")
        self.d_input = d_input
        self.d_output = d_output
        self.prenorm = prenorm
        self.layer_norm = layer_norm
        self.pooling = pooling
        self.encoder = nn.Conv1d(d_input, d_model, 1)
        self.s4_layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.dropouts = nn.ModuleList()
        for _ in range(n_layers):
            self.s4_layers.append(
                S4Block(d_model, d_state, l_max, bidirectional=bidirectional, dropout=dropout)
            )
            self.norms.append(nn.LayerNorm(d_model) if layer_norm else nn.BatchNorm1d(d_model))
            self.dropouts.append(nn.Dropout1d(dropout))
        self.decoder = nn.Linear(d_model, d_output)

    @torch.no_grad()
    def grow(self, length: int) -> None:
        """Grow every kernel to cover ``length`` samples, as the first forward pass with such an
        input does (rewrites ``C``, regrows ``omega``/``z``) without computing a kernel."""
        for layer in self.s4_layers:
            kernel = layer.kernel.kernel
            while kernel.l_kernel < length:
                kernel.double_length()

    def _norm(self, norm: nn.Module, x: Tensor) -> Tensor:
        if self.layer_norm:
            return norm(x.transpose(-1, -2)).transpose(-1, -2)
        return norm(x)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[1] != self.d_input:
            raise S4InputError(
                f"S4Model expects input of shape (B, {self.d_input}, L), got {tuple(x.shape)}"
            )
        x = self.encoder(x)
        for layer, norm, dropout in zip(self.s4_layers, self.norms, self.dropouts, strict=True):
            z = self._norm(norm, x) if self.prenorm else x
            x = x + dropout(layer(z))
            if not self.prenorm:
                x = self._norm(norm, x)
        x = x.transpose(-1, -2)
        if self.pooling:
            x = x.mean(dim=1)
        x = self.decoder(x)
        return x.squeeze(-1) if self.d_output == 1 else x
