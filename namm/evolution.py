"""``namm evolve``: CMA-ES over the NAMM parameter vector on language tasks (spec §5).

One generation:

1. draw the generation's prompts per task (seeded by the generation number: every member sees the same),
2. full-cache predictions for prompts never seen before (cached per prompt, never recomputed),
3. ``es.ask()`` -> ``[M, P]`` members; each member's fitness = mean over tasks of
   (task score under the member's NAMM) / (full-cache score on the same prompts),
4. ``es.tell`` the negated fitness (``cma`` minimises); the deployed NAMM is the CMA-ES mean,
5. rank 0 checkpoints: ``namm.safetensors`` (the mean + frozen normalisation) and ``state.pkl``
   (the whole optimiser, counters, cached references), logs (JSONL, CSV) and the fitness curve (PNG).

Stages run one after the other on the same optimiser (incremental evolution). Under ``torchrun`` the
members (and the reference/statistics prompts) are split across ranks and the results all-gathered,
so every rank tells the same fitness and holds the same optimiser. With ``run.batched_population``
several members share one forward pass (``params`` ``[rows, P]``, one row per member x prompt).

Faults: a member that raises, has non-finite parameters or gets a non-finite fitness is logged and
gets :data:`WORST_FITNESS`; the run goes on. SIGINT/SIGTERM write a final checkpoint and stop (a
population being evaluated is saved as pending and re-evaluated on ``--resume``, so a resumed run
follows exactly the trajectory of an uninterrupted one). ``run.out`` must be visible to every rank.

    from namm.config import load_config
    from namm.evolution import evolve
    result = evolve(load_config("configs/evolve_tiny.yaml", ["evolution.population=8"]))
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import pickle
import random
import signal
import sys
import threading
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .checkpoint import atomic_write, save_namm
from .config import TINY_MODEL, ConfigError, EvolveConfig, ModelConfig, config_from_dict, dump_config, load_config
from .evaluate import left_pad
from .features import RunningStats, SpectralConfig

__all__ = [
    "evolve", "EvolveResult", "Evolution", "task_fitness", "WORST_FITNESS", "load_state",
    "CharTokenizer", "tiny_random_llama", "load_model", "load_hf_model", "apply_rope_override",
    "SYNTHETIC_TASKS", "register_synthetic_tasks", "synthetic_examples", "Dist", "add_evolve_command",
]

WORST_FITNESS = -1.0  # a failed member (exception, NaN/inf): below every valid fitness (those are >= 0)
STATE_FILE = "state.pkl"
WEIGHTS_FILE = "namm.safetensors"
STATE_FORMAT = "namm-testbed/evolve-state"


# --------------------------------------------------------------------------- synthetic task + tiny model

SYNTH_CHARS = "0123456789abcdefghij=;\n "
SYNTHETIC_TASKS = ("synthetic_recall",)


class CharTokenizer:
    """Character tokenizer for the tiny random model. Ids 0/1/2 are pad/bos/eos; every other id decodes
    to ``chars[(id - 3) % len(chars)]``, so any output of a random model lies in the task's alphabet
    and earns partial credit (a random model otherwise scores exactly 0 and the fitness is flat)."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __init__(self, vocab_size: int = 96, chars: str = SYNTH_CHARS) -> None:
        if vocab_size < 3 + len(chars):
            raise ValueError(f"vocab_size {vocab_size} too small for {len(chars)} characters + 3 specials")
        self.chars = chars
        self.ids = {c: 3 + i for i, c in enumerate(chars)}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [self.bos_token_id] * add_special_tokens + [self.ids[c] for c in text if c in self.ids]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(self.chars[(i - 3) % len(self.chars)] for i in ids if i >= 3)


def register_synthetic_tasks() -> None:
    """Add the built-in synthetic tasks to the LongBench task registry (idempotent).

    ``synthetic_recall``: the context lists ``key=value`` pairs (keys: 2 letters, values: 4 digits);
    the model must complete ``key=`` with its value. Scored by edit similarity (``code_sim``), which
    gives partial credit, so even a random model has a non-trivial fitness landscape.
    """
    from namm.envs.longbench import TASKS, TaskSpec, register_task

    if "synthetic_recall" not in TASKS:
        register_task(TaskSpec(name="synthetic_recall", metric="code_sim", max_new_tokens=6,
                               prompt="{context}\n{input}=", language="en", category="synthetic",
                               chat_template=False))


def synthetic_examples(task: str, n: int, seed: int = 0, pairs: tuple[int, int] = (12, 24)) -> list[dict]:
    """``n`` examples of a synthetic task (dicts with context/input/answers like LongBench's)."""
    if task != "synthetic_recall":
        raise ValueError(f"unknown synthetic task {task!r}; built-in: {SYNTHETIC_TASKS}")
    rng = random.Random(f"{task}/{seed}")
    letters = "abcdefghij"
    all_keys = [a + b for a in letters for b in letters]
    out = []
    for j in range(n):
        keys = rng.sample(all_keys, rng.randint(*pairs))
        vals = ["".join(rng.choice("0123456789") for _ in range(4)) for _ in keys]
        q = rng.randrange(len(keys))
        context = ";".join(f"{k}={v}" for k, v in zip(keys, vals))
        out.append({"context": context, "input": keys[q], "answers": [vals[q]], "length": len(context),
                    "dataset": task, "language": "en", "all_classes": None, "_id": f"{task}-{seed}-{j}"})
    return out


def tiny_random_llama(seed: int = 0, **config_overrides):
    """The 2-layer GQA Llama of ``tests/conftest.py::make_tiny_llama`` (vocab 96, width 64), fp32, eager."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(
        "llama", vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    apply_rope_override(cfg, config_overrides.get("rope_theta"), config_overrides.get("max_position_embeddings"))
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.set_attn_implementation("eager")
    return model


def apply_rope_override(hf_config, rope_theta: float | None, max_positions: int | None) -> None:
    """Set a fixed RoPE base (plain rope, no scaling) and the position limit on a loaded HF config.

    transformers 5 keeps the base in ``config.rope_parameters``; a ``rope_theta=`` kwarg to
    ``AutoConfig.from_pretrained`` is silently ignored when the file already has rope parameters,
    so the loaded config is edited instead.
    """
    if rope_theta is not None:
        if isinstance(getattr(hf_config, "rope_parameters", None), dict):
            hf_config.rope_parameters = {"rope_type": "default", "rope_theta": float(rope_theta)}
        else:
            hf_config.rope_theta = float(rope_theta)
            if getattr(hf_config, "rope_scaling", None) is not None:
                hf_config.rope_scaling = None
    if max_positions is not None:
        hf_config.max_position_embeddings = int(max_positions)


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{local_rank}"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device: {spec!r} but no CUDA device is visible; use model.device=cpu")
    return torch.device(spec)


def load_hf_model(mc: ModelConfig, device: torch.device):
    """``AutoModelForCausalLM.from_pretrained`` with the RoPE override applied to the loaded config first."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        hf_cfg = AutoConfig.from_pretrained(mc.name)
        apply_rope_override(hf_cfg, mc.rope_theta, mc.max_position_embeddings)
        model = AutoModelForCausalLM.from_pretrained(mc.name, config=hf_cfg, dtype=getattr(torch, mc.dtype))
    except OSError as e:
        raise FileNotFoundError(
            f"model.name {mc.name!r}: cannot load it ({str(e).splitlines()[0]}). Give a local folder, or download "
            f"it first (e.g. `hf download {mc.name}`) on a machine that is online") from None
    return model.to(device).eval()


def load_model(mc: ModelConfig, device: torch.device):
    """``(model, tokenizer)``: the tiny random model (char tokenizer), or a Hugging Face model + tokenizer
    (``zoo``: the shipped zoo language model)."""
    if mc.name == "zoo":
        import dataclasses

        from .zoo import DEFAULT_LM

        mc = dataclasses.replace(mc, name=str(DEFAULT_LM))
    if mc.name == TINY_MODEL:
        model = tiny_random_llama(mc.seed, rope_theta=mc.rope_theta, max_position_embeddings=mc.max_position_embeddings)
        return model.to(device=device, dtype=getattr(torch, mc.dtype)), CharTokenizer(model.config.vocab_size)
    from transformers import AutoTokenizer

    model = load_hf_model(mc, device)
    try:
        tok = AutoTokenizer.from_pretrained(mc.tokenizer or mc.name)
    except OSError as e:
        raise FileNotFoundError(f"model.tokenizer {mc.tokenizer or mc.name!r}: cannot load it ({str(e).splitlines()[0]})") from None
    return model, tok


# --------------------------------------------------------------------------- distribution

@dataclass
class Dist:
    """The process group, if any: split work by rank, all-gather results. No gradients, no DDP."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @classmethod
    def from_env(cls, device_spec: str) -> "Dist":
        """Join the ``torchrun`` process group (gloo on CPU, nccl on GPU) when WORLD_SIZE > 1."""
        import torch.distributed as td

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        owns = False
        if not td.is_initialized():
            use_cuda = device_spec != "cpu" and torch.cuda.is_available()
            if use_cuda:
                torch.cuda.set_device(local)
            td.init_process_group(backend="nccl" if use_cuda else "gloo")
            owns = True
        return cls(rank=td.get_rank(), world=td.get_world_size(), local_rank=local, owns_group=owns)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> range:
        """This rank's contiguous block of ``range(n)``."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    def map(self, items: Sequence[Any], fn: Callable[[list[Any]], list[Any]]) -> list[Any]:
        """``fn`` over this rank's share of ``items`` (one call), results all-gathered in item order."""
        idx = self.share(len(items))
        mine = fn([items[i] for i in idx]) if len(idx) else []
        if self.world == 1:
            return list(mine)
        import torch.distributed as td

        parts: list[Any] = [None] * self.world
        td.all_gather_object(parts, list(zip(idx, mine)))
        out: list[Any] = [None] * len(items)
        for part in parts:
            for i, r in part:
                out[i] = r
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            td.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as td

            td.destroy_process_group()
            self.owns_group = False


# --------------------------------------------------------------------------- fitness

def task_fitness(score: float, reference: float, min_reference: float = 1e-6) -> float:
    """One task's fitness: ``score / reference`` (1.0 = as good as the full cache; scores are 0..100).

    When the full cache scores (almost) zero on the sampled prompts the ratio is undefined; then the
    fitness is ``1 + (score - reference) / 100``: the same "1 = matches the full cache" scale, and
    every point the member gains over the full cache still counts.
    """
    if reference >= min_reference and reference > 0:
        return score / reference
    return 1.0 + (score - reference) / 100.0


def _fitness_stats(fitness: Sequence[float], failed: set[int]) -> dict[str, float | None]:
    ok = np.array([f for i, f in enumerate(fitness) if i not in failed], dtype=np.float64)
    if ok.size == 0:
        return {"fitness_mean": None, "fitness_std": None, "fitness_max": None, "fitness_min": None}
    return {"fitness_mean": float(ok.mean()), "fitness_std": float(ok.std()),
            "fitness_max": float(ok.max()), "fitness_min": float(ok.min())}


# --------------------------------------------------------------------------- task data

@dataclass
class TaskData:
    """One task's examples, its spec and its prompts (token ids, middle-truncated, tokenised lazily)."""

    name: str
    spec: Any  # envs.longbench.TaskSpec
    examples: list[dict]
    samples: int
    max_prompt_tokens: int
    max_new_tokens: int
    _tokens: dict[int, list[int]] = field(default_factory=dict)

    def prompt(self, i: int, tokenizer) -> list[int]:
        if i not in self._tokens:
            from namm.envs.longbench import build_prompt, truncate_middle

            ids = list(tokenizer.encode(build_prompt(self.spec, self.examples[i])))
            self._tokens[i] = list(truncate_middle(ids, self.max_prompt_tokens))
        return self._tokens[i]

    def answer(self, i: int, tokenizer) -> list[int]:
        """Token ids of example ``i``'s first gold answer followed by eos (what the model should write)."""
        ids = list(tokenizer.encode(self.examples[i]["answers"][0], add_special_tokens=False))
        return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])

    def sample(self, seed: int, generation: int) -> list[int]:
        """Indices of this generation's prompts: the same on every rank and every resume."""
        n = len(self.examples)
        if self.samples >= n:
            return list(range(n))
        rng = np.random.default_rng([seed, generation, zlib.crc32(self.name.encode())])
        return sorted(rng.choice(n, size=self.samples, replace=False).tolist())


def load_tasks(cfg: EvolveConfig, tokenizer=None) -> dict[str, TaskData]:
    from namm.envs.longbench import get_task, load_task
    from namm.envs.zoo_tasks import register_longbench_tasks

    register_synthetic_tasks()
    register_longbench_tasks()  # zoo tasks read from a folder written by `namm zoo build-tasks`
    names = list(dict.fromkeys(t for st in cfg.stages for t in st.tasks))
    tasks = {}
    for name in names:
        d = cfg.data[name]
        spec = get_task(name)
        if d.source == "synthetic":
            examples = synthetic_examples(name, d.examples, d.seed)
        elif d.source == "zoo":  # generated from the offline corpus, sized by the model's tokenizer
            from .evaluate import zoo_examples

            if tokenizer is None:
                raise ValueError(f"data.{name}.source=zoo needs the model's tokenizer")
            examples = zoo_examples(tokenizer, name, d.examples, d.seed, d.context_tokens)
        else:
            examples = load_task(name, data_dir=d.data_dir, limit=d.limit)
        tasks[name] = TaskData(name, spec, examples, d.samples, d.max_prompt_tokens,
                               d.max_new_tokens or spec.max_new_tokens)
    return tasks


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
    """State and steps of one ``namm evolve`` run (see the module docstring)."""

    def __init__(self, cfg: EvolveConfig, *, resume: bool = False, model=None, tokenizer=None,
                 dist: Dist | None = None) -> None:
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
        self.device = resolve_device(cfg.model.device, self.dist.local_rank) if model is None else next(model.parameters()).device
        if model is None:
            model, tokenizer = load_model(cfg.model, self.device)
        elif tokenizer is None:
            tokenizer = CharTokenizer(model.config.vocab_size)
        self.model, self.tok = model, tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = {tokenizer.eos_token_id} | set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_ids = {e for e in eos if e is not None}
        self.tasks = load_tasks(cfg, tokenizer)
        self.spectral = SpectralConfig(n_fft=cfg.namm.n_fft, hop=cfg.namm.hop, ema=cfg.namm.ema)
        # run state (all of it goes into state.pkl)
        self.norm: tuple[torch.Tensor, torch.Tensor] | None = None  # frozen (mean, var)
        self.es = None
        self.stage = 0
        self.stage_generation = 0
        self.generation = 0  # completed generations over all stages
        self.pending: list[np.ndarray] | None = None  # asked, not yet told (an interrupted generation)
        self.refs: dict[str, dict[int, str]] = {t: {} for t in self.tasks}  # full-cache predictions
        self.history: list[dict] = []
        self.num_params = self.make_policy(None).net.num_params
        if state is not None:
            self._restore(state)
        elif resume and self.dist.main:
            print(f"namm evolve: nothing to resume in {self.out}, starting a new run", file=sys.stderr)

    # ---- policies and generation -------------------------------------------------------------
    def make_policy(self, params: torch.Tensor | None, stats: RunningStats | None = None):
        from .policies import NAMM

        n = self.cfg.namm
        mean, var = self.norm if self.norm is not None else (None, None)
        return NAMM(params=params, mean=mean, var=var, scorer=n.scorer, hidden=n.hidden, mode=n.mode,
                    n_up=n.n_up, budget=None if stats is not None else n.budget, pool=n.pool,
                    spectral=self.spectral, stats=stats)

    @torch.no_grad()
    def generate(self, policy, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[tuple[str, float]]:
        """Greedy completions of left-padded ``prompts`` (one batch) under ``policy``, each with its row's
        mean cache fraction (kept / seen over layers, heads and updates; 1.0 when nothing was evicted)."""
        from . import memory

        ids, mask = left_pad(prompts, self.pad_id)
        width = ids.shape[1]
        with memory(self.model, policy) as mem:
            out = mem.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                               max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.pad_id)
        texts = []
        for r, row in enumerate(out[:, width:].tolist()):
            cut = next((j for j, t in enumerate(row) if t in self.eos_ids), len(row))
            texts.append((self.tok.decode(row[:cut], skip_special_tokens=True), mem.last_cache.cache_fraction(row=r)))
        return texts

    @torch.no_grad()
    def likelihood(self, policy, prompts: Sequence[Sequence[int]],
                   answers: Sequence[Sequence[int]]) -> list[tuple[float, float]]:
        """Teacher-forced score of the gold ``answers`` after left-padded ``prompts`` (one batch, one
        forward pass) under ``policy``: ``100 * exp(mean log p(answer token))``, the geometric-mean
        probability of the answer's tokens (eos included), with the row's mean cache fraction.

        A dense stand-in for the task metric (``evolution.fitness: likelihood``): a member that keeps the
        needle half-legible scores between one that keeps it and one that lost it, where exact match
        gives the latter two the same 0.
        """
        from . import memory

        ids, mask = left_pad([list(p) + list(a) for p, a in zip(prompts, answers)], self.pad_id)
        width, k = ids.shape[1], max(map(len, answers))
        with memory(self.model, policy) as mem:
            # rows end together, so every answer token lies in the last k columns; logits at t predict t + 1
            out = mem.forward(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), logits_to_keep=k + 1)
        logp = out.logits[:, :-1].float().log_softmax(-1)  # [B, k, V]
        tok_lp = logp.gather(-1, ids[:, width - k:, None].to(logp.device)).squeeze(-1)  # [B, k]
        return [(100.0 * math.exp(float(tok_lp[r, k - len(a):].mean())), mem.last_cache.cache_fraction(row=r))
                for r, a in enumerate(answers)]

    def _chunks(self, items: list, size: int | None = None) -> list[list]:
        size = size or self.cfg.run.batch_size
        return [items[i : i + size] for i in range(0, len(items), size)]

    def _score(self, task: str, idx: Sequence[int], preds: Sequence[str]) -> float:
        from namm.envs.longbench import score_examples

        t = self.tasks[task]
        if self.cfg.evolution.fitness == "likelihood":  # preds are per-prompt answer scores already
            return float(np.mean(preds))
        return float(score_examples(t.spec, list(preds), [t.examples[i] for i in idx]))

    def _predict_rows(self, rows: list[tuple[torch.Tensor | None, str, int]]) -> list[tuple[str, float]]:
        """``(prediction, cache fraction)`` for rows ``(params [P] or None = full cache, task, example)`` of
        ONE task, one batch; the prediction is the generated text, or with ``evolution.fitness:
        likelihood`` the answer's teacher-forced score."""
        from .policies import FullCache

        task = rows[0][1]
        t = self.tasks[task]
        prompts = [t.prompt(i, self.tok) for _, _, i in rows]
        if rows[0][0] is None:
            policy = FullCache(n_up=self.cfg.namm.n_up)
        else:
            policy = self.make_policy(torch.stack([p for p, _, _ in rows]).to(self.device))  # [rows, P]
        if self.cfg.evolution.fitness == "likelihood":
            return self.likelihood(policy, prompts, [t.answer(i, self.tok) for _, _, i in rows])
        return self.generate(policy, prompts, t.max_new_tokens)

    # ---- normalisation statistics and references --------------------------------------------
    def _units(self, batch: dict[str, list[int]]) -> list[list[tuple[str, int]]]:
        """``(task, example)`` pairs cut into forward-pass chunks of one task each (fixed composition,
        whatever the number of ranks, so results do not depend on the world size)."""
        return [c for task, idx in batch.items() for c in self._chunks([(task, i) for i in idx])]

    def collect_stats(self, batch: dict[str, list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the all-zero NAMM (evicts nothing) over ``batch`` and return the frozen (mean, var)."""

        def run(units):
            out = []
            for unit in units:
                stats = RunningStats(self.spectral.n_freq)
                t = self.tasks[unit[0][0]]
                policy = self.make_policy(torch.zeros(len(unit), self.num_params), stats=stats)
                self.generate(policy, [t.prompt(i, self.tok) for _, i in unit], t.max_new_tokens)
                out.append(stats)
            return out

        total = RunningStats(self.spectral.n_freq)
        for s in self.dist.map(self._units(batch), run):  # merged in a fixed order
            total.merge(s)
        return total.result()

    def reference_scores(self, batch: dict[str, list[int]]) -> dict[str, float]:
        """Full-cache score per task on ``batch``; predictions are computed once per prompt, then cached."""
        missing = {t: [i for i in idx if i not in self.refs[t]] for t, idx in batch.items()}
        units = self._units({t: idx for t, idx in missing.items() if idx})
        if units:
            preds = self.dist.map(units, lambda us: [self._predict_rows([(None, t, i) for t, i in u]) for u in us])
            for unit, p in zip(units, preds):
                for (t, i), (text, _) in zip(unit, p):
                    self.refs[t][i] = text
        return {t: self._score(t, idx, [self.refs[t][i] for i in idx]) for t, idx in batch.items()}

    # ---- population -------------------------------------------------------------------------
    def _result(self, batch: dict[str, list[int]], preds: dict[str, list[tuple[str, float]]]) -> dict:
        """``{"scores": {task: score}, "cache_fraction": mean over every prompt}`` of one policy's predictions."""
        fracs = [f for task in batch for _, f in preds[task]]
        return {"scores": {t: self._score(t, idx, [text for text, _ in preds[t]]) for t, idx in batch.items()},
                "cache_fraction": float(np.mean(fracs))}

    def _member_result(self, params: torch.Tensor, batch: dict[str, list[int]]) -> dict:
        """:meth:`_result` of one member ``params [P]`` (its prompts batched ``run.batch_size`` at a time)."""
        preds = {}
        for task, idx in batch.items():
            preds[task] = []
            for c in self._chunks(list(idx)):
                preds[task] += self._predict_rows([(params, task, i) for i in c])
        return self._result(batch, preds)

    def _evaluate_members(self, members: list[int], params: torch.Tensor,
                          batch: dict[str, list[int]]) -> list[dict]:
        """``[{"scores": {task: score}, "cache_fraction": f} or {"error": str}]`` for ``members`` (rows of
        ``params [M, P]``).

        A member that raises (or has non-finite parameters) gets an error entry; the others go on.
        Batched: the ``(member, prompt)`` rows of one prompt, ``run.batch_size`` per forward pass; a chunk
        that raises is re-run member by member, so one broken member does not sink its neighbours.
        """
        results: dict[int, dict] = {}
        for m in members:
            if not bool(torch.isfinite(params[m]).all()):
                results[m] = {"error": "non-finite parameters"}
        todo = [m for m in members if m not in results]
        if self.cfg.run.batched_population and len(todo) > 1:
            preds: dict[int, dict[str, list[tuple[str, float]]]] = {}
            broken: set[int] = set()
            # one prompt per chunk: its rows share their length, so every row's memory updates fall on the
            # same tokens and a forward pass runs one update per n_up tokens; rows of unequal lengths cut it
            # at every row's own boundaries (16 kv prompts of 1k tokens together: 2.7x slower)
            chunks = [(task, c) for task, idx in batch.items() for i in idx for c in self._chunks([(m, i) for m in todo])]
            for task, chunk in chunks:
                try:
                    out = self._predict_rows([(params[m], task, i) for m, i in chunk])
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
                results[m] = self._member_result(params[m], batch)
            except Exception as e:  # a broken member gets the worst fitness; the run goes on
                results[m] = {"error": f"{type(e).__name__}: {e}"}
        return [results[m] for m in members]

    def fitness(self, result: dict, refs: dict[str, float]) -> float:
        """Mean over tasks of :func:`task_fitness`, minus ``evolution.cache_penalty`` per unit of mean cache
        fraction above ``evolution.cache_target`` (when set); ``nan`` when the member failed."""
        if "error" in result:
            return float("nan")
        ev = self.cfg.evolution
        vals = [task_fitness(result["scores"][t], refs[t], ev.min_reference) for t in refs]
        over = max(0.0, result["cache_fraction"] - ev.cache_target) if ev.cache_target is not None else 0.0
        return float(np.mean(vals)) - ev.cache_penalty * over

    def evaluate_mean(self, batch: dict[str, list[int]], refs: dict[str, float]) -> float:
        """Fitness of the CMA-ES mean on ``batch`` (its prompts split across ranks)."""
        mean = torch.as_tensor(np.asarray(self.es.mean), dtype=torch.float32)
        units = self._units(batch)
        preds = self.dist.map(units, lambda us: [self._predict_rows([(mean, t, i) for t, i in u]) for u in us])
        texts: dict[str, list[tuple[str, float]]] = {t: [] for t in batch}
        for unit, p in zip(units, preds):
            texts[unit[0][0]] += p
        return self.fitness(self._result(batch, texts), refs)

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
        from .checkpoint import SHIPPED_NAMM, load_namm

        pol = load_namm(SHIPPED_NAMM if ev.init_from == "shipped" else Path(ev.init_from))
        if pol.params.numel() != self.num_params:
            raise ValueError(f"evolution.init_from={ev.init_from}: {pol.params.numel()} parameters, but namm "
                             f"({self.cfg.namm.scorer}, hidden {self.cfg.namm.hidden}) has {self.num_params}; "
                             "match the namm section to the file's scorer")
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
        """This generation's prompts per task of the current stage."""
        tasks = self.cfg.stages[self.stage].tasks
        return {t: self.tasks[t].sample(self.cfg.evolution.seed, generation) for t in tasks}

    def step(self, signals: _Signals | None = None) -> dict:
        """One generation; returns its log row."""
        t0 = time.time()
        batch = self.batch(self.generation)
        refs = self.reference_scores(batch)
        if self.pending is None:
            self.pending = self.es.ask()
        X = self.pending
        params = torch.as_tensor(np.stack(X), dtype=torch.float32)  # [M, P]
        members = list(range(len(X)))
        if signals is not None:
            signals.abortable = True
        try:
            results = self.dist.map(members, lambda ms: self._evaluate_members(ms, params, batch))
        finally:
            if signals is not None:
                signals.abortable = False
        fitness, failures = [], []
        cf = [r.get("cache_fraction") for r in results]  # per member; None where it failed
        for m, r in enumerate(results):
            f = self.fitness(r, refs)
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
        self.refs = {t: dict(state["refs"].get(t, {})) for t in self.tasks}
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
                 "pending": self.pending, "refs": self.refs, "norm": self.norm, "history": self.history,
                 "np_random": np.random.get_state()}

        def dump(tmp: str) -> None:
            with open(tmp, "wb") as f:
                pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)

        atomic_write(self.out / STATE_FILE, dump)
        self.write_logs()

    def write_logs(self) -> None:
        lines = "".join(json.dumps(r) + "\n" for r in self.history)
        atomic_write(self.out / "log.jsonl", lambda tmp: Path(tmp).write_text(lines))
        cols = ["generation", "stage", "fitness_mean", "fitness_std", "fitness_max", "mean_fitness",
                "cache_fraction_mean", "sigma", "n_failed", "time_s"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(self.history)
        atomic_write(self.out / "log.csv", lambda tmp: Path(tmp).write_text(buf.getvalue()))
        if self.cfg.run.plot and self.history:
            plot_history(self.history, self.out / "fitness.png")

    # ---- main loop ---------------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> EvolveResult:
        """Run (or continue) every stage; ``stop_after`` ends this call after that many generations."""
        from tqdm.auto import tqdm

        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(dump_config(self.cfg))
        if self.norm is None:  # frozen once, from the first generation's prompts (spec §2.5)
            pol = self._init_policy()  # a warm start keeps the statistics its parameters were evolved with
            if pol is not None and pol.mean is not None:
                self.norm = (pol.mean.clone(), pol.var.clone())
            else:
                self.norm = self.collect_stats(self.batch(0))
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


def evolve(cfg: EvolveConfig, *, resume: bool = False, model=None, tokenizer=None,
           stop_after: int | None = None) -> EvolveResult:
    """Run ``namm evolve`` for ``cfg`` (under ``torchrun``, every rank calls this)."""
    runner = Evolution(cfg, resume=resume, model=model, tokenizer=tokenizer)
    try:
        return runner.run(stop_after=stop_after)
    finally:
        runner.dist.close()


# --------------------------------------------------------------------------- plot and CLI

def plot_history(history: list[dict], path: Path) -> None:
    """Fitness curve like the paper's figure 4: population mean +- std, and the CMA-ES mean's fitness."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = np.array([r["generation"] for r in history])
    mu = np.array([np.nan if r["fitness_mean"] is None else r["fitness_mean"] for r in history])
    sd = np.array([np.nan if r["fitness_std"] is None else r["fitness_std"] for r in history])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(g, mu, color="tab:blue", label="population mean")
    ax.fill_between(g, mu - sd, mu + sd, color="tab:blue", alpha=0.2, label="population ± std")
    means = [(r["generation"], r["mean_fitness"]) for r in history if r["mean_fitness"] is not None]
    if means:
        ax.plot(*zip(*means), color="tab:red", marker=".", label="CMA-ES mean")
    for prev, cur in zip(history, history[1:]):
        if cur["stage"] != prev["stage"]:
            ax.axvline(prev["generation"] + 0.5, color="gray", ls="--", lw=0.8)
    ax.axhline(1.0, color="black", lw=0.6, alpha=0.5)
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness (score / full-cache score)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def cmd_evolve(a: argparse.Namespace) -> None:
    overrides = list(a.overrides) + ([f"run.out={a.out}"] if a.out else [])
    cfg = load_config(a.config, overrides)
    result = evolve(cfg, resume=a.resume)
    if result.interrupted is not None:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"namm evolve: stopped by signal {result.interrupted} after generation {result.generation}; "
                  f"continue with --resume (state in {result.out})", file=sys.stderr)
        raise SystemExit(128 + result.interrupted)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"namm evolve: {result.generation} generations -> {result.out / WEIGHTS_FILE}")


def add_evolve_command(subparsers) -> argparse.ArgumentParser:
    """Add ``namm evolve --config CONFIG [--resume] [--out DIR] [key=value ...]``."""
    p = subparsers.add_parser(
        "evolve", help="evolve a NAMM with CMA-ES on language tasks (multi-GPU: torchrun -m namm.cli evolve ...)",
        description="Evolve a NAMM with CMA-ES. Overrides are dotted keys, e.g. evolution.population=8 "
        "stages.0.generations=5 data.passage_retrieval_en.samples=16.")
    p.add_argument("--config", required=True, help="YAML config (see configs/evolve_tiny.yaml, configs/evolve_paper.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder (same trajectory)")
    p.add_argument("--out", default=None, help="output folder (overrides run.out)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(fn=cmd_evolve)
    return p
