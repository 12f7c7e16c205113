"""Record what a model attends to, as a replay trace (:mod:`namm.replay`'s format), in one full-cache pass.

    meta, tensors = record(model, token_ids, n_up=64)
    mass, fraction = namm.replay.kept_mass(policy, meta, tensors, score_from=len(prompt))

A trace holds, for every layer the policy manages (the full-attention layers of a hybrid model), the
post-softmax attention of every query over every earlier token, averaged over each KV head's query heads
and cut into ``n_up`` blocks; a last partial block is zero-padded (``length`` says where the tokens end).
Policies then replay on it with no model: what :mod:`namm.evolution.proxy` evolves on.

Step in the data flow: above the memory core (``namm.memory``, ``namm.cache``); below evolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import torch

from namm.cache import active_layer
from namm.memory import memory
from namm.policies import MemoryPolicy

__all__ = ["record"]


@dataclass(frozen=True)
class _Recorder(MemoryPolicy):
    """Keeps everything and copies each managed layer's attention rows into ``sink`` (layer -> rows)."""

    sink: dict = field(default_factory=dict, compare=False, hash=False)

    name: ClassVar[str] = "record"
    needs_attention: ClassVar[bool] = True
    evicts: ClassVar[bool] = False

    def select(self, view) -> torch.Tensor:
        return torch.ones_like(view.in_view)

    def observe(self, state, attn: torch.Tensor, qpos: torch.Tensor) -> None:
        layer = active_layer()
        if layer is None or not layer.managed:
            return
        # batch 1 and nothing evicted: slot j holds position j; qpos says which queries these rows are
        self.sink.setdefault(layer.layer_idx, []).append((qpos[0].clone(), attn[0, :, :, : layer.n].clone()))


@torch.no_grad()
def record(model, ids: Sequence[int], n_up: int, dtype: torch.dtype = torch.float16) -> tuple[dict, dict]:
    """``(meta, tensors)`` of the trace of token ``ids`` (one sequence) through ``model`` with the full
    cache; ``tensors["attn.{u}.{l}"]`` ``[1, H, n_up, (u+1) n_up]`` in ``dtype``, ``tensors["layers"]`` ``[L]``
    the model layer each trace layer ``l`` is."""
    if len(ids) < 1:
        raise ValueError("record: no tokens")
    rec = _Recorder(n_up=n_up)
    with memory(model, rec) as mem:
        mem.forward(input_ids=torch.tensor([list(ids)], device=model.device), logits_to_keep=1)
    if not rec.sink:
        raise ValueError("record: the model ran no managed attention layer through the memory cache")
    t = len(ids)
    blocks = -(-t // n_up)
    tensors: dict[str, torch.Tensor] = {}
    heads = 0
    for l, layer_idx in enumerate(sorted(rec.sink)):
        parts = rec.sink[layer_idx]
        heads = parts[0][1].shape[0]
        dense = torch.zeros(heads, blocks * n_up, blocks * n_up, dtype=dtype)  # [H, T_pad, T_pad]
        for qpos, rows in parts:
            real = qpos >= 0
            dense[:, qpos[real].cpu(), : rows.shape[-1]] = rows[:, real.to(rows.device)].to("cpu", dtype)
        for u in range(blocks):
            tensors[f"attn.{u}.{l}"] = dense[None, :, u * n_up:(u + 1) * n_up, :(u + 1) * n_up].clone()
    # the model's own layer numbers (a hybrid's full layers 5, 11, 17): per-layer policies replay as they ran
    tensors["layers"] = torch.tensor(sorted(rec.sink), dtype=torch.int64)
    meta = {"n_up": n_up, "num_updates": blocks, "num_layers": len(rec.sink), "num_heads": heads, "batch": 1,
            "length": t}
    return meta, tensors

