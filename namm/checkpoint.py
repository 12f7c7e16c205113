"""NAMM weights on disk.

Our format is safetensors: tensors ``params`` ``[P]``, ``mean``/``var`` ``[n_freq]``; the policy's
configuration and a format version live in the string metadata. The reference implementation's
``.pt`` checkpoints are read with ``torch.load(weights_only=True)`` only (a pickle that would run
code is refused) and converted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .features import SpectralConfig
from .io import atomic_write
from .policies.namm import NAMM
from .policies.wrappers import KeepWhole

FORMAT = "namm-testbed/weights"
VERSION = 1

__all__ = ["save_namm", "load_namm", "read_namm", "namm_from", "import_reference", "resolve_policy", "CheckpointError",
           "SHIPPED_NAMM", "SHIPPED_NAMMS", "shipped_namm", "SHIPPED_HEADS", "read_heads", "keep_heads_whole"]


class CheckpointError(ValueError):
    """A weights file that cannot be used, with the reason and the file named."""


def policy_config(policy: NAMM) -> dict:
    c = policy.spectral
    return {
        "scorer": policy.scorer, "hidden": policy.hidden, "feature_dim": c.feature_dim,
        "num_params": policy.net.num_params, "n_up": policy.n_up, "mode": policy.mode,
        "n_fft": c.n_fft, "hop": c.hop, "ema": c.ema, "n_pos": c.n_pos, "pos_base": c.pos_base,
        "budget": policy.budget, "pool": policy.pool,
    }


def save_namm(path: str | os.PathLike, policy: NAMM, info: dict | None = None) -> Path:
    """Write ``policy``'s parameters, normalisation and config to ``path`` (safetensors, atomic)."""
    if policy.params.dim() != 1:
        raise ValueError("save one NAMM at a time: params must be [P], not a per-row batch")
    meta = {"format": FORMAT, "version": str(VERSION), "config": json.dumps(policy_config(policy))}
    if info:
        meta["info"] = json.dumps(info)
    tensors = {
        "params": policy.params.detach().float().contiguous().cpu(),
        "mean": policy.mean.detach().float().contiguous().cpu(),
        "var": policy.var.detach().float().contiguous().cpu(),
    }
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_namm(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """``(tensors, config, info)`` of a weights file, validated."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix in (".pt", ".pth", ".bin"):
        raise CheckpointError(f"{path}: a torch pickle; convert it first with "
                              f"`namm import-reference {path} OUT.safetensors`")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a NAMM weights file (format={meta.get('format')!r}, expected {FORMAT!r})")
    if int(meta.get("version", -1)) > VERSION:
        raise CheckpointError(f"{path}: format version {meta['version']} is newer than this code ({VERSION}); "
                              "upgrade namm-testbed")
    missing = {"params", "mean", "var"} - set(tensors)
    if missing:
        raise CheckpointError(f"{path}: missing tensors {sorted(missing)}")
    cfg = json.loads(meta["config"])
    info = json.loads(meta["info"]) if "info" in meta else {}
    return tensors, cfg, info


def load_namm(path: str | os.PathLike, **overrides) -> NAMM:
    """Build the NAMM stored in ``path``; ``overrides`` (e.g. ``n_up``, ``mode``, ``budget``) win over the file."""
    tensors, cfg, _ = read_namm(path)
    return namm_from(tensors, cfg, path, **overrides)


def namm_from(tensors: dict[str, torch.Tensor], cfg: dict, path: str | os.PathLike, **overrides) -> NAMM:
    """Build a NAMM from what :func:`read_namm` returned (``path`` only names the file in errors)."""
    spectral = SpectralConfig(n_fft=cfg["n_fft"], hop=cfg["hop"], ema=cfg["ema"], n_pos=cfg["n_pos"],
                              pos_base=cfg["pos_base"])
    if spectral.feature_dim != cfg["feature_dim"]:
        raise CheckpointError(f"{path}: feature_dim {cfg['feature_dim']} does not match its STFT/age settings "
                              f"({spectral.feature_dim})")
    kw: dict[str, Any] = dict(params=tensors["params"], mean=tensors["mean"], var=tensors["var"], scorer=cfg["scorer"],
              hidden=cfg["hidden"], n_up=cfg["n_up"], mode=cfg["mode"], spectral=spectral,
              budget=cfg.get("budget"), pool=cfg.get("pool", 1))  # older files have neither
    kw.update(overrides)
    try:
        return NAMM(**kw)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def import_reference(path: str | os.PathLike, **overrides) -> NAMM:
    """Read the reference implementation's checkpoint (``{'evolution_state': {'mean', ...,
    'stored_buffers_to_save.*output_mean/var'}, ...}``) into a NAMM with the reference settings.

    The CMA-ES ``mean`` is the deployed NAMM (not ``best_member``).
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as e:  # UnpicklingError for pickles that would run code, and corrupt files
        raise CheckpointError(
            f"{path}: refused. Only plain tensors/dicts are read (torch.load weights_only=True); "
            f"this file needs arbitrary code to unpickle or is corrupt ({type(e).__name__}: {str(e)[:200]})"
        ) from None
    state = ckpt.get("evolution_state") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or "mean" not in state:
        raise CheckpointError(f"{path}: no evolution_state['mean'] (not a reference NAMM checkpoint)")
    params = torch.as_tensor(state["mean"]).float().reshape(-1)

    def buffer(suffix: str) -> torch.Tensor:
        keys = [k for k in state if k.startswith("stored_buffers_to_save.") and k.endswith(suffix)
                and "new_output" not in k]  # the online (unfrozen) estimates are not the shipped ones
        if len(keys) != 1:
            raise CheckpointError(f"{path}: expected one stored buffer ending in {suffix!r}, found {keys}")
        return torch.as_tensor(state[keys[0]]).float().reshape(-1)

    kw: dict[str, Any] = dict(params=params, mean=buffer("output_mean"), var=buffer("output_var"), n_up=512,
                              mode="reference")
    kw.update(overrides)
    try:
        return NAMM(**kw)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


_WEIGHTS = Path(__file__).parent / "weights"
# The NAMMs that ship with the package, by the name ``--policy`` takes; ``namm`` is the default.
SHIPPED_NAMMS = {
    # the default since 2026-12-03: a linear ranking NAMM (top quarter per head) selected on SmolLM2-135M-Instruct;
    # level with H2O at 0.25 on held-out files; its zero output projection skips BAM's attention (~1.1x plain HF's
    # prefill at 4k)
    "namm": _WEIGHTS / "namm.safetensors",
    "namm-linear": _WEIGHTS / "namm.safetensors",  # the same file, under the name it shipped as first
    # the CMA-ES mean of the two-stage threshold evolution on SmolLM2 (the default on 2026-12-02)
    "namm-threshold": _WEIGHTS / "namm-threshold.safetensors",
    "namm-zoo": _WEIGHTS / "namm-zoo.safetensors",  # evolved on the 4M-parameter zoo LM; evicts a real LM's sinks
}
SHIPPED_NAMM = SHIPPED_NAMMS["namm"]


def shipped_namm(name: str | None) -> Path | None:
    """The packaged weights file ``name`` stands for (a key of :data:`SHIPPED_NAMMS`, or ``shipped`` = the
    default), else ``None`` (a path, or no name)."""
    if name == "shipped":
        return SHIPPED_NAMM
    return SHIPPED_NAMMS.get(name) if name else None


def resolve_policy(spec: str, **overrides):
    """The policy a user names on a command line: a registry name (``h2o``, ``full``, ...), ``namm`` /
    ``namm-zoo`` (the shipped evolved weights, :data:`SHIPPED_NAMMS`), or a weights file
    (``.safetensors``; ``.pt`` = a reference checkpoint).
    ``None`` overrides are dropped, so callers can pass optional flags straight through."""
    from .policies import POLICIES, make_policy

    kw = {k: v for k, v in overrides.items() if v is not None}
    p = Path(spec)
    if spec in SHIPPED_NAMMS:
        p = SHIPPED_NAMMS[spec]
        if not p.exists():
            raise ValueError(
                f"no evolved NAMM weights are shipped as {spec!r} ({p}); pass a weights file "
                f"from `namm evolve` (RUN/namm.safetensors) or a reference .pt instead of --policy {spec}"
            )
    elif spec in POLICIES:
        return make_policy(spec, **kw)
    elif p.suffix not in (".safetensors", ".pt", ".pth") and not p.exists():
        raise ValueError(f"unknown policy {spec!r}: use one of {sorted(POLICIES)} or a weights file")
    return import_reference(p, **kw) if p.suffix in (".pt", ".pth") else load_namm(p, **kw)


# Retrieval-head rankings per real model (`namm heads`, namm.evaluation.heads: the attention an answer's
# queries put on the evidence, full cache, train-split ruler_niah_multikey + ruler_vt; no held-out family)
SHIPPED_HEADS = {m: _WEIGHTS / f"heads-{m}.json" for m in ("smollm2-135m", "gemma3-270m")}


def read_heads(source: str | os.PathLike) -> list[tuple[int, int]]:
    """Every (layer, KV head) of a ranking, best first. ``source``: a model name of :data:`SHIPPED_HEADS` or a
    ``heads.json`` (``{"heads": [{"layer", "head", "score"}, ...]}``)."""
    path = SHIPPED_HEADS.get(str(source), Path(source))
    if not path.is_file():
        raise ValueError(f"no head ranking for {str(source)!r}: shipped for {sorted(SHIPPED_HEADS)}; make one with "
                         "`namm heads --model NAME --out RUN` and pass RUN/heads.json")
    try:
        rows = json.loads(path.read_text())["heads"]
        return [(int(r["layer"]), int(r["head"])) for r in rows]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a head ranking ({e}); expected "
                         '{"heads": [{"layer": L, "head": H}, ...]}') from None


def keep_heads_whole(policy, source: str | os.PathLike, fraction: float) -> KeepWhole:
    """``policy`` with the best ``fraction`` of a ranking's (layer, KV head)s keeping every token (rounded to
    the nearest head, at least one): ``keep_heads_whole(resolve_policy("namm"), "smollm2-135m", 0.3)``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"whole-head fraction must be in (0, 1], got {fraction}")
    heads = read_heads(source)
    k = max(1, round(fraction * len(heads)))
    return KeepWhole(inner=policy, heads=tuple(heads[:k]))
