"""The attention proxy fitness (``modality: attention_proxy``): members replayed on recorded attention.

Why: on the 2-core box one NAMM forward of SmolLM2 at 1k tokens takes ~6 s, so a generation of 16 members
x 8 prompts costs many minutes. Here the model runs once per prompt, with the full cache, to record its
attention (:func:`namm.drivers.trace.record`: the prompt and the gold answer or continuation, teacher
forced); every member is then scored on those traces with no model at all (:func:`namm.replay.kept_mass`):
the attention mass that the scored queries (the answer's, the continuation's) still find among the tokens
the member kept, averaged over layers and heads. Evicting a token costs exactly the share later queries
give it, so dropping an attention sink, the failure of the zoo-evolved NAMM on real models, costs the most.

The score of a task is ``100 x`` that mass (the full cache scores 100), and the memory target of the
config (``evolution.cache_target``, ``cache_penalty``) trades it against the cache fraction as for the
real fitness. It is a proxy: it ignores how an eviction changes later hidden states. Check it against the
real fitness before trusting it (``experiments/real-models/proxy_check.py``: rank agreement over policies).

Cost: a token's spectrogram depends only on the attention it receives, which a replay takes from the trace
whatever else was kept, so it is computed once per trace (:func:`namm.replay.token_states`) and every member
reads it; a member then costs only its scorer (SmolLM2, 768 tokens, n_up 64: ~1.4 s per trace on one core,
vs ~3 s observing the trace itself and ~5 s for a real forward). Memory: the spectrogram states plus the
attention of the scored queries (:func:`namm.replay.scored_rows`), ~65 MB per 768-token SmolLM2 trace at
n_up 128 and ~140 MB per 1280-token one at n_up 512, kept for the run once drawn.
"""

from __future__ import annotations

import numpy as np
import torch

from namm.drivers.trace import record
from namm.features import RunningStats, SpectralConfig
from namm.policies import NAMM
from namm.replay import kept_mass, scored_rows, token_states

from .fitness import split_nonfinite
from .language import LanguageFitness

__all__ = ["AttentionProxyFitness"]


class AttentionProxyFitness(LanguageFitness):
    """See the module docstring. Tasks, prompts and per-generation draws are the language fitness's."""

    def __init__(self, cfg, dist, model=None, tokenizer=None) -> None:
        super().__init__(cfg, dist, model=model, tokenizer=tokenizer)
        self.traces: dict[tuple[str, int], tuple[dict, dict, int, dict]] = {}

    def state_dict(self) -> dict:
        return {}  # traces are recomputed on resume (the same model gives the same trace)

    def load_state_dict(self, state: dict) -> None:
        pass

    def trace(self, task: str, i: int) -> tuple[dict, dict, int, dict]:
        """``(meta, tensors, score_from, states)`` of example ``i`` of ``task`` (the prompt then its answer):
        the attention of the blocks holding scored queries and every token's spectrogram at every update."""
        key = (task, i)
        if key not in self.traces:
            t = self.tasks[task]
            prompt, answer = t.prompt(i, self.tok), t.answer(i, self.tok)
            n = self.cfg.namm
            meta, tensors = record(self.model, list(prompt) + list(answer), n_up=n.n_up)
            spectral = SpectralConfig(n_fft=n.n_fft, hop=n.hop, ema=n.ema)
            states = token_states(NAMM(n_up=n.n_up, spectral=spectral), meta, tensors, names=("ema",))
            tensors = scored_rows(meta, tensors, len(prompt))  # only the scored queries' attention is read again
            self.traces[key] = (meta, tensors, len(prompt), states)
        return self.traces[key]

    def reference_scores(self, batch: dict[str, list[int]]) -> dict[str, float]:
        for task, idx in batch.items():
            for i in idx:
                self.trace(task, i)  # recorded once, before any member (their cost stays out of member time)
        return {t: 100.0 for t in batch}  # the full cache loses no attention

    def collect_stats(self, batch, make_policy) -> tuple[torch.Tensor, torch.Tensor]:
        template = make_policy(None)
        n_freq, num_params = template.spectral.n_freq, template.net.num_params
        total = RunningStats(n_freq)
        for task, idx in batch.items():
            for i in idx:
                meta, tensors, start, states = self.trace(task, i)
                stats = RunningStats(n_freq)
                kept_mass(make_policy(torch.zeros(1, num_params), stats=stats), meta, tensors, start, rows=1,
                          states=states)
                total.merge(stats)
        return total.result()

    def _scores(self, params: torch.Tensor, batch: dict[str, list[int]], make_policy) -> tuple[dict, np.ndarray]:
        """Per task ``[M]`` mean kept mass x 100 of the members ``params [M, P]``, and their ``[M]`` mean
        cache fractions over every trace."""
        m = params.shape[0]
        policy = make_policy(params)
        scores, fracs = {}, []
        for task, idx in batch.items():
            masses = []
            for i in idx:
                meta, tensors, start, states = self.trace(task, i)
                mass, frac = kept_mass(policy, meta, tensors, start, rows=m, states=states)
                masses.append(mass)
                fracs.append(frac)
            scores[task] = 100.0 * torch.stack(masses).mean(0).numpy()
        return scores, torch.stack(fracs).mean(0).numpy()

    def evaluate(self, members: list[int], params: torch.Tensor, batch: dict[str, list[int]], make_policy) -> list[dict]:
        """See :meth:`Fitness.evaluate`. Batched, all members are rows of one replay; if it raises, each is
        re-run alone, so one broken member does not sink the others."""
        results, todo = split_nonfinite(members, params)
        groups = [todo] if self.cfg.run.batched_population and len(todo) > 1 else [[m] for m in todo]
        while groups:
            group = groups.pop(0)
            try:
                scores, fracs = self._scores(params[group], batch, make_policy)
            except Exception as e:  # a broken member gets the worst fitness; the run goes on
                if len(group) > 1:
                    groups += [[m] for m in group]
                else:
                    results[group[0]] = {"error": f"{type(e).__name__}: {e}"}
                continue
            for j, m in enumerate(group):
                results[m] = {"scores": {t: float(s[j]) for t, s in scores.items()}, "cache_fraction": float(fracs[j])}
        return [results[m] for m in members]
