"""One task registry for every modality, Gymnasium-style: ``register(id, entry_point=...)``, ``make(id)``.

An entry point is ``"module:attr"`` (imported only when the task is made) or a callable; it is called
with the entry's keyword arguments and returns a :class:`~namm.tasks.base.TextTask`,
:class:`~namm.tasks.base.VideoTask` or :class:`~namm.tasks.base.RLTask`. Suites name several ids at
once (``ruler``, ``zoo``, ``longbench``). The built-in tasks are registered when ``namm.tasks`` is
imported: there is no registration call to remember.

    from namm.tasks import register, make
    register("my_task", entry_point="my_pkg.tasks:make_my_task", kind="text", family="mine")
    task = make("my_task")
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["TaskEntry", "register", "register_suite", "make", "spec", "task_ids", "expand", "UnknownTaskError"]

KINDS = ("text", "video", "rl")


class UnknownTaskError(ValueError):
    """An id that is neither a registered task nor a suite; the message lists the closest ones."""


@dataclass(frozen=True)
class TaskEntry:
    id: str
    entry_point: str | Callable[..., Any]
    kind: str = "text"
    family: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, TaskEntry] = {}
_SUITES: dict[str, list[str]] = {}
_MADE: dict[str, Any] = {}


def register(id: str, entry_point: str | Callable[..., Any], *, kind: str = "text", family: str = "",
             overwrite: bool = False, **kwargs: Any) -> TaskEntry:
    """Register task ``id``; ``kwargs`` are passed to the entry point when it is made."""
    if kind not in KINDS:
        raise ValueError(f"task {id!r}: kind must be one of {KINDS}, got {kind!r}")
    if id in _REGISTRY and not overwrite:
        raise ValueError(f"task {id!r} is already registered; pass overwrite=True to replace it")
    if id in _SUITES:
        raise ValueError(f"{id!r} names a suite of tasks; choose another id")
    entry = TaskEntry(id, entry_point, kind, family, dict(kwargs))
    _REGISTRY[id] = entry
    _MADE.pop(id, None)
    return entry


def register_suite(name: str, ids: list[str]) -> None:
    """``name`` stands for ``ids`` wherever a comma-separated task list is read (``--tasks ruler``)."""
    missing = [i for i in ids if i not in _REGISTRY]
    if missing:
        raise ValueError(f"suite {name!r}: unknown tasks {missing}")
    _SUITES[name] = list(ids)


def _unknown(id: str, kind: str | None) -> UnknownTaskError:
    known = task_ids(kind) + (list(_SUITES) if kind in (None, "text") else [])
    close = difflib.get_close_matches(id, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"known: {', '.join(sorted(known))}"
    what = f"{kind} task" if kind else "task"
    return UnknownTaskError(f"unknown {what} {id!r} ({hint})")


def spec(id: str, kind: str | None = None) -> TaskEntry:
    """The registry entry of ``id`` (of the given ``kind``, if one is given)."""
    entry = _REGISTRY.get(id)
    if entry is None or (kind is not None and entry.kind != kind):
        raise _unknown(id, kind)
    return entry


def make(id: str, kind: str | None = None) -> Any:
    """The task object of ``id`` (built once per process: tasks are immutable)."""
    entry = spec(id, kind)
    if id not in _MADE:
        fn = entry.entry_point
        if isinstance(fn, str):
            module, _, attr = fn.partition(":")
            fn = getattr(importlib.import_module(module), attr)
        _MADE[id] = fn(**entry.kwargs)
    return _MADE[id]


def task_ids(kind: str | None = None, family: str | None = None) -> list[str]:
    """Registered ids, in registration order."""
    return [e.id for e in _REGISTRY.values()
            if (kind is None or e.kind == kind) and (family is None or e.family == family)]


def expand(names: str | list[str], kind: str | None = "text") -> list[str]:
    """A comma-separated list (or a list) of task ids and suite names -> task ids, validated, in order,
    without duplicates."""
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    out: list[str] = []
    for n in items:
        for i in _SUITES.get(n, [n]):
            spec(i, kind)
            if i not in out:
                out.append(i)
    if not out:
        raise UnknownTaskError("no task given")
    return out
