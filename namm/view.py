"""What a memory policy sees of one layer at one update: exactly the tensors it may read, nothing of the cache.

Step in the data flow: cache -> **view** -> policy (scores) -> selection -> cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["View"]


@dataclass
class View:
    """One update of one layer, for the rows that reached an update boundary.

    Attributes:
        layer_idx: the transformer layer (some policies treat early layers differently).
        pos: ``[B, H, N]`` int64 absolute position of each slot (-1 = padding or evicted).
        keys: ``[B, H, N, D]`` cached keys (after RoPE, at their original positions).
        state: per-token policy state, name -> ``[B, H, N, ...]`` (see ``MemoryPolicy.token_state``).
        rows: ``[B]`` bool, rows that reached an update boundary now.
        in_view: ``[B, H, N]`` bool, live tokens of those rows up to and including the newest.
        newest: ``[B, H, N]`` bool, the newest token of each updating row (always kept).
        newest_pos: ``[B]`` int64 position of the newest token per row.
        seen: ``[B]`` int64 tokens seen per row at this update (= newest_pos + 1).
    """

    layer_idx: int
    pos: torch.Tensor
    keys: torch.Tensor
    state: dict[str, torch.Tensor]
    rows: torch.Tensor
    in_view: torch.Tensor
    newest: torch.Tensor
    newest_pos: torch.Tensor
    seen: torch.Tensor
