"""``namm evolve``: CMA-ES over the NAMM parameter vector (spec §5), reading straight down.

One generation (:meth:`Evolution.step`):

1. the fitness draws the generation's items per task (seeded by the generation: every member sees the same),
2. the full cache's score on them (the fitness caches its predictions per item),
3. ``es.ask()`` -> ``[M, P]`` members; each member's fitness = mean over tasks of
   (its score) / (the full cache's score on the same items), minus the optional memory penalty,
4. ``es.tell`` the negated fitness (``cma`` minimises); the deployed NAMM is the CMA-ES mean,
5. rank 0 checkpoints: ``namm.safetensors`` (the mean + frozen normalisation) and ``state.pkl``
   (the whole optimiser, counters, the fitness's state), logs (JSONL, CSV) and the fitness curve (PNG).

What a member is scored on is injected: a :class:`~namm.evolution.fitness.Fitness` named by the config's
``modality`` (``language`` by default). Stages run one after the other on the same optimiser
(incremental evolution). Under ``torchrun`` the members are split across ranks
(:class:`~namm.evolution.dist.Dist`) and the results all-gathered, so every rank tells the same fitness.

Faults: a member that raises, has non-finite parameters or gets a non-finite fitness is logged and
gets :data:`WORST_FITNESS`; the run goes on. SIGINT/SIGTERM write a final checkpoint and stop (a
population being evaluated is saved as pending and re-evaluated on ``--resume``, so a resumed run
follows exactly the trajectory of an uninterrupted one). ``run.out`` must be visible to every rank.

    from namm.evolution import evolve, load_config
    result = evolve(load_config("configs/evolve_tiny.yaml", ["evolution.population=8"]))
"""

from __future__ import annotations

import math
import pickle
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from namm.checkpoint import load_namm, save_namm, shipped_namm
from namm.features import RunningStats, SpectralConfig
from namm.io import atomic_write, write_csv, write_jsonl, write_text
from namm.plots import fitness_curve
from namm.policies import NAMM

from .config import ConfigError, EvolveConfig, config_from_dict, dump_config
from .dist import Dist
from .fitness import WORST_FITNESS, Fitness, make_fitness, task_fitness

__all__ = ["evolve", "EvolveResult", "Evolution", "load_state", "STATE_FILE", "WEIGHTS_FILE"]

STATE_FILE = "state.pkl"
WEIGHTS_FILE = "namm.safetensors"
STATE_FORMAT = "namm-testbed/evolve-state"


def _fitness_stats(fitness: list[float], failed: set[int]) -> dict[str, float | None]:
    ok = np.array([f for i, f in enumerate(fitness) if i not in failed], dtype=np.float64)
    if ok.size == 0:
        return {"fitness_mean": None, "fitness_std": None, "fitness_max": None, "fitness_min": None}
    return {"fitness_mean": float(ok.mean()), "fitness_std": float(ok.std()),
            "fitness_max": float(ok.max()), "fitness_min": float(ok.min())}


# --------------------------------------------------------------------------- signals

class _Interrupted(BaseException):  # not an Exception: member fault handling must not swallow it
    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


class _Signals:
    """SIGINT/SIGTERM: remember the signal and stop after the current step; while members are being
    evaluated, stop at once (the asked population is checkpointed as pending and re-evaluated on resume)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.abortable = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.received = signum
        if self.abortable:
            self.abortable = False
            raise _Interrupted(signum)

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class _Randn:
    """CMA-ES's normal sampler with its own generator, so the generator state is pickled with the
    optimiser and a resumed run draws exactly the samples an uninterrupted one would."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)


# --------------------------------------------------------------------------- the run

@dataclass
class EvolveResult:
    """What :func:`evolve` returns (the same on every rank)."""

    out: Path
    mean: np.ndarray  # [P] the CMA-ES mean (the deployed NAMM)
    generation: int  # generations completed in total
    history: list[dict]
    interrupted: int | None = None  # the signal that stopped the run, if any


def load_state(out: str | Path) -> dict:
    """The optimiser state of a run folder (a pickle we wrote ourselves; never load one from elsewhere)."""
    path = Path(out) / STATE_FILE
    with open(path, "rb") as f:
        state = pickle.load(f)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a namm evolve state file")
    return state


# config keys that may change between a run and its resumption (everything else fixes the trajectory)
_RESUMABLE_CHANGES = ("run.", "evolution.generations", "evolution.eval_mean_every", "model.device")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        out = {}
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: d}


def _with_defaults(saved: dict) -> dict:
    """A saved run's config with keys added since it was written at their defaults (which reproduce the
    old behaviour), so that such a run still resumes."""
    try:
        return config_from_dict(saved).to_dict()
    except Exception:  # unreadable under this version: compare as saved, the diff names the keys
        return saved


def _trajectory_diff(old: dict, new: dict) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k) and not k.startswith(_RESUMABLE_CHANGES)
            and not (k.startswith("stages.") and k.endswith(".generations"))]


class Evolution:
    """State and steps of one ``namm evolve`` run (see the module docstring). ``objects`` (e.g. an already
    loaded ``model`` and ``tokenizer``) are handed to the fitness."""

    def __init__(self, cfg: EvolveConfig, *, resume: bool = False, dist: Dist | None = None,
                 fitness: Fitness | None = None, **objects: Any) -> None:
        self.cfg = cfg
        self.out = Path(cfg.run.out)
        state = None
        if (self.out / STATE_FILE).exists():  # checked before any model is loaded: fail fast
            if not resume:
                raise ConfigError(f"run.out: {str(self.out)!r} already holds a run ({STATE_FILE}); pass --resume to "
                                  "continue it or choose another run.out / --out")
            state = load_state(self.out)
            diff = _trajectory_diff(_with_defaults(state["config"]), cfg.to_dict())
            if diff:
                raise ConfigError(f"cannot resume {self.out}: the config differs in {', '.join(diff)} "
                                  "(these keys fix the trajectory); restore them or start a new run.out")
        self.dist = dist or Dist.from_env(cfg.model.device)
        self.fitness = fitness or make_fitness(cfg, self.dist, **objects)
        self.spectral = SpectralConfig(n_fft=cfg.namm.n_fft, hop=cfg.namm.hop, ema=cfg.namm.ema)
        # run state (all of it goes into state.pkl)
        self.norm: tuple[torch.Tensor, torch.Tensor] | None = None  # frozen (mean, var)
        self.es: Any = None
        self.stage = 0
        self.stage_generation = 0
        self.generation = 0  # completed generations over all stages
        self.pending: list[np.ndarray] | None = None  # asked, not yet told (an interrupted generation)
        self.history: list[dict] = []
        self.num_params = self.make_policy(None).net.num_params
        if state is not None:
            self._restore(state)
        elif resume and self.dist.main:
            print(f"namm evolve: nothing to resume in {self.out}, starting a new run", file=sys.stderr)

    def make_policy(self, params: torch.Tensor | None, stats: RunningStats | None = None) -> NAMM:
        """The NAMM of ``params`` ``[P]`` or ``[rows, P]`` (one per batch row) with the frozen normalisation;
        with ``stats`` it only collects statistics (and must evict nothing: zero parameters)."""
        n = self.cfg.namm
        mean, var = self.norm if self.norm is not None else (None, None)
        return NAMM(params=params, mean=mean, var=var, scorer=n.scorer, hidden=n.hidden, mode=n.mode,
                    n_up=n.n_up, budget=None if stats is not None else n.budget, pool=n.pool,
                    spectral=self.spectral, stats=stats)

    def member_fitness(self, result: dict, refs: dict[str, float]) -> float:
        """Mean over tasks of :func:`task_fitness`, minus ``evolution.cache_penalty`` per unit of mean cache
        fraction above ``evolution.cache_target`` (when set); ``nan`` when the member failed."""
        if "error" in result:
            return float("nan")
        ev = self.cfg.evolution
        vals = [task_fitness(result["scores"][t], refs[t], ev.min_reference) for t in refs]
        over = max(0.0, result["cache_fraction"] - ev.cache_target) if ev.cache_target is not None else 0.0
        return float(np.mean(vals)) - ev.cache_penalty * over

    def evaluate_mean(self, batch: dict[str, list[int]], refs: dict[str, float]) -> float:
        """Fitness of the CMA-ES mean on ``batch``."""
        mean = torch.as_tensor(np.asarray(self.es.mean), dtype=torch.float32)[None]
        (res,) = self.dist.map([0], lambda ms: self.fitness.evaluate(ms, mean, batch, self.make_policy))
        return self.member_fitness(res, refs)

    # ---- optimiser ---------------------------------------------------------------------------
    def new_optimizer(self):
        import cma

        ev = self.cfg.evolution
        opts = {
            "popsize": ev.population,
            "CMA_mu": max(1, round(ev.population * ev.elite_ratio)),  # log-rank weights over the elite
            "CMA_active": ev.active,
            "seed": ev.seed + 1,  # cma seeds numpy's global RNG with it (0 would mean "time")
            "randn": _Randn(ev.seed),
            "verbose": -9, "verb_disp": 0, "verb_log": 0,  # no console output, no outcmaes/ files
        }
        return cma.CMAEvolutionStrategy(self.initial_mean(), ev.sigma0, opts)

    def _init_policy(self):
        """The NAMM of ``evolution.init_from`` (None without one), checked against the ``namm`` section."""
        ev = self.cfg.evolution
        if ev.init_from is None:
            return None
        pol = load_namm(shipped_namm(ev.init_from) or Path(ev.init_from))
        if pol.params.numel() != self.num_params:
            raise ValueError(f"evolution.init_from={ev.init_from}: {pol.params.numel()} parameters, but namm "
                             f"({self.cfg.namm.scorer}, hidden {self.cfg.namm.hidden}) has {self.num_params}; "
                             "match the namm section to the file's scorer")
        if pol.spectral != self.spectral:  # its weights and statistics were made for those features
            raise ValueError(f"evolution.init_from={ev.init_from}: its spectrogram is {pol.spectral}, the namm section's "
                             f"is {self.spectral}; set namm.n_fft / hop / ema to the file's")
        return pol

    def initial_mean(self) -> np.ndarray:
        """``[P]`` float64: ``evolution.mean0`` everywhere but the score bias (``evolution.keep_bias0``), or
        the parameters of ``evolution.init_from``."""
        pol = self._init_policy()
        if pol is None:
            mean = np.full(self.num_params, self.cfg.evolution.mean0)
            if self.cfg.evolution.keep_bias0 is not None:
                mean[-1] = self.cfg.evolution.keep_bias0  # both scorers end with their output bias
            return mean
        return pol.params.detach().double().reshape(-1).numpy()

    def batch(self, generation: int) -> dict[str, list[int]]:
        """This generation's items per task of the current stage."""
        return self.fitness.batch(self.cfg.stages[self.stage].tasks, generation)

    def step(self, signals: _Signals | None = None) -> dict:
        """One generation; returns its log row."""
        t0 = time.time()
        batch = self.batch(self.generation)
        refs = self.fitness.reference_scores(batch)
        if self.pending is None:
            self.pending = self.es.ask()
        X = self.pending
        params = torch.as_tensor(np.stack(X), dtype=torch.float32)  # [M, P]
        members = list(range(len(X)))
        if signals is not None:
            signals.abortable = True
        try:
            results = self.dist.map(members, lambda ms: self.fitness.evaluate(ms, params, batch, self.make_policy))
        finally:
            if signals is not None:
                signals.abortable = False
        fitness, failures = [], []
        cf = [r.get("cache_fraction") for r in results]  # per member; None where it failed
        for m, r in enumerate(results):
            f = self.member_fitness(r, refs)
            if not math.isfinite(f):
                failures.append({"member": m, "error": r.get("error", f"non-finite fitness {f}")})
                f = WORST_FITNESS
            fitness.append(f)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # flat-fitness notes etc.; we log our own
            self.es.tell(X, [-f for f in fitness])
        self.pending = None
        self.generation += 1
        self.stage_generation += 1
        every = self.cfg.evolution.eval_mean_every
        mean_fit = self.evaluate_mean(batch, refs) if every and self.generation % every == 0 else None
        row = {"generation": self.generation, "stage": self.stage, "stage_generation": self.stage_generation,
               "tasks": list(batch), **_fitness_stats(fitness, {f["member"] for f in failures}),
               "mean_fitness": mean_fit, "sigma": float(self.es.sigma), "n_failed": len(failures),
               "time_s": time.time() - t0, "reference_scores": refs, "fitness": fitness, "failures": failures,
               "cache_fraction_mean": float(np.mean(ran)) if (ran := [c for c in cf if c is not None]) else None,
               "cache_fraction": cf}
        if failures and self.dist.main:
            for f in failures:
                print(f"namm evolve: generation {self.generation}: member {f['member']} failed "
                      f"({f['error']}); worst fitness {WORST_FITNESS}", file=sys.stderr)
        self.history.append(row)
        return row

    # ---- checkpoints and logs ----------------------------------------------------------------
    def _restore(self, state: dict) -> None:
        self.es = state["es"]
        self.stage, self.stage_generation, self.generation = state["stage"], state["stage_generation"], state["generation"]
        self.pending = state["pending"]
        self.fitness.load_state_dict(state.get("fitness", {"refs": state.get("refs", {})}))
        self.norm = state["norm"]
        self.history = state["history"]
        np.random.set_state(state["np_random"])

    def checkpoint(self) -> None:
        """Rank 0 writes the weights, the optimiser state, the logs and the plot (each atomically)."""
        if not self.dist.main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        mean = torch.as_tensor(np.asarray(self.es.mean), dtype=torch.float32)
        last = self.history[-1] if self.history else {}
        save_namm(self.out / WEIGHTS_FILE, self.make_policy(mean),
                  info={"generation": self.generation, "stage": self.stage, "mean_fitness": last.get("mean_fitness"),
                        "model": self.cfg.model.name, "source": "namm evolve (CMA-ES mean)",
                        **({"init_from": self.cfg.evolution.init_from} if self.cfg.evolution.init_from else {})})
        state = {"format": STATE_FORMAT, "version": 1, "config": self.cfg.to_dict(), "es": self.es,
                 "stage": self.stage, "stage_generation": self.stage_generation, "generation": self.generation,
                 "pending": self.pending, "fitness": self.fitness.state_dict(), "norm": self.norm, "history": self.history,
                 "np_random": np.random.get_state()}

        def dump(tmp: str) -> None:
            with open(tmp, "wb") as f:
                pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)

        atomic_write(self.out / STATE_FILE, dump)
        self.write_logs()

    def write_logs(self) -> None:
        write_jsonl(self.out / "log.jsonl", self.history)
        cols = ["generation", "stage", "fitness_mean", "fitness_std", "fitness_max", "mean_fitness",
                "cache_fraction_mean", "sigma", "n_failed", "time_s"]
        write_csv(self.out / "log.csv", self.history, cols)
        if self.cfg.run.plot and self.history:
            fitness_curve(self.history, self.out / "fitness.png")

    # ---- main loop ---------------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> EvolveResult:
        """Run (or continue) every stage; ``stop_after`` ends this call after that many generations."""
        from tqdm.auto import tqdm

        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / "config.yaml", dump_config(self.cfg))
        if self.norm is None:  # frozen once, from the first generation's prompts (spec §2.5)
            pol = self._init_policy()  # a warm start keeps the statistics its parameters were evolved with
            if pol is not None and pol.mean is not None:
                self.norm = (pol.mean.clone(), pol.var.clone())
            else:
                self.norm = self.fitness.collect_stats(self.batch(0), self.make_policy)
        if self.es is None:
            self.es = self.new_optimizer()
        done_here, interrupted, saved = 0, None, True
        with _Signals() as signals:
            try:
                while self.stage < len(self.cfg.stages):
                    total = self.cfg.stage_generations(self.stage)
                    bar = tqdm(total=total, initial=min(self.stage_generation, total), desc=f"stage {self.stage + 1}",
                               disable=not (self.cfg.run.progress and self.dist.main))
                    while self.stage_generation < total:
                        if signals.received is not None or (stop_after is not None and done_here >= stop_after):
                            break
                        row = self.step(signals)
                        done_here += 1
                        saved = False
                        if self.generation % self.cfg.run.checkpoint_every == 0 or self.stage_generation == total:
                            self.checkpoint()
                            saved = True
                        bar.update(1)
                        bar.set_postfix(fit=f"{row['fitness_mean'] or float('nan'):.3f}",
                                        best=f"{row['fitness_max'] or float('nan'):.3f}",
                                        mean=("-" if row["mean_fitness"] is None else f"{row['mean_fitness']:.3f}"),
                                        sigma=f"{row['sigma']:.4f}")
                    bar.close()
                    if self.stage_generation < total:
                        break  # stopped early (signal or stop_after)
                    if self.stage + 1 < len(self.cfg.stages):  # the next stage continues this optimiser
                        self.stage += 1
                        self.stage_generation = 0
                    else:
                        break
            except _Interrupted:
                pass  # members were being evaluated: the asked population stays pending
            interrupted = signals.received
            if not saved or interrupted is not None:
                self.checkpoint()
        self.dist.barrier()
        return EvolveResult(self.out, np.asarray(self.es.mean).copy(), self.generation, self.history, interrupted)


def evolve(cfg: EvolveConfig, *, resume: bool = False, stop_after: int | None = None, **objects: Any) -> EvolveResult:
    """Run ``namm evolve`` for ``cfg`` (under ``torchrun``, every rank calls this); ``objects`` (e.g.
    ``model=``, ``tokenizer=``) go to the fitness."""
    runner = Evolution(cfg, resume=resume, **objects)
    try:
        return runner.run(stop_after=stop_after)
    finally:
        runner.dist.close()
