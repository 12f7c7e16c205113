"""Video through a memory policy: LLaVA-NeXT-Video inputs, where the frame tokens sit in the cache, and
what the memory kept of each frame.

* in transformers 5.x the processor expands one ``<video>`` token into ``frames x tokens_per_frame``
  placeholders (``config.video_token_id``) and the model scatters the pooled frame features into them,
  so the language model sees one cache slot per frame token (:func:`expand_video_tokens`,
  :func:`preprocess_frames`: torchvision-free stand-ins for the processor; :class:`VideoBatcher`);
* statistics that count video and text tokens apart (:func:`video_cache_stats`) and a
  ``[updates, frames]`` heat-map of which frames' tokens survive each update (:class:`FrameKeepRecorder`).

    with namm.memory(model, policy) as mem:
        out, report = generate_with_video_stats(mem, input_ids=ids, pixel_values_videos=pv, max_new_tokens=8)
    report.video_kept, report.text_kept, report.heatmaps[0]  # floats, [updates, frames]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from namm.adapters.llava_next_video import tokens_per_frame
from namm.cache import MemoryCache, MemoryLayer

__all__ = [
    "expand_video_tokens", "preprocess_frames", "VideoLayout", "video_layout", "video_cache_stats",
    "FrameKeepRecorder", "VideoCacheReport", "generate_with_video_stats", "VideoBatcher", "CLIP_MEAN", "CLIP_STD",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP normalisation, as the HF video processor
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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




class VideoBatcher:
    """Model inputs for video prompts: each prompt's ``<video>`` token expanded to frames x tokens, and
    ``pixel_values_videos`` ``[B, F, 3, S, S]``, left padded. With ``answers`` (e.g. ``" A"``), each row
    gets its answer and eos appended and ``labels`` (-100 except the answer) are returned; the answer then
    sits at the end of every row, so training needs logits for the last few positions only
    (``logits_to_keep``)."""

    def __init__(self, model, tok) -> None:
        self.config, self.tok = model.config, tok

    def __call__(self, prompts: Sequence[str], videos: Sequence[np.ndarray],
                 answers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        frames = {v.shape[0] for v in videos}
        if len(frames) != 1:
            raise ValueError(f"videos of one batch need the same frame count, got {sorted(frames)}")
        n_frames = frames.pop()
        rows, labels = [], []
        for i, prompt in enumerate(prompts):
            ids = self.tok(prompt, add_special_tokens=False)["input_ids"]
            ids = expand_video_tokens(ids, n_frames, self.config).tolist()
            lab = [-100] * len(ids)
            if answers is not None:
                ans = self.tok(answers[i], add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
                ids, lab = ids + ans, lab + ans
            rows.append(ids)
            labels.append(lab)
        n = max(len(r) for r in rows)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        inp = torch.full((len(rows), n), pad, dtype=torch.long)
        lab_t = torch.full_like(inp, -100)
        att = torch.zeros_like(inp)
        for i, (r, lb) in enumerate(zip(rows, labels)):
            sl = slice(n - len(r), n)
            inp[i, sl], lab_t[i, sl], att[i, sl] = torch.tensor(r), torch.tensor(lb), 1
        pv = torch.cat([preprocess_frames(v, self.config) for v in videos])
        out = {"input_ids": inp, "attention_mask": att, "pixel_values_videos": pv}
        if answers is not None:
            out["labels"] = lab_t
        return out
