"""``namm eval-video``: video QA accuracy under memory policies."""

from __future__ import annotations

import argparse
from pathlib import Path

from namm.evaluation.video import VIDEO_N_UP


def run(a: argparse.Namespace) -> None:
    from namm import models
    from namm.checkpoint import resolve_policy
    from namm.cli.eval import warn_keeps_everything
    from namm.evaluation.video import evaluate_video, load_video_data, plot_heatmap, write_video_results
    from namm.io import write_csv
    from namm.selection import parse_budget

    policies = [resolve_policy(n, n_up=a.n_up, budget=parse_budget(a.budget) if n != "full" else None)
                for n in a.policy.split(",")]
    warn_keeps_everything(policies)
    model, tok = models.load(a.model, "video", device=a.device)
    size = int(model.config.vision_config.image_size)
    pairs = load_video_data(a.data, a.samples, a.seed, a.frames, size=size)
    out = Path(a.out)
    rows = []
    for name, policy in zip(a.policy.split(","), policies):
        res = evaluate_video(model, tok, policy, pairs, a.batch_size, question_first=a.question == "first",
                             form=a.answers)
        res.update(model=a.model, data=a.data, seed=a.seed, frames=a.frames)
        sub = out if len(policies) == 1 else out / Path(name).stem
        write_video_results(sub, res)
        if res["heatmap"] is not None and policy.name == "namm":
            plot_heatmap(res["heatmap"], sub / "frames_kept.png", f"{res['policy']}: frame tokens kept")
        rows.append({"name": Path(name).stem, "policy": res["policy"], "accuracy": res["accuracy"],
                     "mean_cache_fraction": res["mean_cache_fraction"]})
        print(f"{res['policy']:50s} accuracy {res['accuracy']:5.1f}%  cache {res['mean_cache_fraction']:.3f}  "
              + "  ".join(f"{g}={v:.0f}" for g, v in {**res["by_group"], **res["by_evidence"]}.items()))
    write_csv(out / "summary.csv", rows, ["name", "policy", "accuracy", "mean_cache_fraction"])


def add(sub) -> None:
    p = sub.add_parser("eval-video", help="video QA accuracy under memory policies (zoo video model or LLaVA-NeXT-Video)")
    p.add_argument("--model", default="zoo", help="zoo | a local LLaVA-NeXT-Video folder | an HF id")
    p.add_argument("--policy", default="namm", help="policy name(s) or weights file(s), comma-separated")
    p.add_argument("--data", default="zoo", help="zoo | zoo-open | mlvu:PATH.json | longvideobench:PATH.json")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--samples", type=int, default=32, help="questions per kind (zoo) or in all (benchmarks)")
    p.add_argument("--seed", type=int, default=1000, help="seed of the zoo questions (training used 0..)")
    p.add_argument("--budget", default=None, help="fraction of tokens seen (0.4) or a token count")
    p.add_argument("--n-up", type=int, default=VIDEO_N_UP, help=f"memory update period (default {VIDEO_N_UP})")
    p.add_argument("--question", choices=("last", "first"), default="last",
                   help="the question after the video (last, the benchmarks' form) or before it (first)")
    p.add_argument("--answers", choices=("auto", "letter", "words"), default="auto",
                   help="answer with the option's letter (options shown) or its words (matched to the options); "
                        "auto: the form the model was trained on")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=run)
