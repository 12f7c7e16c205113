"""The Neural Attention Memory Model: spectrogram features -> BAM scores -> keep if score >= 0.

One flat parameter vector (4172 floats for BAM) is shared by every layer and head; a batch may carry
one vector per row (``params`` ``[B, P]``), which is how a whole CMA-ES population runs in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..features import RunningStats, SpectralConfig, age_embedding, fold_frame, normalise
from ..scorer import Scorer, make_scorer
from ..selection import budget_tokens, threshold_ragged, threshold_reference, top_k
from .base import MemoryPolicy

MODES = ("reference", "ragged")


@dataclass(frozen=True, eq=False)
class NAMM(MemoryPolicy):
    """Attributes:
        params: ``[P]`` (or ``[B, P]``, one per batch row) scorer parameters; zeros evict nothing.
        mean, var: ``[n_freq]`` frozen normalisation of the spectral features.
        scorer: ``"bam"`` or ``"mlp"`` (the ablation).
        mode: ``"reference"`` (equal eviction count per head, the reference code) or ``"ragged"``
            (each head keeps exactly its own non-negative tokens).
        spectral: STFT/EMA/age-embedding settings.
        budget: optional top-k cap on top of the threshold.
        stats: when set, the policy only collects normalisation statistics (it must then evict
            nothing, i.e. run with zero parameters, as the reference does).
    """

    params: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    var: torch.Tensor | None = None
    scorer: str = "bam"
    hidden: int = 32
    mode: str = "reference"
    spectral: SpectralConfig = field(default_factory=SpectralConfig)
    stats: RunningStats | None = None

    name: ClassVar[str] = "namm"
    needs_attention: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.n_up % self.spectral.hop:
            raise ValueError(f"n_up={self.n_up} must be a multiple of the STFT hop {self.spectral.hop}")
        net = self.net
        params = torch.zeros(net.num_params) if self.params is None else torch.as_tensor(self.params).float()
        net.unflatten(params)  # raises on a wrong size, naming both sides
        object.__setattr__(self, "params", params)
        nf = self.spectral.n_freq
        mean = torch.zeros(nf) if self.mean is None else torch.as_tensor(self.mean).float().reshape(-1)
        var = torch.ones(nf) if self.var is None else torch.as_tensor(self.var).float().reshape(-1)
        if mean.numel() != nf or var.numel() != nf:
            raise ValueError(f"normalisation stats must have {nf} entries (n_fft={self.spectral.n_fft}), "
                             f"got mean {mean.numel()} / var {var.numel()}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "var", var)

    @property
    def net(self) -> Scorer:
        return make_scorer(self.scorer, self.spectral.feature_dim, self.hidden)

    # ---- per-token state: the streaming spectrogram ----------------------------------------------
    def token_state(self) -> dict[str, tuple[int, ...]]:
        c = self.spectral
        return {"tail": (c.tail,), "block": (c.hop,), "ema": (c.n_freq,)}

    def observe(self, layer, attn: torch.Tensor, qpos: torch.Tensor) -> None:
        """Write each query's row into its hop slot; fold a frame whenever a row completes a hop block."""
        c = self.spectral
        st = layer.state
        real = qpos >= 0  # [B, q]
        phase = qpos[:, :1] % c.hop
        if c.tail == c.hop and bool(real.all()) and bool((phase == phase[:1]).all()):
            self._observe_aligned(st, attn, int(phase[0, 0]))
        else:
            self._observe_rows(st, attn, qpos)

    def _observe_rows(self, st: dict, attn: torch.Tensor, qpos: torch.Tensor) -> None:
        """General path (padding, rows at different hop phases): one frame per completed hop block."""
        c = self.spectral
        real = qpos >= 0
        done = real & (qpos % c.hop == c.hop - 1)  # row completes a block at this query
        cuts = torch.nonzero(done.any(0)).flatten().tolist()
        if not cuts or cuts[-1] != attn.shape[2] - 1:
            cuts.append(attn.shape[2] - 1)
        window = c.window(attn.device)
        b, h, _, n = attn.shape
        s = 0
        for e in cuts:  # segments never straddle a block boundary of any row
            seg = attn[:, :, s : e + 1] * real[:, None, s : e + 1, None]  # [B,H,m,N]
            slot = (qpos[:, s : e + 1] % c.hop)[:, None, None, :].expand(b, h, n, -1)  # [B,H,N,m]
            st["block"].scatter_add_(-1, slot, seg.permute(0, 1, 3, 2))
            rows = done[:, e]
            if rows.any():
                tail, ema = fold_frame(st["tail"], st["block"], st["ema"], c, window)
                r = rows[:, None, None, None]
                st["tail"] = torch.where(r, tail, st["tail"])
                st["ema"] = torch.where(r, ema, st["ema"])
                st["block"] = st["block"].masked_fill(r, 0.0)
            s = e + 1

    def _observe_aligned(self, st: dict, attn: torch.Tensor, phase: int) -> None:
        """Fast path (no padding, every row at the same hop phase, n_fft = 2 hop): all frames completed
        by these queries in one batched rFFT instead of one per hop block. Same numbers as the loop."""
        c = self.spectral
        seq = torch.cat([st["block"][..., :phase], attn.permute(0, 1, 3, 2)], dim=-1)  # [B,H,N,phase+q]
        nb = seq.shape[-1] // c.hop
        if nb:
            blocks = seq[..., : nb * c.hop].unflatten(-1, (nb, c.hop))  # [B,H,N,nb,hop]
            prev = torch.cat([st["tail"][..., None, :], blocks[..., :-1, :]], dim=-2)
            mag = torch.fft.rfft(torch.cat([prev, blocks], dim=-1) * c.window(attn.device), dim=-1).abs()
            beta = c.ema**c.hop
            w = (1 - beta) * beta ** torch.arange(nb - 1, -1, -1, device=attn.device, dtype=mag.dtype)
            st["ema"] = beta**nb * st["ema"] + torch.einsum("bhnjf,j->bhnf", mag, w)
            st["tail"] = blocks[..., -1, :].contiguous()
        rest = seq[..., nb * c.hop :]
        st["block"] = torch.nn.functional.pad(rest, (0, c.hop - rest.shape[-1]))

    # ---- scoring and selection -------------------------------------------------------------------
    def features(self, layer, view) -> torch.Tensor:
        """``[B, H, N, 25]`` = concat(age embedding (8), normalised spectrogram (17))."""
        age = (view.newest_pos[:, None, None] - layer.pos).clamp_min(0)
        z = normalise(layer.state["ema"], self.mean.to(layer.pos.device), self.var.to(layer.pos.device))
        return torch.cat([age_embedding(age, self.spectral), z], dim=-1)

    def scores(self, layer, view) -> torch.Tensor:
        rows = view.rows
        x = self.features(layer, view)[rows]  # [R, H, N, d]
        in_view = view.in_view[rows]
        # score only the tokens in view, packed to the front: BAM costs O(K^2) in the tokens it sees
        k = int(in_view.sum(-1).max())
        idx = torch.argsort((~in_view).to(torch.int8), dim=-1, stable=True)[..., :k]  # [R, H, K]
        xk = x.gather(2, idx[..., None].expand(-1, -1, -1, x.shape[-1]))
        params = self.params.to(x.device)
        if params.dim() == 2:
            params = params[rows]
        sk = self.net(xk, in_view.gather(2, idx), layer.pos[rows].gather(2, idx), params)
        s = torch.full(view.in_view.shape, float("-inf"), device=x.device)
        s[rows] = torch.full_like(in_view, float("-inf"), dtype=sk.dtype).scatter(2, idx, sk)
        return s

    def select(self, layer, view) -> torch.Tensor:
        if self.stats is not None:
            # statistics pass: record the features of every token in view, evict nothing
            self.stats.update(layer.state["ema"][view.in_view])
            return torch.ones_like(view.in_view)
        s = self.scores(layer, view)
        if self.mode == "ragged":
            keep = threshold_ragged(s, view.in_view, view.newest)
        else:
            keep = threshold_reference(s, view.in_view, view.newest, view.rows)
        k = budget_tokens(self.budget, view.seen)
        if k is not None:
            keep = keep & top_k(s, view.in_view & keep, view.newest, k)
        return keep

    def describe(self) -> str:
        return f"namm({self.scorer}, mode={self.mode}, n_up={self.n_up}, budget={self.budget})"
