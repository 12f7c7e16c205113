"""The language fitness: members generate answers (or score the gold answer's likelihood) on text tasks.

Per generation, each task draws ``data.<task>.samples`` prompts (seeded by the generation: every member
sees the same). The full cache's predictions are computed once per prompt and cached (they go into the
run's state). Rows of one forward pass are ``(member, prompt)`` pairs of ONE task, ``run.batch_size`` at
a time; with ``run.batched_population`` several members share a pass (``params`` ``[rows, P]``).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from namm.drivers.text import generate, pad_id, stop_ids, token_logprobs
from namm.features import RunningStats
from namm.policies import FullCache
from namm.tasks import TextTask
from namm.tasks import make as make_task
from namm.tasks.longbench import truncate_middle

from .config import ConfigError, EvolveConfig, ModelConfig
from .dist import Dist
from .fitness import Fitness, split_nonfinite

__all__ = ["LanguageFitness", "TaskData", "load_tasks", "resolve_device", "load_model"]


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{local_rank}"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device: {spec!r} but no CUDA device is visible; use model.device=cpu")
    return torch.device(spec)


def load_model(mc: ModelConfig, device: torch.device):
    """``(model, tokenizer)`` of ``model.name`` through the model registry (``tiny-random`` builds the small
    random Llama with a character tokenizer; ``zoo`` the shipped zoo LM; folders and hub ids load with
    ``from_pretrained``, the RoPE override applied first)."""
    from namm import models

    kw: dict[str, Any] = {"rope_theta": mc.rope_theta, "max_positions": mc.max_position_embeddings}
    if mc.name == "tiny-random":
        kw["seed"] = mc.seed
    if mc.tokenizer:
        kw["tokenizer"] = mc.tokenizer
    return models.load(mc.name, "lm", device=device, dtype=getattr(torch, mc.dtype), **kw)


@dataclass
class TaskData:
    """One task's examples and its prompts (token ids, middle-truncated, tokenised lazily)."""

    name: str
    task: TextTask
    examples: list[dict]
    samples: int
    max_prompt_tokens: int
    max_new_tokens: int
    _tokens: dict[int, list[int]] = field(default_factory=dict)

    def prompt(self, i: int, tokenizer) -> list[int]:
        if i not in self._tokens:
            text = self.task.prompt(self.examples[i], tokenizer)
            ids = list(tokenizer.encode(text, add_special_tokens=not self.task.chat_wrapped(tokenizer)))
            self._tokens[i] = list(truncate_middle(ids, self.max_prompt_tokens))
        return self._tokens[i]

    def answer(self, i: int, tokenizer) -> list[int]:
        """Token ids of what the model should write: the gold answer then eos (a continuation task's target
        has no end)."""
        ids = list(tokenizer.encode(self.task.target(self.examples[i]), add_special_tokens=False))
        end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None and self.task.scoring == "generate" else []
        return ids + end

    def sample(self, seed: int, generation: int) -> list[int]:
        """Indices of this generation's prompts: the same on every rank and every resume."""
        n = len(self.examples)
        if self.samples >= n:
            return list(range(n))
        rng = np.random.default_rng([seed, generation, zlib.crc32(self.name.encode())])
        return sorted(rng.choice(n, size=self.samples, replace=False).tolist())


def load_tasks(cfg: EvolveConfig, tokenizer) -> dict[str, TaskData]:
    names = list(dict.fromkeys(t for st in cfg.stages for t in st.tasks))
    out = {}
    for name in names:
        d = cfg.data[name]
        task = make_task(name, kind="text")
        n = (d.limit if d.limit is not None else 10**9) if task.source == "files" else d.examples
        examples = task.examples(tokenizer, n, seed=d.seed, context_tokens=d.context_tokens, data_dir=d.data_dir,
                                 split=d.split)
        out[name] = TaskData(name, task, examples, d.samples, d.max_prompt_tokens, d.max_new_tokens or task.max_new_tokens)
    return out


class LanguageFitness(Fitness):
    """Text tasks through :mod:`namm.drivers.text`; ``evolution.fitness`` picks the signal: ``score`` (each
    task's metric on greedy answers, the paper) or ``likelihood`` (100 x the gold answer's geometric-mean
    token probability, teacher-forced, one forward pass: dense where exact match is all-or-nothing).
    Likelihood tasks (``lm_continuation``) are scored by likelihood either way."""

    task_kind = "text"

    def __init__(self, cfg: EvolveConfig, dist: Dist, model=None, tokenizer=None) -> None:
        self.cfg, self.dist = cfg, dist
        if model is None:
            self.device = resolve_device(cfg.model.device, dist.local_rank)
            model, tokenizer = load_model(cfg.model, self.device)
        else:
            self.device = next(model.parameters()).device
            if tokenizer is None:
                from namm.models.tiny import CharTokenizer

                tokenizer = CharTokenizer(model.config.vocab_size)
        self.model, self.tok = model, tokenizer
        self.pad_id = pad_id(tokenizer)
        self.eos_ids = stop_ids(model, tokenizer)
        self.tasks = load_tasks(cfg, tokenizer)
        self.refs: dict[str, dict[int, Any]] = {t: {} for t in self.tasks}  # full-cache predictions per prompt

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"refs": self.refs}

    def load_state_dict(self, state: dict) -> None:
        self.refs = {t: dict(state.get("refs", {}).get(t, {})) for t in self.tasks}

    def batch(self, tasks: Sequence[str], generation: int) -> dict[str, list[int]]:
        return {t: self.tasks[t].sample(self.cfg.evolution.seed, generation) for t in tasks}

    # ---- one forward pass ----------------------------------------------------------------------
    def _likelihood(self, task: str) -> bool:
        return self.cfg.evolution.fitness == "likelihood" or self.tasks[task].task.scoring == "likelihood"

    def generate(self, policy, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[tuple[str, float]]:
        """Greedy completions (one batch) under ``policy``, each with its row's mean cache fraction."""
        rows, fracs = generate(self.model, policy, prompts, max_new_tokens, self.pad_id, self.eos_ids)
        return [(self.tok.decode(r, skip_special_tokens=True), f) for r, f in zip(rows, fracs)]

    def likelihood(self, policy, prompts: Sequence[Sequence[int]],
                   answers: Sequence[Sequence[int]]) -> list[tuple[float, float]]:
        """``100 * exp(mean log p(answer token))`` after each prompt (teacher-forced, one forward pass), with
        the row's mean cache fraction: a member that keeps the needle half-legible scores between one that
        keeps it and one that lost it, where exact match gives the latter two the same 0."""
        lps, fracs = token_logprobs(self.model, policy, prompts, answers, self.pad_id)
        return [(100.0 * math.exp(float(lp.mean())), f) for lp, f in zip(lps, fracs)]

    def _chunks(self, items: list, size: int | None = None) -> list[list]:
        size = size or self.cfg.run.batch_size
        return [items[i : i + size] for i in range(0, len(items), size)]

    def _score(self, task: str, idx: Sequence[int], preds: Sequence[Any]) -> float:
        t = self.tasks[task]
        if self._likelihood(task):  # preds are per-prompt answer scores already
            return float(np.mean(preds))
        return float(t.task.score(list(preds), [t.examples[i] for i in idx]))

    def _predict_rows(self, rows: list[tuple[torch.Tensor | None, str, int]], make_policy) -> list[tuple[Any, float]]:
        """``(prediction, cache fraction)`` for rows ``(params [P] or None = full cache, task, example)`` of
        ONE task, one batch; the prediction is the generated text, or the answer's likelihood score."""
        task = rows[0][1]
        t = self.tasks[task]
        prompts = [t.prompt(i, self.tok) for _, _, i in rows]
        if rows[0][0] is None:
            policy = FullCache(n_up=self.cfg.namm.n_up)
        else:
            policy = make_policy(torch.stack([p for p, _, _ in rows]).to(self.device))  # [rows, P]
        if self._likelihood(task):
            return self.likelihood(policy, prompts, [t.answer(i, self.tok) for _, _, i in rows])
        return self.generate(policy, prompts, t.max_new_tokens)

    # ---- normalisation statistics and references -----------------------------------------------
    def _units(self, batch: dict[str, list[int]]) -> list[list[tuple[str, int]]]:
        """``(task, example)`` pairs cut into forward-pass chunks of one task each (fixed composition,
        whatever the number of ranks, so results do not depend on the world size)."""
        return [c for task, idx in batch.items() for c in self._chunks([(task, i) for i in idx])]

    def collect_stats(self, batch, make_policy) -> tuple[torch.Tensor, torch.Tensor]:
        template = make_policy(None)
        n_freq, num_params = template.spectral.n_freq, template.net.num_params

        def run(units):
            out = []
            for unit in units:
                stats = RunningStats(n_freq)
                t = self.tasks[unit[0][0]]
                policy = make_policy(torch.zeros(len(unit), num_params), stats=stats)
                self.generate(policy, [t.prompt(i, self.tok) for _, i in unit], t.max_new_tokens)
                out.append(stats)
            return out

        total = RunningStats(n_freq)
        for s in self.dist.map(self._units(batch), run):  # merged in a fixed order
            total.merge(s)
        return total.result()

    def reference_scores(self, batch: dict[str, list[int]]) -> dict[str, float]:
        """Full-cache score per task on ``batch``; predictions are computed once per prompt, then cached."""
        missing = {t: [i for i in idx if i not in self.refs[t]] for t, idx in batch.items()}
        units = self._units({t: idx for t, idx in missing.items() if idx})
        if units:
            preds = self.dist.map(units, lambda us: [self._predict_rows([(None, t, i) for t, i in u], None) for u in us])
            for unit, p in zip(units, preds):
                for (t, i), (text, _) in zip(unit, p):
                    self.refs[t][i] = text
        return {t: self._score(t, idx, [self.refs[t][i] for i in idx]) for t, idx in batch.items()}

    # ---- population ------------------------------------------------------------------------------
    def _result(self, batch: dict[str, list[int]], preds: dict[str, list[tuple[Any, float]]]) -> dict:
        """``{"scores": {task: score}, "cache_fraction": mean over every prompt}`` of one policy's predictions."""
        fracs = [f for task in batch for _, f in preds[task]]
        return {"scores": {t: self._score(t, idx, [text for text, _ in preds[t]]) for t, idx in batch.items()},
                "cache_fraction": float(np.mean(fracs))}

    def _member_result(self, params: torch.Tensor, batch: dict[str, list[int]], make_policy) -> dict:
        """:meth:`_result` of one member ``params [P]`` (its prompts batched ``run.batch_size`` at a time)."""
        preds = {}
        for task, idx in batch.items():
            preds[task] = []
            for c in self._chunks(list(idx)):
                preds[task] += self._predict_rows([(params, task, i) for i in c], make_policy)
        return self._result(batch, preds)

    def evaluate(self, members: list[int], params: torch.Tensor, batch: dict[str, list[int]], make_policy) -> list[dict]:
        """See :meth:`Fitness.evaluate`. A member that raises (or has non-finite parameters) gets an error
        entry. Batched: the ``(member, prompt)`` rows of one prompt, ``run.batch_size`` per forward pass; a
        chunk that raises is re-run member by member, so one broken member does not sink its neighbours."""
        results, todo = split_nonfinite(members, params)
        if self.cfg.run.batched_population and len(todo) > 1:
            preds: dict[int, dict[str, list[tuple[Any, float]]]] = {}
            broken: set[int] = set()
            # one prompt per chunk: its rows share their length, so every row's memory updates fall on the
            # same tokens and a forward pass runs one update per n_up tokens; rows of unequal lengths cut it
            # at every row's own boundaries (16 kv prompts of 1k tokens together: 2.7x slower)
            chunks = [(task, c) for task, idx in batch.items() for i in idx for c in self._chunks([(m, i) for m in todo])]
            for task, chunk in chunks:
                try:
                    out = self._predict_rows([(params[m], task, i) for m, i in chunk], make_policy)
                except Exception:
                    broken |= {m for m, _ in chunk}
                    continue
                for (m, _), pred in zip(chunk, out):
                    preds.setdefault(m, {}).setdefault(task, []).append(pred)
            for m in todo:
                if m not in broken:
                    try:
                        results[m] = self._result(batch, preds[m])
                    except Exception as e:
                        results[m] = {"error": f"{type(e).__name__}: {e}"}
            todo = [m for m in todo if m in broken]
        for m in todo:
            try:
                results[m] = self._member_result(params[m], batch, make_policy)
            except Exception as e:  # a broken member gets the worst fitness; the run goes on
                results[m] = {"error": f"{type(e).__name__}: {e}"}
        return [results[m] for m in members]
