"""What evolution optimises, injected: a :class:`Fitness` scores NAMM parameter vectors on one modality's
tasks; the CMA-ES loop (:mod:`.loop`) never knows whether members generate text, answer video questions
or drive a Decision Transformer.

Fitnesses are registered by name (``modality:`` in the evolve config picks one):

    register_fitness("rl", "my_pkg.rl_fitness:RLFitness", task_kind="rl")

A member's fitness is the mean over the stage's tasks of :func:`task_fitness` (its score divided by the
full cache's on the same items), minus the optional memory penalty; the loop computes that from what
:meth:`Fitness.evaluate` returns.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

__all__ = ["Fitness", "FitnessEntry", "FITNESSES", "register_fitness", "make_fitness", "task_fitness", "WORST_FITNESS",
           "split_nonfinite"]

WORST_FITNESS = -1.0  # a failed member (exception, NaN/inf): below every valid fitness (those are >= 0)

# params [rows, P] (or None: the full cache), optional RunningStats -> a policy for one forward pass
MakePolicy = Callable[..., Any]


class Fitness:
    """The contract between the CMA-ES loop and a modality. Constructed as ``cls(cfg, dist, **objects)``
    (``objects``: e.g. an already loaded ``model`` and ``tokenizer``), on every rank.

    Items are whatever a task evaluates (prompts, questions, episodes), named by ints: ``batch`` maps each
    task of a stage to this generation's item indices, the same on every rank and for every member.
    """

    task_kind: str = "text"

    def batch(self, tasks: Sequence[str], generation: int) -> dict[str, list[int]]:
        raise NotImplementedError

    def reference_scores(self, batch: dict[str, list[int]]) -> dict[str, float]:
        """The full cache's score per task on ``batch`` (0..100)."""
        raise NotImplementedError

    def collect_stats(self, batch: dict[str, list[int]], make_policy: MakePolicy) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen normalisation ``(mean, var)`` ``[n_freq]``: run ``make_policy(zeros, stats=RunningStats)``
        (evicts nothing) over ``batch`` and return the statistics it collected."""
        raise NotImplementedError

    def evaluate(self, members: list[int], params: torch.Tensor, batch: dict[str, list[int]],
                 make_policy: MakePolicy) -> list[dict]:
        """Per member (rows of ``params [M, P]``): ``{"scores": {task: 0..100}, "cache_fraction": f}``, or
        ``{"error": str}`` for a member that failed (the others go on)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What must survive a resume (e.g. cached full-cache predictions)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass(frozen=True)
class FitnessEntry:
    name: str
    entry_point: str | type
    task_kind: str


FITNESSES: dict[str, FitnessEntry] = {}


def register_fitness(name: str, entry_point: str | type, task_kind: str = "text") -> FitnessEntry:
    """Make a :class:`Fitness` available as ``modality: name`` in evolve configs."""
    FITNESSES[name] = FitnessEntry(name, entry_point, task_kind)
    return FITNESSES[name]


def make_fitness(cfg, dist, **objects: Any) -> Fitness:
    e = FITNESSES[cfg.modality]
    cls = e.entry_point
    if isinstance(cls, str):
        module, _, attr = cls.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    return cls(cfg, dist, **objects)


def split_nonfinite(members: Sequence[int], params: torch.Tensor) -> tuple[dict[int, dict], list[int]]:
    """``({member: error entry}, members to evaluate)``: members whose ``params`` row has a NaN or inf fail
    up front, the others are left for :meth:`Fitness.evaluate` to run."""
    bad = {m: {"error": "non-finite parameters"} for m in members if not bool(torch.isfinite(params[m]).all())}
    return bad, [m for m in members if m not in bad]


def task_fitness(score: float, reference: float, min_reference: float = 1e-6) -> float:
    """One task's fitness: ``score / reference`` (1.0 = as good as the full cache; scores are 0..100).

    When the full cache scores (almost) zero on the sampled items the ratio is undefined; then the
    fitness is ``1 + (score - reference) / 100``: the same "1 = matches the full cache" scale, and
    every point the member gains over the full cache still counts.
    """
    if reference >= min_reference and reference > 0:
        return score / reference
    return 1.0 + (score - reference) / 100.0


register_fitness("language", "namm.evolution.language:LanguageFitness", task_kind="text")
register_fitness("rl", "namm.evolution.rl:RLFitness", task_kind="rl")
register_fitness("attention_proxy", "namm.evolution.proxy:AttentionProxyFitness", task_kind="text")
