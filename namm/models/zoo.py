"""The models the project ships or trains itself (the zoo), and how their folders are read.

* ``namm/weights/zoo/lm``: the zoo language model (``namm zoo train-lm``);
* ``namm/weights/zoo/video-smollm2``: the zoo video model, a LLaVA-NeXT-Video on the frozen SmolLM2-135M-Instruct
  (``namm zoo train-video --lm smollm2-135m``; ships the vision tower + projector, the LM comes from
  ``namm models fetch``); ``namm/weights/zoo/video-tiny``: the small one on the zoo LM (``namm zoo train-video``);
* ``namm/weights/zoo/dt-{env}-{level}``: the zoo Decision Transformers (``namm zoo train-dt``), each with
  its state normalisation in ``normalization.json``::

    {
      "format": "namm-testbed/dt-normalization", "version": 1,
      "state_mean": [obs_dim floats], "state_std": [obs_dim floats],   # required: the dataset's stats
      "env": "hopper", "dataset": "hopper-medium-v2",                   # optional: provenance
      "scale": 1000.0, "target_return": 3600.0                          # optional: rollout defaults
    }
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from namm.io import write_text

__all__ = ["ZOO_DIR", "DEFAULT_LM", "ZOO_VIDEO", "ZOO_VIDEO_TINY", "zoo_dt_dir", "load_zoo_lm", "load_zoo_video", "load_dt",
           "VIDEO_TOKEN", "IMAGE_TOKEN", "VISION_WEIGHTS", "LM_KEYS", "video_tokenizer", "with_language_model",
           "is_real_lm", "load_video_lm",
           "NORMALIZATION_FILE", "DTNormalization", "write_normalization", "read_normalization", "load_normalization"]

ZOO_DIR = Path(__file__).resolve().parent.parent / "weights" / "zoo"
DEFAULT_LM = ZOO_DIR / "lm"
ZOO_VIDEO = ZOO_DIR / "video-smollm2"  # `--model zoo` for video
ZOO_VIDEO_TINY = ZOO_DIR / "video-tiny"  # `--model zoo-tiny`: on the 4M zoo LM, nothing to fetch
NORMALIZATION_FILE = "normalization.json"
NORM_FORMAT = "namm-testbed/dt-normalization"
NORM_VERSION = 1


def load_zoo_lm(path: str | Path = DEFAULT_LM, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` of a zoo LM folder (weights are stored bf16; computed in ``dtype``)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: no zoo LM here; build it with `namm zoo train-lm --out {path}`")
    model = LlamaForCausalLM.from_pretrained(path, dtype=dtype).eval()
    tok = AutoTokenizer.from_pretrained(path)
    return model, tok


VIDEO_TOKEN, IMAGE_TOKEN = "<video>", "<image>"
VISION_WEIGHTS = "vision.safetensors"  # a video model on a real LM ships its vision tower + projector only


def video_tokenizer(tok):
    """The LM's tokenizer with ``<video>`` and ``<image>`` appended (always the same two new ids)."""
    tok.add_special_tokens({"additional_special_tokens": [VIDEO_TOKEN, IMAGE_TOKEN]})
    return tok


LM_KEYS = ("model.language_model.", "lm_head.")  # state-dict prefixes of a LLaVA model's language model


def is_real_lm(spec: str) -> bool:
    """``spec`` names a registered real LM (``smollm2-135m``), not a zoo LM folder."""
    from .real import REAL_MODELS

    return str(spec) in REAL_MODELS


def load_video_lm(spec: str | Path):
    """``(lm, tokenizer with the video tokens)``: the real LM ``spec`` names (fetched on first use) or the
    zoo LM folder it points at, fp32 on the CPU; what a video model is built around."""
    from .real import load_real

    lm, tok = load_real(str(spec), dtype=torch.float32) if is_real_lm(spec) else load_zoo_lm(spec)
    return lm, video_tokenizer(tok)


def with_language_model(conf, lm, zero_new: bool = True):
    """A LLaVA-NeXT-Video of config ``conf`` whose language model (and head) are ``lm``'s weights. The rows
    of the two new tokens are zero with ``zero_new`` (placeholders the video features replace, so a model
    rebuilt from the same LM is the same model), else HF's mean-resized draw (the zoo recipe's)."""
    from transformers import LlavaNextVideoForConditionalGeneration

    model = LlavaNextVideoForConditionalGeneration(conf)
    n_old = lm.get_input_embeddings().weight.shape[0]
    lm.resize_token_embeddings(conf.text_config.vocab_size, mean_resizing=not zero_new)
    if zero_new:
        with torch.no_grad():
            lm.get_input_embeddings().weight[n_old:] = 0
            if not conf.tie_word_embeddings:
                lm.get_output_embeddings().weight[n_old:] = 0
    model.model.language_model.load_state_dict(lm.model.state_dict())
    if not conf.tie_word_embeddings:
        model.lm_head.load_state_dict(lm.lm_head.state_dict())
    model.tie_weights()
    return model


def load_zoo_video(path: str | Path = ZOO_VIDEO, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` of a zoo video model folder (inputs come from ``namm.drivers.video.VideoBatcher``:
    no torchvision video processor is needed). A folder with ``vision.safetensors`` is a video model on a
    frozen LM: the LM its manifest names (a real model from ``namm models fetch``'s folder, or a zoo LM
    folder) is loaded and the trained vision tower and projector go on top."""
    from transformers import AutoTokenizer, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no zoo video model at {path}; build it with `namm zoo train-video`")
    if not (path / VISION_WEIGHTS).is_file():
        model = LlavaNextVideoForConditionalGeneration.from_pretrained(path, dtype=dtype).eval()
        return model, AutoTokenizer.from_pretrained(path)
    from safetensors.torch import load_file

    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    lm, tok = load_video_lm(manifest["lm"])
    conf = LlavaNextVideoConfig.from_pretrained(path)
    if tok.convert_tokens_to_ids(VIDEO_TOKEN) != conf.video_token_id:
        raise ValueError(f"{path}: its video token id {conf.video_token_id} is not {manifest['lm']}'s "
                         f"{VIDEO_TOKEN} ({tok.convert_tokens_to_ids(VIDEO_TOKEN)}); retrain it on this LM")
    model = with_language_model(conf, lm, zero_new=True)
    missing, unexpected = model.load_state_dict(load_file(str(path / VISION_WEIGHTS)), strict=False)
    stray = [k for k in missing if not k.startswith(LM_KEYS)]
    if stray or unexpected:
        raise ValueError(f"{path / VISION_WEIGHTS} does not fit its config: missing {stray[:3]}, unexpected "
                         f"{unexpected[:3]}")
    return model.to(dtype).eval(), tok


@dataclass(frozen=True)
class DTNormalization:
    """``state_mean`` / ``state_std`` ``[obs_dim]`` float32, plus optional rollout defaults."""

    state_mean: np.ndarray
    state_std: np.ndarray
    scale: float | None = None
    target_return: float | None = None
    env: str | None = None
    dataset: str | None = None


def write_normalization(model_dir: str | Path, state_mean, state_std, *, env: str | None = None,
                        dataset: str | None = None, scale: float | None = None,
                        target_return: float | None = None) -> Path:
    """Write ``normalization.json`` next to a DT checkpoint (atomic)."""
    mean = np.asarray(state_mean, dtype=np.float64).reshape(-1)
    std = np.asarray(state_std, dtype=np.float64).reshape(-1)
    if mean.shape != std.shape:
        raise ValueError(f"state_mean {mean.shape} and state_std {std.shape} differ in size")
    doc: dict[str, Any] = {"format": NORM_FORMAT, "version": NORM_VERSION,
                           "state_mean": mean.tolist(), "state_std": std.tolist()}
    for k, v in (("env", env), ("dataset", dataset), ("scale", scale), ("target_return", target_return)):
        if v is not None:
            doc[k] = v
    text = json.dumps(doc, indent=1)
    return write_text(Path(model_dir) / NORMALIZATION_FILE, text)


def read_normalization(path: str | Path) -> DTNormalization:
    """Parse a ``normalization.json`` (file or the folder holding it); raises ValueError naming the file."""
    path = Path(path)
    path = path / NORMALIZATION_FILE if path.is_dir() else path
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable normalisation file ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != NORM_FORMAT:
        raise ValueError(f"{path}: not a DT normalisation file (format must be {NORM_FORMAT!r})")
    if int(doc.get("version", -1)) > NORM_VERSION:
        raise ValueError(f"{path}: version {doc['version']} is newer than this code ({NORM_VERSION})")
    try:
        mean = np.asarray(doc["state_mean"], dtype=np.float32).reshape(-1)
        std = np.asarray(doc["state_std"], dtype=np.float32).reshape(-1)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: needs numeric lists state_mean and state_std ({e})") from None
    if mean.shape != std.shape or not np.isfinite(mean).all() or not (std > 0).all():
        raise ValueError(f"{path}: state_mean/state_std must be finite, of equal length, std > 0")
    num = {k: None if doc.get(k) is None else float(doc[k]) for k in ("scale", "target_return")}
    txt = {k: None if doc.get(k) is None else str(doc[k]) for k in ("env", "dataset")}
    return DTNormalization(mean, std, **num, **txt)


def load_normalization(model_id_or_path: str | Path) -> DTNormalization | None:
    """The ``normalization.json`` of a local DT folder or a (cached/downloadable) HF repo; ``None`` if
    there is none (the caller warns and falls back to zeros/ones)."""
    p = Path(model_id_or_path)
    if p.is_dir():
        return read_normalization(p) if (p / NORMALIZATION_FILE).is_file() else None
    try:  # an HF id: use the file if the repo ships one (offline: only if already cached)
        from huggingface_hub import hf_hub_download

        return read_normalization(hf_hub_download(str(model_id_or_path), NORMALIZATION_FILE))
    except Exception:  # noqa: BLE001 - absent file, offline, unknown repo: all mean "none"
        return None


def load_dt(model_id_or_path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """``DecisionTransformerModel.from_pretrained`` (local folder or HF id), fp32, eval mode."""
    from transformers import DecisionTransformerModel

    p = Path(model_id_or_path)
    if not p.exists() and (str(model_id_or_path).startswith((".", "/", "~")) or str(model_id_or_path).count("/") > 1):
        raise FileNotFoundError(f"{model_id_or_path}: no such DT checkpoint folder")
    try:
        model = DecisionTransformerModel.from_pretrained(str(model_id_or_path), dtype=torch.float32)
    except OSError as e:
        raise FileNotFoundError(f"{model_id_or_path}: cannot load a DecisionTransformerModel ({e})") from None
    return model.to(device).eval()


def zoo_dt_dir(env: str, quality: str = "medium") -> Path:
    """Where a shipped zoo DT lives: ``namm/weights/zoo/dt-{env}-{quality}/``."""
    return ZOO_DIR / f"dt-{env}-{quality}"


