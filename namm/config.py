"""One configuration mechanism for every run: dataclass schemas, YAML files, dotted ``key=value``
overrides and command-line flags, validated before anything runs.

    cfg = load(EvolveConfig, "configs/evolve_tiny.yaml", ["evolution.population=8", "run.out=runs/x"])
    dump(cfg)                      # the resolved config, as written next to a run's results
    add_flags(parser, TrainConfig) # one --flag per field, for the zoo trainers; from_flags(TrainConfig, args)

Unknown keys (with a "did you mean"), wrong types and out-of-range values raise :class:`ConfigError`
naming the key, the bad value and the fix. A schema's ``check()`` (if it has one) runs after building.
There is no global state: a config is a plain value passed around. Imports nothing of ``namm``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar

import yaml

__all__ = ["ConfigError", "require", "build", "apply_overrides", "copy_tree", "read_yaml", "from_dict", "load",
           "dump", "add_flags", "from_flags"]

T = TypeVar("T")

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


def require(ok: bool, key: str, value: Any, fix: str) -> None:
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


def build(tp: Any, value: Any, at: str) -> Any:
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
                return build(a, value, at)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if len(inner) == 1 else ConfigError(
            f"{at}: invalid value {value!r}; expected {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{at}: invalid value {value!r}; use one of {', '.join(repr(a) for a in args)}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{at}: expected a mapping of {tp.__name__} fields, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        kw = {}
        for k, v in value.items():
            if k not in names:
                raise _unknown_key(str(k), at, names)
            kw[k] = build(hints[k], v, f"{at}.{k}" if at else k)
        return tp(**kw)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{at}: expected a list, got {value!r}")
        return [build(args[0], v, f"{at}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{at}: expected a mapping, got {value!r}")
        return {str(k): build(args[1], {} if v is None else v, f"{at}.{k}") for k, v in value.items()}
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


def copy_tree(x: Any) -> Any:
    """Deep copy that also un-shares YAML anchors/aliases (``deepcopy`` keeps them shared, so an override
    of one aliased section would silently change the others)."""
    if isinstance(x, dict):
        return {k: copy_tree(v) for k, v in x.items()}
    if isinstance(x, list):
        return [copy_tree(v) for v in x]
    return x


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file's mapping (empty file: ``{}``); a missing or malformed file raises :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections, got {type(data).__name__}")
    return data


def from_dict(cls: type[T], data: dict[str, Any] | None, overrides: Sequence[str] = ()) -> T:
    """Build and validate a ``cls`` config from a raw dict plus overrides."""
    data = copy_tree(data if data is not None else {})
    if not isinstance(data, dict):
        raise ConfigError(f"the config must be a mapping of sections, got {type(data).__name__}")
    apply_overrides(data, overrides)
    cfg = build(cls, data, "")
    check = getattr(cfg, "check", None)
    if callable(check):
        check()
    return cfg


def load(cls: type[T], path: str | Path | None, overrides: Sequence[str] = ()) -> T:
    """``cls``'s defaults (``path=None``) or a YAML file, plus ``key=value`` overrides; validated."""
    if path is None:
        return from_dict(cls, {}, overrides)
    data = read_yaml(path)
    try:
        return from_dict(cls, data, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def dump(cfg: Any) -> str:
    """The resolved config as YAML (key order as declared)."""
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


def add_flags(p: argparse.ArgumentParser, cls: type, required: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per field of the dataclass ``cls`` (its defaults; bools as --x / --no-x)."""
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    for f, v in dataclasses.asdict(cls()).items():
        flag = "--" + f.replace("_", "-")
        if f in required:
            p.add_argument(flag, required=True)
        elif isinstance(v, bool) or (v is None and types[f].startswith("bool")):  # type=bool reads "False" as True
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=v)
        elif isinstance(v, (list, tuple)):
            continue  # structured fields are set through a --config file or a flag of the command's own
        else:
            p.add_argument(flag, type=type(v), default=v)


def from_flags(cls: type[T], a: argparse.Namespace, **extra: Any) -> T:
    """The ``cls`` instance that :func:`add_flags` flags describe (``extra`` wins)."""
    return cls(**{**{k: v for k, v in vars(a).items() if k in cls.__dataclass_fields__}, **extra})  # type: ignore[attr-defined]
