"""What the zoo trainers share: the learning-rate schedule, readable checkpoint folders, and the command
line that built a model (for its manifest)."""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path

__all__ = ["warmup_cosine", "make_readable", "zoo_command"]


def warmup_cosine(step: int, lr: float, warmup: int, progress: float, floor: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``lr`` down to ``floor * lr`` as ``progress``
    goes from 0 to 1 (clipped)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    c = math.cos(math.pi * min(1.0, progress))
    return lr * 0.5 * (1 + c) if floor == 0 else lr * (floor + (1 - floor) * 0.5 * (1 + c))


def make_readable(folder: Path) -> None:
    """save_pretrained's temp files are 0600: a shipped checkpoint folder is world-readable."""
    for f in Path(folder).iterdir():
        if f.is_file():
            f.chmod(0o644)


def zoo_command(sub: str) -> str | None:
    """This process's ``namm zoo <sub> ...`` command line, for a manifest (None when called from Python)."""
    if sys.argv[1:3] != ["zoo", sub]:
        return None
    return f"namm zoo {sub} " + " ".join(shlex.quote(a) for a in sys.argv[3:])
