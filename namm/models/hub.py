"""Hugging Face checkpoints by local folder or hub id, refused up front in one line when they cannot load.

No machine of this project reaches the hub; users who are online do. So a hub id loads only when it is
already in the local HF cache or the hub is switched on; otherwise :func:`check_pretrained` names the
problem and the fix before ``from_pretrained`` can print a traceback.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

import torch

from .tiny import apply_rope_override

__all__ = ["ModelUnavailable", "hub_offline", "check_pretrained", "load_causal_lm", "LoadedVideoModel",
           "load_video_model", "LLAVA_NEXT_VIDEO_7B"]

log = logging.getLogger(__name__)

LLAVA_NEXT_VIDEO_7B = "llava-hf/LLaVA-NeXT-Video-7B-hf"


class ModelUnavailable(FileNotFoundError):
    """A model that cannot be loaded here; the message names why and what to do."""


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed id, no hub library: not cached
        return False


def check_pretrained(spec: str, known: list[str] | None = None) -> str:
    """``spec`` if ``from_pretrained(spec)`` can work here: a folder with ``config.json``, or a hub id that
    is cached or reachable. Raises :class:`ModelUnavailable` otherwise, naming the fix."""
    p = Path(spec).expanduser()
    names = f" a registered name ({', '.join(known)})," if known else ""
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelUnavailable(f"model {spec!r}: the folder has no config.json; give a Hugging Face model folder")
        return str(p)
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") != 1
    if looks_local:
        raise ModelUnavailable(f"model {spec!r}: no such folder; use{names} a local model folder or a hub id (org/name)")
    if hub_offline() and not _in_hf_cache(spec):
        raise ModelUnavailable(
            f"model {spec!r}: a hub id, but the hub is offline here (HF_HUB_OFFLINE=1) and it is not in the local "
            f"HF cache; use{names} a local folder, or download it on a machine that is online (`hf download {spec}`)")
    return spec


def load_causal_lm(spec: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                   rope_theta: float | None = None, max_positions: int | None = None, tokenizer: str | None = None):
    """``(model, tokenizer)``: ``AutoModelForCausalLM`` from a folder or hub id, the RoPE override applied
    to the loaded config before the weights are built, eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = check_pretrained(spec)
    try:
        cfg = AutoConfig.from_pretrained(src)
        apply_rope_override(cfg, rope_theta, max_positions)
        model = AutoModelForCausalLM.from_pretrained(src, config=cfg, dtype=dtype)
    except OSError as e:
        raise ModelUnavailable(f"model {spec!r}: cannot load it ({str(e).splitlines()[0]})") from None
    try:
        tok = AutoTokenizer.from_pretrained(check_pretrained(tokenizer) if tokenizer else src)
    except OSError as e:
        raise ModelUnavailable(f"tokenizer {tokenizer or spec!r}: cannot load it ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), tok


class LoadedVideoModel(NamedTuple):
    model: torch.nn.Module
    processor: object | None  # AutoProcessor (needs torchvision for videos), None if it cannot load
    tokenizer: object | None  # the processor's tokenizer, or AutoTokenizer alone; None if neither loads


def load_video_model(id_or_path: str = LLAVA_NEXT_VIDEO_7B, dtype: torch.dtype | str = "auto",
                     device: str | torch.device = "cpu", **kwargs) -> LoadedVideoModel:
    """Load LLaVA-NeXT-Video by hub id or local folder (``from_pretrained``), in eval mode on ``device``.

    The processor and tokenizer are loaded when the folder has them; a missing piece (a bare model
    folder, or no torchvision for the video processor) is logged, not fatal: build inputs with
    :func:`namm.drivers.video.expand_video_tokens` and :func:`namm.drivers.video.preprocess_frames` instead.
    """
    from transformers import AutoProcessor, AutoTokenizer, LlavaNextVideoForConditionalGeneration

    src = check_pretrained(id_or_path)
    model = LlavaNextVideoForConditionalGeneration.from_pretrained(src, dtype=dtype, **kwargs)
    model = model.to(device).eval()
    processor = tokenizer = None
    try:
        processor = AutoProcessor.from_pretrained(src)
        tokenizer = getattr(processor, "tokenizer", None)
    except Exception as e:  # noqa: BLE001 - any failure here only means "build inputs by hand"
        log.warning("no processor for %s (%s: %s); use expand_video_tokens/preprocess_frames", src, type(e).__name__, e)
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(src)
        except Exception as e:  # noqa: BLE001
            log.warning("no tokenizer for %s (%s: %s)", src, type(e).__name__, e)
    return LoadedVideoModel(model, processor, tokenizer)
