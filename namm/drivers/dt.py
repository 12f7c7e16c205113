"""Driving a Decision Transformer (HF ``DecisionTransformerModel``) one env step at a time under a memory policy.

HF's ``DecisionTransformerModel.forward`` takes no cache: it embeds a whole trajectory, interleaves
``(R_t, s_t, a_t)`` and runs its GPT-2 ``encoder``. The encoder itself does take a cache (each attention
calls ``cache.update`` then the attention interface), so :class:`DTStepper` drives the model's own
submodules (``embed_*``, ``embed_ln``, ``encoder``, ``predict_action``) incrementally with ONE
:class:`~namm.cache.MemoryCache` per episode batch: the core sees the token stream
``R_0 s_0 a_0 R_1 s_1 a_1 ...`` exactly as a language model sees text.

Token timing: at step ``t`` the DT predicts ``a_t`` from the ``s_t`` token, so the action token can only be
appended after the action is chosen. The stepper appends it lazily, in the same encoder call as the next
step's ``(R_{t+1}, s_{t+1})``; the core splits queries at every ``n_up`` boundary, so this is the same as
feeding one token at a time.

RL memory settings (:class:`DTMemoryDefaults`):

- ``n_up = 48`` tokens = 16 env steps. It must be a multiple of 3 so that every update falls right after an
  action token (whole ``(R, s, a)`` triples, eviction before the next return token), and a multiple of
  the NAMM STFT hop (16); 48 is the smallest such value. 16 steps is below the 20-step context the DTs
  are trained with, so the memory acts inside the span the model knows (1000 steps = 62 updates).
- ``budget = 0.5``: a fraction of tokens seen (as on the language side). An int budget is a token count,
  e.g. ``3 * 20 = 60`` tokens matches the memory of the 20-step window baseline.
- :class:`Window` is the HF example's evaluation: the last ``K = 20`` steps re-encoded every step, no
  cache (the "window" baseline; the model's own attention implementation is used).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from namm.adapters.decision_transformer import DECISION_TRANSFORMER
from namm.cache import MemoryCache
from namm.policies import MemoryPolicy

__all__ = ["DTMemoryDefaults", "DT_DEFAULTS", "TARGET_RETURNS", "Window", "DTStepper", "row_cache_fractions"]


@dataclass(frozen=True)
class DTMemoryDefaults:
    """Defaults for running a Decision Transformer under a memory policy (see the module docstring).

    Attributes:
        tokens_per_step: the DT's tokens per env step (R, s, a).
        update_steps: env steps between memory updates; ``n_up = tokens_per_step * update_steps``.
        budget: default cap, a fraction of tokens seen.
        context_steps: ``K`` of the window baseline (HF example / DT paper: 20).
        scale: returns-to-go are divided by this (HF example: 1000).
        max_ep_len: env steps per episode (D4RL / Gymnasium time limit).
    """

    tokens_per_step: int = 3
    update_steps: int = 16
    budget: float = 0.5
    context_steps: int = 20
    scale: float = 1000.0
    max_ep_len: int = 1000

    @property
    def n_up(self) -> int:
        return self.tokens_per_step * self.update_steps


DT_DEFAULTS = DTMemoryDefaults()

# Return to condition on (unscaled), per env: the DT paper's first (expert-level) targets.
TARGET_RETURNS: dict[str, float] = {"hopper": 3600.0, "halfcheetah": 12000.0, "walker2d": 5000.0}


@dataclass(frozen=True)
class Window:
    """The HF example's baseline: no cache, the last ``context`` env steps re-encoded at every step.

    Not a memory policy (it never evicts: it forgets by cropping its input), so it is a driver mode of
    :class:`DTStepper`, named like a policy in results (``window(K=20)``).
    """

    context: int = DT_DEFAULTS.context_steps
    name = "window"

    def __post_init__(self) -> None:
        if int(self.context) < 1:
            raise ValueError(f"window context must be >= 1 env step, got {self.context}")

    def describe(self) -> str:
        return f"window(K={self.context})"


def row_cache_fractions(cache: MemoryCache, batch: int) -> torch.Tensor:
    """``[B]`` per-row mean (over layers, updates, heads) of kept / seen at each update; 1.0 for a row
    that never reached an update. Same weighting as ``MemoryCache.cache_fraction`` for one row."""
    num = torch.zeros(batch)
    den = torch.zeros(batch)
    for layer in cache.layers:
        for h in layer.history:
            rows = h["rows"]
            frac = (h["kept"].float() / h["seen"][:, None].clamp_min(1).float()).mean(-1)  # [B]
            num += torch.where(rows, frac, torch.zeros_like(frac))
            den += rows.float()
    return torch.where(den > 0, num / den.clamp_min(1), torch.ones_like(num))


class DTStepper:
    """Feeds a Decision Transformer one env step at a time for a batch of episodes (rows).

    Usage per episode batch: ``reset(B)``; then each step ``a = act(states, alive)`` and
    ``record(a, rewards)``. Rows finish independently: a finished row (``alive`` False) keeps its
    cache row, its tokens are fed as padding (masked, not counted as seen) and its action is ignored.

    Args:
        model: a ``DecisionTransformerModel`` (eval mode).
        policy: a memory policy (one cache over the whole episode) or a :class:`Window` (the last
            ``context`` steps re-encoded each step, no cache).
        state_mean, state_std: ``[state_dim]`` state normalisation (defaults: 0 / 1).
        scale: returns-to-go scale (``R / scale`` is fed to the model).
        target_return: return to condition on, unscaled.
        device: where the model runs.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        policy: MemoryPolicy | Window,
        state_mean: np.ndarray | torch.Tensor | None = None,
        state_std: np.ndarray | torch.Tensor | None = None,
        scale: float = DT_DEFAULTS.scale,
        target_return: float = TARGET_RETURNS["hopper"],
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(policy, Window):
            self.mode, self.context, policy = "window", int(policy.context), None
        elif isinstance(policy, MemoryPolicy):
            self.mode, self.context = "cache", 0
        else:
            raise ValueError(f"policy must be a MemoryPolicy or a Window, got {policy!r}")
        mode = self.mode
        self.model, self.policy = model, policy
        self.device = torch.device(device)
        cfg = model.config
        self.state_dim, self.act_dim, self.max_t = int(cfg.state_dim), int(cfg.act_dim), int(cfg.max_ep_len)
        p = next(model.parameters())
        self.dtype = p.dtype

        def vec(x, fill: float) -> torch.Tensor:
            v = torch.full((self.state_dim,), fill) if x is None else torch.as_tensor(np.asarray(x)).reshape(-1)
            if v.numel() != self.state_dim:
                raise ValueError(f"state normalisation has {v.numel()} entries, the model's state_dim is {self.state_dim}")
            return v.to(self.device, torch.float32)

        self.state_mean, self.state_std = vec(state_mean, 0.0), vec(state_std, 1.0)
        self.scale, self.target_return = float(scale), float(target_return)
        self.adapter = DECISION_TRANSFORMER
        self._prev_attn = self.adapter.attach(model) if mode == "cache" else None
        self.cache: MemoryCache | None = None
        self.batch = 0

    # ---- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Restore the model's previous attention implementation."""
        if self._prev_attn is not None:
            self.adapter.detach(self.model, self._prev_attn)
            self._prev_attn = None

    def __enter__(self) -> "DTStepper":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def reset(self, batch: int) -> None:
        """Start ``batch`` new episodes (a fresh cache; returns-to-go at the target)."""
        dev = self.device
        self.batch = batch
        self.t = torch.zeros(batch, dtype=torch.long, device=dev)  # steps taken per row
        self.rtg = torch.full((batch,), self.target_return / self.scale, device=dev)
        self.alive = torch.ones(batch, dtype=torch.bool, device=dev)
        self.frac_sum = torch.zeros(batch)  # window mode: per-step context fraction
        self.frac_n = torch.zeros(batch)
        if self.mode == "cache":
            self.cache = self.adapter.new_cache(self.model, self.policy)
            self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (a, t, alive)
        else:
            self.cache = None
            self._hist: dict[str, torch.Tensor] = {
                "states": torch.zeros(batch, 0, self.state_dim, device=dev),
                "actions": torch.zeros(batch, 0, self.act_dim, device=dev),
                "rtg": torch.zeros(batch, 0, 1, device=dev),
                "timesteps": torch.zeros(batch, 0, dtype=torch.long, device=dev),
            }

    # ---- stepping --------------------------------------------------------------------------------
    def _norm_states(self, states) -> torch.Tensor:
        s = torch.as_tensor(np.asarray(states), dtype=torch.float32).to(self.device).reshape(self.batch, self.state_dim)
        return (s - self.state_mean) / self.state_std

    def _timestep(self, t: torch.Tensor) -> torch.Tensor:
        return t.clamp_max(self.max_t - 1)  # the timestep table has max_ep_len rows

    @torch.no_grad()
    def act(self, states: np.ndarray | torch.Tensor, alive: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Predict ``a_t`` ``[B, act_dim]`` from raw states ``[B, state_dim]`` (rows with ``alive`` False
        are padding: their output is meaningless)."""
        if self.batch == 0:
            raise RuntimeError("call reset(batch) first")
        alive = torch.ones(self.batch, dtype=torch.bool) if alive is None else torch.as_tensor(np.asarray(alive))
        self.alive = alive.to(self.device, torch.bool).reshape(self.batch)
        s = self._norm_states(states)
        if self.mode == "cache":
            a = self._act_cache(s)
        else:
            a = self._act_window(s)
        return a.float()

    def _act_cache(self, s: torch.Tensor) -> torch.Tensor:
        m, dt = self.model, self.dtype
        ts = m.embed_timestep(self._timestep(self.t))  # [B, H]
        toks = [m.embed_return(self.rtg[:, None].to(dt)) + ts, m.embed_state(s.to(dt)) + ts]
        real = [self.alive, self.alive]
        if self._pending is not None:  # a_{t-1}, chosen after the previous call
            a, t_prev, alive_prev = self._pending
            toks.insert(0, m.embed_action(a.to(dt)) + m.embed_timestep(self._timestep(t_prev)))
            real.insert(0, alive_prev)
            self._pending = None
        x = m.embed_ln(torch.stack(toks, dim=1))  # [B, q, H]
        q = x.shape[1]
        real_t = torch.stack(real, dim=1).long()  # [B, q]
        past = self.cache.get_seq_length()
        # the core reads only the last q columns (which new slots are padding); past ones are its own
        mask = torch.cat([real_t.new_ones(self.batch, past), real_t], dim=1)
        kw = {self.adapter.cache_kwarg(m): self.cache}
        out = m.encoder(inputs_embeds=x, attention_mask=mask, use_cache=True,
                        position_ids=torch.zeros(self.batch, q, dtype=torch.long, device=self.device), **kw)
        return m.predict_action(out.last_hidden_state[:, -1])  # the s_t token

    def _act_window(self, s: torch.Tensor) -> torch.Tensor:
        h, K, dev = self._hist, self.context, self.device
        h["states"] = torch.cat([h["states"], s[:, None]], 1)[:, -K:]
        h["actions"] = torch.cat([h["actions"], torch.zeros(self.batch, 1, self.act_dim, device=dev)], 1)[:, -K:]
        h["rtg"] = torch.cat([h["rtg"], self.rtg[:, None, None]], 1)[:, -K:]
        h["timesteps"] = torch.cat([h["timesteps"], self._timestep(self.t)[:, None]], 1)[:, -K:]
        k = h["states"].shape[1]
        # rows are in lockstep, so no row needs left padding: fewer than K steps are fed unpadded
        # (same outputs as the HF example's masked left padding)
        out = self.model(states=h["states"].to(self.dtype), actions=h["actions"].to(self.dtype),
                         returns_to_go=h["rtg"].to(self.dtype), timesteps=h["timesteps"],
                         attention_mask=torch.ones(self.batch, k, dtype=torch.long, device=dev), return_dict=True)
        live = self.alive.cpu()
        self.frac_sum += torch.where(live, k / (self.t.cpu().float() + 1), torch.zeros(self.batch))
        self.frac_n += live.float()
        return out.action_preds[:, -1]

    def record(self, actions: np.ndarray | torch.Tensor, rewards: np.ndarray | torch.Tensor) -> None:
        """Tell the stepper the actions executed ``[B, act_dim]`` and rewards received ``[B]`` this step."""
        a = torch.as_tensor(np.asarray(actions), dtype=torch.float32).to(self.device).reshape(self.batch, self.act_dim)
        r = torch.as_tensor(np.asarray(rewards), dtype=torch.float32).to(self.device).reshape(self.batch)
        if self.mode == "cache":
            self._pending = (a, self.t.clone(), self.alive.clone())
        else:
            self._hist["actions"][:, -1] = a
        self.rtg = self.rtg - torch.where(self.alive, r / self.scale, torch.zeros_like(r))
        self.t = self.t + self.alive.long()

    def cache_fractions(self) -> np.ndarray:
        """``[B]`` mean cache fraction per row so far. Cache mode: kept / seen at each update (as
        ``MemoryCache.cache_fraction``). Window mode: steps in context / steps seen, per step."""
        if self.mode == "cache":
            return row_cache_fractions(self.cache, self.batch).numpy()
        return torch.where(self.frac_n > 0, self.frac_sum / self.frac_n.clamp_min(1), torch.ones(self.batch)).numpy()
