"""The offline language zoo: a small Llama the project trains itself on real offline text.

``namm zoo train-lm`` builds the corpus (installed Python sources and docs, split by file), trains a
byte-level BPE tokenizer on the train split, then trains a ``LlamaForCausalLM`` on a mixture of plain
text and task-formatted examples built from TRAIN files only (the evaluation tasks are built from
held-out files). It writes the tokenizer, the weights (safetensors, bf16) and ``manifest.json`` (the
command, seed, data, model config, training curve and full-cache scores) to one folder.

Objective: next-token loss over every token plus the same loss over answer tokens only, so that the
few answer tokens of each task example are not drowned by thousands of context tokens.
"""

from __future__ import annotations

import json
import math
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

ZOO_DIR = Path(__file__).parent / "weights" / "zoo"
DEFAULT_LM = ZOO_DIR / "lm"

__all__ = ["LMTrainConfig", "train_lm", "load_zoo_lm", "ZOO_DIR", "DEFAULT_LM"]


@dataclass
class LMTrainConfig:
    out: str = str(DEFAULT_LM)
    seed: int = 0
    corpus_mb: int = 24
    vocab: int = 4096
    hidden: int = 192
    layers: int = 4
    heads: int = 6
    kv_heads: int = 2
    intermediate: int = 512
    max_positions: int = 8192
    rope_theta: float = 10000.0
    # curriculum: (sequence length, batch size, steps)
    stages: list[tuple[int, int, int]] = field(default_factory=lambda: [(1024, 8, 600), (2048, 4, 300), (4096, 2, 100)])
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.1
    task_fraction: float = 0.6  # rows that hold a task example (the rest: plain text)
    answer_weight: float = 1.0  # weight of the answer-only loss term
    threads: int = 0  # torch threads (0: leave as is)
    eval_examples: int = 8
    eval_context: int = 2048
    tasks: str = ""  # comma-separated zoo tasks of the training mixture (default: all)
    init_from: str = ""  # continue from a trained zoo LM folder (its tokenizer and weights; fresh optimiser)


class _TextStream:
    """Endless stream of token ids from shuffled TRAIN documents (eos between documents)."""

    def __init__(self, docs, tokenizer, seed: int) -> None:
        self.docs = list(docs)
        self.tok = tokenizer
        self.rng = random.Random(seed)
        self.buf: list[int] = []

    def take(self, n: int) -> list[int]:
        while len(self.buf) < n:
            d = self.docs[self.rng.randrange(len(self.docs))]
            self.buf += self.tok(d.text, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _batch(cfg, seq_len: int, batch: int, tok, stream: _TextStream, mixture, rng: random.Random):
    """``ids [B, L]`` and ``answer_mask [B, L]`` (True on answer tokens, as labels)."""
    ids = torch.empty(batch, seq_len, dtype=torch.long)
    ans = torch.zeros(batch, seq_len, dtype=torch.bool)
    for r in range(batch):
        row: list[int] = []
        if rng.random() < cfg.task_fraction:
            ex = next(mixture)
            p = tok(ex["prompt"], add_special_tokens=False)["input_ids"]
            a = tok(ex["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            if len(p) + len(a) <= seq_len:
                row = p + a
                ans[r, len(p) : len(p) + len(a)] = True
        row = row + stream.take(seq_len - len(row))
        ids[r] = torch.tensor(row[:seq_len])
    return ids, ans


def _lr(step: int, total: int, cfg: LMTrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, total - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def build_data(cfg: LMTrainConfig, out: Path):
    """Corpus + tokenizer (saved under ``out/tokenizer``); returns ``(corpus, tokenizer)``."""
    from transformers import AutoTokenizer

    from namm.envs.corpus import collect_corpus, train_tokenizer

    corpus = collect_corpus(max_bytes=cfg.corpus_mb * 1_000_000, seed=cfg.seed)
    if not (out / "tokenizer.json").exists():
        # beside the weights, so AutoTokenizer/AutoModel both load from the one folder
        train_tokenizer(corpus, vocab_size=cfg.vocab, seed=cfg.seed).save_pretrained(out)
    return corpus, AutoTokenizer.from_pretrained(out)


def new_model(cfg: LMTrainConfig, tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    mcfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.max_positions, rope_theta=cfg.rope_theta, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(mcfg)


@torch.no_grad()
def quick_eval(model, tok, corpus, n: int, context_tokens: int, seed: int) -> dict[str, float]:
    """Full-cache scores of every zoo task on ``n`` held-out examples (greedy)."""
    from namm.evaluate import score_task

    out = {}
    from namm.envs.zoo_tasks import ZOO_TASKS

    for name, task in ZOO_TASKS.items():
        exs = task.generate(tok, corpus, n, seed=seed, context_tokens=context_tokens)
        out[name] = score_task(model, tok, name, exs, policy=None)["score"]
    return out


def train_lm(cfg: LMTrainConfig, argv: list[str] | None = None) -> Path:
    """Train the zoo LM; returns the output folder."""
    from namm.envs.zoo_tasks import training_mixture

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    previous = {}
    if cfg.init_from:
        from transformers import AutoTokenizer, LlamaForCausalLM

        src = Path(cfg.init_from)
        previous = json.loads((src / "manifest.json").read_text()) if (src / "manifest.json").exists() else {}
        from namm.envs.corpus import collect_corpus

        corpus = collect_corpus(max_bytes=cfg.corpus_mb * 1_000_000, seed=cfg.seed)
        tok = AutoTokenizer.from_pretrained(src)
        model = LlamaForCausalLM.from_pretrained(src, dtype=torch.float32).train()
        if src.resolve() != out.resolve():
            tok.save_pretrained(out)
    else:
        corpus, tok = build_data(cfg, out)
        model = new_model(cfg, tok).train()
    model.set_attn_implementation("sdpa")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    stream = _TextStream(corpus.train, tok, cfg.seed)
    rng = random.Random(cfg.seed)
    total = sum(s for _, _, s in cfg.stages)
    curve, step, tokens = [], 0, 0
    # every train-lm run that built this model, oldest first (this run is appended at the end)
    runs = previous.get("runs") or ([{k: previous.get(k) for k in ("command", "config")}] if previous else [])
    bar = tqdm(total=total, desc="train-lm", unit="step")
    for si, (seq_len, batch, steps) in enumerate(cfg.stages):
        mixture = training_mixture(tok, corpus, n=10**9, seed=cfg.seed * 1000 + si,
                                   context_tokens=(seq_len // 4, int(seq_len * 0.85)),
                                   tasks=cfg.tasks.split(",") if cfg.tasks else None)
        for _ in range(steps):
            ids, ans = _batch(cfg, seq_len, batch, tok, stream, mixture, rng)
            logits = model(input_ids=ids).logits[:, :-1].float()
            tgt = ids[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                    reduction="none").view_as(tgt)
            lm = nll.mean()
            am = ans[:, 1:]
            ans_loss = (nll * am).sum() / am.sum().clamp_min(1)
            loss = lm + cfg.answer_weight * ans_loss
            for g in opt.param_groups:
                g["lr"] = _lr(step, total, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            tokens += ids.numel()
            if step % 10 == 0 or step == total:
                curve.append({"run": len(runs), "step": step, "seq_len": seq_len, "lm_loss": round(lm.item(), 4),
                              "answer_loss": round(ans_loss.item(), 4), "tokens": tokens,
                              "minutes": round((time.time() - t0) / 60, 2)})
                bar.set_postfix(lm=f"{lm.item():.3f}", ans=f"{ans_loss.item():.3f}", L=seq_len)
            bar.update(1)
    bar.close()
    model.eval()
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    model.float()
    scores = quick_eval(model, tok, corpus, cfg.eval_examples, cfg.eval_context, seed=12345) if cfg.eval_examples else {}
    manifest = {
        "command": "namm zoo train-lm " + " ".join(shlex.quote(a) for a in (argv or [])),
        "config": asdict(cfg),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "data": corpus.stats() if hasattr(corpus, "stats") else {},
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_seen": previous.get("tokens_seen", 0) + tokens,
        "train_minutes": round((time.time() - t0) / 60, 2) + previous.get("train_minutes", 0),
        "curve": previous.get("curve", []) + curve,
        "runs": runs + [{"command": "namm zoo train-lm " + " ".join(shlex.quote(a) for a in (argv or [])),
                         "config": asdict(cfg)}],
        "full_cache_scores": {"context_tokens": cfg.eval_context, "examples": cfg.eval_examples, "scores": scores},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    return out


def load_zoo_lm(path: str | Path = DEFAULT_LM, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` of a zoo LM folder (weights are stored bf16; computed in ``dtype``)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: no zoo LM here; build it with `namm zoo train-lm --out {path}`")
    model = LlamaForCausalLM.from_pretrained(path, dtype=dtype).eval()
    tok = AutoTokenizer.from_pretrained(path)
    return model, tok


def zoo_command(sub: str) -> str | None:
    """This process's ``namm zoo <sub> ...`` command line, for a manifest (None when called from Python)."""
    if sys.argv[1:3] != ["zoo", sub]:
        return None
    return f"namm zoo {sub} " + " ".join(shlex.quote(a) for a in sys.argv[3:])


def add_config_args(p, cls, required: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per field of the dataclass ``cls`` (its defaults; bools as --x / --no-x)."""
    import argparse

    for f, v in asdict(cls()).items():
        flag = "--" + f.replace("_", "-")
        if f in required:
            p.add_argument(flag, required=True)
        elif isinstance(v, bool):  # type=bool would read "--x False" as True
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=v)
        else:
            p.add_argument(flag, type=type(v), default=v)


def config_from_args(cls, a):
    """The ``cls`` instance that :func:`add_config_args` flags describe."""
    return cls(**{k: v for k, v in vars(a).items() if k in cls.__dataclass_fields__})


def build_tasks(model_dir: str | Path, out: str | Path, n: int, seed: int, context_tokens: int,
                corpus_mb: int = 24) -> Path:
    """Write held-out zoo task instances (LongBench JSONL, one file per task) for ``namm evolve``/eval."""
    from transformers import AutoTokenizer

    from namm.envs.corpus import collect_corpus
    from namm.envs.zoo_tasks import build_zoo

    tok = AutoTokenizer.from_pretrained(model_dir)
    build_zoo(out, tok, collect_corpus(max_bytes=corpus_mb * 1_000_000), n, seed=seed, context_tokens=context_tokens)
    return Path(out)


def add_zoo_command(sub) -> None:
    import argparse

    p = sub.add_parser("zoo", help="build the offline zoo (models the project trains itself)")
    zsub = p.add_subparsers(dest="zoo_command", required=True)
    t = zsub.add_parser("train-lm", help="train the zoo language model (corpus, tokenizer, Llama) into --out")
    d = LMTrainConfig()
    for f in ("out", "seed", "corpus_mb", "vocab", "hidden", "layers", "heads", "kv_heads", "intermediate",
              "max_positions", "rope_theta", "lr", "warmup", "task_fraction", "answer_weight", "threads", "eval_examples",
              "eval_context", "tasks", "init_from"):
        t.add_argument("--" + f.replace("_", "-"), type=type(getattr(d, f)), default=getattr(d, f))
    t.add_argument("--stages", default=",".join(f"{a}x{b}x{c}" for a, b, c in d.stages),
                   help="curriculum as LENxBATCHxSTEPS,... (default %(default)s)")

    def run(a: argparse.Namespace) -> None:
        kw = {k: v for k, v in vars(a).items() if k in LMTrainConfig.__dataclass_fields__ and k != "stages"}
        try:
            stages = [tuple(int(x) for x in s.split("x")) for s in a.stages.split(",")]
            assert all(len(s) == 3 and min(s) > 0 for s in stages)
        except (ValueError, AssertionError):
            raise ValueError(f"--stages {a.stages!r}: expected LENxBATCHxSTEPS,... e.g. 1024x8x600,4096x2x100") from None
        out = train_lm(LMTrainConfig(stages=stages, **kw), argv=sys.argv[3:])
        print(f"wrote {out} ({json.loads((out / 'manifest.json').read_text())['full_cache_scores']})")

    t.set_defaults(fn=run)

    b = zsub.add_parser("build-tasks", help="write held-out zoo task instances as LongBench JSONL files")
    b.add_argument("--model", default=str(DEFAULT_LM), help="zoo LM folder (its tokenizer sizes the contexts)")
    b.add_argument("--out", required=True)
    b.add_argument("--n", type=int, default=64, help="examples per task")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--context-tokens", type=int, default=2048)
    b.set_defaults(fn=lambda a: print(f"wrote {build_tasks(a.model, a.out, a.n, a.seed, a.context_tokens)}"))

    from namm.envs.rl_data import add_rl_data_command

    add_rl_data_command(zsub)

    from namm.zoo_dt import add_train_dt_command

    add_train_dt_command(zsub)

    from namm.zoo_video import add_train_video_command

    add_train_video_command(zsub)
