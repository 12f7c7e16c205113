"""The ``namm evolve`` configuration: dataclasses + YAML + dotted ``key=value`` overrides.

    cfg = load_config("configs/evolve_tiny.yaml", ["evolution.population=8", "run.out=runs/x"])
    cfg.to_dict()  # the resolved config, as written next to a run's results

Everything is validated up front, before any model or data is touched (and never over the network):
unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the key, the bad
value and the fix. There is no global state: a config is a plain value passed around.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

__all__ = [
    "ConfigError", "ModelConfig", "NammConfig", "EvolutionConfig", "StageConfig", "TaskDataConfig",
    "RunConfig", "EvolveConfig", "load_config", "config_from_dict", "apply_overrides", "dump_config", "TINY_MODEL",
]

TINY_MODEL = "tiny-random"  # model.name that builds a small random Llama on the fly (tests, smoke runs)

# Names people reach for that the schema spells differently (difflib alone misses some of these).
_ALIASES = {
    "popsize": "population", "pop_size": "population", "lambda": "population", "elite": "elite_ratio",
    "mu": "elite_ratio", "sigma": "sigma0", "step_size": "sigma0", "mean": "mean0", "iterations": "generations",
    "steps": "generations", "output": "out", "out_dir": "out", "output_dir": "out", "dir": "data_dir",
    "max_length": "max_prompt_tokens", "max_len": "max_prompt_tokens", "max_tokens": "max_prompt_tokens",
    "n_samples": "samples", "samples_per_generation": "samples", "batch": "batch_size", "precision": "dtype",
    "update_every": "n_up", "model_id": "name", "path": "name", "theta": "rope_theta",
}


class ConfigError(ValueError):
    """An invalid configuration: the message names the key, the bad value and how to fix it."""


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
            _require(self.rope_theta > 0, f"{at}.rope_theta", self.rope_theta, "use a positive RoPE base (or null to keep the model's)")
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

        from .selection import budget_tokens

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
    init_from: str | None = None  # NAMM weights (.safetensors, or "shipped") to start the mean from, instead of mean0
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
        if self.init_from not in (None, "shipped"):
            _require(Path(self.init_from).is_file(), f"{at}.init_from", self.init_from,
                     "give an existing NAMM .safetensors file, 'shipped' (the packaged weights) or null")


@dataclass
class StageConfig:
    """One incremental stage: the tasks whose fitness is averaged, for ``generations`` generations."""

    tasks: list[str] = field(default_factory=list)
    generations: int | None = None


@dataclass
class TaskDataConfig:
    """Where one task's examples come from and how prompts are cut.

    ``source``: ``"longbench"`` reads ``{data_dir}/{task}.jsonl`` (``data_dir`` null: ``$LONGBENCH_DIR``);
    ``"synthetic"`` generates ``examples`` examples of a built-in synthetic task (seeded by ``seed``);
    ``"zoo"`` generates ``examples`` instances of a language-zoo task from the offline corpus (``seed``,
    ``context_tokens``), so a fresh clone needs no ``namm zoo build-tasks`` folder.
    """

    source: Literal["longbench", "synthetic", "zoo"] = "longbench"
    data_dir: str | None = None
    limit: int | None = None  # keep the first N examples of the file
    examples: int = 64  # synthetic / zoo only
    seed: int = 0  # synthetic / zoo only
    context_tokens: int = 2048  # zoo only
    samples: int = 64  # prompts drawn per generation (the same for every member)
    max_prompt_tokens: int = 6500  # longer prompts are cut in the middle
    max_new_tokens: int | None = None  # default: the task's own

    def check(self, at: str) -> None:
        if self.limit is not None:
            _require(self.limit >= 1, f"{at}.limit", self.limit, "use a positive count (or null for all)")
        _require(self.examples >= 1, f"{at}.examples", self.examples, "use a positive count")
        _require(self.context_tokens >= 128, f"{at}.context_tokens", self.context_tokens, "use at least 128 tokens")
        _require(self.samples >= 1, f"{at}.samples", self.samples, "use a positive count")
        _require(self.max_prompt_tokens >= 2, f"{at}.max_prompt_tokens", self.max_prompt_tokens, "use at least 2 tokens")
        if self.max_new_tokens is not None:
            _require(self.max_new_tokens >= 1, f"{at}.max_new_tokens", self.max_new_tokens, "use a positive count (or null)")


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
        _require(len(self.stages) >= 1, "stages", self.stages, "list at least one stage: [{tasks: [...], generations: N}]")
        known = _known_tasks()
        for i, st in enumerate(self.stages):
            at = f"stages[{i}]"
            _require(len(st.tasks) >= 1, f"{at}.tasks", st.tasks, "list at least one task")
            _require(len(set(st.tasks)) == len(st.tasks), f"{at}.tasks", st.tasks, "remove the duplicate task")
            for t in st.tasks:
                if t not in known:
                    close = difflib.get_close_matches(t, known, n=1, cutoff=0.6)
                    hint = f"did you mean {close[0]!r}?" if close else f"known tasks: {', '.join(sorted(known))}"
                    raise ConfigError(f"{at}.tasks: unknown task {t!r} ({hint})")
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
            if d.source == "zoo":
                from namm.envs.zoo_tasks import ZOO_TASKS

                _require(name in ZOO_TASKS, f"data.{name}.source", "zoo",
                         f"'zoo' generates language-zoo tasks only ({', '.join(ZOO_TASKS)})")
        if self.run.batched_population and self.namm.mode == "reference":
            raise ConfigError(
                "run.batched_population: true with namm.mode: 'reference' would couple population members "
                "(the reference rule takes one eviction count over all rows that update together), so "
                "fitness would depend on the batch; set namm.mode=ragged or run.batched_population=false")


def _known_tasks() -> list[str]:
    from namm.envs.longbench import TASKS

    from namm.envs.zoo_tasks import register_longbench_tasks

    from .evolution import register_synthetic_tasks  # the built-in synthetic tasks join the registry

    register_synthetic_tasks()
    register_longbench_tasks()  # and the language-zoo tasks
    return list(TASKS)


def _require(ok: bool, key: str, value: Any, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: invalid value {value!r}; {fix}")


# --------------------------------------------------------------------------- dict -> dataclasses

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _unknown_key(key: str, at: str, allowed: Sequence[str]) -> ConfigError:
    full = f"{at}.{key}" if at else key
    guess = _ALIASES.get(key) if _ALIASES.get(key) in allowed else None
    guess = guess or next(iter(difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)), None)
    if guess:
        hint = f"did you mean '{at + '.' if at else ''}{guess}'?"
    else:
        hint = f"allowed keys{' under ' + repr(at) if at else ''}: {', '.join(allowed)}"
    return ConfigError(f"unknown key {full!r} ({hint})")


def _build(tp: Any, value: Any, at: str) -> Any:
    """Check ``value`` against the type ``tp`` and convert it (dicts -> dataclasses)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if {int, float} <= set(inner) and isinstance(value, (int, float)) and not isinstance(value, bool):
            return value  # int | float keeps the written form: 0.5 is a fraction, 512 a count, 1.0 "all"
        errors = []
        for a in inner:
            try:
                return _build(a, value, at)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if len(inner) == 1 else ConfigError(
            f"{at}: invalid value {value!r}; expected {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{at}: invalid value {value!r}; use one of {', '.join(repr(a) for a in args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{at}: expected a mapping of {tp.__name__} fields, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        kw = {}
        for k, v in value.items():
            if k not in names:
                raise _unknown_key(str(k), at, names)
            kw[k] = _build(hints[k], v, f"{at}.{k}" if at else k)
        return tp(**kw)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{at}: expected a list, got {value!r}")
        return [_build(args[0], v, f"{at}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{at}: expected a mapping, got {value!r}")
        return {str(k): _build(args[1], {} if v is None else v, f"{at}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{at}: invalid value {value!r}; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{at}: invalid value {value!r}; expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{at}: invalid value {value!r}; expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{at}: invalid value {value!r}; expected a string")
        return value
    raise TypeError(f"{at}: unsupported config type {tp!r}")  # a schema bug, not a user error


# --------------------------------------------------------------------------- overrides and loading

def _parse_value(text: str) -> Any:
    """YAML scalar/flow syntax: ``8`` -> 8, ``true`` -> True, ``null`` -> None, ``[a, b]`` -> list."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a raw config dict (lists take an index: ``stages.0.generations=5``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. evolution.population=8")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: malformed key {key!r}")
        node: Any = data
        for i, p in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not p.isdigit() or int(p) >= len(node):
                    raise ConfigError(f"override {item!r}: {where!r} is not an index of a {len(node)}-item list")
                node = node[int(p)]
            else:
                if node.get(p) is None:
                    node[p] = {}
                node = node[p]
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override {item!r}: {where!r} is a value, not a section")
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override {item!r}: {last!r} is not an index of a {len(node)}-item list")
            node[int(last)] = _parse_value(text)
        else:
            node[last] = _parse_value(text)
    return data


def _copy_tree(x: Any) -> Any:
    """Deep copy that also un-shares YAML anchors/aliases (``deepcopy`` keeps them shared, so an override
    of one aliased section would silently change the others)."""
    if isinstance(x, dict):
        return {k: _copy_tree(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy_tree(v) for v in x]
    return x


def config_from_dict(data: dict[str, Any] | None, overrides: Sequence[str] = ()) -> EvolveConfig:
    """Build and validate a config from a raw dict plus overrides."""
    data = _copy_tree(data if data is not None else {})
    if not isinstance(data, dict):
        raise ConfigError(f"the config must be a mapping of sections, got {type(data).__name__}")
    apply_overrides(data, overrides)
    cfg = _build(EvolveConfig, data, "")
    cfg.check()
    return cfg


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> EvolveConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate; raises :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    try:
        return config_from_dict(data, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def dump_config(cfg: EvolveConfig) -> str:
    """The resolved config as YAML (key order as declared)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
