"""The ``namm evolve`` configuration: its sections as dataclasses, read with :mod:`namm.config`.

    cfg = load_config("configs/evolve_tiny.yaml", ["evolution.population=8", "run.out=runs/x"])
    cfg.to_dict()  # the resolved config, as written next to a run's results
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from namm import config as _config
from namm.checkpoint import SHIPPED_NAMMS, shipped_namm
from namm.config import ConfigError
from namm.config import require as _require

__all__ = [
    "ConfigError", "ModelConfig", "NammConfig", "EvolutionConfig", "StageConfig", "TaskDataConfig",
    "RunConfig", "EvolveConfig", "load_config", "config_from_dict", "dump_config", "TINY_MODEL",
]

TINY_MODEL = "tiny-random"  # model.name that builds a small random Llama on the fly (tests, smoke runs)


# --------------------------------------------------------------------------- sections

@dataclass
class ModelConfig:
    """The base LLM. ``name``: a Hugging Face id, a local folder, or ``"tiny-random"``.

    ``rope_theta`` / ``max_position_embeddings`` override the loaded config before the weights are
    built (the paper's fixed NTK base: theta = 500000 * 7**(128/126) ~ 3.61e6, 32768 positions).
    """

    name: str = TINY_MODEL  # or "zoo" (the shipped zoo LM), a local folder, an HF id
    tokenizer: str | None = None  # default: the model's own (a char tokenizer for tiny-random)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda" or "cuda:N"
    rope_theta: float | None = None
    max_position_embeddings: int | None = None
    seed: int = 0  # weights of the tiny random model

    def check(self, at: str) -> None:
        _require(self.name.strip() != "", f"{at}.name", self.name, "give a Hugging Face id, a local path or 'tiny-random'")
        dev = self.device
        ok = dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())
        _require(ok, f"{at}.device", dev, "use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.rope_theta is not None:
            _require(self.rope_theta > 0, f"{at}.rope_theta", self.rope_theta,
                     "use a positive RoPE base (or null to keep the model's)")
        if self.max_position_embeddings is not None:
            _require(self.max_position_embeddings > 0, f"{at}.max_position_embeddings", self.max_position_embeddings,
                     "use a positive int (or null to keep the model's)")


@dataclass
class NammConfig:
    """The evolved policy (spec §1-4): scorer, eviction mode, update period and spectrogram settings."""

    scorer: Literal["bam", "mlp"] = "bam"
    hidden: int = 32
    mode: Literal["reference", "ragged"] = "reference"
    n_up: int = 512
    n_fft: int = 32
    hop: int = 16
    ema: float = 0.99
    # optional cap on top of the threshold, the same for every head: a fraction of tokens seen (0.5) or a
    # token count; saved with the weights and applied by `--policy namm`
    budget: float | int | None = None
    # odd window: > 1 keeps runs of tokens around kept ones (selection.neighbour_max; not in the paper)
    pool: int = 1

    def check(self, at: str) -> None:
        import torch

        from namm.selection import budget_tokens

        _require(self.hidden >= 1, f"{at}.hidden", self.hidden, "use a positive width")
        try:
            budget_tokens(self.budget, torch.ones(1, dtype=torch.long))
        except (ValueError, TypeError) as e:
            _require(False, f"{at}.budget", self.budget, f"use null, a fraction in (0, 1] or a token count ({e})")
        _require(self.n_up >= 1, f"{at}.n_up", self.n_up, "use a positive update period in tokens")
        _require(self.pool >= 1 and self.pool % 2 == 1, f"{at}.pool", self.pool, "use an odd window (1 = off)")
        _require(0 < self.hop < self.n_fft, f"{at}.hop", self.hop, f"need 0 < hop < n_fft (= {self.n_fft})")
        _require(self.n_up % self.hop == 0, f"{at}.n_up", self.n_up, f"must be a multiple of namm.hop (= {self.hop})")
        _require(0.0 <= self.ema < 1.0, f"{at}.ema", self.ema, "use a decay in [0, 1)")


@dataclass
class EvolutionConfig:
    """CMA-ES (spec §5). ``generations`` is the default for stages that do not set their own."""

    population: int = 32
    elite_ratio: float = 0.5  # mu = population * elite_ratio parents, log-rank weights
    sigma0: float = 0.065
    mean0: float = 0.0
    # initial value of the scorer's output bias (the last parameter; null: mean0): > 0 starts from a NAMM that keeps
    # (almost) everything, so evolution learns what to drop instead of searching for what to keep
    keep_bias0: float | None = None
    # NAMM weights to start the mean from instead of mean0: a .safetensors file or a shipped name
    # (a key of namm.checkpoint.SHIPPED_NAMMS; "shipped" = "namm")
    init_from: str | None = None
    active: bool = True  # active CMA: negative weights for the worst members
    seed: int = 0
    generations: int | None = None
    eval_mean_every: int = 1  # score the CMA-ES mean every N generations (0: never)
    min_reference: float = 1e-6  # full-cache scores below this count as zero (see evolution.task_fitness)
    # memory target: fitness loses cache_penalty per unit of a member's mean cache fraction above cache_target
    # (null: no target, as in the paper). Unlike namm.budget, which caps every head alike, this lets the NAMM
    # spend its memory where it is needed (e.g. keep more in the layers that retrieve).
    cache_target: float | None = None
    cache_penalty: float = 10.0
    # "score": each task's own metric on greedy answers (the paper); "likelihood": the gold answer's
    # teacher-forced geometric-mean token probability x 100, a dense signal where exact match is all-or-nothing
    fitness: Literal["score", "likelihood"] = "score"

    def check(self, at: str) -> None:
        _require(self.population >= 2, f"{at}.population", self.population, "use at least 2 members")
        _require(0.0 < self.elite_ratio <= 1.0, f"{at}.elite_ratio", self.elite_ratio, "use a ratio in (0, 1]")
        _require(max(1, round(self.population * self.elite_ratio)) <= self.population, f"{at}.elite_ratio",
                 self.elite_ratio, "elite count exceeds the population")
        _require(self.sigma0 > 0, f"{at}.sigma0", self.sigma0, "use a positive initial step size")
        _require(self.seed >= 0, f"{at}.seed", self.seed, "use a non-negative int")
        if self.generations is not None:
            _require(self.generations >= 0, f"{at}.generations", self.generations, "use a non-negative int")
        _require(self.eval_mean_every >= 0, f"{at}.eval_mean_every", self.eval_mean_every, "use 0 (never) or N >= 1")
        _require(self.min_reference >= 0, f"{at}.min_reference", self.min_reference, "use a non-negative score")
        if self.cache_target is not None:
            _require(0.0 < self.cache_target <= 1.0, f"{at}.cache_target", self.cache_target,
                     "use a mean cache fraction in (0, 1], or null for no target")
        _require(self.cache_penalty >= 0, f"{at}.cache_penalty", self.cache_penalty, "use a non-negative penalty")
        if self.init_from is not None and shipped_namm(self.init_from) is None:
            _require(Path(self.init_from).is_file(), f"{at}.init_from", self.init_from,
                     f"give an existing NAMM .safetensors file, a shipped name ({', '.join(SHIPPED_NAMMS)}) or null")


@dataclass
class StageConfig:
    """One incremental stage: the tasks whose fitness is averaged, for ``generations`` generations."""

    tasks: list[str] = field(default_factory=list)
    generations: int | None = None


@dataclass
class TaskDataConfig:
    """Where one task's examples come from and how prompts are cut.

    The task registry knows where a task's examples come from: file tasks (LongBench) read the first
    ``limit`` examples of ``{data_dir}/{task}.jsonl`` (``data_dir`` null: ``$LONGBENCH_DIR``); generated
    tasks (the zoo, RULER, synthetic, ...) draw ``examples`` instances with ``seed`` at ``context_tokens``.
    ``source`` may still name it (``longbench``, ``synthetic``, ``zoo``, ``generated``) and is then checked.
    """

    source: Literal["longbench", "synthetic", "zoo", "generated"] | None = None
    data_dir: str | None = None
    limit: int | None = None  # keep the first N examples of the file
    examples: int = 64  # synthetic / zoo only
    seed: int = 0  # synthetic / zoo only
    context_tokens: int = 2048  # zoo only
    # corpus documents generated tasks draw from: "heldout" (what every evaluation reads) or "train" (files no
    # evaluation reads: evolving a real model there keeps the evaluated files unseen)
    split: Literal["heldout", "train"] = "heldout"
    samples: int = 64  # prompts drawn per generation (the same for every member)
    max_prompt_tokens: int = 6500  # longer prompts are cut in the middle
    max_new_tokens: int | None = None  # default: the task's own
    max_steps: int = 1000  # RL tasks: env steps per episode (D4RL's time limit)

    def check(self, at: str) -> None:
        if self.limit is not None:
            _require(self.limit >= 1, f"{at}.limit", self.limit, "use a positive count (or null for all)")
        _require(self.examples >= 1, f"{at}.examples", self.examples, "use a positive count")
        _require(self.context_tokens >= 128, f"{at}.context_tokens", self.context_tokens, "use at least 128 tokens")
        _require(self.samples >= 1, f"{at}.samples", self.samples, "use a positive count")
        _require(self.max_prompt_tokens >= 2, f"{at}.max_prompt_tokens", self.max_prompt_tokens, "use at least 2 tokens")
        if self.max_new_tokens is not None:
            _require(self.max_new_tokens >= 1, f"{at}.max_new_tokens", self.max_new_tokens, "use a positive count (or null)")
        _require(self.max_steps >= 1, f"{at}.max_steps", self.max_steps, "use a positive number of env steps")


@dataclass
class RunConfig:
    """Where results go and how evaluation is batched.

    ``batch_size`` rows share a forward pass: a member's prompts (or, batched, member x prompt rows).
    Under ``namm.mode: reference`` rows that update together share one eviction count, so prompts
    batched together influence each other; the reference code runs batch 1 (``batch_size: 1``).
    """

    out: str = "runs/evolve"
    batched_population: bool = False  # several members per forward pass (params [rows, P])
    batch_size: int = 8  # rows (member x prompt) per forward pass
    checkpoint_every: int = 1
    plot: bool = True
    progress: bool = True

    def check(self, at: str) -> None:
        _require(self.out.strip() != "", f"{at}.out", self.out, "give an output folder")
        _require(self.batch_size >= 1, f"{at}.batch_size", self.batch_size, "use a positive number of rows")
        _require(self.checkpoint_every >= 1, f"{at}.checkpoint_every", self.checkpoint_every, "use N >= 1")


@dataclass
class EvolveConfig:
    """A whole ``namm evolve`` run."""

    modality: str = "language"  # the registered Fitness that scores members (namm.evolution.FITNESSES)
    model: ModelConfig = field(default_factory=ModelConfig)
    namm: NammConfig = field(default_factory=NammConfig)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    stages: list[StageConfig] = field(default_factory=list)
    data: dict[str, TaskDataConfig] = field(default_factory=dict)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON-ready) of every value, defaults included."""
        return dataclasses.asdict(self)

    def stage_generations(self, i: int) -> int:
        g = self.stages[i].generations
        return self.evolution.generations if g is None else g  # type: ignore[return-value]

    def check(self) -> None:
        self.model.check("model")
        self.namm.check("namm")
        self.evolution.check("evolution")
        self.run.check("run")
        from namm import tasks

        from .fitness import FITNESSES

        _require(self.modality in FITNESSES, "modality", self.modality,
                 f"use a registered fitness ({', '.join(FITNESSES)}; add one with register_fitness)")
        kind = FITNESSES[self.modality].task_kind
        _require(len(self.stages) >= 1, "stages", self.stages, "list at least one stage: [{tasks: [...], generations: N}]")
        for i, st in enumerate(self.stages):
            at = f"stages[{i}]"
            _require(len(st.tasks) >= 1, f"{at}.tasks", st.tasks, "list at least one task")
            _require(len(set(st.tasks)) == len(st.tasks), f"{at}.tasks", st.tasks, "remove the duplicate task")
            for t in st.tasks:
                try:
                    tasks.spec(t, kind)
                except tasks.UnknownTaskError as e:
                    raise ConfigError(f"{at}.tasks: {e}") from None
                if t not in self.data:
                    raise ConfigError(f"{at}.tasks: task {t!r} has no 'data.{t}' entry; add one, e.g. "
                                      f"data: {{{t}: {{data_dir: PATH, samples: 64}}}}")
            if st.generations is None:
                _require(self.evolution.generations is not None, f"{at}.generations", None,
                         "set the stage's generations or evolution.generations")
            else:
                _require(st.generations >= 0, f"{at}.generations", st.generations, "use a non-negative int")
        for name, d in self.data.items():
            d.check(f"data.{name}")
            if d.split != "heldout" and kind == "text":
                splits = tasks.make(name, kind).splits
                _require(d.split in splits, f"data.{name}.split", d.split,
                         f"task {name!r} draws only from {list(splits)}")
            if d.source is not None and kind == "text":
                task = tasks.make(name, kind)
                actual = "longbench" if task.source == "files" else task.family if task.family in ("zoo", "synthetic") \
                    else "generated"
                _require(d.source in (actual, "generated" if task.source == "generated" else actual),
                         f"data.{name}.source", d.source, f"task {name!r} is a {actual} task (or leave source out)")
        if self.run.batched_population and self.namm.mode == "reference":
            raise ConfigError(
                "run.batched_population: true with namm.mode: 'reference' would couple population members "
                "(the reference rule takes one eviction count over all rows that update together), so "
                "fitness would depend on the batch; set namm.mode=ragged or run.batched_population=false")


def config_from_dict(data: dict[str, Any] | None, overrides: Sequence[str] = ()) -> EvolveConfig:
    """Build and validate a config from a raw dict plus overrides."""
    return _config.from_dict(EvolveConfig, data, overrides)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> EvolveConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate; raises :class:`ConfigError`."""
    return _config.load(EvolveConfig, path, overrides)


def dump_config(cfg: EvolveConfig) -> str:
    """The resolved config as YAML (key order as declared)."""
    return _config.dump(cfg)
