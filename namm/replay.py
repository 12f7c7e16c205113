"""Replay a policy on recorded attention, with no model: for studying and debugging a NAMM offline.

Trace (safetensors): metadata ``n_up``, ``num_updates`` U, ``num_layers`` L, ``num_heads`` H, ``batch``
B; tensors ``attn.{u}.{l}`` ``[B, H, n_up, (u+1) n_up]``: the post-softmax attention the queries at
positions ``u n_up .. (u+1) n_up - 1`` give every position ``0 .. (u+1) n_up - 1`` (GQA-averaged).

Each (layer, head) starts empty; at update ``u`` the tokens in view are the ones it retained plus the
``n_up`` new ones. The policy reads exactly their columns, scores them and evicts, through the same
:class:`~namm.cache.MemoryLayer` code that runs inside a model.

Output: ``scores.{u}.{l}`` float32, ``positions.{u}.{l}`` int64 (increasing per head) and
``keep.{u}.{l}`` bool, each ``[B, H, N]`` over the N tokens in view (ragged heads are right-padded
with position -1, score -inf, keep False).
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

__all__ = ["replay", "replay_file", "read_trace"]

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
        meta = {k: int(raw[k]) for k in REQUIRED_META}
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
    return meta, tensors


def _pack(x: torch.Tensor, live: torch.Tensor, fill) -> torch.Tensor:
    """Gather the ``live`` slots of ``x`` ``[B, H, N]`` to the front, padded to the largest count."""
    n = int(live.sum(-1).max())
    idx = torch.argsort((~live).to(torch.int8), dim=-1, stable=True)[..., :n]
    return x.gather(-1, idx).masked_fill(~live.gather(-1, idx), fill)


@torch.no_grad()
def replay(policy: MemoryPolicy, meta: dict[str, int], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run ``policy`` over a trace; returns the output tensors described in the module doc."""
    if policy.n_up != meta["n_up"]:
        raise ValueError(f"policy n_up={policy.n_up} differs from the trace's n_up={meta['n_up']}")
    b, h, n_up = meta["batch"], meta["num_heads"], meta["n_up"]
    out: dict[str, torch.Tensor] = {}
    for l in range(meta["num_layers"]):
        layer = MemoryLayer(policy, l)
        for u in range(meta["num_updates"]):
            dummy = torch.zeros(b, h, n_up, 1)
            layer.update(dummy, dummy)
            qpos = layer.mark_padding(None)  # [B, n_up]
            attn = tensors[f"attn.{u}.{l}"].float()  # [B, H, n_up, (u+1) n_up]
            n = layer.pos.shape[-1]
            cols = layer.pos.clamp_min(0)[:, :, None, :].expand(b, h, n_up, n)
            rows = attn.gather(-1, cols) * layer.valid[:, :, None, :]  # [B, H, n_up, N]
            if policy.needs_attention:
                policy.observe(layer.state, rows, qpos)
            view = layer.view(torch.ones(b, dtype=torch.bool))
            scores = policy.scores(view).float()
            keep = policy.select(view)
            live = view.in_view
            out[f"scores.{u}.{l}"] = _pack(scores.masked_fill(~live, float("-inf")), live, float("-inf"))
            out[f"positions.{u}.{l}"] = _pack(layer.pos, live, -1)
            out[f"keep.{u}.{l}"] = _pack(keep & live, live, False)
            layer.drop(~keep)
            layer.compact()
    return out


def replay_file(policy: MemoryPolicy, trace: str | os.PathLike, out: str | os.PathLike) -> Path:
    meta, tensors = read_trace(trace)
    result = replay(policy, meta, tensors)
    result = {k: v.contiguous() for k, v in result.items()}
    return atomic_write(out, lambda tmp: save_file(result, tmp, metadata={k: str(v) for k, v in meta.items()}))
