"""The video transfer table: memory policies on a video model, each NAMM beside the hand-made baselines run at
that NAMM's measured cache fraction, on the same held-out questions (paired).

    python experiments/video-smollm2/transfer.py --model zoo --frames 32 --samples 40 \\
        --namm zoo=namm-zoo,threshold=namm-threshold,default=namm --out results/video-smollm2-transfer

Writes to ``--out``: ``README.md`` (the table and the command) and ``table.csv``: accuracy overall, by
kind and by evidence position, the share of answers that name any option, cache fraction, video and text
tokens kept, and each policy's paired
difference to its NAMM (a NAMM's: to full) with a 95% bootstrap interval over the questions;
``results.json`` (the same plus the resolved arguments; no predictions); ``frames_kept.png``: for each
NAMM and the H2O run at its fraction, the share of each frame's tokens kept after each memory update
(first question). Uses the public API only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from namm import models
from namm.checkpoint import resolve_policy
from namm.evaluation.stats import paired_interval
from namm.evaluation.table import matched_budget
from namm.evaluation.video import VIDEO_N_UP, evaluate_video, load_video_data
from namm.io import write_csv, write_json, write_text
from namm.plots import save_heatmaps

BASELINES = "h2o,l2,streamingllm,snapkv,tova"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo", help="a video model name or folder")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--samples", type=int, default=40, help="held-out questions per kind")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--n-up", type=int, default=VIDEO_N_UP)
    ap.add_argument("--namm", default="default=namm", help="NAME=WEIGHTS pairs, comma-separated (a shipped name or a file)")
    ap.add_argument("--baselines", default=BASELINES)
    ap.add_argument("--pool", type=int, default=None, help="the NAMMs' score pooling window (namm.pool; default theirs)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--question", choices=("last", "first"), default="last")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    t0 = time.time()
    try:
        model, tok = models.load(a.model, "video")
    except (models.ModelUnavailable, FileNotFoundError, ValueError) as e:
        sys.exit(f"transfer: {e}")
    pairs = load_video_data("zoo", a.samples, a.seed, a.frames, size=int(model.config.vision_config.image_size))
    items = [p[0] for p in pairs]
    gold = np.array([it.answer for it in items])
    first = a.question == "first"
    n = len(items)

    def run(name: str, policy, ref: str | None) -> dict:
        res = evaluate_video(model, tok, policy, pairs, a.batch_size, progress=True, question_first=first)
        hits = np.array([c == g for c, g in zip(res["choices"], gold)])
        named = float(np.mean([c is not None for c in res["choices"]]))  # answers that name any option at all
        row = {"name": name, "policy": res["policy"], "accuracy": res["accuracy"], "named": named,
               # one (gold option, answer) pair per kind: the questions come in blocks of --samples per kind
               "examples": [[items[i].options[items[i].answer], res["predictions"][i]] for i in range(0, n, a.samples)],
               "cache": res["mean_cache_fraction"], "video_kept": res["video_kept"], "text_kept": res["text_kept"],
               "by_group": res["by_group"], "by_evidence": res["by_evidence"], "answers": res["answers"],
               "vs": ref, "hits": hits}
        print(f"{name:22s} {res['accuracy']:5.1f}%  named {named:.2f}  cache {res['mean_cache_fraction']:.3f}  "
              + "  ".join(f"{g}={v:.0f}" for g, v in {**res["by_group"], **res["by_evidence"]}.items()), flush=True)
        return {**row, "heatmap": res["heatmap"]}

    rows = [run("full", resolve_policy("full", n_up=a.n_up), None)]
    for spec in a.namm.split(","):
        label, _, weights = spec.partition("=")
        nrow = run(f"namm-{label}", resolve_policy(weights or label, n_up=a.n_up, pool=a.pool), None)
        rows.append(nrow)
        budget = matched_budget(nrow["cache"])
        for b in a.baselines.split(","):
            rows.append(run(f"{b}@{label}", resolve_policy(b, n_up=a.n_up, budget=budget), nrow["name"]))
    by_name = {r["name"]: r for r in rows}
    for r in rows:
        ref = by_name[r["vs"]] if r["vs"] else by_name["full"] if r["name"] != "full" else None
        r["diff_vs"] = ref["name"] if ref else None
        # B - ref in points, paired over the same questions
        r["diff"] = paired_interval((r["hits"].astype(float) - ref["hits"].astype(float)) * 100) if ref else None

    groups = sorted({g for r in rows for g in r["by_group"]})
    where = sorted({g for r in rows for g in r["by_evidence"]})
    head = ["policy", "accuracy", *groups, *(f"evidence:{w}" for w in where), "named", "cache", "video_kept", "text_kept",
            "diff_vs", "diff", "ci_low", "ci_high"]
    table = [[r["name"], f"{r['accuracy']:.1f}", *(f"{r['by_group'].get(g, float('nan')):.1f}" for g in groups),
              *(f"{r['by_evidence'].get(w, float('nan')):.1f}" for w in where), f"{r['named']:.2f}", f"{r['cache']:.3f}",
              f"{r['video_kept']:.3f}", f"{r['text_kept']:.3f}", r["diff_vs"] or "",
              *(f"{x:+.1f}" for x in (r["diff"] or ())), *([""] * (3 if r["diff"] is None else 0))] for r in rows]
    write_csv(out / "table.csv", [head, *table])
    md = ["| " + " | ".join(head[:-3] + ["B - ref [95% CI]"]) + " |", "|" + "---|" * (len(head) - 2)]
    for r, t in zip(rows, table):
        d = r["diff"]
        md.append("| " + " | ".join(t[:-3] + [f"{d[0]:+.1f} [{d[1]:+.1f}, {d[2]:+.1f}]" if d else ""]) + " |")
    chance = 100.0 / len(items[0].options)
    cmd = "python experiments/video-smollm2/transfer.py " + " ".join(sys.argv[1:])
    write_text(out / "README.md", "\n".join([
        f"Video transfer: `{a.model}`, {n} held-out questions ({a.samples} per kind, seed {a.seed}), {a.frames} frames, "
        f"n_up {a.n_up}, question {a.question}, answers in {rows[0]['answers']}; chance {chance:.0f}%. Baselines "
        "run at the cache fraction of the NAMM named after the @; B - ref is in points, paired over the same "
        "questions (ref: that NAMM, or full for the NAMMs).", "", *md, "", f"`{cmd}`", ""]))
    heat = {f"{r['name']} (cache {r['cache']:.2f}, acc {r['accuracy']:.0f}%)": r["heatmap"] for r in rows
            if r["heatmap"] is not None and (r["name"].startswith("namm-") or r["name"].startswith("h2o@"))}
    if heat:
        save_heatmaps(heat, out / "frames_kept.png", f"frame (of {a.frames})", "update",
                      "share of the frame's tokens kept")
    keep = [{k: v for k, v in r.items() if k not in ("hits", "heatmap")} for r in rows]
    write_json(out / "results.json", {"args": vars(a), "command": cmd, "n": n, "chance": chance,
                                      "seconds": round(time.time() - t0, 1), "rows": keep})
    print(json.dumps({"out": str(out), "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
