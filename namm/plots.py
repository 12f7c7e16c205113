"""Shared matplotlib helpers (headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_heatmap(grid, path: Path, title: str, xlabel: str, ylabel: str, colorbar: str, cmap: str = "viridis",
                 height: float = 2.0) -> Path:
    """Save a ``[rows, cols]`` grid of fractions in [0, 1] (NaN = blank) as a PNG; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = np.asarray(grid, dtype=float)
    fig, ax = plt.subplots(figsize=(7, height + 0.3 * g.shape[0]))
    im = ax.imshow(np.ma.masked_invalid(g), aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=colorbar)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
