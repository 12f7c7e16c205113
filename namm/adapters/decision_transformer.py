"""Decision Transformers (HF ``DecisionTransformerModel``): where attention and the cache live.

HF's ``DecisionTransformerModel.forward`` takes no cache: it embeds a whole trajectory, interleaves
``(R_t, s_t, a_t)`` and runs its GPT-2 ``encoder``, whose attention modules do take one (each calls
``cache.update`` and then the attention interface). So the facts are: GPT-2 layer/head counts, and the
cache goes to the ``encoder``. Driving the model one env step at a time is
:class:`namm.drivers.dt.DTStepper`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Adapter, Model, register_adapter

__all__ = ["DecisionTransformerAdapter", "DECISION_TRANSFORMER"]


@dataclass(frozen=True)
class DecisionTransformerAdapter(Adapter):
    """The DT's GPT-2 ``encoder`` reads the cache; layer/head counts are ``config.n_layer``/``n_head``."""

    name: ClassVar[str] = "decision_transformer"
    model_types: ClassVar[tuple[str, ...]] = ("decision_transformer",)

    def text_config(self, model: Model):
        return model.config

    def num_layers(self, model: Model) -> int:
        return int(model.config.n_layer)

    def num_kv_heads(self, model: Model) -> int:
        return int(model.config.n_head)  # GPT-2: no GQA

    def check(self, model: Model) -> None:
        if getattr(model.config, "add_cross_attention", False):
            raise ValueError("a Decision Transformer with cross-attention is not supported under a memory policy")

    def cache_kwarg(self, model: Model) -> str:
        # the top-level forward takes no cache at all (it would swallow it in **kwargs): the encoder does
        return super().cache_kwarg(model.encoder)


DECISION_TRANSFORMER = register_adapter(DecisionTransformerAdapter())
