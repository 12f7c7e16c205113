"""Neural Attention Memory Models: a modality-agnostic KV-cache memory core.

Data flow, one file per step: model -> adapter (``namm.adapters``) -> attention rows + cache
(``attention.py``, ``cache.py``) -> features (``features.py``) -> scores (``scorer.py``) -> selection
(``selection.py``) -> cache.
"""

from .cache import MemoryCache, MemoryLayer
from .memory import Memory, generate, memory
from .policies import DEFAULT_POLICIES, POLICIES, MemoryPolicy, make_policy

__version__ = "0.1.0"

__all__ = [
    "MemoryCache", "MemoryLayer", "Memory", "memory", "generate",
    "MemoryPolicy", "POLICIES", "DEFAULT_POLICIES", "make_policy",
]
