"""Replay a policy on recorded attention, with no model: for studying and debugging a NAMM offline.

Trace (safetensors): metadata ``n_up``, ``num_updates`` U, ``num_layers`` L, ``num_heads`` H, ``batch``
B, optionally ``length`` (the real tokens, when the last block is zero-padded); tensors ``attn.{u}.{l}``
``[B, H, n_up, (u+1) n_up]``: the post-softmax attention the queries at positions
``u n_up .. (u+1) n_up - 1`` give every position ``0 .. (u+1) n_up - 1`` (GQA-averaged), and optionally
``layers`` int64 ``[L]``: the model layer trace layer ``l`` was (a hybrid manages only some; absent: ``l``).
``namm.drivers.trace.record`` records one from a model, :func:`save_trace` writes it.

Each (layer, head) starts empty; at update ``u`` the tokens in view are the ones it retained plus the
``n_up`` new ones. The policy reads exactly their columns, scores them and evicts, through the same
:class:`~namm.cache.MemoryLayer` code that runs inside a model.

:func:`kept_mass` scores a policy on a trace by the attention its evictions take from later queries
(the proxy fitness of ``namm.evolution.proxy``). Output of :func:`replay`: ``scores.{u}.{l}`` float32,
``positions.{u}.{l}`` int64 (increasing per head) and ``keep.{u}.{l}`` bool, each ``[B, H, N]`` over the N
tokens in view (ragged heads are right-padded with position -1, score -inf, keep False).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .cache import MemoryLayer
from .io import atomic_write
from .policies import MemoryPolicy

__all__ = ["replay", "replay_file", "read_trace", "save_trace", "token_states", "kept_mass", "scored_rows"]

REQUIRED_META = ("n_up", "num_updates", "num_layers", "num_heads", "batch")


def read_trace(path: str | os.PathLike) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """Validated ``(meta, tensors)`` of a trace file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such trace file")
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
        missing = [k for k in REQUIRED_META if k not in raw]
        if missing:
            raise ValueError(f"{path}: trace metadata lacks {missing} (needs {list(REQUIRED_META)})")
        meta = {k: int(raw[k]) for k in REQUIRED_META + ("length",) if k in raw}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    b, h, n_up = meta["batch"], meta["num_heads"], meta["n_up"]
    for u in range(meta["num_updates"]):
        for l in range(meta["num_layers"]):
            name = f"attn.{u}.{l}"
            want = (b, h, n_up, (u + 1) * n_up)
            if name not in tensors:
                raise ValueError(f"{path}: missing tensor {name}")
            if tuple(tensors[name].shape) != want:
                raise ValueError(f"{path}: {name} has shape {tuple(tensors[name].shape)}, expected {want}")
    if "layers" in tensors and tuple(tensors["layers"].shape) != (meta["num_layers"],):
        raise ValueError(f"{path}: layers has shape {tuple(tensors['layers'].shape)}, expected ({meta['num_layers']},)")
    return meta, tensors


def save_trace(path: str | os.PathLike, meta: dict[str, int], tensors: dict[str, torch.Tensor]) -> Path:
    """Write a trace (atomically) that :func:`read_trace` reads back."""
    body = {k: v.contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(body, tmp, metadata={k: str(v) for k, v in meta.items()}))


def _pack(x: torch.Tensor, live: torch.Tensor, fill) -> torch.Tensor:
    """Gather the ``live`` slots of ``x`` ``[B, H, N]`` to the front, padded to the largest count."""
    n = int(live.sum(-1).max())
    idx = torch.argsort((~live).to(torch.int8), dim=-1, stable=True)[..., :n]
    return x.gather(-1, idx).masked_fill(~live.gather(-1, idx), fill)


def _walk(policy: MemoryPolicy, meta: dict[str, int], tensors: dict[str, torch.Tensor], on_update,
          rows: int | None = None, updates: int | None = None, states: dict | None = None, rows_from: int = 0) -> None:
    """Replay ``policy`` layer by layer, update by update; ``on_update(u, l, rows_attn, view) -> keep`` sees
    block ``u``'s attention over the tokens in view (``[B, H, r, N]``, zero at evicted columns; ``r = n_up``,
    or fewer where the trace keeps only its scored rows, see :func:`scored_rows`; ``None``
    before update ``rows_from``) and returns the ``[B, H, N]`` keep mask. ``rows``: replay a one-row trace
    ``rows`` times (e.g. one row per population member); ``updates``: stop after that many; ``states``
    (from :func:`token_states`): each token's state is read from there instead of observed."""
    if policy.n_up != meta["n_up"]:
        raise ValueError(f"policy n_up={policy.n_up} differs from the trace's n_up={meta['n_up']}")
    b, h, n_up = meta["batch"], meta["num_heads"], meta["n_up"]
    if rows is not None:
        if b != 1:
            raise ValueError(f"rows={rows} needs a one-row trace, this one has batch {b}")
        b = rows
    ids = tensors["layers"].tolist() if "layers" in tensors else list(range(meta["num_layers"]))
    for l in range(meta["num_layers"]):
        layer = MemoryLayer(policy, ids[l])  # the model's layer number: KeepWhole and other per-layer policies
        for u in range(meta["num_updates"] if updates is None else min(updates, meta["num_updates"])):
            dummy = torch.zeros(b, h, n_up, 1)
            layer.update(dummy, dummy)
            qpos = layer.mark_padding(None)  # [B, n_up]
            seen = None
            if u >= rows_from or (policy.needs_attention and states is None):
                # [B, H, r, (u+1) n_up]: r = n_up, or fewer in a trace cut to its scored rows (scored_rows)
                attn = tensors[f"attn.{u}.{l}"].float().expand(b, -1, -1, -1)
                n = layer.pos.shape[-1]
                cols = layer.pos.clamp_min(0)[:, :, None, :].expand(b, h, attn.shape[2], n)
                seen = attn.gather(-1, cols) * layer.valid[:, :, None, :]  # [B, H, r, N]
            if states is not None:
                idx = layer.pos.clamp_min(0)  # [B, H, N]: slot -> position (nothing here is padding)
                for name, full in states[u, l].items():  # [1, H, (u+1) n_up, ...]
                    ix = idx.reshape(*idx.shape, *([1] * (full.dim() - 3))).expand(*idx.shape, *full.shape[3:])
                    layer.state[name] = full.expand(b, *full.shape[1:]).gather(2, ix)
            elif policy.needs_attention and seen is not None:
                policy.observe(layer.state, seen, qpos)
            keep = on_update(u, l, seen, layer.view(torch.ones(b, dtype=torch.bool)))
            layer.drop(~keep)
            layer.compact()


@torch.no_grad()
def replay(policy: MemoryPolicy, meta: dict[str, int], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run ``policy`` over a trace; returns the output tensors described in the module doc."""
    out: dict[str, torch.Tensor] = {}

    def record(u: int, l: int, seen: torch.Tensor, view) -> torch.Tensor:
        scores = policy.scores(view).float()
        keep = policy.select(view)
        live = view.in_view
        out[f"scores.{u}.{l}"] = _pack(scores.masked_fill(~live, float("-inf")), live, float("-inf"))
        out[f"positions.{u}.{l}"] = _pack(view.pos, live, -1)
        out[f"keep.{u}.{l}"] = _pack(keep & live, live, False)
        return keep

    _walk(policy, meta, tensors, record)
    return out


@torch.no_grad()
def token_states(policy: MemoryPolicy, meta: dict[str, int], tensors: dict[str, torch.Tensor],
                 names: tuple[str, ...] | None = None) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
    """Every token's ``policy`` state after each update's observation, nothing evicted: ``{(u, l): {name:
    [B, H, (u+1) n_up, ...]}}`` (``names``: only these entries). In a replay the attention a token receives
    does not depend on what else was kept, so a policy whose state folds each token's own attention column
    (NAMM's spectrogram, H2O's sum) reaches these states under any evictions: population members can share
    them (``kept_mass(..., states=)``) instead of each observing the trace again."""
    out: dict[tuple[int, int], dict[str, torch.Tensor]] = {}

    def keep_all(u: int, l: int, seen, view) -> torch.Tensor:
        out[u, l] = {k: v.clone() for k, v in view.state.items() if names is None or k in names}
        return torch.ones_like(view.in_view)

    _walk(policy, meta, tensors, keep_all)
    return out


@torch.no_grad()
def kept_mass(policy: MemoryPolicy, meta: dict[str, int], tensors: dict[str, torch.Tensor], score_from: int,
              rows: int | None = None, states: dict | None = None,
              per_head: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``policy``'s evictions cost later queries, with no model: ``(mass [B], cache_fraction [B])``.

    ``mass``: the mean, over layers, heads and the queries at positions ``>= score_from`` (e.g. a
    continuation's target or an answer), of the full cache's attention they still find among the tokens the
    policy kept (1.0 = nothing they attend to was evicted; an evicted attention sink costs its whole share).
    Queries past the trace's ``length`` (a padded last block) are not counted. ``cache_fraction``: kept /
    seen, averaged over layers, heads and the updates before the last scored query, as
    :meth:`namm.cache.MemoryCache.cache_fraction` counts it. ``states``: see :func:`token_states` (only the
    attention of the scored blocks is read then). ``per_head``: ``mass`` is ``[B, L, H]``, each (layer, head)'s
    own mean (which heads the evictions cost most: ``namm.evaluation.heads.eviction_loss``).
    """
    n_up, length = meta["n_up"], meta.get("length", meta["num_updates"] * meta["n_up"])
    if not 0 <= score_from < length:
        raise ValueError(f"score_from={score_from} is outside the trace's {length} tokens")
    first, last = score_from // n_up, (length - 1) // n_up  # blocks holding scored queries
    b = rows if rows is not None else meta["batch"]
    n_scored = length - score_from  # the queries every layer and head scores
    mass_sum = torch.zeros(b, meta["num_layers"], meta["num_heads"])  # [B, L, H] kept attention, summed
    frac_sum = torch.zeros(b)
    frac_n = 0

    def step(u: int, l: int, seen: torch.Tensor | None, view) -> torch.Tensor:
        nonlocal frac_sum, frac_n
        if u >= first:
            assert seen is not None  # _walk reads the rows from update `first` on
            r = seen.shape[2]  # n_up rows, or a trace cut to its scored rows (scored_rows): they start here
            start = u * n_up if r == n_up else max(u * n_up, score_from)
            qp = start + torch.arange(r)
            scored = (qp >= score_from) & (qp < length)  # [r]
            mass_sum[:, l] += seen.sum(-1)[:, :, scored].sum(-1)  # [B, H]
        if u == last:  # nothing after it is scored: its own update does not matter
            return torch.ones_like(view.in_view)
        keep = policy.select(view) & view.in_view
        frac_sum = frac_sum + (keep.sum(-1).float() / view.seen[:, None].float()).mean(-1)  # [B]
        frac_n += 1
        return keep

    _walk(policy, meta, tensors, step, rows=rows, updates=last + 1, states=states, rows_from=first)
    frac = frac_sum / frac_n if frac_n else torch.ones(b)
    per = mass_sum / n_scored  # [B, L, H]
    return (per if per_head else per.mean((1, 2))), frac


def scored_rows(meta: dict[str, int], tensors: dict[str, torch.Tensor], score_from: int) -> dict[str, torch.Tensor]:
    """What :func:`kept_mass` (given ``states``) still reads of a trace: the blocks holding the queries at
    positions ``score_from .. length - 1``, cut to those rows. The same masses for a fraction of the memory
    (a 256-token continuation after a 1k context at n_up 512 keeps 256 of its block's 512 rows: the rest is
    padding). Take the spectrogram states first (:func:`token_states` reads every row)."""
    n_up = meta["n_up"]
    length = meta.get("length", meta["num_updates"] * n_up)
    out = {k: v for k, v in tensors.items() if not k.startswith("attn.")}
    for k, v in tensors.items():
        if not k.startswith("attn."):
            continue
        u = int(k.split(".")[1])
        lo, hi = max(score_from - u * n_up, 0), min(length - u * n_up, n_up)
        if hi > lo:
            out[k] = v if (lo, hi) == (0, n_up) else v[:, :, lo:hi].contiguous()
    return out


def replay_file(policy: MemoryPolicy, trace: str | os.PathLike, out: str | os.PathLike) -> Path:
    meta, tensors = read_trace(trace)
    result = replay(policy, meta, tensors)
    result = {k: v.contiguous() for k, v in result.items()}
    return atomic_write(out, lambda tmp: save_file(result, tmp, metadata={k: str(v) for k, v in meta.items()}))
