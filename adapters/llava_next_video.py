"""LLaVA-NeXT-Video (HF ``LlavaNextVideoForConditionalGeneration``): a Llama-family language model
fed with CLIP frame tokens.

Only the language model runs the ``"namm"`` attention; the CLIP vision tower keeps its own (the
memory function without a memory cache is causal, which would be wrong for a ViT). Everything else
(cache, masks, eviction) is the Llama family's, so the adapter adds only what is video-specific:

* where the video tokens sit: in transformers 5.x the processor expands one ``<video>`` token into
  ``frames x tokens_per_frame`` placeholders (``config.video_token_id``) and the model scatters the
  pooled frame features into them, so the language model sees one cache slot per frame token;
* statistics that count video and text tokens apart (:func:`video_cache_stats`) and a
  ``[updates, frames]`` heat-map of which frames' tokens survive each update (:class:`FrameKeepRecorder`);
* torchvision-free helpers to build inputs (:func:`expand_video_tokens`, :func:`preprocess_frames`)
  and :func:`load_video_model` for ``llava-hf/LLaVA-NeXT-Video-7B-hf`` or a local copy.

    loaded = load_video_model("llava-hf/LLaVA-NeXT-Video-7B-hf", dtype=torch.float16, device="cuda")
    with namm.memory(loaded.model, policy) as mem:
        out, report = generate_with_video_stats(mem, input_ids=ids, pixel_values_videos=pv, max_new_tokens=8)
    report.video_kept, report.text_kept, report.heatmaps[0]  # floats, [updates, frames]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Sequence

import numpy as np
import torch

from namm.cache import MemoryCache, MemoryLayer

from .base import register_adapter
from .llama import LlamaFamily

__all__ = [
    "LlavaNextVideoAdapter", "LLAVA_NEXT_VIDEO", "HF_MODEL_ID", "tokens_per_frame", "expand_video_tokens",
    "preprocess_frames", "VideoLayout", "video_layout", "video_cache_stats", "FrameKeepRecorder",
    "VideoCacheReport", "generate_with_video_stats", "LoadedVideoModel", "load_video_model",
]

log = logging.getLogger(__name__)

HF_MODEL_ID = "llava-hf/LLaVA-NeXT-Video-7B-hf"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP normalisation, as the HF video processor
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class LlavaNextVideoAdapter(LlamaFamily):
    """The Llama-family facts for the language model, with the attention switched per sub-model."""

    name: ClassVar[str] = "llava_next_video"
    model_types: ClassVar[tuple[str, ...]] = ("llava_next_video",)

    def attention_target(self, impl):
        # sub-configs left out of the dict keep their implementation: the vision tower is untouched
        return {"text_config": impl}

    def current_attention(self, model: torch.nn.Module) -> dict[str, str]:
        cfg = model.config
        return {"text_config": cfg.text_config._attn_implementation,
                "vision_config": cfg.vision_config._attn_implementation}

    def check(self, model: torch.nn.Module) -> None:
        lm_type = getattr(self.text_config(model), "model_type", None)
        if lm_type not in LlamaFamily.model_types:
            raise ValueError(
                f"{type(model).__name__} has a {lm_type!r} language model; the LLaVA-NeXT-Video adapter reuses "
                f"the Llama-family adapter and supports {sorted(LlamaFamily.model_types)}"
            )
        super().check(model)


LLAVA_NEXT_VIDEO = register_adapter(LlavaNextVideoAdapter())


# ---- inputs ------------------------------------------------------------------------------------
def tokens_per_frame(config) -> int:
    """Language-model tokens per frame: CLIP patches (CLS dropped) pooled by ``spatial_pool_stride``
    (336 px / 14 px patches = 24x24 = 576 -> 12x12 = 144 for the 7B model)."""
    v = config.vision_config
    side = int(v.image_size) // int(v.patch_size) // int(config.spatial_pool_stride)
    return side * side


def expand_video_tokens(input_ids: Sequence[int] | torch.Tensor, num_frames: int, config) -> torch.Tensor:
    """What the processor does to the text: every ``<video>`` token becomes ``num_frames x
    tokens_per_frame`` copies of itself. ``input_ids`` ``[T]`` -> ``[T + n_video * (F * tpf - 1)]``."""
    ids = torch.as_tensor(input_ids, dtype=torch.long).flatten()
    vid = int(config.video_token_id)
    if not bool((ids == vid).any()):
        raise ValueError(f"input_ids hold no video token (video_token_id={vid}); put one where the video goes")
    reps = torch.where(ids == vid, num_frames * tokens_per_frame(config), 1)
    return ids.repeat_interleave(reps)


def preprocess_frames(frames: np.ndarray | torch.Tensor, config, mean: Sequence[float] = CLIP_MEAN,
                      std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """Torch-only stand-in for the HF video processor (which needs torchvision): resize the shortest
    edge to the vision tower's ``image_size`` (bicubic), centre-crop a square, scale to [0, 1], normalise.

    Args:
        frames: uint8 ``[F, H, W, 3]`` (RGB).
    Returns:
        float32 ``[1, F, 3, S, S]`` for ``pixel_values_videos``.
    """
    x = torch.as_tensor(np.asarray(frames))
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3] RGB, got shape {tuple(x.shape)}")
    s = int(config.vision_config.image_size)
    x = x.permute(0, 3, 1, 2).float()  # [F, 3, H, W]
    h, w = x.shape[-2:]
    scale = s / min(h, w)
    nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
    x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top, left = (nh - s) // 2, (nw - s) // 2
    x = x[..., top : top + s, left : left + s].clamp(0, 255) / 255.0
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return x[None]


# ---- where the video tokens are, in the cache's position space -----------------------------------
@dataclass
class VideoLayout:
    """Video tokens indexed by the cache's absolute position (count of real tokens before a token).

    Attributes:
        frame: ``[B, P]`` int64 frame index of each prompt position (-1 = text); positions >= P
            (generated tokens) are text.
        num_frames: frames per video (rows are assumed to share it).
        tokens_per_frame: language-model tokens per frame.
    """

    frame: torch.Tensor
    num_frames: int
    tokens_per_frame: int

    @property
    def is_video(self) -> torch.Tensor:
        """``[B, P]`` bool."""
        return self.frame >= 0

    def frame_of(self, pos: torch.Tensor) -> torch.Tensor:
        """Frame index of absolute positions ``pos`` ``[B, ...]`` (-1 for text, padding or generated tokens)."""
        b, p = self.frame.shape
        flat = pos.reshape(b, -1)
        inside = (flat >= 0) & (flat < p)
        f = self.frame.to(pos.device).gather(1, flat.clamp(0, p - 1))
        return torch.where(inside, f, torch.full_like(f, -1)).reshape(pos.shape)


def video_layout(input_ids: torch.Tensor, config, attention_mask: torch.Tensor | None = None) -> VideoLayout:
    """Locate the (already expanded) video placeholders of ``input_ids`` ``[B, T]``.

    Left padding is skipped the way the cache skips it: a token's position counts the real tokens
    before it in its row. All videos of a row are numbered as one frame sequence.
    """
    ids = input_ids if input_ids.dim() == 2 else input_ids[None]
    real = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool().view_as(ids)
    tpf = tokens_per_frame(config)
    vid = (ids == int(config.video_token_id)) & real
    n_vid = vid.sum(-1)
    if int(n_vid.min()) != int(n_vid.max()) or int(n_vid[0]) % tpf:
        raise ValueError(f"video tokens per row {n_vid.tolist()} must be equal and a multiple of "
                         f"tokens_per_frame={tpf}: were the <video> tokens expanded (see expand_video_tokens)?")
    b = ids.shape[0]
    p = int(real.sum(-1).max())
    frame = torch.full((b, p), -1, dtype=torch.long)
    for r in range(b):
        pos = real[r].long().cumsum(0) - 1  # [T] absolute position of each index
        frame[r, pos[vid[r]].cpu()] = torch.arange(int(n_vid[r])) // tpf
    return VideoLayout(frame=frame, num_frames=int(n_vid[0]) // tpf, tokens_per_frame=tpf)


# ---- statistics --------------------------------------------------------------------------------
def video_cache_stats(cache: MemoryCache, layout: VideoLayout) -> dict[str, float | int]:
    """Fractions of video and text tokens still in the cache now, each over the tokens of its kind
    seen so far; averaged over layers, KV heads and rows (rows without any token of a kind are skipped).

    Returns ``{"video_kept", "text_kept", "video_tokens", "text_tokens"}`` (token counts summed over rows).
    """
    vk, tk = [], []
    n_video = layout.is_video.sum(-1)  # [B]
    for layer in cache.layers:
        if not layer.is_initialized:
            continue
        live_video = layer.valid & (layout.frame_of(layer.pos) >= 0)  # [B, H, N]
        n_text = layer.seen.cpu() - n_video  # [B]
        v = live_video.sum(-1).cpu().float() / n_video.clamp(min=1)[:, None]
        t = (layer.valid & ~live_video).sum(-1).cpu().float() / n_text.clamp(min=1)[:, None]
        vk.append(v[n_video > 0])
        tk.append(t[n_text > 0])

    def mean(xs: list[torch.Tensor]) -> float:
        x = torch.cat(xs) if xs else torch.zeros(0)
        return float(x.mean()) if x.numel() else float("nan")

    seen = cache.layers[0].seen.cpu() if cache.layers[0].is_initialized else n_video
    return {"video_kept": mean(vk), "text_kept": mean(tk),
            "video_tokens": int(n_video.sum()), "text_tokens": int((seen - n_video).sum())}


class FrameKeepRecorder:
    """Records, at every memory update, the fraction of each frame's tokens still cached.

    Listens to the cache's evictions (:meth:`MemoryCache.add_listener`). After update ``u``
    of row ``b``, frame ``f`` scores ``live tokens of f / tokens of f seen so far`` (tokens evicted at
    earlier updates count as gone), averaged over KV heads; frames not yet reached are NaN.

        rec = FrameKeepRecorder(cache, layout)   # before the forward/generate call
        ...
        rec.heatmap(row=0)                       # [updates, frames], layers averaged
    """

    def __init__(self, cache: MemoryCache, layout: VideoLayout) -> None:
        self.layout = layout
        b = layout.frame.shape[0]
        # per layer, per row: list of [F] arrays, one per update of that row
        self.records: list[list[list[np.ndarray]]] = [[[] for _ in range(b)] for _ in cache.layers]
        cache.add_listener(self._record)

    def _record(self, layer: MemoryLayer, view) -> None:
        nf, f = self.layout.num_frames, self.layout.frame  # f: [B, P]
        rows, newest_pos = view.rows, view.newest_pos.cpu()
        pos, frame = layer.pos.cpu(), self.layout.frame_of(layer.pos.cpu())  # [B, H, N]
        live = layer.valid.cpu() & (frame >= 0) & (pos <= newest_pos[:, None, None])
        kept = torch.zeros(*frame.shape[:2], nf).scatter_add_(2, frame.clamp(min=0), live.float())  # [B, H, F]
        upto = (f >= 0) & (torch.arange(f.shape[1])[None] <= newest_pos[:, None])  # video positions seen
        seen = torch.zeros(f.shape[0], nf).scatter_add_(1, f.clamp(min=0), upto.float())  # [B, F]
        frac = kept / seen[:, None]  # NaN where a frame is not reached yet
        for b in torch.nonzero(rows.cpu()).flatten().tolist():
            self.records[layer.layer_idx][b].append(frac[b].mean(0).numpy())

    def heatmap(self, row: int = 0) -> np.ndarray:
        """``[updates, frames]`` float: fraction of each frame's seen tokens kept after each update of
        ``row``, averaged over layers and KV heads (NaN for frames not reached yet)."""
        per_layer = [np.stack(r[row]) for r in self.records if r[row]]
        if not per_layer:
            return np.zeros((0, self.layout.num_frames))
        return np.mean(np.stack(per_layer), axis=0)


@dataclass
class VideoCacheReport:
    """What :func:`generate_with_video_stats` measured for one call."""

    video_kept: float
    text_kept: float
    cache_fraction: float
    heatmaps: list[np.ndarray]  # per row: [updates, frames]
    layout: VideoLayout


@torch.no_grad()
def generate_with_video_stats(mem, **kwargs) -> tuple[torch.Tensor, VideoCacheReport]:
    """``mem.generate(**kwargs)`` (``mem`` from :func:`namm.memory`) with video-aware cache statistics.

    ``kwargs`` must hold ``input_ids`` ``[B, T]`` with expanded video tokens (and ``attention_mask`` if padded).
    """
    layout = video_layout(kwargs["input_ids"], mem.model.config, kwargs.get("attention_mask"))
    cache_kw = mem.cache_kwargs()
    cache = mem.last_cache
    rec = FrameKeepRecorder(cache, layout)
    out = mem.model.generate(**kwargs, **cache_kw)
    stats = video_cache_stats(cache, layout)
    report = VideoCacheReport(
        video_kept=stats["video_kept"], text_kept=stats["text_kept"], cache_fraction=cache.cache_fraction(),
        heatmaps=[rec.heatmap(r) for r in range(layout.frame.shape[0])], layout=layout,
    )
    return out, report


# ---- loading -----------------------------------------------------------------------------------
class LoadedVideoModel(NamedTuple):
    model: torch.nn.Module
    processor: object | None  # AutoProcessor (needs torchvision for videos), None if it cannot load
    tokenizer: object | None  # the processor's tokenizer, or AutoTokenizer alone; None if neither loads


def load_video_model(id_or_path: str = HF_MODEL_ID, dtype: torch.dtype | str = "auto",
                     device: str | torch.device = "cpu", **kwargs) -> LoadedVideoModel:
    """Load LLaVA-NeXT-Video by hub id or local folder (``from_pretrained``), in eval mode on ``device``.

    The processor and tokenizer are loaded when the folder has them; a missing piece (a bare model
    folder, or no torchvision for the video processor) is logged, not fatal: build inputs with
    :func:`expand_video_tokens` and :func:`preprocess_frames` instead.
    """
    from transformers import AutoProcessor, AutoTokenizer, LlavaNextVideoForConditionalGeneration

    model = LlavaNextVideoForConditionalGeneration.from_pretrained(id_or_path, dtype=dtype, **kwargs)
    model = model.to(device).eval()
    processor = tokenizer = None
    try:
        processor = AutoProcessor.from_pretrained(id_or_path)
        tokenizer = getattr(processor, "tokenizer", None)
    except Exception as e:  # noqa: BLE001 - any failure here only means "build inputs by hand"
        log.warning("no processor for %s (%s: %s); use expand_video_tokens/preprocess_frames",
                    id_or_path, type(e).__name__, e)
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(id_or_path)
        except Exception as e:  # noqa: BLE001
            log.warning("no tokenizer for %s (%s: %s)", id_or_path, type(e).__name__, e)
    return LoadedVideoModel(model, processor, tokenizer)
