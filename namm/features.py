"""Token features: what a NAMM sees of each cached token (spec §2).

Step in the data flow: attention rows -> **features** -> scores -> selection.

The spectrogram is computed in streaming form. Every cached token keeps three small per-token
tensors, stored beside its key and value and gathered with the same indices at every eviction:

- ``block`` ``[..., hop]``: the attention it received from the queries of the current hop block,
- ``tail``  ``[..., n_fft - hop]``: the samples just before that block (the reference's 16-sample
  carry, zeros for a token that had not arrived yet and on the first update),
- ``ema``   ``[..., n_freq]``: the exponential moving average of its STFT magnitudes.

When a hop block of queries is complete, one STFT frame is taken over ``tail | block`` and folded into
the EMA with ``ema <- beta * ema + (1 - beta) * |frame|`` (``beta = gamma ** hop``). Over an update of
``T = n_up / hop`` frames this is exactly the spec's weights ``w_j = (1 - beta) beta^(T-1-j)`` and
carry ``E <- E_new + gamma^n_up E_prev``; a token that arrives inside hop block ``b`` has zero attention
in every earlier frame, so it only contributes frames ``j >= b``. Streaming means the policy never
buffers the ``n_up x N`` attention rows of an update: it holds ``hop`` values per token instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

__all__ = ["SpectralConfig", "fold_frame", "spectrum", "age_embedding", "normalise", "RunningStats"]


@dataclass(frozen=True)
class SpectralConfig:
    """STFT + EMA settings; the defaults are the reference's (spec §2)."""

    n_fft: int = 32
    hop: int = 16
    ema: float = 0.99  # gamma, per query step
    n_pos: int = 8  # size of the age embedding (sin + cos pairs)
    pos_base: float = 50000.0

    def __post_init__(self) -> None:
        if self.hop <= 0 or self.n_fft <= self.hop:
            raise ValueError(f"need 0 < hop < n_fft, got hop={self.hop}, n_fft={self.n_fft}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must lie in [0, 1), got {self.ema}")
        if self.n_pos % 2:
            raise ValueError(f"n_pos must be even (sin/cos pairs), got {self.n_pos}")

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def tail(self) -> int:
        return self.n_fft - self.hop

    @property
    def feature_dim(self) -> int:
        return self.n_pos + self.n_freq


@functools.lru_cache(maxsize=8)
def _dft(n_fft: int, device: torch.device) -> torch.Tensor:
    """``[2 n_freq, n_fft]`` float32: the real and imaginary rows of the real DFT times the periodic Hann
    window (built once per device, in float64)."""
    k = torch.arange(n_fft, dtype=torch.float64)
    f = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    ang = 2 * torch.pi * f[:, None] * k[None, :] / n_fft
    win = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    return (torch.cat([torch.cos(ang), -torch.sin(ang)]) * win).to(device, torch.float32)


def spectrum(frames: torch.Tensor, n_fft: int, dim: int = -1) -> torch.Tensor:
    """``|rFFT(frames x Hann)|`` along ``dim`` (of size ``n_fft``), that dim becoming ``n_freq`` long.

    One matmul with the windowed DFT basis: 2-7x faster on CPU than ``torch.fft.rfft`` and a complex
    ``abs`` for frames this short (n_fft 32), equal to them within float32 rounding (~1e-6 relative).
    """
    basis = _dft(n_fft, frames.device)
    nf = n_fft // 2 + 1
    if dim in (-1, frames.dim() - 1):
        x = (frames @ basis.T).square_()  # [..., 2F]
        return (x[..., :nf] + x[..., nf:]).sqrt_()  # 1.5x faster than torch.hypot here
    if dim in (-2, frames.dim() - 2):
        x = (basis @ frames).square_()  # [..., 2F, N]
        return (x[..., :nf, :] + x[..., nf:, :]).sqrt_()
    return spectrum(frames.movedim(dim, -1), n_fft).movedim(-1, dim)


def fold_frame(
    tail: torch.Tensor, block: torch.Tensor, ema: torch.Tensor, cfg: SpectralConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Take one STFT frame over ``tail | block`` and fold it into the EMA.

    Args:
        tail: ``[..., n_fft - hop]`` samples before the block.
        block: ``[..., hop]`` the block just completed.
        ema: ``[..., n_freq]`` running EMA of magnitudes.
    Returns:
        ``(new_tail [..., n_fft - hop], new_ema [..., n_freq])``.
    """
    series = torch.cat([tail, block], dim=-1)  # [..., n_fft]
    mag = spectrum(series, cfg.n_fft)  # [..., n_freq]; magnitude, not power
    beta = cfg.ema**cfg.hop
    new_ema = beta * ema + (1.0 - beta) * mag
    return series[..., -cfg.tail :], new_ema


def age_embedding(age: torch.Tensor, cfg: SpectralConfig) -> torch.Tensor:
    """Sinusoidal embedding of token age ``p_newest - p_t``.

    Args:
        age: ``[...]`` integer or float ages (>= 0).
    Returns:
        ``[..., n_pos]`` = ``[sin(a w_0..w_{k-1}), cos(a w_0..w_{k-1})]`` with ``w_k = base^(-k/k_max)``.
    """
    k = cfg.n_pos // 2
    freqs = cfg.pos_base ** (-torch.arange(k, dtype=torch.float32, device=age.device) / k)  # [k]
    angles = age.to(torch.float32)[..., None] * freqs  # [..., k]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def normalise(ema: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Frozen per-frequency normalisation ``(E - mu) / max(sqrt(var), 1e-7)``; ``mean``/``var`` ``[n_freq]``."""
    return (ema - mean) / var.clamp_min(0).sqrt().clamp_min(1e-7)


class RunningStats:
    """Per-frequency mean/variance accumulated over many batches (Chan et al. parallel update).

    Used once, while the all-zero NAMM evicts nothing, to fix the normalisation (spec §2.5).
    """

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.m2 = torch.zeros(dim, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        """Add samples ``x`` ``[M, dim]``."""
        x = x.detach().to("cpu", torch.float64).reshape(-1, self.mean.numel())
        m = x.shape[0]
        if m == 0:
            return
        b_mean = x.mean(0)
        b_m2 = ((x - b_mean) ** 2).sum(0)
        n = self.n + m
        delta = b_mean - self.mean
        self.mean = self.mean + delta * (m / n)
        self.m2 = self.m2 + b_m2 + delta**2 * (self.n * m / n)
        self.n = n

    def merge(self, other: "RunningStats") -> None:
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.n / n)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / n)
        self.n = n

    @property
    def var(self) -> torch.Tensor:
        return self.m2 / max(self.n, 1)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n == 0:
            raise RuntimeError("no samples were collected for the normalisation statistics")
        return self.mean.float(), self.var.float()

