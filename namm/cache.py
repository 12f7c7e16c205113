"""The KV cache a memory policy manages, as a transformers ``Cache``.

Step in the data flow: selection -> **cache** (and the cache hands keys/values back to attention, and a
:class:`~namm.view.View` of itself to the policy at every update).

Storage is padded and ragged: every (row, head) holds its own set of tokens. Per layer:

- ``keys``, ``values`` ``[B, H, N, D]``: the slots, in increasing position order among valid slots;
- ``pos`` ``[B, H, N]`` int64: the absolute position of each slot (the count of real tokens before
  it in its row; padding has -1). Keys keep the RoPE of this position forever: they are never re-rotated;
- ``valid`` ``[B, H, N]`` bool: slot holds a live token (not padding, not evicted);
- ``state[name]`` ``[B, H, N, ...]``: per-token state of the policy (spectrogram carry, accumulated
  attention, ...), gathered with the same indices as K/V at each compaction. The buffers' slots past the
  ``N`` in use are always zero (allocated so, zeroed when compaction frees them), so an appended token's
  state starts at zero without a write per step.

After each eviction the layer compacts: every (row, head) moves its live slots to the front and the
storage is cut to the largest live count, so memory follows the kept tokens, not the most ever seen.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Sequence

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from .view import View

if TYPE_CHECKING:
    from .policies.base import MemoryPolicy

__all__ = ["MemoryLayer", "MemoryCache", "current_layer", "active_layer"]

# The layer whose ``update`` ran last. HF attention modules call ``cache.update`` immediately before
# the attention function, which reads this to find its layer without any patching of model code.
_CURRENT: ContextVar["MemoryLayer | None"] = ContextVar("namm_current_layer", default=None)


def active_layer() -> "MemoryLayer | None":
    """The memory layer whose attention is running now (for analysis hooks inside ``observe``)."""
    return _CURRENT.get()


def current_layer(key: torch.Tensor) -> "MemoryLayer | None":
    """The memory layer that produced ``key`` in this forward pass, or ``None`` (no memory cache)."""
    layer = _CURRENT.get()
    return layer if layer is not None and layer.keys is key else None


class SlotState(dict):
    """A layer's per-token policy state: name -> ``[B, H, N, ...]`` views of the layer's buffers. Assigning
    an entry writes into the buffer (policies may reassign, ``state[k] = f(state[k])``), so the state stays
    gathered with the keys at every compaction."""

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        if name in self:
            cur = dict.__getitem__(self, name)
            if value is not cur:
                cur.copy_(value)
            return
        dict.__setitem__(self, name, value)


_STATE = "state."  # prefix of the policy-state buffers among a layer's storage


def _round_up(n: int, k: int = 64) -> int:
    return (n + k - 1) // k * k


class MemoryLayer(CacheLayerMixin):
    """One transformer layer's ragged KV cache under a memory policy.

    Storage is pre-allocated per layer and grown by a quarter when full (amortised O(1) appends, no
    per-token ``torch.cat``); ``keys``, ``values``, ``pos``, ``valid`` and ``state`` are views of the first
    ``n`` slots, and compaction moves the live slots to the front in place. A sliding-window layer of a
    hybrid model (``window`` set) keeps its own semantics: the attention masks it to the ``window`` newest
    positions and its policy (a recency window of that many tokens) drops the rest at each update; it is
    not ``managed``, so it stays out of the cache statistics of the policy.
    """

    is_compileable = False
    keys: torch.Tensor  # never None here (the mixin allows it before the first update)
    values: torch.Tensor

    def __init__(self, policy: "MemoryPolicy", layer_idx: int, window: int | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.layer_idx = layer_idx
        self.window = window
        self.is_sliding = window is not None
        self.managed = window is None
        self.n = 0  # slots in use
        self.all_valid = True  # every slot in use holds a live token (masks can then be built by index)
        self._buf: dict[str, torch.Tensor] = {}
        self.keys = self.values = self.pos = self.valid = torch.empty(0)
        self.state: SlotState = SlotState()
        self.seen = torch.zeros(0, dtype=torch.long)  # [B] real tokens seen
        self.slots = 0  # slots seen, padding included (what HF calls the sequence length)
        self.pending = 0  # slots appended by the last update, not yet classified by the attention
        self.history: list[dict] = []  # one entry per update: seen, kept per head (for statistics)
        self.listeners: list = []  # fn(layer, view) called after every eviction (analysis, heat-maps)

    # ---- storage ----------------------------------------------------------------------------------
    def _views(self) -> None:
        n, b = self.n, self._buf
        self.keys, self.values = b["keys"][:, :, :n], b["values"][:, :, :n]
        self.pos, self.valid = b["pos"][:, :, :n], b["valid"][:, :, :n]
        st = SlotState()
        for name in self.policy.token_state():
            dict.__setitem__(st, name, b[_STATE + name][:, :, :n])
        self.state = st

    def _reserve(self, need: int) -> None:
        """Room for ``need`` slots (grows by at least a quarter: amortised O(1) per appended token)."""
        cap = self._buf["pos"].shape[2]
        if need <= cap:
            return
        new_cap = _round_up(max(need, cap + cap // 4))
        for name, t in self._buf.items():
            shape = (t.shape[0], t.shape[1], new_cap, *t.shape[3:])
            grown = t.new_zeros(shape) if name.startswith(_STATE) else t.new_empty(shape)  # state: zero past n
            grown[:, :, : self.n] = t[:, :, : self.n]
            self._buf[name] = grown

    # ---- transformers CacheLayerMixin contract -------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, q, d = key_states.shape
        dev = key_states.device
        self.dtype, self.device = key_states.dtype, dev
        cap = _round_up(q)
        self._buf = {
            "keys": key_states.new_empty(b, h, cap, d),
            "values": value_states.new_empty(b, h, cap, value_states.shape[-1]),
            "pos": torch.empty(b, h, cap, dtype=torch.long, device=dev),
            "valid": torch.empty(b, h, cap, dtype=torch.bool, device=dev),
            **{_STATE + name: torch.zeros(b, h, cap, *shape, dtype=torch.float32, device=dev)
               for name, shape in self.policy.token_state().items()},
        }
        self.seen = torch.zeros(b, dtype=torch.long, device=dev)
        self.is_initialized = True
        self._views()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``q`` new tokens ``[B, H, q, D]``; returns all stored keys/values ``[B, H, N, D]``.

        New tokens are provisionally real; :meth:`mark_padding` (called by the attention function,
        which sees the padding mask) corrects left-padding slots.
        """
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        q = key_states.shape[2]
        n = self.n
        self._reserve(n + q)
        b = self._buf
        b["keys"][:, :, n : n + q] = key_states
        b["values"][:, :, n : n + q] = value_states
        if q == 1:  # a decode step: fewer ops (they, not the bytes, are what a small model's decode pays for)
            b["pos"][:, :, n] = self.seen[:, None]
        else:
            b["pos"][:, :, n : n + q] = (self.seen[:, None] + torch.arange(q, device=self.seen.device))[:, None, :]
        b["valid"][:, :, n : n + q] = True  # their state slots are zero already (module docstring)
        self.n = n + q
        self._views()
        self.seen = self.seen + q
        self.slots += q
        self.pending = q
        _CURRENT.set(self)
        return self.keys, self.values
    def get_seq_length(self, *args, **kwargs) -> int:
        return self.slots

    def get_mask_sizes(self, query, *args, **kwargs) -> tuple[int, int]:  # type: ignore[override]
        # transformers >= 5.24 passes the query length, 5.17 the cache_position tensor
        q = int(query.shape[-1]) if isinstance(query, torch.Tensor) else int(query)
        return self.slots + q, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        raise NotImplementedError("a memory cache cannot be reset in place: create a new one per sequence")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("beam search is not supported with a memory policy (use greedy or sampling)")

    def crop(self, max_length: int) -> None:
        raise NotImplementedError("a memory cache cannot be cropped (assisted decoding is not supported)")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("num_return_sequences > 1 is not supported with a memory policy")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("batch selection is not supported with a memory policy")

    # ---- used by the attention function ---------------------------------------------------------
    def mark_padding(self, real: torch.Tensor | None) -> torch.Tensor:
        """Classify the ``pending`` newest slots with ``real`` ``[B, q]`` (False = padding).

        Returns ``[B, q]`` int64: the absolute position of each new query (-1 for padding).
        """
        q = self.pending
        self.pending = 0
        base = self.seen - q  # [B] tokens seen before this step
        if real is None or bool(real.all()):
            return base[:, None] + torch.arange(q, device=base.device)
        real = real.to(self.valid.device)
        qpos = torch.where(real, base[:, None] + real.long().cumsum(-1) - 1, torch.full_like(base[:, None], -1))
        self.pos[:, :, -q:] = qpos[:, None, :]
        self.valid[:, :, -q:] = real[:, None, :]
        self.seen = base + real.long().sum(-1)
        self.all_valid = False  # padding slots until the next compaction
        return qpos

    def view(self, rows: torch.Tensor, newest_pos: torch.Tensor | None = None) -> View:
        """The tokens an update at ``rows`` ``[B]`` decides on: live ones up to ``newest_pos`` ``[B]``
        (default: the newest token seen; inside a chunk, the query at the boundary)."""
        newest_pos = self.seen - 1 if newest_pos is None else newest_pos
        in_view = self.valid & (self.pos <= newest_pos[:, None, None]) & rows[:, None, None]
        newest = in_view & (self.pos == newest_pos[:, None, None])
        return View(layer_idx=self.layer_idx, pos=self.pos, keys=self.keys, state=self.state, rows=rows,
                    in_view=in_view, newest=newest, newest_pos=newest_pos, seen=newest_pos + 1)

    def evict(self, rows: torch.Tensor, newest_pos: torch.Tensor | None = None) -> None:
        """Run the policy for ``rows`` ``[B]`` at ``newest_pos`` ``[B]`` and hide the tokens it drops
        (compaction comes later)."""
        view = self.view(rows, newest_pos)
        keep = self.policy.select(view)
        self.drop(~keep)
        kept = (self.valid & view.in_view).sum(-1)  # [B, H]
        self.history.append({"rows": rows.cpu(), "seen": view.seen.cpu(), "kept": kept.cpu()})
        for fn in self.listeners:
            fn(self, view)

    def drop(self, evict: torch.Tensor) -> None:
        """Hide the slots where ``evict`` ``[B, H, N]`` is True (compaction comes later)."""
        if bool(evict.any()):
            self.valid &= ~evict
            self.all_valid = False

    def compact(self) -> None:
        """Move each (row, head)'s live slots to the front, in place, and cut the rest."""
        if self.all_valid:
            return
        live = self.valid
        n_live = int(live.sum(-1).max()) if live.numel() else 0
        if n_live == live.shape[-1]:
            self.all_valid = bool(live.all())
            return
        # stable sort puts live slots first and keeps their (position) order
        idx = torch.argsort((~live).to(torch.int8), dim=-1, stable=True)[..., :n_live]  # [B,H,n]
        for name, t in self._buf.items():
            cur = t[:, :, : self.n]
            ix = idx.reshape(*idx.shape, *([1] * (t.dim() - 3))).expand(*idx.shape, *t.shape[3:])
            t[:, :, :n_live] = cur.gather(2, ix)
            if name.startswith(_STATE):
                t[:, :, n_live : self.n] = 0.0  # the slots the next tokens take start from a zero state
        self.n = n_live
        self._views()
        self.pos.masked_fill_(~self.valid, -1)
        self.all_valid = bool(self.valid.all())


class MemoryCache(Cache):
    """A ``transformers`` Cache whose every layer is a :class:`MemoryLayer` under one policy.

    Pass it to ``model(...)`` / ``model.generate(...)`` (or use :func:`namm.memory`).
    """

    def __init__(self, policy: "MemoryPolicy", num_layers: int,
                 windows: "Sequence[int | None] | None" = None) -> None:
        """``windows``: per layer, the sliding window of a hybrid model's sliding layers (``None`` = full
        attention, managed by ``policy``)."""
        from .policies.recency import Recency

        windows = list(windows) if windows is not None else [None] * num_layers
        if len(windows) != num_layers:
            raise ValueError(f"{len(windows)} layer windows for {num_layers} layers")
        layers = [MemoryLayer(policy, i) if w is None else MemoryLayer(Recency(n_up=policy.n_up, budget=int(w)), i, w)
                  for i, w in enumerate(windows)]
        super().__init__(layers=list(layers))
        self.policy = policy
        self.memory_layers: list[MemoryLayer] = layers

    def add_listener(self, fn) -> None:
        """Call ``fn(layer, view)`` after every eviction of every managed layer (``layer.valid`` is already
        updated; compaction has not run yet)."""
        for layer in self.memory_layers:
            if layer.managed:
                layer.listeners.append(fn)

    # ---- statistics ----------------------------------------------------------------------------
    def _scope(self, scope: str) -> list[MemoryLayer]:
        if scope not in ("managed", "all"):
            raise ValueError(f"scope must be 'managed' or 'all', got {scope!r}")
        return [l for l in self.memory_layers if scope == "all" or l.managed]

    def cache_fraction(self, row: int | None = None, scope: str = "managed") -> float:
        """Mean over layers, heads, updates (and rows, or one ``row``) of kept tokens / tokens seen;
        1.0 before any update. ``scope``: the layers the policy manages, or ``"all"`` (a hybrid model's
        sliding layers too)."""
        fr = []
        for layer in self._scope(scope):
            for h in layer.history:
                rows = h["rows"].clone()
                if row is not None:
                    rows[torch.arange(rows.numel()) != row] = False
                if rows.any():
                    fr.append((h["kept"][rows].float() / h["seen"][rows, None].float()).flatten())
        return float(torch.cat(fr).mean()) if fr else 1.0

    def kv_bytes(self, scope: str = "all") -> int:
        """Bytes held now by keys and values (padded storage), of all layers or the ``"managed"`` ones."""
        return sum(
            l.keys.numel() * l.keys.element_size() + l.values.numel() * l.values.element_size()
            for l in self._scope(scope)
            if l.is_initialized
        )

    def live_tokens(self) -> list[torch.Tensor]:
        """Per layer, ``[B, H]`` live tokens now."""
        return [l.valid.sum(-1) for l in self.memory_layers if l.is_initialized]
