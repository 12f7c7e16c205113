"""Can the zoo LM learn passage_retrieval by fine-tuning on the CPU? (an experiment, not the recipe)

    python passage_ft.py any OUT STEPS [CORPUS]       # the shipped task: the cue is any distinctive line
    python passage_ft.py opening OUT STEPS [CORPUS]   # easier variant: the cue is the paragraph's first line,
                                             # so the label sits a fixed 2-3 tokens before it

Fine-tunes namm/weights/zoo/lm on passage_retrieval rows only (512 tokens, batch 8, answer weight 5,
lr 1e-3) and writes OUT/curve.json. CORPUS: a folder saved by `namm zoo corpus` (default: build the
corpus from this machine's packages, as `namm zoo train-lm` does). The variant is set by replacing the task module's cue picker for
this process only (task generation, not model code).
"""
import sys

import namm.envs.zoo_tasks as zt
from namm.zoo import LMTrainConfig, train_lm

variant, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
corpus = sys.argv[4] if len(sys.argv) > 4 else ""
if variant == "opening":
    any_line = zt._cue_lines

    def opening_line(passage: str) -> list[str]:
        cues = any_line(passage)
        lines = [s.strip() for s in passage.split("\n") if s.strip()]
        return cues[:1] if cues and lines[0] == cues[0] else []

    zt._cue_lines = opening_line
elif variant != "any":
    sys.exit(f"variant {variant!r}: use 'any' or 'opening'")
train_lm(LMTrainConfig(out=out, init_from="namm/weights/zoo/lm", corpus=corpus, tasks="passage_retrieval",
                       task_fraction=1.0, answer_weight=5.0, stages=[(512, 8, steps)], lr=1e-3, warmup=20,
                       threads=2, eval_examples=0, checkpoint_minutes=2))
