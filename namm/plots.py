"""Every figure the testbed draws (matplotlib, headless Agg backend), each saved atomically as a PNG.

Bottom of the house beside :mod:`namm.io`: callers hand in plain numbers, never models or policies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .io import atomic_write

__all__ = ["save_heatmap", "save_heatmaps", "save_bars", "score_vs_cache", "fitness_curve", "return_vs_cache"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int) -> Path:
    plt = _plt()
    path = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    plt.close(fig)
    return path


def save_heatmap(grid, path: Path, title: str, xlabel: str, ylabel: str, colorbar: str, cmap: str = "viridis",
                 height: float = 2.0) -> Path:
    """Save a ``[rows, cols]`` grid of fractions in [0, 1] (NaN = blank) as a PNG; returns ``path``."""
    plt = _plt()
    g = np.asarray(grid, dtype=float)
    fig, ax = plt.subplots(figsize=(7, height + 0.3 * g.shape[0]))
    im = ax.imshow(np.ma.masked_invalid(g), aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=colorbar)
    fig.tight_layout()
    return _save(fig, Path(path), 110)


def save_heatmaps(grids: dict[str, Any], path: Path, xlabel: str, ylabel: str, colorbar: str, cmap: str = "magma",
                  height: float = 1.5) -> Path:
    """:func:`save_heatmap` for several ``[rows, cols]`` grids (``title -> grid``), stacked, one colour scale."""
    plt = _plt()
    gs = [np.asarray(g, dtype=float) for g in grids.values()]
    fig, axes = plt.subplots(len(gs), 1, figsize=(7, sum(height + 0.3 * g.shape[0] for g in gs)), squeeze=False,
                             layout="constrained")
    im = None
    for ax, (title, g) in zip(axes[:, 0], zip(grids, gs)):
        im = ax.imshow(np.ma.masked_invalid(g), aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.yaxis.get_major_locator().set_params(integer=True)  # rows are counts (updates), never halves
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[-1, 0].set_xlabel(xlabel)
    fig.colorbar(im, ax=list(axes[:, 0]), label=colorbar)
    return _save(fig, Path(path), 110)


def save_bars(path: Path, labels: Sequence[str], series: dict[str, Sequence[float]], title: str, xlabel: str,
              ylabel: str = "share") -> Path:
    """Grouped bars: one group per label, one bar per series (``name -> [len(labels)]`` values)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(labels) * len(series)), 3.6))
    x = np.arange(len(labels))
    w = 0.8 / max(1, len(series))
    for i, (name, vals) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * w, list(vals), w, label=name)
    ax.set_xticks(x, list(labels))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, Path(path), 110)


def score_vs_cache(rows: Sequence[dict[str, Any]], path: Path, ylabel: str = "mean score") -> Path:
    """One labelled point per policy: ``rows`` of ``{"name", "mean_cache_fraction", "mean_score"}``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in rows:
        ax.scatter(r["mean_cache_fraction"], r["mean_score"], s=40)
        ax.annotate(r["name"], (r["mean_cache_fraction"], r["mean_score"]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("mean cache fraction (kept / seen)")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1.05)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, Path(path), 120)


def fitness_curve(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Evolution's curve like the paper's figure 4: population mean +- std and the CMA-ES mean's fitness,
    per generation (``history`` rows of ``namm evolve``'s log); dashed lines mark new stages."""
    plt = _plt()
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
    return _save(fig, Path(path), 100)


def return_vs_cache(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """One panel per RL task: each policy's return (± std) against its cache fraction; ``None`` without rows."""
    if not rows:
        return None
    plt = _plt()
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.5), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        for r in (x for x in rows if x["task"] == t):
            ax.errorbar(r["mean_cache_fraction"], r["score"], yerr=r.get("std", 0), fmt="o", capsize=3)
            ax.annotate(r["policy"], (r["mean_cache_fraction"], r["score"]), textcoords="offset points", xytext=(4, 4))
        ax.set_title(t)
        ax.set_xlabel("mean cache fraction")
        ax.set_xlim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("D4RL normalised return")
    fig.tight_layout()
    return _save(fig, Path(path), 110)
