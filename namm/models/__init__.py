"""One model registry and loader: zoo names, the real pretrained models, tiny random models, local folders
and hub ids, for every kind of model the testbed runs.

    from namm import models
    model, tok = models.load("zoo")                        # the zoo LM (kind "lm")
    model, tok = models.load("smollm2-135m")               # fetched on first use (namm models fetch)
    model, tok = models.load("zoo", kind="video")          # the zoo LLaVA-NeXT-Video (on SmolLM2)
    model, norm = models.load("dt-hopper-medium", kind="dt")
    models.register("my-lm", "my_pkg.models:load", kind="lm")   # (device, dtype, **options) -> (model, tok)

A spec is a registered name, a local Hugging Face folder, or a hub id (refused in one line while offline
unless it is cached). Entry points are imported only when a model is loaded.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .hub import ModelUnavailable, check_pretrained

__all__ = ["ModelEntry", "register", "load", "names", "entry", "ModelUnavailable", "KINDS"]

KINDS = ("lm", "video", "dt")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    entry_point: str | Callable[..., Any]
    kind: str = "lm"
    description: str = ""
    aliases: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


_MODELS: dict[str, ModelEntry] = {}
_ALIASES: dict[tuple[str, str], str] = {}


def register(name: str, entry_point: str | Callable[..., Any], *, kind: str = "lm", description: str = "",
             aliases: tuple[str, ...] = (), overwrite: bool = False, **options: Any) -> ModelEntry:
    """Register a model name; the entry point is called as ``fn(device=, dtype=, **options)``."""
    if kind not in KINDS:
        raise ValueError(f"model {name!r}: kind must be one of {KINDS}, got {kind!r}")
    if name in _MODELS and not overwrite:
        raise ValueError(f"model {name!r} is already registered; pass overwrite=True to replace it")
    e = ModelEntry(name, entry_point, kind, description, tuple(aliases), dict(options))
    _MODELS[name] = e
    for a in aliases:
        _ALIASES[(kind, a)] = name
    return e


def names(kind: str | None = None) -> list[str]:
    return [n for n, e in _MODELS.items() if kind is None or e.kind == kind]


def entry(spec: str, kind: str = "lm") -> ModelEntry | None:
    """The registry entry a spec names (directly or by an alias of that kind), or ``None``."""
    name = _ALIASES.get((kind, spec), spec)
    e = _MODELS.get(name)
    return e if e is not None and e.kind == kind else None


def _call(fn: str | Callable[..., Any], **kw: Any) -> Any:
    if isinstance(fn, str):
        module, _, attr = fn.partition(":")
        fn = getattr(importlib.import_module(module), attr)
    return fn(**kw)


def load(spec: str, kind: str = "lm", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
         **options: Any) -> tuple[Any, Any]:
    """``(model, companion)``: the tokenizer for ``lm`` and ``video`` models, the state normalisation
    (or ``None``) for ``dt`` models. ``options`` go to the entry point (e.g. ``rope_theta``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    e = entry(spec, kind)
    if e is not None:
        return _call(e.entry_point, device=device, dtype=dtype, **{**e.options, **options})
    if Path(spec).expanduser().is_dir() or "/" in spec:
        known = names(kind)
        try:
            src = check_pretrained(spec, known)
        except ModelUnavailable:
            raise
        return _call(_FOLDER_LOADERS[kind], spec=src, device=device, dtype=dtype, **options)
    close = difflib.get_close_matches(spec, names(kind) + [a for k, a in _ALIASES if k == kind], n=2, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise ModelUnavailable(f"unknown {kind} model {spec!r}: {hint}use a registered name ({', '.join(names(kind))}), "
                           "a local model folder or a hub id (org/name)")


_FOLDER_LOADERS = {
    "lm": "namm.models.loaders:folder_lm",
    "video": "namm.models.loaders:folder_video",
    "dt": "namm.models.loaders:folder_dt",
}

# ---- the built-in names -----------------------------------------------------------------------
register("tiny-random", "namm.models.loaders:tiny_lm", description="2-layer random Llama + character tokenizer (tests)")
register("zoo-lm", "namm.models.loaders:zoo_lm", aliases=("zoo",),
         description="the language zoo's 4M-parameter Llama (namm/weights/zoo/lm)")
register("zoo-video", "namm.models.loaders:zoo_video", kind="video", aliases=("zoo",),
         description="the zoo LLaVA-NeXT-Video on the frozen SmolLM2-135M-Instruct (namm/weights/zoo/video-smollm2; "
                     "the LM from `namm models fetch smollm2-135m`)")
register("zoo-video-tiny", "namm.models.loaders:zoo_video", kind="video", aliases=("zoo-tiny",), tiny=True,
         description="the small LLaVA-NeXT-Video on the 4M zoo LM (namm/weights/zoo/video-tiny; nothing to fetch)")
for _env in ("hopper", "halfcheetah", "walker2d"):
    for _level in ("medium", "medium-replay"):
        register(f"dt-{_env}-{_level}", "namm.models.loaders:zoo_dt", kind="dt", env=_env, level=_level,
                 description=f"the zoo Decision Transformer for {_env}-{_level}")


def _register_real() -> None:
    from .real import REAL_MODELS

    for m in REAL_MODELS.values():
        register(m.name, "namm.models.real:load_real", model=m.name, description=m.description)


_register_real()
