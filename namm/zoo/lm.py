"""The offline language zoo: a small Llama the project trains itself on real offline text.

``namm zoo train-lm`` builds the corpus (installed Python sources and docs, split by file), trains a
byte-level BPE tokenizer on the train split, then trains a ``LlamaForCausalLM`` on a mixture of plain
text and task-formatted examples built from TRAIN files only (the evaluation tasks are built from
held-out files). It writes the tokenizer, the weights (safetensors, bf16) and ``manifest.json`` (the
command, seed, data, model config, training curve and full-cache scores) to one folder.

Objective: next-token loss over every token plus the same loss over answer tokens only, so that the
few answer tokens of each task example are not drowned by thousands of context tokens.

On a GPU the CPU side is the bottleneck: ``--workers N`` builds task examples in N DataLoader
processes, ``--device cuda`` trains under bf16 autocast, ``--max-minutes`` fits the curriculum to a
wall-clock budget (each stage gets its share by steps) and ``--corpus DIR`` reads a saved corpus, so
a machine with other packages installed trains on the same documents and splits. The shipped LM was
trained that way on a lent H200 (its manifest records the command and the per-task answer losses).
"""

from __future__ import annotations

import json
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from namm.evaluation.text import score_task
from namm.io import write_json
from namm.models.zoo import DEFAULT_LM
from namm.tasks.corpus import Corpus, collect_corpus, train_tokenizer
from namm.tasks.zoo import ZOO_TASKS, build_zoo, training_mixture

from .common import make_readable, warmup_cosine

__all__ = ["LMTrainConfig", "train_lm", "new_model", "quick_eval", "build_tasks"]


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
    corpus: str = ""  # a saved corpus folder (Corpus.save) instead of this machine's packages
    device: str = "cpu"  # "cuda": bf16 autocast on the GPU
    workers: int = 0  # DataLoader processes that build task examples (the CPU side is the bottleneck on a GPU)
    max_minutes: float = 0.0  # > 0: each stage trains for its share (by steps) of this wall-clock budget
    checkpoint_minutes: float = 0.0  # > 0: also save the weights every this many minutes


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


class _Rows(torch.utils.data.IterableDataset):
    """Endless training rows of one curriculum stage: ``(ids [L], answer_mask [L], task)``.

    A row holds one task example (prompt + answer + eos, with probability ``task_fraction``) and is
    filled up with plain text; ``task`` is the example's index in ``names`` (-1: plain text only).
    Each DataLoader worker draws its own examples (its id is part of the seed).
    """

    def __init__(self, cfg: "LMTrainConfig", stage: int, seq_len: int, tok, docs, names: list[str]) -> None:
        self.cfg, self.stage, self.seq_len, self.tok, self.docs, self.names = cfg, stage, seq_len, tok, docs, names

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w = info.id if info is not None else 0
        cfg, L, tok = self.cfg, self.seq_len, self.tok
        lengths = (min(max(256, L // 4), int(L * 0.85)), int(L * 0.85))  # task makers need >= ~256 tokens

        def mixture_from(restart: int):
            return training_mixture(tok, self.docs, n=10**9, context_tokens=lengths, tasks=self.names,
                                    seed=cfg.seed * 1000 + self.stage + 100_000 * w + 10**7 * restart)

        restarts = 0
        mixture = mixture_from(restarts)
        stream = _TextStream(self.docs, tok, cfg.seed + 7919 * w)
        rng = random.Random(f"{cfg.seed}:{self.stage}:{w}")
        while True:
            row, ans, task, ex = [], torch.zeros(L, dtype=torch.bool), -1, None
            if rng.random() < cfg.task_fraction:
                try:
                    ex = next(mixture)
                except RuntimeError:  # a draw no example fits (rare, short contexts): new draws, this row is text
                    restarts += 1
                    mixture = mixture_from(restarts)
                    ex = None
            if ex is not None:
                p = tok(ex["prompt"], add_special_tokens=False)["input_ids"]
                a = tok(ex["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                if len(p) + len(a) <= L:
                    row, task = p + a, self.names.index(ex["task"])
                    ans[len(p): len(p) + len(a)] = True
            row = row + stream.take(L - len(row))
            yield torch.tensor(row[:L]), ans, task


def _tokenizer(cfg: LMTrainConfig, corpus, out: Path):
    """The BPE tokenizer of ``out`` (trained on the corpus' TRAIN split if ``out`` has none yet)."""
    from transformers import AutoTokenizer

    if not (out / "tokenizer.json").exists():
        # beside the weights, so AutoTokenizer/AutoModel both load from the one folder
        train_tokenizer(corpus, vocab_size=cfg.vocab, seed=cfg.seed).save_pretrained(out)
    return AutoTokenizer.from_pretrained(out)


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
    out = {}
    for name, task in ZOO_TASKS.items():
        exs = task.generate(tok, corpus, n, seed=seed, context_tokens=context_tokens)
        out[name] = score_task(model, tok, name, exs, policy=None)["score"]
    return out


def _load_corpus(cfg: LMTrainConfig):
    if cfg.corpus:
        if not (Path(cfg.corpus) / "documents.jsonl").is_file():
            raise FileNotFoundError(f"--corpus {cfg.corpus}: no saved corpus there; write one with "
                                    f"`namm zoo corpus --out {cfg.corpus}`")
        return Corpus.load(cfg.corpus)
    return collect_corpus(max_bytes=cfg.corpus_mb * 1_000_000, seed=cfg.seed)


def _save_weights(model, out: Path) -> None:
    """bf16 safetensors, without touching the fp32 training weights (a tied lm_head is not stored twice:
    an explicit state_dict bypasses save_pretrained's own de-duplication)."""
    tied = model.config.tie_word_embeddings
    sd = {k: v.detach().to("cpu", torch.bfloat16) for k, v in model.state_dict().items()
          if not (tied and k == "lm_head.weight")}
    model.save_pretrained(out, safe_serialization=True, state_dict=sd)
    make_readable(out)


def train_lm(cfg: LMTrainConfig, argv: list[str] | None = None) -> Path:
    """Train the zoo LM; returns the output folder."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device}: this machine has no CUDA GPU; use --device cpu")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    previous = {}
    corpus = _load_corpus(cfg)
    if cfg.init_from:
        from transformers import AutoTokenizer, LlamaForCausalLM

        src = Path(cfg.init_from)
        previous = json.loads((src / "manifest.json").read_text()) if (src / "manifest.json").exists() else {}
        tok = AutoTokenizer.from_pretrained(src)
        model = LlamaForCausalLM.from_pretrained(src, dtype=torch.float32).train()
        if src.resolve() != out.resolve():
            tok.save_pretrained(out)
    else:
        tok = _tokenizer(cfg, corpus, out)
        model = new_model(cfg, tok).train()
    model.set_attn_implementation("sdpa")
    dev = torch.device(cfg.device)
    model.to(dev)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    names = cfg.tasks.split(",") if cfg.tasks else list(ZOO_TASKS)
    kinds = sorted(set(names))
    total = sum(s for _, _, s in cfg.stages)
    budget_s = 60 * cfg.max_minutes
    curve, step, tokens = [], 0, 0
    log_loss = torch.zeros(len(kinds) + 1, 2, device=dev)  # per task (+ text): [answer-loss sum, rows]
    # every train-lm run that built this model, oldest first (this run is appended at the end)
    runs = previous.get("runs") or ([{k: previous.get(k) for k in ("command", "config")}] if previous else [])
    command = "namm zoo train-lm " + " ".join(shlex.quote(a) for a in (argv or []))
    train_t0, last_ckpt, done_steps = time.time(), time.time(), 0
    bar = tqdm(total=None if budget_s else total, desc="train-lm", unit="step")

    def log(seq_len: int, lm: float, ans: float) -> None:
        sums = log_loss.tolist()
        by_task = {k: round(sums[i][0] / sums[i][1], 4) for i, k in enumerate(kinds) if sums[i][1]}
        log_loss.zero_()
        curve.append({"run": len(runs), "step": step, "seq_len": seq_len, "lm_loss": round(lm, 4),
                      "answer_loss": round(ans, 4), "answer_loss_by_task": by_task,
                      "lr": round(opt.param_groups[0]["lr"], 6), "tokens": tokens,
                      "minutes": round((time.time() - t0) / 60, 2)})
        bar.set_postfix(lm=f"{lm:.3f}", ans=f"{ans:.3f}", L=seq_len)

    for si, (seq_len, batch, steps) in enumerate(cfg.stages):
        rows = _Rows(cfg, si, seq_len, tok, corpus.train, names)
        loader = torch.utils.data.DataLoader(rows, batch_size=batch, num_workers=cfg.workers,
                                             prefetch_factor=8 if cfg.workers else None,
                                             pin_memory=dev.type == "cuda")
        # time-budgeted runs: this stage ends when its share of the budget is spent
        stage_end = train_t0 + budget_s * (done_steps + steps) / total if budget_s else None
        done_steps += steps
        for n_in_stage, (ids, ans, task) in enumerate(loader):
            if stage_end is None and n_in_stage >= steps or stage_end is not None and time.time() >= stage_end:
                break
            ids, ans, task = ids.to(dev, non_blocking=True), ans.to(dev, non_blocking=True), task.to(dev)
            with autocast:
                logits = model(input_ids=ids).logits[:, :-1]
            tgt = ids[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                    reduction="none").view_as(tgt)
            lm = nll.mean()
            am = ans[:, 1:]
            row_ans = (nll * am).sum(1) / am.sum(1).clamp_min(1)  # [B]
            ans_loss = (nll * am).sum() / am.sum().clamp_min(1)
            loss = lm + cfg.answer_weight * ans_loss
            progress = (time.time() - train_t0) / budget_s if budget_s else step / total
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(step, cfg.lr, cfg.warmup, progress, floor=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                slot = torch.tensor([kinds.index(names[t]) if t >= 0 else len(kinds) for t in task.tolist()],
                                    device=dev)
                log_loss.index_put_((slot, torch.zeros_like(slot)), row_ans.detach(), accumulate=True)
                log_loss.index_put_((slot, torch.ones_like(slot)), torch.ones_like(row_ans), accumulate=True)
            step += 1
            tokens += ids.numel()
            if step % 10 == 0:
                log(seq_len, lm.item(), ans_loss.item())
            if cfg.checkpoint_minutes and time.time() - last_ckpt >= 60 * cfg.checkpoint_minutes:
                _save_weights(model, out)
                write_json(out / "curve.json", curve, indent=None)
                last_ckpt = time.time()
            bar.update(1)
        del loader
    if step and (not curve or curve[-1]["step"] != step):
        log(seq_len, lm.item(), ans_loss.item())
    bar.close()
    model.eval().to("cpu")
    _save_weights(model, out)
    # score what was shipped: the bf16 weights, computed in fp32
    model.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()})
    scores = quick_eval(model, tok, corpus, cfg.eval_examples, cfg.eval_context, seed=12345) if cfg.eval_examples else {}
    manifest = {
        "command": command,
        "config": asdict(cfg),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "data": corpus.stats() if hasattr(corpus, "stats") else {},
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_seen": previous.get("tokens_seen", 0) + tokens,
        "train_minutes": round((time.time() - t0) / 60, 2) + previous.get("train_minutes", 0),
        "curve": previous.get("curve", []) + curve,
        "runs": runs + [{"command": command, "config": asdict(cfg)}],
        "full_cache_scores": {"context_tokens": cfg.eval_context, "examples": cfg.eval_examples, "scores": scores},
    }
    write_json(out / "manifest.json", manifest)
    return out


def build_tasks(model_dir: str | Path, out: str | Path, n: int, seed: int, context_tokens: int,
                corpus_mb: int = 24) -> Path:
    """Write held-out zoo task instances (LongBench JSONL, one file per task) for ``namm evolve``/eval."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    build_zoo(out, tok, collect_corpus(max_bytes=corpus_mb * 1_000_000), n, seed=seed, context_tokens=context_tokens)
    return Path(out)
