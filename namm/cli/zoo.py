"""``namm zoo ...``: build the offline zoo (models the project trains itself). Every trainer's flags come
from its config dataclass (:func:`namm.config.add_flags`)."""

from __future__ import annotations

import argparse
import json
import sys


def _train_lm(a: argparse.Namespace) -> None:
    from namm.config import from_flags
    from namm.zoo.lm import LMTrainConfig, train_lm

    try:
        stages = [tuple(int(x) for x in s.split("x")) for s in a.stages.split(",")]
        assert all(len(s) == 3 and min(s) > 0 for s in stages)
    except (ValueError, AssertionError):
        raise ValueError(f"--stages {a.stages!r}: expected LENxBATCHxSTEPS,... e.g. 1024x8x600,4096x2x100") from None
    out = train_lm(from_flags(LMTrainConfig, a, stages=stages), argv=sys.argv[3:])
    print(f"wrote {out} ({json.loads((out / 'manifest.json').read_text())['full_cache_scores']})")


def _corpus(a: argparse.Namespace) -> None:
    from namm.tasks.corpus import collect_corpus

    corpus = collect_corpus(max_bytes=a.corpus_mb * 1_000_000, seed=a.seed)
    print(f"wrote {corpus.save(a.out)} ({corpus.stats()['files']} files, {corpus.stats()['bytes'] / 1e6:.1f} MB)")


def _build_tasks(a: argparse.Namespace) -> None:
    from namm.zoo.lm import build_tasks

    print(f"wrote {build_tasks(a.model, a.out, a.n, a.seed, a.context_tokens)}")


def _rl_data(a: argparse.Namespace) -> None:
    from namm.tasks.d4rl import canonical_env
    from namm.zoo.rl_data import build_rl_data

    try:
        net = tuple(int(x) for x in a.net.split(","))
    except ValueError:
        raise ValueError(f"--net {a.net!r}: expected comma-separated sizes like 128,128") from None
    out = build_rl_data(a.env, a.out, a.steps, a.medium_steps, a.seed, a.threads, net=net, batch_size=a.batch_size)
    print(json.dumps(json.loads((out / f"{canonical_env(a.env)}-manifest.json").read_text())["levels"], indent=1))


def _train_dt(a: argparse.Namespace) -> None:
    from namm.config import from_flags
    from namm.zoo.dt import DTTrainConfig, train_dt

    out = train_dt(from_flags(DTTrainConfig, a))
    ev = json.loads((out / "manifest.json").read_text())["eval_window"]
    print(f"wrote {out}" + (f" (window-mode normalised return {ev['normalized_return_mean']:.1f})" if ev else ""))


def _train_video(a: argparse.Namespace) -> None:
    from namm.config import from_flags
    from namm.zoo.video import VideoTrainConfig, train_video

    cfg = from_flags(VideoTrainConfig, a)
    out = train_video(cfg)
    if (out / "train_state.pt").is_file():  # stopped early (--stop-at or interrupted): resumable
        print(f"stopped before step {cfg.steps}: {out}/train_state.pt; continue with the same flags and --resume")
        return
    acc = json.loads((out / "manifest.json").read_text())["heldout_full_cache"]
    print(f"wrote {out}: held-out accuracy {acc['accuracy']:.1f}% by kind {acc['by_group']}")


def add(sub) -> None:
    from namm.config import add_flags
    from namm.models.zoo import DEFAULT_LM
    from namm.zoo.dt import DTTrainConfig
    from namm.zoo.lm import LMTrainConfig
    from namm.zoo.video import VideoTrainConfig

    p = sub.add_parser("zoo", help="build the offline zoo (models the project trains itself)")
    zsub = p.add_subparsers(dest="zoo_command", required=True)

    t = zsub.add_parser("train-lm", help="train the zoo language model (corpus, tokenizer, Llama) into --out")
    add_flags(t, LMTrainConfig)
    d = LMTrainConfig()
    t.add_argument("--stages", default=",".join(f"{a}x{b}x{c}" for a, b, c in d.stages),
                   help="curriculum as LENxBATCHxSTEPS,... (default %(default)s)")
    t.set_defaults(fn=_train_lm)

    c = zsub.add_parser("corpus", help="save this machine's corpus (train-lm --corpus reads it on another machine)")
    c.add_argument("--out", required=True)
    c.add_argument("--corpus-mb", type=int, default=d.corpus_mb)
    c.add_argument("--seed", type=int, default=d.seed)
    c.set_defaults(fn=_corpus)

    b = zsub.add_parser("build-tasks", help="write held-out zoo task instances as LongBench JSONL files")
    b.add_argument("--model", default=str(DEFAULT_LM), help="zoo LM folder (its tokenizer sizes the contexts)")
    b.add_argument("--out", required=True)
    b.add_argument("--n", type=int, default=64, help="examples per task")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--context-tokens", type=int, default=2048)
    b.set_defaults(fn=_build_tasks)

    r = zsub.add_parser("rl-data", help="train a SAC behaviour agent and write D4RL-format medium / medium-replay data")
    r.add_argument("--env", required=True, help="hopper | halfcheetah | walker2d")
    r.add_argument("--out", default="runs/rl-zoo/data")
    r.add_argument("--steps", type=int, default=150_000, help="SAC env steps (= the medium-replay size)")
    r.add_argument("--medium-steps", type=int, default=100_000, help="transitions of the final agent (medium)")
    r.add_argument("--net", default="128,128", help="SAC hidden sizes (default %(default)s)")
    r.add_argument("--batch-size", type=int, default=128)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=1)
    r.set_defaults(fn=_rl_data)

    dt = zsub.add_parser("train-dt", help="train a zoo Decision Transformer on a D4RL-format dataset into --out")
    add_flags(dt, DTTrainConfig, required=("dataset", "out"))
    dt.set_defaults(fn=_train_dt)

    v = zsub.add_parser("train-video", help="train the zoo video model (small LLaVA-NeXT-Video) on procedural video QA")
    add_flags(v, VideoTrainConfig)
    v.set_defaults(fn=_train_video)
