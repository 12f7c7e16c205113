"""The RL fitness (``modality: rl``): members drive a Decision Transformer through Gym episodes.

Tasks are RL task ids (``hopper``, ...); each task's Decision Transformer is ``model.name`` with
``{env}`` filled in (default ``dt-{env}-medium``, the zoo's). Items are episode seeds: every generation
draws ``data.<task>.samples`` consecutive seeds (the same for every member), and a member's score on a
task is the mean D4RL-normalised return of those episodes under its NAMM; the full cache's returns are
computed once per seed. ``namm.n_up`` must be a multiple of 3 (whole return/state/action steps).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from namm import models
from namm.evaluation.rl import rollout
from namm.features import RunningStats
from namm.policies import FullCache

from .config import EvolveConfig
from .dist import Dist
from .fitness import Fitness, split_nonfinite

__all__ = ["RLFitness"]


class RLFitness(Fitness):
    task_kind = "rl"

    def __init__(self, cfg: EvolveConfig, dist: Dist, **_: Any) -> None:
        if cfg.namm.n_up % 3:
            raise ValueError(f"namm.n_up={cfg.namm.n_up}: the RL fitness needs a multiple of 3 (whole steps), e.g. 48")
        self.cfg, self.dist = cfg, dist
        spec = cfg.model.name if "{env}" in cfg.model.name else "dt-{env}-medium"
        self.device = "cpu" if cfg.model.device == "auto" and not torch.cuda.is_available() else \
            ("cuda" if cfg.model.device == "auto" else cfg.model.device)
        self.dts = {t: models.load(spec.format(env=t), "dt", device=self.device) for st in cfg.stages for t in st.tasks}
        self.refs: dict[str, dict[int, float]] = {t: {} for t in self.dts}

    def state_dict(self) -> dict:
        return {"refs": self.refs}

    def load_state_dict(self, state: dict) -> None:
        self.refs = {t: dict(state.get("refs", {}).get(t, {})) for t in self.dts}

    def batch(self, tasks: Sequence[str], generation: int) -> dict[str, list[int]]:
        out = {}
        for t in tasks:
            d = self.cfg.data[t]
            base = d.seed * 1_000_000 + generation * d.samples
            out[t] = list(range(base, base + d.samples))
        return out

    def _returns(self, task: str, policy, seeds: list[int]) -> tuple[list[float], float]:
        model, norm = self.dts[task]
        kw: dict[str, Any] = {}
        if norm is not None:
            kw = {"state_mean": norm.state_mean, "state_std": norm.state_std, "target_return": norm.target_return,
                  **({"scale": norm.scale} if norm.scale else {})}
        r = rollout(task, model, policy, episodes=len(seeds), seed=seeds[0], n_envs=len(seeds), progress=False,
                    device=self.device, max_ep_len=self.cfg.data[task].max_steps, **kw)
        return r["normalized_returns"], r["mean_cache_fraction"]

    def reference_scores(self, batch: dict[str, list[int]]) -> dict[str, float]:
        for t, seeds in batch.items():
            missing = [s for s in seeds if s not in self.refs[t]]
            if missing:  # consecutive seeds: one rollout of the missing run of episodes
                rets, _ = self._returns(t, FullCache(n_up=self.cfg.namm.n_up), missing)
                self.refs[t].update(zip(missing, rets))
        return {t: float(np.mean([self.refs[t][s] for s in seeds])) for t, seeds in batch.items()}

    def collect_stats(self, batch, make_policy) -> tuple[torch.Tensor, torch.Tensor]:
        template = make_policy(None)
        total = RunningStats(template.spectral.n_freq)
        for t, seeds in batch.items():
            stats = RunningStats(template.spectral.n_freq)
            self._returns(t, make_policy(torch.zeros(template.net.num_params), stats=stats), seeds)
            total.merge(stats)
        return total.result()

    def evaluate(self, members: list[int], params: torch.Tensor, batch: dict[str, list[int]], make_policy) -> list[dict]:
        out, todo = split_nonfinite(members, params)
        for m in todo:
            try:
                scores, fracs = {}, []
                for t, seeds in batch.items():
                    rets, frac = self._returns(t, make_policy(params[m]), seeds)
                    scores[t] = float(np.mean(rets))
                    fracs.append(frac)
                out[m] = {"scores": scores, "cache_fraction": float(np.mean(fracs))}
            except Exception as e:  # a broken member gets the worst fitness; the run goes on
                out[m] = {"error": f"{type(e).__name__}: {e}"}
        return [out[m] for m in members]
