"""Video QA under a memory policy: ``namm eval-video``.

For every policy: greedy answers to multiple-choice questions about videos, accuracy overall and per
group (question kind / duration group), the mean cache fraction, the fractions of video and text tokens
kept, and for NAMM a frames x updates heat-map of which frame tokens survived. Writes per policy
``results.json`` (``policy``, ``accuracy``, ``mean_cache_fraction``, ``by_group``) and ``results.csv``;
with several policies one sub-folder each plus ``summary.csv``.

Data: ``zoo`` = the procedural questions of :func:`namm.envs.video_qa.synthetic_items` drawn with
``--seed`` (the zoo video model trained on seeds 0..); ``mlvu:PATH`` / ``longvideobench:PATH`` = the
benchmarks' JSON files with their videos next to them.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .checkpoint import atomic_write

__all__ = ["VideoBatcher", "answer_video", "load_video_data", "evaluate_video", "add_eval_video_command",
           "VIDEO_N_UP"]

VIDEO_N_UP = 64  # zoo video prompts are ~370 tokens (16 frames x 16 tokens + text): 5 updates


class VideoBatcher:
    """Model inputs for video questions: the chat prompt with ``<video>`` expanded to frames x tokens,
    and ``pixel_values_videos`` ``[B, F, 3, S, S]``, left padded. ``with_answer`` appends `` X</s>`` and
    returns ``labels`` (-100 except the answer), which then sits at the end of every row, so training
    needs logits for the last few positions only (``logits_to_keep``)."""

    def __init__(self, model, tok, video_token: str = "<video>") -> None:
        self.config, self.tok, self.video_token = model.config, tok, video_token

    def __call__(self, items: Sequence, videos: Sequence[np.ndarray], with_answer: bool = False) -> dict[str, torch.Tensor]:
        from namm.adapters.llava_next_video import expand_video_tokens, preprocess_frames
        from namm.envs.video_qa import chat_prompt

        frames = {v.shape[0] for v in videos}
        if len(frames) != 1:
            raise ValueError(f"videos of one batch need the same frame count, got {sorted(frames)}")
        n_frames = frames.pop()
        rows, labels = [], []
        for it in items:
            ids = self.tok(chat_prompt(it, self.video_token), add_special_tokens=False)["input_ids"]
            ids = expand_video_tokens(ids, n_frames, self.config).tolist()
            lab = [-100] * len(ids)
            if with_answer:
                ans = self.tok(" " + it.answer_letter, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
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
        if with_answer:
            out["labels"] = lab_t
        return out


@torch.no_grad()
def answer_video(model, tok, pairs: Sequence[tuple[Any, np.ndarray]], policy=None, batch_size: int = 16,
                 progress: bool = False) -> dict[str, Any]:
    """Greedy answers for ``(VideoQAItem, frames [F, H, W, 3])`` pairs, optionally under a memory policy.

    Returns ``{"predictions": [str], "cache_fractions": [float], "video_kept": float, "text_kept": float,
    "heatmap": [updates, frames] (first question; None without a policy)}``.
    """
    from tqdm.auto import tqdm

    from namm import memory
    from namm.adapters.llava_next_video import generate_with_video_stats

    batcher = VideoBatcher(model, tok)
    preds, fracs, vk, tk, heat = [], [], [], [], None
    dev, dt = model.device, model.dtype
    for i in tqdm(range(0, len(pairs), batch_size), disable=not progress, desc=getattr(policy, "name", "model"),
                  leave=False):
        chunk = pairs[i : i + batch_size]
        b = batcher([p[0] for p in chunk], [p[1] for p in chunk])
        b = {k: v.to(dev, dt) if v.is_floating_point() else v.to(dev) for k, v in b.items()}
        kw = dict(max_new_tokens=3, do_sample=False, pad_token_id=batcher.tok.pad_token_id)
        if policy is None:
            out = model.generate(**b, **kw)
            fracs += [1.0] * len(chunk)
        else:
            with memory(model, policy) as mem:
                out, rep = generate_with_video_stats(mem, **b, **kw)
            fracs += [mem.last_cache.cache_fraction(row=r) for r in range(len(chunk))]
            vk.append(rep.video_kept)
            tk.append(rep.text_kept)
            heat = rep.heatmaps[0] if heat is None else heat
        preds += tok.batch_decode(out[:, b["input_ids"].shape[1]:], skip_special_tokens=True)
    return {"predictions": preds, "cache_fractions": fracs,
            "video_kept": float(np.mean(vk)) if vk else 1.0, "text_kept": float(np.mean(tk)) if tk else 1.0,
            "heatmap": heat}


def load_video_data(spec: str, samples: int, seed: int, frames: int, size: int = 32,
                    kinds: Sequence[str] = ("needle", "count", "order")) -> list[tuple[Any, np.ndarray]]:
    """``zoo`` (``samples`` per kind, seeded; the fixed-option questions the zoo model learned),
    ``zoo-open`` (the same kinds with per-question options), or ``mlvu:PATH`` / ``longvideobench:PATH``
    (first ``samples`` questions, ``frames`` sampled uniformly from each video)."""
    from namm.envs.video_qa import load_frames, load_longvideobench, load_mlvu, synthetic_items, synthetic_qa_item

    if spec in ("zoo", "zoo-open"):
        out = []
        for kind in kinds:
            for i, (video, rec) in enumerate(synthetic_items(samples, frames, size, seed, kind, spec == "zoo")):
                out.append((synthetic_qa_item(rec, kind, f"{kind}_{seed}_{i}", f"synthetic seed {seed}"), video))
        return out
    kind, _, path = spec.partition(":")
    loaders = {"mlvu": load_mlvu, "longvideobench": load_longvideobench}
    if kind not in loaders or not path:
        raise ValueError(f"--data {spec!r}: use zoo, zoo-open, mlvu:PATH.json or longvideobench:PATH.json")
    items = loaders[kind](path)[:samples]
    return [(it, load_frames(it, frames)) for it in items]


def evaluate_video(model, tok, policy, pairs, batch_size: int = 16, progress: bool = True) -> dict[str, Any]:
    """Score one policy (``None`` = plain model) on the pairs: the ``results.json`` schema."""
    from namm.envs.video_qa import score

    r = answer_video(model, tok, pairs, policy, batch_size, progress)
    acc = score([p[0] for p in pairs], r["predictions"])
    return {"policy": policy.describe() if policy is not None else "none", "accuracy": acc["accuracy"],
            "mean_cache_fraction": float(np.mean(r["cache_fractions"])), "by_group": acc["by_group"],
            "n": acc["n"], "video_kept": r["video_kept"], "text_kept": r["text_kept"],
            "predictions": r["predictions"], "heatmap": None if r["heatmap"] is None else np.asarray(r["heatmap"]).tolist()}


def plot_heatmap(heat, path: Path, title: str) -> Path:
    """``[updates, frames]`` fraction of each frame's tokens kept after each memory update."""
    from .plots import save_heatmap

    return save_heatmap(heat, path, title, "frame", "memory update", "fraction of the frame's tokens kept",
                        cmap="magma", height=1.5)


def write_video_results(out: Path, res: dict[str, Any]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["policy", "group", "accuracy", "mean_cache_fraction"])
    for g, a in res["by_group"].items():
        w.writerow([res["policy"], g, f"{a:.2f}", f"{res['mean_cache_fraction']:.4f}"])
    w.writerow([res["policy"], "all", f"{res['accuracy']:.2f}", f"{res['mean_cache_fraction']:.4f}"])
    text = buf.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.csv", lambda tmp: Path(tmp).write_text(text))
    doc = json.dumps(res, indent=1)
    return atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(doc))


def load_video_zoo_or_hf(spec: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """``zoo`` / a local folder / an HF id -> ``(model, tokenizer)``."""
    from .zoo_video import ZOO_VIDEO

    if spec == "zoo":
        if not (ZOO_VIDEO / "config.json").is_file():
            raise FileNotFoundError(f"no zoo video model at {ZOO_VIDEO}; build it with `namm zoo train-video`")
        from transformers import AutoTokenizer, LlavaNextVideoForConditionalGeneration

        # the zoo model takes inputs from VideoBatcher (no torchvision video processor needed)
        model = LlavaNextVideoForConditionalGeneration.from_pretrained(ZOO_VIDEO, dtype=dtype).to(device).eval()
        return model, AutoTokenizer.from_pretrained(ZOO_VIDEO)
    from namm.adapters.llava_next_video import load_video_model

    loaded = load_video_model(spec, dtype=dtype, device=device)
    if loaded.tokenizer is None:
        raise FileNotFoundError(f"{spec}: no tokenizer next to the model")
    return loaded.model, loaded.tokenizer


def cmd_eval_video(a: argparse.Namespace) -> None:
    from .checkpoint import resolve_policy
    from .selection import parse_budget

    model, tok = load_video_zoo_or_hf(a.model, a.device)
    size = int(model.config.vision_config.image_size)
    pairs = load_video_data(a.data, a.samples, a.seed, a.frames, size=size)
    out = Path(a.out)
    names = a.policy.split(",")
    rows = []
    for name in names:
        policy = resolve_policy(name, n_up=a.n_up, budget=parse_budget(a.budget) if name != "full" else None)
        res = evaluate_video(model, tok, policy, pairs, a.batch_size)
        res.update(model=a.model, data=a.data, seed=a.seed, frames=a.frames)
        sub = out if len(names) == 1 else out / Path(name).stem
        write_video_results(sub, res)
        if res["heatmap"] is not None and policy.name == "namm":
            plot_heatmap(res["heatmap"], sub / "frames_kept.png", f"{res['policy']}: frame tokens kept")
        rows.append({"name": Path(name).stem, "policy": res["policy"], "accuracy": res["accuracy"],
                     "mean_cache_fraction": res["mean_cache_fraction"]})
        print(f"{res['policy']:50s} accuracy {res['accuracy']:5.1f}%  cache {res['mean_cache_fraction']:.3f}  "
              + "  ".join(f"{g}={v:.0f}" for g, v in res["by_group"].items()))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["name", "policy", "accuracy", "mean_cache_fraction"])
    w.writeheader()
    w.writerows(rows)
    text = buf.getvalue()
    atomic_write(out / "summary.csv", lambda tmp: Path(tmp).write_text(text))


def add_eval_video_command(sub) -> None:
    p = sub.add_parser("eval-video", help="video QA accuracy under memory policies (zoo video model or LLaVA-NeXT-Video)")
    p.add_argument("--model", default="zoo", help="zoo | a local LLaVA-NeXT-Video folder | an HF id")
    p.add_argument("--policy", default="namm", help="policy name(s) or weights file(s), comma-separated")
    p.add_argument("--data", default="zoo", help="zoo | zoo-open | mlvu:PATH.json | longvideobench:PATH.json")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--samples", type=int, default=32, help="questions per kind (zoo) or in all (benchmarks)")
    p.add_argument("--seed", type=int, default=1000, help="seed of the zoo questions (training used 0..)")
    p.add_argument("--budget", default=None, help="fraction of tokens seen (0.4) or a token count")
    p.add_argument("--n-up", type=int, default=VIDEO_N_UP, help=f"memory update period (default {VIDEO_N_UP})")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_eval_video)
