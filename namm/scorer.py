"""Scorers: token features -> one eviction score per token (spec §3).

Step in the data flow: features -> **scores** -> selection.

Both scorers are pure functions of a FLAT parameter vector, so that CMA-ES can hand them a sample
directly and a batch can carry one parameter vector per row (batched population evaluation).
Weights are laid out ``[in, out]`` and applied as ``x @ W`` (the reference's layout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

__all__ = ["Scorer", "BAM", "MLP", "SCORERS", "make_scorer"]


class Scorer:
    """Contract: ``num_params`` and ``__call__(x, mask, pos, params) -> scores``; ``shapes`` ends with the
    score's scalar bias (added to every token's score), so ``params[..., -1]`` moves the keep threshold."""

    name: ClassVar[str]
    feature_dim: int

    @property
    def shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        raise NotImplementedError

    @property
    def num_params(self) -> int:
        return sum(math.prod(s) for _, s in self.shapes)

    def linear(self, weight: torch.Tensor, bias: float = 0.0) -> torch.Tensor:
        """``[P]`` parameters under which the scorer is the linear score ``x @ weight + bias`` (``weight``
        ``[d]``): a hand-made starting point for evolution, e.g. a threshold on the attention a token gets."""
        raise NotImplementedError

    def flatten(self, named: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`unflatten` for one vector: named tensors (missing ones zero) -> ``[P]``."""
        shapes = dict(self.shapes)
        unknown = sorted(set(named) - set(shapes))
        bad = [n for n, t in named.items() if n in shapes and tuple(t.shape) != shapes[n]]
        if unknown or bad:
            raise ValueError(f"{self.name} scorer: unknown {unknown} / misshapen {bad} tensors; it takes {shapes}")
        parts = [named.get(n, torch.zeros(s)).float().reshape(-1) for n, s in self.shapes]
        return torch.cat(parts)

    def unflatten(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``params`` ``[..., P]`` into named tensors ``[..., *shape]`` (reference order)."""
        if params.shape[-1] != self.num_params:
            raise ValueError(
                f"{self.name} scorer with feature_dim={self.feature_dim} takes {self.num_params} parameters, "
                f"got a vector of {params.shape[-1]}"
            )
        out, i = {}, 0
        lead = params.shape[:-1]
        for name, shape in self.shapes:
            n = math.prod(shape)
            out[name] = params[..., i : i + n].reshape(*lead, *shape)
            i += n
        return out

    def __call__(
        self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, params: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError


def _bcast(w: torch.Tensor, rank: int, trailing: int) -> torch.Tensor:
    """Shared weights ``[*shape]`` pass through; per-row weights ``[B, *shape]`` become
    ``[B, 1, ..., *shape]`` of total ``rank`` so they broadcast against ``[B, H, N, ...]``."""
    if w.dim() == trailing:
        return w
    return w.reshape(w.shape[0], *([1] * (rank - 1 - trailing)), *w.shape[1:])


def _backward_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                        pos: torch.Tensor) -> torch.Tensor:
    """Each existing token attends to itself and the newer ones (``pos_j >= pos_i``); padding rows get some
    finite output (the caller masks their scores). ``q, k, v`` ``[B, H, N, h]``; ``mask``, ``pos`` ``[B, H, N]``.

    With the existing tokens a prefix of each head's slots, newest first (how NAMM packs them), this is
    causal attention: the fused kernel, without a mask, all heads in one call. Oldest first, it is causal
    attention on the reversed prefix (ragged heads permuted). Otherwise an explicit ``[B, H, N, N]`` mask.
    """
    sdpa = torch.nn.functional.scaled_dot_product_attention
    n = mask.shape[-1]
    count = mask.sum(-1)  # [B, H]
    prefix = bool((mask == (torch.arange(n, device=mask.device) < count[..., None])).all())
    if prefix and bool(((pos[..., 1:] < pos[..., :-1]) | ~mask[..., 1:]).all()):
        # padding after the prefix sees real tokens and earlier padding only: finite, and no real row sees it
        return sdpa(q, k, v, is_causal=True)
    ordered = bool(((pos[..., 1:] > pos[..., :-1]) | ~mask[..., 1:]).all())
    if prefix and ordered:
        if bool((count == n).all()):
            return sdpa(q.flip(-2), k.flip(-2), v.flip(-2), is_causal=True).flip(-2)
        # ragged heads in one call: reverse each head's first ``count`` slots and leave the padding after
        # them, so causal attention gives every existing token exactly its newer ones (padding rows see
        # something finite; their scores are masked). The permutation is its own inverse.
        i = torch.arange(n, device=mask.device)
        rev = torch.where(i < count[..., None], count[..., None] - 1 - i, i)[..., None]  # [B, H, N, 1]

        def perm(t: torch.Tensor) -> torch.Tensor:
            return t.gather(2, rev.expand(*rev.shape[:-1], t.shape[-1]))

        return perm(sdpa(perm(q), perm(k), perm(v), is_causal=True))
    allowed = (pos[..., None, :] >= pos[..., :, None]) & mask[..., None, :]  # [B,H,N,N]
    allowed = allowed | torch.eye(n, dtype=torch.bool, device=q.device)  # every row sees itself: finite
    return sdpa(q, k, v, attn_mask=allowed)


@dataclass(frozen=True)
class BAM(Scorer):
    """Backward Attention Memory: one single-head attention layer over the tokens of one (layer, head).

    Token ``i`` attends only to itself and newer tokens ``j`` (``pos_j >= pos_i``); the output gates the
    input: ``x' = x * (1 + m) + r``; the score is ``x' w + b``. 4172 parameters for 25 features.
    """

    name: ClassVar[str] = "bam"
    feature_dim: int = 25
    hidden: int = 32

    @property
    def shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        d, h = self.feature_dim, self.hidden
        return [
            ("w_qkv", (d, 3 * h)),
            ("b_qkv", (3 * h,)),
            ("w_o", (h, 2 * d)),
            ("b_o", (2 * d,)),
            ("w_s", (d, 1)),
            ("b_s", (1,)),
        ]

    def linear(self, weight: torch.Tensor, bias: float = 0.0) -> torch.Tensor:
        # zero attention output: no gate (m = 0), no residual (r = 0), so x' = x
        return self.flatten({"w_s": torch.as_tensor(weight).reshape(-1, 1), "b_s": torch.tensor([float(bias)])})

    def __call__(
        self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, params: torch.Tensor
    ) -> torch.Tensor:
        """Score tokens.

        Args:
            x: ``[B, H, N, d]`` token features.
            mask: ``[B, H, N]`` bool, tokens that exist (others are padding).
            pos: ``[B, H, N]`` int64 absolute positions (defines "newer").
            params: ``[P]`` shared, or ``[B, P]`` one vector per batch row.
        Returns:
            ``[B, H, N]`` float32 scores (padding gets -inf).
        """
        p = self.unflatten(params.to(x.dtype))
        if p["w_o"].any() or p["b_o"].any():
            h = self.hidden
            qkv = x @ _bcast(p["w_qkv"], 4, 2) + _bcast(p["b_qkv"], 4, 1)  # [B,H,N,3h]
            q, k, v = qkv.split(h, dim=-1)
            att = _backward_attention(q, k, v, mask, pos)
            o = att @ _bcast(p["w_o"], 4, 2) + _bcast(p["b_o"], 4, 1)  # [B,H,N,2d]
            r, m = o.split(self.feature_dim, dim=-1)
            x2 = x * (1 + m) + r
        else:
            # a zero output projection makes the attention path vanish (x' = x, a linear score, as
            # Scorer.linear builds): the same numbers without the attention, a third of a NAMM's update cost
            x2 = x
        s = (x2 @ _bcast(p["w_s"], 4, 2)).squeeze(-1) + _bcast(p["b_s"], 3, 1)
        return s.masked_fill(~mask, float("-inf"))


@dataclass(frozen=True)
class MLP(Scorer):
    """Ablation: scores each token from its own features, no cross-token step (``d -> hidden -> 1``, ReLU)."""

    name: ClassVar[str] = "mlp"
    feature_dim: int = 25
    hidden: int = 32

    @property
    def shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        d, h = self.feature_dim, self.hidden
        return [("w_1", (d, h)), ("b_1", (h,)), ("w_2", (h, 1)), ("b_2", (1,))]

    def linear(self, weight: torch.Tensor, bias: float = 0.0) -> torch.Tensor:
        # relu(x w) - relu(-x w) = x w: two hidden units, the others zero
        if self.hidden < 2:
            raise ValueError(f"a linear MLP scorer needs hidden >= 2, this one has {self.hidden}")
        w = torch.as_tensor(weight).float().reshape(-1)
        w1, w2 = torch.zeros(self.feature_dim, self.hidden), torch.zeros(self.hidden, 1)
        w1[:, 0], w1[:, 1], w2[0, 0], w2[1, 0] = w, -w, 1.0, -1.0
        return self.flatten({"w_1": w1, "w_2": w2, "b_2": torch.tensor([float(bias)])})

    def __call__(
        self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, params: torch.Tensor
    ) -> torch.Tensor:
        """Same contract as :meth:`BAM.__call__`; ``pos`` is unused."""
        p = self.unflatten(params.to(x.dtype))
        hid = torch.relu(x @ _bcast(p["w_1"], 4, 2) + _bcast(p["b_1"], 4, 1))
        s = (hid @ _bcast(p["w_2"], 4, 2)).squeeze(-1) + _bcast(p["b_2"], 3, 1)
        return s.masked_fill(~mask, float("-inf"))


SCORERS: dict[str, type[BAM] | type[MLP]] = {"bam": BAM, "mlp": MLP}


def make_scorer(name: str, feature_dim: int = 25, hidden: int = 32) -> Scorer:
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; choose one of {sorted(SCORERS)}")
    return SCORERS[name](feature_dim=feature_dim, hidden=hidden)
