"""The house's rule: data flows one way. Every import inside the installed package (at module level or
inside a function) goes to a lower layer or stays inside its own package, and no modules import each
other in a loop. Parsed from the source, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "namm"

# lowest first; a module's layer is that of the longest prefix that names it
LAYERS: list[tuple[str, ...]] = [
    ("namm.io", "namm.config", "namm.plots"),
    ("namm.features", "namm.scorer", "namm.selection", "namm.view"),
    ("namm.policies",),
    ("namm.cache", "namm.checkpoint"),
    ("namm.attention", "namm.replay"),
    ("namm.adapters",),
    ("namm.memory", "namm"),  # the package's face re-exports the core
    ("namm.drivers",),
    ("namm.models", "namm.tasks"),
    ("namm.evaluation",),
    ("namm.evolution",),
    ("namm.zoo",),
    ("namm.pipeline",),
    ("namm.cli",),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def layer(mod: str) -> int:
    best, where = -1, None
    for i, names in enumerate(LAYERS):
        for n in names:
            if (mod == n or mod.startswith(n + ".")) and len(n) > best:
                best, where = len(n), i
    assert where is not None, f"{mod} is in no layer: add it to LAYERS"
    return where


def package(mod: str) -> str:
    return mod if MODULES[mod].name == "__init__.py" else mod.rpartition(".")[0]


def imports(mod: str) -> set[str]:
    """The namm modules ``mod`` imports (``from namm import x`` counts as namm.x when x is a module)."""
    tree = ast.parse(MODULES[mod].read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "namm"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package(mod).split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "namm":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if sub in MODULES else target)
    return {m for m in out if m in MODULES and m != mod}


GRAPH = {m: imports(m) for m in MODULES}


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_upward_import(mod):
    up = [t for t in GRAPH[mod] if layer(t) > layer(mod)]
    assert not up, f"{mod} (layer {layer(mod)}) imports {up}, which sit above it"


def test_no_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


def test_layers_name_real_modules():
    for names in LAYERS:
        for n in names:
            assert any(m == n or m.startswith(n + ".") for m in MODULES), f"LAYERS names {n}, which does not exist"
