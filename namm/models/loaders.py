"""Entry points of the model registry: each is ``fn(device=, dtype=, **options) -> (model, companion)``."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .hub import load_causal_lm, load_video_model
from .tiny import CharTokenizer, apply_rope_override, tiny_random_llama
from .zoo import (
    DEFAULT_LM,
    NORMALIZATION_FILE,
    ZOO_VIDEO,
    ZOO_VIDEO_TINY,
    load_dt,
    load_normalization,
    load_zoo_lm,
    load_zoo_video,
    zoo_dt_dir,
)


def tiny_lm(device="cpu", dtype=torch.float32, seed: int = 0, rope_theta: float | None = None,
            max_positions: int | None = None, **_):
    model = tiny_random_llama(seed, rope_theta=rope_theta, max_position_embeddings=max_positions)
    return model.to(device=device, dtype=dtype), CharTokenizer(model.config.vocab_size)


def zoo_lm(device="cpu", dtype=torch.float32, rope_theta: float | None = None, max_positions: int | None = None, **_):
    if rope_theta is not None or max_positions is not None:  # built from the edited config
        return folder_lm(str(DEFAULT_LM), device, dtype, rope_theta=rope_theta, max_positions=max_positions)
    model, tok = load_zoo_lm(DEFAULT_LM, dtype=dtype)
    return model.to(device), tok


def folder_lm(spec: str, device="cpu", dtype=torch.float32, rope_theta: float | None = None,
              max_positions: int | None = None, tokenizer: str | None = None, **_):
    return load_causal_lm(spec, device, dtype, rope_theta=rope_theta, max_positions=max_positions, tokenizer=tokenizer)


def zoo_video(device="cpu", dtype=torch.float32, tiny: bool = False, **_):
    model, tok = load_zoo_video(ZOO_VIDEO_TINY if tiny else ZOO_VIDEO, dtype=dtype)
    return model.to(device), tok


def folder_video(spec: str, device="cpu", dtype=torch.float32, **_):
    if (Path(spec) / "manifest.json").is_file():  # a zoo-format folder: no processor needed
        model, tok = load_zoo_video(spec, dtype=dtype)
        return model.to(device), tok
    loaded = load_video_model(spec, dtype=dtype, device=device)
    if loaded.tokenizer is None:
        raise FileNotFoundError(f"{spec}: no tokenizer next to the model")
    return loaded.model, loaded.tokenizer


def zoo_dt(env: str, level: str, device="cpu", dtype=torch.float32, **_):
    path = zoo_dt_dir(env, level)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no zoo DT for {env}-{level} at {path}; build it with `namm zoo rl-data --env {env}` "
                                "and `namm zoo train-dt`, or give a DT folder / HF id")
    return folder_dt(str(path), device)


def folder_dt(spec: str, device="cpu", dtype=torch.float32, **_):
    """``(model, normalisation or None)``; a DT without ``normalization.json`` is fed raw states (warned)."""
    model = load_dt(spec, device)
    norm = load_normalization(spec)
    if norm is None:
        warnings.warn(f"{spec}: no {NORMALIZATION_FILE}; states are fed unnormalised (mean 0, std 1), "
                      "which is wrong for a DT trained on normalised D4RL states", stacklevel=2)
    return model, norm


__all__ = ["tiny_lm", "zoo_lm", "folder_lm", "zoo_video", "folder_video", "zoo_dt", "folder_dt", "apply_rope_override"]
