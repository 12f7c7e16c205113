"""The Neural Attention Memory Model: spectrogram features -> BAM scores -> keep if score >= 0.

One flat parameter vector (4172 floats for BAM) is shared by every layer and head; a batch may carry
one vector per row (``params`` ``[B, P]``), which is how a whole CMA-ES population runs in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch

from ..features import RunningStats, SpectralConfig, age_embedding, fold_frame, normalise, spectrum
from ..scorer import Scorer, make_scorer
from ..selection import budget_tokens, neighbour_max, threshold_ragged, threshold_reference, top_k
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
        pool: odd window; > 1 raises each score to the best of its ``pool // 2`` cached neighbours on
            each side before selection (:func:`~namm.selection.neighbour_max`; not in the paper).
        stats: when set, the policy only collects normalisation statistics (it must then evict
            nothing, i.e. run with zero parameters, as the reference does).
    """

    # None means zeros / the identity normalisation; __post_init__ always leaves tensors
    params: torch.Tensor = None  # type: ignore[assignment]
    mean: torch.Tensor = None  # type: ignore[assignment]
    var: torch.Tensor = None  # type: ignore[assignment]
    scorer: str = "bam"
    hidden: int = 32
    mode: str = "reference"
    spectral: SpectralConfig = field(default_factory=SpectralConfig)
    pool: int = 1
    stats: RunningStats | None = None

    name: ClassVar[str] = "namm"
    needs_attention: ClassVar[bool] = True
    budget_ranked: ClassVar[bool] = False  # its threshold evicts; a budget only caps it

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.pool < 1 or self.pool % 2 == 0:
            raise ValueError(f"pool must be an odd window >= 1 (1 = off), got {self.pool}")
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

    def shifted(self, delta: float) -> "NAMM":
        """A copy whose every score is ``delta`` higher (the scorer's output bias moved): ``delta > 0`` keeps
        more tokens, ``< 0`` fewer. Unlike a top-k budget, each head keeps its own learned share."""
        params = self.params.clone()
        params[..., -1] += delta
        return replace(self, params=params)

    # ---- per-token state: the streaming spectrogram ----------------------------------------------
    def token_state(self) -> dict[str, tuple[int, ...]]:
        c = self.spectral
        return {"tail": (c.tail,), "block": (c.hop,), "ema": (c.n_freq,)}

    def observe(self, state, attn: torch.Tensor, qpos: torch.Tensor) -> None:
        """Write each query's row into its hop slot; fold a frame whenever a row completes a hop block."""
        c = self.spectral
        q = qpos.shape[1]
        if q == 1 and qpos.shape[0] == 1 and (p0 := int(qpos[0, 0])) >= 0:
            # one decode step of one row: write the row into its hop slot (a handful of ops; the general
            # path below costs ~15 per layer and step, which is what a 135M model's decode pays for)
            k = p0 % c.hop
            st_block = state["block"]
            st_block[..., k] += attn[:, :, 0]
            if k == c.hop - 1:
                state["tail"], state["ema"] = fold_frame(state["tail"], st_block, state["ema"], c)
                st_block.zero_()
            return
        # each row's real queries are consecutive positions ending at the last column (left padding)
        virtual = qpos[:, -1:] - torch.arange(q - 1, -1, -1, device=qpos.device)  # [B, q]
        # a few queries (decode): write their slots, fold when a block completes; many: all frames at once
        if q >= c.hop and c.tail == c.hop and bool(((qpos == virtual) | ((qpos < 0) & (virtual < 0))).all()):
            if q % c.hop == 0 and bool((qpos[:, 0] >= 0).all()) and bool((qpos[:, 0] % c.hop == 0).all()):
                self._observe_blocks(state, attn)
            else:
                self._observe_suffix(state, attn, virtual)
        else:
            self._observe_rows(state, attn, qpos)

    def _observe_blocks(self, st: dict, attn: torch.Tensor) -> None:
        """Fastest path: no padding and the queries are whole hop blocks starting at a block boundary (how
        prefill chunks arrive), so the open block is empty and every frame is ``tail | block`` of a
        sliding window over ``tail`` and the rows. Same numbers as :meth:`_observe_rows`."""
        c = self.spectral
        hop = c.hop
        q = attn.shape[2]
        # queries stay the major axis and slots the contiguous one (no [q, N] transpose of the rows): 3x
        # faster on CPU than framing along a transposed copy
        seq = torch.cat([st["tail"].transpose(-1, -2), attn], dim=2)  # [B,H,tail+q,N]
        frames = seq.unfold(2, c.n_fft, hop).transpose(-1, -2)  # [B,H,m,n_fft,N]: tail|block_0, block_0|block_1, ...
        mag = spectrum(frames, c.n_fft, dim=3)  # [B,H,m,F,N]
        m = q // hop
        beta = c.ema**hop
        w = (1 - beta) * beta ** torch.arange(m - 1, -1, -1, device=attn.device, dtype=torch.float32)  # [m]
        # the frames' weighted sum as one matmul over the frame axis (4x faster than the einsum on CPU)
        b, h, _, f, n = mag.shape
        folded = torch.matmul(w, mag.reshape(b, h, m, f * n)).reshape(b, h, f, n).transpose(-1, -2)
        st["ema"] = beta**m * st["ema"] + folded
        st["tail"] = seq[:, :, -c.tail :].transpose(-1, -2)
        st["block"] = torch.zeros_like(st["block"])

    def _observe_rows(self, st: dict, attn: torch.Tensor, qpos: torch.Tensor) -> None:
        """General path (any n_fft, padding anywhere): one frame per completed hop block, block by block."""
        c = self.spectral
        real = qpos >= 0
        done = real & (qpos % c.hop == c.hop - 1)  # row completes a block at this query
        cuts = torch.nonzero(done.any(0)).flatten().tolist()
        if not cuts or cuts[-1] != attn.shape[2] - 1:
            cuts.append(attn.shape[2] - 1)
        b, h, _, n = attn.shape
        s = 0
        for e in cuts:  # segments never straddle a block boundary of any row
            seg = attn[:, :, s : e + 1] * real[:, None, s : e + 1, None]  # [B,H,m,N]
            slot = (qpos[:, s : e + 1] % c.hop)[:, None, None, :].expand(b, h, n, -1)  # [B,H,N,m]
            st["block"].scatter_add_(-1, slot, seg.permute(0, 1, 3, 2))
            rows = done[:, e]
            if rows.any():
                tail, ema = fold_frame(st["tail"], st["block"], st["ema"], c)
                r = rows[:, None, None, None]
                st["tail"] = torch.where(r, tail, st["tail"])
                st["ema"] = torch.where(r, ema, st["ema"])
                st["block"] = st["block"].masked_fill(r, 0.0)
            s = e + 1

    def _observe_suffix(self, st: dict, attn: torch.Tensor, virtual: torch.Tensor) -> None:
        """Fast path (n_fft = 2 hop; real queries a suffix of each row): every frame these queries complete,
        in every row, in one batched rFFT, although rows sit at different hop phases. Same numbers as
        :meth:`_observe_rows`, without its Python loop over block boundaries (one per phase in the batch).

        Args:
            virtual: ``[B, q]`` query positions, continued below 0 over the padding (``-1, -2, ...``).
        """
        c = self.spectral
        hop, dev = c.hop, attn.device
        b, h, q, n = attn.shape
        phase = virtual[:, 0] % hop  # [B] slots of the open block already filled
        new = (attn * (virtual >= 0)[:, None, :, None]).permute(0, 1, 3, 2)  # [B,H,N,q], padding zeroed
        # per row: open block's filled slots | this chunk's queries | zeros, cut into whole hop blocks
        width = (q // hop + 3) * hop  # >= phase + q + hop: room for the next open block
        ext = torch.cat([st["block"], new, new.new_zeros(b, h, n, 1)], dim=-1)  # [B,H,N,hop+q+1]
        t = torch.arange(width, device=dev)[None]
        p = phase[:, None]
        src = torch.where(t < p, t, torch.where(t < p + q, hop + t - p, hop + q))  # [B, width]
        seq = ext.gather(-1, src[:, None, None, :].expand(b, h, n, width))
        blocks = seq.unflatten(-1, (width // hop, hop))  # [B,H,N,nbl,hop]
        nb = (phase + q) // hop  # [B] blocks completed by this chunk
        j = torch.arange(width // hop, device=dev)[None]  # [1, nbl]
        # block j ends at position virtual[:, 0] - phase + (j + 1) hop - 1; only blocks ending on a real
        # query are frames (all-padding blocks of a fresh row would fold zeros into zeros anyway)
        fold = (j < nb[:, None]) & (virtual[:, :1] - p + (j + 1) * hop - 1 >= 0)  # [B, nbl]
        m = int(nb.max())  # frames are taken over the first m blocks only (m <= q / hop + 1)
        if m and bool(fold.any()):
            fold, j, cur = fold[:, :m], j[:, :m], blocks[..., :m, :]
            prev = torch.cat([st["tail"][..., None, :], cur[..., :-1, :]], dim=-2)
            mag = spectrum(torch.cat([prev, cur], dim=-1), c.n_fft)  # [B,H,N,m,F]
            beta = c.ema**hop
            w = torch.where(fold, (1 - beta) * beta ** (nb[:, None] - 1 - j).clamp_min(0).float(), 0.0)  # [B, m]
            k = fold.sum(-1)  # [B] frames folded per row
            st["ema"] = (beta ** k.float())[:, None, None, None] * st["ema"] + torch.einsum("bhnjf,bj->bhnf", mag, w)
            last = (nb - 1).clamp_min(0)[:, None, None, None, None].expand(b, h, n, 1, hop)
            st["tail"] = torch.where((k > 0)[:, None, None, None], blocks.gather(-2, last).squeeze(-2), st["tail"])
        keep = (nb[:, None] * hop + torch.arange(hop, device=dev))[:, None, None, :]  # [B,1,1,hop]
        st["block"] = seq.gather(-1, keep.expand(b, h, n, hop)).contiguous()

    # ---- scoring and selection -------------------------------------------------------------------
    def features(self, view) -> torch.Tensor:
        """``[B, H, N, 25]`` = concat(age embedding (8), normalised spectrogram (17))."""
        age = (view.newest_pos[:, None, None] - view.pos).clamp_min(0)
        z = normalise(view.state["ema"], self.mean.to(view.pos.device), self.var.to(view.pos.device))
        return torch.cat([age_embedding(age, self.spectral), z], dim=-1)

    def scores(self, view) -> torch.Tensor:
        rows = view.rows
        x = self.features(view)[rows]  # [R, H, N, d]
        in_view = view.in_view[rows]
        # score only the tokens in view, packed to the front (BAM costs O(K^2) in the tokens it sees), newest
        # first: BAM's "attend to newer tokens" is then plain causal attention, with no permutation
        k = int(in_view.sum(-1).max())
        n = in_view.shape[-1]
        idx = n - 1 - torch.argsort((~in_view).flip(-1).to(torch.int8), dim=-1, stable=True)[..., :k]  # [R, H, K]
        xk = x.gather(2, idx[..., None].expand(-1, -1, -1, x.shape[-1]))
        params = self.params.to(x.device)
        if params.dim() == 2:
            params = params[rows]
        sk = self.net(xk, in_view.gather(2, idx), view.pos[rows].gather(2, idx), params)
        s = torch.full(view.in_view.shape, float("-inf"), device=x.device)
        s[rows] = torch.full_like(in_view, float("-inf"), dtype=sk.dtype).scatter(2, idx, sk)
        return s

    def select(self, view) -> torch.Tensor:
        if self.stats is not None:
            # statistics pass: record the features of every token in view, evict nothing
            self.stats.update(view.state["ema"][view.in_view])
            return torch.ones_like(view.in_view)
        s = neighbour_max(self.scores(view), view.pos, view.in_view, self.pool)
        if self.mode == "ragged":
            keep = threshold_ragged(s, view.in_view, view.newest)
        else:
            keep = threshold_reference(s, view.in_view, view.newest, view.rows)
        k = budget_tokens(self.budget, view.seen)
        if k is not None:
            keep = keep & top_k(s, view.in_view & keep, view.newest, k)
        return keep

    def describe(self) -> str:
        pool = f", pool={self.pool}" if self.pool > 1 else ""
        return f"namm({self.scorer}, mode={self.mode}, n_up={self.n_up}, budget={self.budget}{pool})"
