"""Paired statistics shared by the evaluations and the experiments."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["paired_interval"]


def paired_interval(diff: Sequence[float] | np.ndarray, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-instance paired differences ``[n]`` and its 95% bootstrap interval (instances resampled
    with replacement, ``n_boot`` times): ``(mean, low, high)``."""
    d = np.asarray(diff, dtype=float)
    boot = d[np.random.default_rng(seed).integers(len(d), size=(n_boot, len(d)))].mean(1)
    return float(d.mean()), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))
