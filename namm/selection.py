"""Selection: scores -> which tokens stay (spec §4).

Step in the data flow: scores -> **selection** -> cache.

Every function takes ``scores`` ``[B, H, N]`` over the slots of one layer, ``in_view`` ``[B, H, N]``
(the tokens the policy is deciding on; anything else is kept untouched) and ``newest`` ``[B, H, N]``
(the newest token of each row, which is always kept), and returns ``keep`` ``[B, H, N]`` bool.
"""

from __future__ import annotations

import torch

__all__ = ["threshold_ragged", "threshold_reference", "top_k", "neighbour_max", "budget_tokens", "parse_budget",
           "parse_layer_budgets"]


def _protect(scores: torch.Tensor, in_view: torch.Tensor, newest: torch.Tensor) -> torch.Tensor:
    """Scores with the newest token at +inf and everything out of view at -inf."""
    s = scores.float().masked_fill(~in_view, float("-inf"))
    return s.masked_fill(newest & in_view, float("inf"))


def threshold_ragged(scores: torch.Tensor, in_view: torch.Tensor, newest: torch.Tensor) -> torch.Tensor:
    """Each head keeps exactly its own tokens with ``score >= 0`` (the paper's per-head rule)."""
    s = _protect(scores, in_view, newest)
    return (s >= 0) | ~in_view


def threshold_reference(
    scores: torch.Tensor, in_view: torch.Tensor, newest: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """The reference code's rule: one eviction count per layer, the minimum over heads (and over the
    batch rows updating together) of each head's count of negative scores; each head then keeps its own
    top-(N - n_evict) tokens. Heads hold different tokens but equal counts.

    Args:
        rows: ``[B]`` bool, the rows that update now (the minimum is taken over these); default all.
    """
    s = _protect(scores, in_view, newest)
    n_view = in_view.sum(-1)  # [B,H]
    n_neg = ((s < 0) & in_view).sum(-1)  # [B,H]
    rows = torch.ones(s.shape[0], dtype=torch.bool, device=s.device) if rows is None else rows
    big = torch.iinfo(n_neg.dtype).max
    n_evict = n_neg.masked_fill(~rows[:, None], big).min()  # one count for the layer
    if int(n_evict) == big:  # no row updates
        return torch.ones_like(in_view)
    return _keep_top(s, in_view, n_view - n_evict)


def top_k(
    scores: torch.Tensor, in_view: torch.Tensor, newest: torch.Tensor, k: torch.Tensor
) -> torch.Tensor:
    """Keep the ``k`` highest-scoring tokens in view per head (``k`` ``[B]`` or ``[B, H]``), newest included."""
    k = k if k.dim() == 2 else k[:, None].expand(scores.shape[:2])
    k = torch.minimum(k.clamp_min(1), in_view.sum(-1))
    # the newest token is kept outside the ranking, not as a +inf score: a policy's own +inf (StreamingLLM's
    # sinks) would tie with it, and the stable sort ranks older slots first, dropping it when they fill k
    new = newest & in_view
    rest = in_view & ~new
    return _keep_top(scores.float().masked_fill(~rest, float("-inf")), rest, k - new.sum(-1))


def _keep_top(s: torch.Tensor, in_view: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Keep per (row, head) the ``k`` ``[B, H]`` largest of ``s`` among ``in_view``; out of view is kept."""
    order = s.argsort(dim=-1, descending=True, stable=True)  # ties: lower slot (older) first
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(s.shape[-1], device=s.device).expand_as(order))
    return (rank < k[..., None]) | ~in_view


def neighbour_max(scores: torch.Tensor, pos: torch.Tensor, in_view: torch.Tensor, kernel: int) -> torch.Tensor:
    """Each token in view takes the highest score among itself and its ``kernel // 2`` nearest neighbours
    on each side, neighbours in position order among the tokens in view (the evicted are gone), so a run
    of tokens around a kept one is kept whole: a copied value or sentence is not left with holes.

    Args:
        scores, pos, in_view: ``[B, H, N]`` (``pos`` the int64 absolute positions of the slots).
        kernel: odd window width; 1 returns ``scores`` unchanged.
    Returns:
        ``[B, H, N]`` float, ``-inf`` out of view.
    """
    if kernel == 1:
        return scores
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be an odd width >= 1, got {kernel}")
    order = pos.masked_fill(~in_view, torch.iinfo(pos.dtype).max).argsort(dim=-1, stable=True)  # in view first, by position
    s = scores.float().masked_fill(~in_view, float("-inf")).gather(-1, order)
    b, h, n = s.shape
    pooled = torch.nn.functional.max_pool1d(s.reshape(b * h, 1, n), kernel, stride=1, padding=kernel // 2)
    out = torch.empty_like(s).scatter_(-1, order, pooled.reshape(b, h, n))
    return out.masked_fill(~in_view, float("-inf"))


def budget_tokens(budget: float | int | None, seen: torch.Tensor) -> torch.Tensor | None:
    """Turn a budget into a token count per row.

    Args:
        budget: ``None`` (no cap), a fraction of tokens seen (float in (0, 1]) or a token count (int >= 1).
        seen: ``[B]`` int64 tokens seen per row.
    Returns:
        ``[B]`` int64 or ``None``.
    """
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(f"budget must be a float fraction or an int token count, got {budget!r}")
    if isinstance(budget, float):
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"a fractional budget must lie in (0, 1], got {budget}; pass an int for a token count")
        return (seen.float() * budget).floor().long().clamp_min(1)
    if budget < 1:
        raise ValueError(f"a token budget must be >= 1, got {budget}")
    return torch.full_like(seen, int(budget))


def parse_budget(text: str | float | int | None) -> float | int | None:
    """CLI form: ``"0.4"`` is a fraction of tokens seen, ``"1024"`` a token count, ``"none"`` no cap."""
    if text is None or isinstance(text, (int, float)):
        return text
    t = text.strip().lower()
    if t in ("", "none", "full"):
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"--budget {text!r}: give a fraction like 0.4 or a token count like 1024") from None


def parse_layer_budgets(text: str) -> dict[int, float | int]:
    """CLI form of per-layer budgets: space-separated ``FIRST-LAST=B`` (or ``L=B``) items, each budget as
    :func:`parse_budget` reads it (``1`` / ``1.0``: the layer keeps every token), e.g. ``"0=1 1-11=0.25 12-29=0.125"``
    -> ``{0: 1.0, 1: 0.25, ..., 29: 0.125}``. A layer named twice is refused."""
    out: dict[int, float | int] = {}
    for item in text.split():
        span, eq, b = item.partition("=")
        first, dash, last = span.partition("-")
        try:
            lo = int(first)
            hi = int(last) if dash else lo
            budget = parse_budget(b) if eq else None
        except ValueError:
            lo, hi, budget = 0, -1, None
        if budget is None or lo < 0 or hi < lo:
            raise ValueError(f"--layer-budgets item {item!r}: write FIRST-LAST=B or L=B, e.g. '0=1 1-11=0.25'")
        for layer in range(lo, hi + 1):
            if layer in out:
                raise ValueError(f"--layer-budgets names layer {layer} twice ({text!r})")
            out[layer] = 1.0 if budget == 1 else budget
    return out
