"""Video QA under a memory policy: ``namm eval-video``.

For every policy: greedy answers to multiple-choice questions about videos (the option's letter, or for a
model trained to answer in words, the option's words matched back to an option), accuracy overall and per
group (question kind / duration group) and by where the evidence sits, the mean cache fraction, the
fractions of video and text tokens kept, and a frames x updates heat-map of which frame tokens survived.
Writes per policy ``results.json`` (``policy``, ``accuracy``, ``mean_cache_fraction``, ``by_group``) and
``results.csv``; with several policies one sub-folder each plus ``summary.csv``.

Data: ``zoo`` = the procedural questions of :func:`namm.tasks.video_qa.synthetic_items` drawn with
``--seed`` (the zoo video model trained on seeds 0..); ``mlvu:PATH`` / ``longvideobench:PATH`` = the
benchmarks' JSON files with their videos next to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from namm.drivers.video import VideoBatcher, generate_with_video_stats
from namm.io import write_csv, write_json
from namm.memory import memory
from namm.plots import save_heatmap
from namm.tasks import make as make_task
from namm.tasks.video_qa import match_option, parse_answer, score, score_by_evidence, video_prompt

__all__ = ["answer_video", "answer_form", "load_video_data", "evaluate_video", "plot_heatmap", "write_video_results",
           "VIDEO_N_UP"]

VIDEO_N_UP = 64  # zoo video prompts are ~370 tokens (16 frames x 16 tokens + text): 5 updates


def answer_form(model, form: str = "auto") -> str:
    """The answer form to ask ``model`` for: ``form``, or with ``auto`` the one it was trained to give
    (``answer_form`` in its config, written by ``namm zoo train-video``; ``letter`` when absent)."""
    return str(getattr(model.config, "answer_form", "letter")) if form == "auto" else form


@torch.no_grad()
def answer_video(model, tok, pairs: Sequence[tuple[Any, np.ndarray]], policy=None, batch_size: int = 16,
                 progress: bool = False, question_first: bool = False, form: str = "letter") -> dict[str, Any]:
    """Greedy answers for ``(VideoQAItem, frames [F, H, W, 3])`` pairs, optionally under a memory policy;
    ``question_first`` puts the question before the video; ``form`` is ``letter`` (options shown, answered
    with a letter) or ``words`` (no options shown, answered in words: see
    :func:`~namm.tasks.video_qa.video_prompt`).

    Returns ``{"predictions": [str], "cache_fractions": [float], "video_kept": float, "text_kept": float,
    "heatmap": [updates, frames] (first question; None without a policy)}``.
    """
    from tqdm.auto import tqdm

    batcher = VideoBatcher(model, tok)
    preds, fracs, vk, tk, heat = [], [], [], [], None
    dev, dt = model.device, model.dtype
    for i in tqdm(range(0, len(pairs), batch_size), disable=not progress, desc=getattr(policy, "name", "model"),
                  leave=False):
        chunk = pairs[i : i + batch_size]
        b = batcher([video_prompt(p[0], form, question_first=question_first) for p in chunk], [p[1] for p in chunk])
        b = {k: v.to(dev, dt) if v.is_floating_point() else v.to(dev) for k, v in b.items()}
        new = 3
        if form == "words":  # room for the longest option's words and one more
            new = 1 + max(len(tok(" " + o, add_special_tokens=False)["input_ids"]) for p in chunk for o in p[0].options)
        kw = dict(max_new_tokens=new, do_sample=False, pad_token_id=batcher.tok.pad_token_id)
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
                    kinds: Sequence[str] | None = None) -> list[tuple[Any, np.ndarray]]:
    """``(item, frames)`` pairs of a video task: ``zoo`` (= ``zoo-video``: ``samples`` per kind, seeded; the
    fixed-option questions the zoo model learned), ``zoo-open`` (= ``zoo-video-open``: per-question options),
    or ``mlvu:PATH`` / ``longvideobench:PATH`` (first ``samples`` questions, ``frames`` sampled uniformly)."""
    name, _, path = spec.partition(":")
    name = {"zoo": "zoo-video", "zoo-open": "zoo-video-open"}.get(name, name)
    return make_task(name, kind="video").pairs(samples, seed, frames, size, path=path or None, kinds=kinds)


def evaluate_video(model, tok, policy, pairs, batch_size: int = 16, progress: bool = True,
                   question_first: bool = False, form: str = "auto") -> dict[str, Any]:
    """Score one policy (``None`` = plain model) on the pairs: the ``results.json`` schema (``by_evidence``:
    accuracy by the third of the video the evidence sits in, for the zoo's questions; ``answers``: the answer
    form, see :func:`answer_form`; a words answer counts when it names the right option,
    :func:`~namm.tasks.video_qa.match_option`)."""
    form = answer_form(model, form)
    r = answer_video(model, tok, pairs, policy, batch_size, progress, question_first, form)
    items = [p[0] for p in pairs]
    read = match_option if form == "words" else lambda text, opts: parse_answer(text, len(opts))
    choices = [read(t, it.options) for t, it in zip(r["predictions"], items)]
    acc = score(items, choices)
    return {"policy": policy.describe() if policy is not None else "none", "accuracy": acc["accuracy"],
            "mean_cache_fraction": float(np.mean(r["cache_fractions"])), "by_group": acc["by_group"],
            "by_evidence": score_by_evidence(items, choices), "question_first": question_first, "answers": form,
            "n": acc["n"], "video_kept": r["video_kept"], "text_kept": r["text_kept"],
            "predictions": r["predictions"], "choices": choices,
            "heatmap": None if r["heatmap"] is None else np.asarray(r["heatmap"]).tolist()}


def plot_heatmap(heat, path: Path, title: str) -> Path:
    """``[updates, frames]`` fraction of each frame's tokens kept after each memory update."""
    return save_heatmap(heat, path, title, "frame", "memory update", "fraction of the frame's tokens kept",
                        cmap="magma", height=1.5)


def write_video_results(out: Path, res: dict[str, Any]) -> Path:
    rows = [["policy", "group", "accuracy", "mean_cache_fraction"]]
    rows += [[res["policy"], g, f"{a:.2f}", f"{res['mean_cache_fraction']:.4f}"] for g, a in res["by_group"].items()]
    rows += [[res["policy"], f"evidence:{g}", f"{a:.2f}", f"{res['mean_cache_fraction']:.4f}"]
             for g, a in res.get("by_evidence", {}).items()]
    rows.append([res["policy"], "all", f"{res['accuracy']:.2f}", f"{res['mean_cache_fraction']:.4f}"])
    write_csv(out / "results.csv", rows)
    return write_json(out / "results.json", res)
