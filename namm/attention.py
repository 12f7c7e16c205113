"""The attention function plugged into transformers' ``AttentionInterface`` under the name ``"namm"``.

Step in the data flow: model -> adapter -> **attention rows + cache** -> features -> ...

HF attention modules call ``cache.update(k, v)`` and then this function. It:

1. finds the :class:`~namm.cache.MemoryLayer` that produced ``key`` (no patching of model code),
2. classifies left padding from the 2D mask (our mask function passes the 2D mask through),
3. splits the queries at every row's update boundary (each ``n_up``-th token a row has seen), so any
   chunking of the input (one-shot prefill in ``generate``, 128-token chunks, one token at a time)
   gives the same result as feeding tokens one by one,
4. for each piece: attention over the live slots with a mask built from ABSOLUTE positions
   (``pos_k <= pos_q``), post-softmax rows (fp32, averaged over each KV head's query heads) only if
   the policy needs them (otherwise SDPA, which returns no weights), then ``policy.observe``; at a
   boundary, ``layer.evict`` hides the dropped tokens from the queries that follow,
5. compacts the layer's storage after each eviction (masks are position-based, so slot order only
   has to stay increasing in position, which compaction preserves).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from .cache import MemoryLayer, current_layer

ATTN_NAME = "namm"

__all__ = ["ATTN_NAME", "memory_attention", "register"]


def _pass_2d_mask(*args, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor | None:
    """Mask function for ``"namm"``: hand the 2D padding mask ``[B, kv]`` through untouched."""
    return attention_mask


def _expand_heads(mask: torch.Tensor, groups: int) -> torch.Tensor:
    """``[B, Hkv, q, N]`` -> ``[B, Hkv * groups, q, N]`` (GQA: query heads share their KV head's mask)."""
    if groups == 1 or mask.shape[1] == 1:
        return mask
    b, h, q, n = mask.shape
    return mask[:, :, None].expand(b, h, groups, q, n).reshape(b, h * groups, q, n)


class _Causal:
    """A mask marker: bottom-right aligned causal attention (see ``_attend``)."""


CAUSAL = _Causal()
Mask = torch.Tensor | _Causal | None


def _attend(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Mask, scaling: float,
    need_rows: bool, softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One masked attention.

    Args:
        query: ``[B, Hq, q, D]``; key, value: ``[B, Hkv, N, D]``.
        mask: ``[B, Hkv or 1, q, N]`` or ``[q, N]`` bool (True = visible), ``None`` (all visible) or
            ``CAUSAL``: query ``i`` sees keys ``j <= N - q + i`` (bottom-right aligned; the fused kernels
            skip the masked half).
        softcap: Gemma 2's logit soft-capping (``tanh(x / c) * c``), or ``None``.
    Returns:
        ``out [B, Hq, q, D]`` and, if ``need_rows``, ``rows [B, Hkv, q, N]`` fp32 averaged over groups.
    """
    b, hq, q, d = query.shape
    hkv = key.shape[1]
    g = hq // hkv
    n = key.shape[2]
    if not need_rows and softcap is None:
        if mask is CAUSAL and q == n:  # a fresh prefill: the kernel's own causal mask, nothing materialised
            out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling, enable_gqa=g > 1)
            return out, None
        m: object
        if isinstance(mask, _Causal):
            m = causal_lower_right(q, n) if q > 1 else None
        else:
            m = mask if mask is None or mask.dim() == 2 else _expand_heads(mask, g)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=m, scale=scaling, enable_gqa=g > 1)
        return out, None
    causal = isinstance(mask, _Causal) and q > 1  # one query sees every slot; more, the bottom-right triangle
    if isinstance(mask, _Causal):
        mask = None
    # query heads of one KV head are consecutive: [B, Hkv, G*q, D] against [B, Hkv, N, D], no broadcast copies;
    # the scale goes on the (small) queries, so the [G*q, N] logits are written once and not rescaled
    # (3D bmm over [B * Hkv]: the slot views of the cache merge their first two dims, so no copies, and a
    # decode step dispatches half the ops of a 4D matmul)
    qg = (query * scaling).reshape(b * hkv, g * q, d)
    logits = torch.bmm(qg, key.reshape(b * hkv, n, d).transpose(1, 2)).view(b, hkv, g * q, n)  # [B,Hkv,G*q,N]
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    if causal:  # only the piece's own q slots (the last ones) hold hidden entries: mask that [q, q] block alone
        hidden = torch.ones(q, q, dtype=torch.bool, device=query.device).triu_(1)
        logits.unflatten(2, (g, q))[..., n - q :].masked_fill_(hidden, float("-inf"))
    if mask is not None:
        # an additive 0 / -inf bias, built at the mask's size and broadcast over the query groups: the same
        # logits as masked_fill, 3x cheaper on CPU (a broadcast bool fill is the slow path)
        bias = torch.where(mask, 0.0, float("-inf")).to(logits.dtype)
        b_ = bias if bias.dim() == 2 else bias[:, :, None]  # [q, N] or [B, Hkv or 1, 1, q, N]
        logits = logits.unflatten(2, (g, q)).add_(b_).flatten(2, 3)
    probs = torch.softmax(logits.float(), dim=-1)  # fp32 softmax, as the reference
    out = torch.bmm(probs.to(value.dtype).view(b * hkv, g * q, n), value.reshape(b * hkv, n, value.shape[-1]))
    rows = probs.unflatten(2, (g, q)).mean(dim=2) if need_rows else None  # [B,Hkv,q,N]
    return out.view(b, hq, q, -1), rows


def _piece_mask(layer: MemoryLayer, qp: torch.Tensor, ahead: int, window: int | None) -> tuple[Mask, int]:
    """What the queries at positions ``qp`` ``[B, m]`` may see of the layer's slots: live ones at or before
    their position (and within ``window``). ``ahead``: slots of this call after the piece (not yet visible).
    Returns ``(mask, n)``: attend over the first ``n`` slots with ``mask``.

    When every slot is live and the batch has no padding, slots are in position order with this call's
    tokens last, so the piece sees the slots up to its own, causally: ``CAUSAL`` over ``N - ahead`` slots
    (a ``[m, N]`` index mask within a window); otherwise ``[B, H, m, N]`` from the absolute positions.
    """
    m, n = qp.shape[1], layer.n
    if layer.all_valid and bool((qp >= 0).all()):
        n = n - ahead
        if window is None:
            return CAUSAL, n
        j = torch.arange(n, device=qp.device)[None, :]
        i = n - m + torch.arange(m, device=qp.device)[:, None]
        return (j <= i) & (j > i - window), n
    # this call's later tokens are every head's newest live slots, so no slot a piece may see lies past
    # n - ahead (ragged heads end in dead slots): attend over the first n - ahead only
    n = n - ahead
    kpos = layer.pos[:, :, None, :n]
    mask = layer.valid[:, :, None, :n] & (kpos <= qp[:, None, :, None])  # [B,H,m,N]
    if window is not None:
        mask = mask & (kpos > qp[:, None, :, None] - window)
    return mask | (qp < 0)[:, None, :, None], n  # padding queries: any finite output will do


def _plain_attention(query, key, value, attention_mask, scaling, window=None, softcap=None):
    """No memory cache (e.g. ``use_cache=False``): causal attention (within ``window`` positions, if set)
    with the 2D padding mask."""
    q, n = query.shape[2], key.shape[2]
    causal = torch.ones(q, n, dtype=torch.bool, device=query.device).tril(n - q)
    if window is not None:
        causal = causal & ~torch.ones_like(causal).tril(n - q - window)
    mask = causal[None, None]
    if attention_mask is not None and attention_mask.dim() == 2:
        mask = mask & attention_mask[:, None, None, -n:].bool()
    mask = mask | ~mask.any(-1, keepdim=True)  # fully padded query rows: keep them finite
    out, _ = _attend(query, key, value, mask, scaling, need_rows=False, softcap=softcap)
    return out.transpose(1, 2).contiguous(), None


def memory_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """AttentionInterface function. ``query`` ``[B, Hq, q, D]``, ``key``/``value`` ``[B, Hkv, N, D]``
    as returned by the cache; returns ``([B, q, Hq, D], None)``. ``sliding_window`` (a hybrid model's
    sliding layers) limits each query to that many newest positions; ``softcap`` caps the logits."""
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    layer: MemoryLayer | None = current_layer(key)
    if layer is None:
        return _plain_attention(query, key, value, attention_mask, scaling, sliding_window, softcap)
    window = layer.window
    if sliding_window is not None and window != sliding_window:
        raise ValueError(f"layer {layer.layer_idx} attends within a window of {sliding_window} but its cache was built "
                         f"for {window}: the adapter's layer_windows() must match the model's layer_types")

    q = query.shape[2]
    real = None
    if attention_mask is not None and attention_mask.dim() == 2:
        real = attention_mask[:, -q:].bool()
    qpos = layer.mark_padding(real)  # [B, q], -1 for padding
    policy = layer.policy
    n_up = policy.n_up
    boundary = (qpos >= 0) & ((qpos + 1) % n_up == 0)  # [B, q]
    # a policy that never evicts needs no pieces, nor does one query: the whole call attends at once
    cuts = torch.nonzero(boundary.any(0)).flatten().tolist() if policy.evicts and q > 1 else []
    if not cuts or cuts[-1] != q - 1:
        cuts.append(q - 1)

    outs = []
    s = 0
    for e in cuts:
        qp = qpos[:, s : e + 1]  # [B, m]
        mask, n = _piece_mask(layer, qp, q - 1 - e, window)
        keys, values = layer.keys[:, :, :n], layer.values[:, :, :n]
        qs = query[:, :, s : e + 1]
        need = policy.rows_needed(qp) if policy.needs_attention else None  # [B, m] or None = all
        if need is None or bool(need.all()):
            out, rows = _attend(qs, keys, values, mask, scaling, policy.needs_attention, softcap)
            if rows is not None:  # rows over the first n slots; slots of this call's later pieces get none yet
                policy.observe(layer.state, _pad_slots(rows, layer.n), qp)
        else:  # the output by the fused kernel; rows only for the queries the policy reads
            out, _ = _attend(qs, keys, values, mask, scaling, False, softcap)
            cols = torch.nonzero(need.any(0)).flatten()
            if cols.numel():
                if isinstance(mask, torch.Tensor):
                    sub = mask[cols] if mask.dim() == 2 else mask[:, :, cols]
                else:  # CAUSAL (every slot live, so never None here): the needed queries sit at slots n - m + cols
                    j = torch.arange(n, device=qp.device)[None, :]
                    sub = j <= (n - qp.shape[1] + cols)[:, None]
                _, sub_rows = _attend(qs[:, :, cols], keys, values, sub, scaling, True, softcap)
                assert sub_rows is not None
                policy.observe(layer.state, _pad_slots(sub_rows, layer.n), qp[:, cols].masked_fill(~need[:, cols], -1))
        outs.append(out)
        if policy.evicts:
            at = boundary[:, e]
            if at.any():
                layer.evict(at, qp[:, -1])
                layer.compact()  # later pieces attend over the kept tokens only
        else:  # nothing is dropped, but every update is still recorded (statistics, listeners)
            for c in torch.nonzero(boundary.any(0)).flatten().tolist():
                layer.evict(boundary[:, c], qpos[:, c])
        s = e + 1
    layer.compact()  # drops padding slots too (no-op when every slot is live)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _pad_slots(rows: torch.Tensor, n: int) -> torch.Tensor:
    """Attention rows ``[B, H, m, n']`` over the first ``n'`` slots, zero-padded to all ``n`` slots."""
    return rows if rows.shape[-1] == n else F.pad(rows, (0, n - rows.shape[-1]))


_registered = False


def register() -> None:
    """Register ``"namm"`` in transformers' attention and mask interfaces (idempotent)."""
    global _registered
    if not _registered:
        AttentionInterface.register(ATTN_NAME, memory_attention)
        AttentionMaskInterface.register(ATTN_NAME, _pass_2d_mask)
        _registered = True
