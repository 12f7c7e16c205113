"""Does a video model answer from the frames? Held-out needle questions, greedy, in two forms: the option's
words (``word_prompt``, no options shown: is the colour named?) and the option letter (``chat_prompt``).

    python experiments/video-smollm2/answers.py runs/vdiag-word --frames 4 8 16 32 --samples 20

Prints hits per form and frame count, and a few (gold, answer) pairs. Uses the public API only.
"""

from __future__ import annotations

import argparse

import torch

from namm import models
from namm.drivers.video import VideoBatcher
from namm.evaluation.video import load_video_data
from namm.tasks.video_qa import chat_prompt, word_prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a video model folder (e.g. a `namm zoo train-video` output)")
    ap.add_argument("--frames", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--kinds", default="needle")
    ap.add_argument("--seed", type=int, default=1000)
    a = ap.parse_args()
    model, tok = models.load(a.model, "video")
    batcher = VideoBatcher(model, tok)
    for nf in a.frames:
        pairs = load_video_data("zoo", a.samples, seed=a.seed, frames=nf, kinds=a.kinds.split(","))
        for form, make in (("words", word_prompt), ("letter", chat_prompt)):
            x = batcher([make(p[0]) for p in pairs], [p[1] for p in pairs])
            with torch.no_grad():
                out = model.generate(**x, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
            said = tok.batch_decode(out[:, x["input_ids"].shape[1]:], skip_special_tokens=True)
            gold = [p[0].options[p[0].answer] if form == "words" else p[0].answer_letter for p in pairs]
            hits = sum(g.lower() in s.lower() for g, s in zip(gold, said))
            print(f"{nf:3d} frames  {form:6s} {hits:3d}/{len(pairs)}  e.g. {list(zip(gold, said))[:3]}")


if __name__ == "__main__":
    main()
