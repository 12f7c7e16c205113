"""``namm zoo train-dt``: train a small Decision Transformer (HF ``DecisionTransformerModel``) on D4RL data.

The recipe is the DT paper's (Chen et al. 2021), shrunk for CPUs: windows of ``K`` consecutive steps
sampled with probability proportional to episode length, states normalised by the dataset mean/std,
returns-to-go divided by ``scale``, left padding with an attention mask, MSE on the predicted actions.
The output folder is a normal HF checkpoint (``config.json`` + ``model.safetensors``) with the
``normalization.json`` that :mod:`namm.models` reads and a ``manifest.json`` (command, seed, data,
training curve, a short window-mode evaluation), so ``namm rollout --model DIR`` works on it directly.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from namm.drivers.dt import Window
from namm.evaluation.rl import rollout
from namm.io import write_json
from namm.models.zoo import write_normalization
from namm.tasks.d4rl import canonical_env, load_dataset, returns_to_go, split_trajectories, state_stats

from .common import make_readable, warmup_cosine, zoo_command
from .rl_data import episode_returns

__all__ = ["DTTrainConfig", "DTBatcher", "new_dt", "train_dt"]


@dataclass
class DTTrainConfig:
    """Everything one ``train-dt`` run depends on (written to the manifest)."""

    dataset: str = ""
    out: str = ""
    env: str = ""  # default: from the dataset's file name
    seed: int = 0
    context: int = 20  # K steps per training window (the DT paper's)
    hidden: int = 64
    layers: int = 3
    heads: int = 2
    batch: int = 64
    steps: int = 4000
    lr: float = 6e-4
    warmup: int = 200
    weight_decay: float = 1e-4
    dropout: float = 0.1
    scale: float = 1000.0
    max_ep_len: int = 1000
    threads: int = 1
    eval_episodes: int = 5  # window-mode episodes after training (0: skip)


class DTBatcher:
    """Samples ``[B, K, ...]`` training windows from a D4RL dataset (the DT paper's sampler).

    Yields dict: states ``[B, K, S]`` (normalised), actions ``[B, K, A]``, returns_to_go ``[B, K, 1]``
    (scaled), timesteps ``[B, K]``, attention_mask ``[B, K]`` (0 on left padding).
    """

    def __init__(self, data, context: int, scale: float, max_ep_len: int, seed: int) -> None:
        self.trajs = [t for t in split_trajectories(data) if len(t["rewards"]) > 0]
        if not self.trajs:
            raise ValueError("the dataset has no episodes")
        self.mean, self.std = state_stats(data)
        self.rtg = [returns_to_go(t["rewards"]) / scale for t in self.trajs]
        lens = np.array([len(t["rewards"]) for t in self.trajs], dtype=np.float64)
        self.p = lens / lens.sum()
        self.K, self.max_t = context, max_ep_len
        self.rng = np.random.default_rng(seed)
        self.S, self.A = self.trajs[0]["observations"].shape[1], self.trajs[0]["actions"].shape[1]

    def sample(self, batch: int) -> dict[str, torch.Tensor]:
        K = self.K
        s = np.zeros((batch, K, self.S), np.float32)
        a = np.zeros((batch, K, self.A), np.float32)
        r = np.zeros((batch, K, 1), np.float32)
        ts = np.zeros((batch, K), np.int64)
        m = np.zeros((batch, K), np.int64)
        for b, i in enumerate(self.rng.choice(len(self.trajs), size=batch, p=self.p)):
            tr = self.trajs[i]
            T = len(tr["rewards"])
            start = int(self.rng.integers(0, T))
            n = min(K, T - start)
            sl = slice(start, start + n)
            s[b, K - n:] = (tr["observations"][sl] - self.mean) / self.std
            a[b, K - n:] = tr["actions"][sl]
            r[b, K - n:, 0] = self.rtg[i][sl]
            ts[b, K - n:] = np.minimum(np.arange(start, start + n), self.max_t - 1)
            m[b, K - n:] = 1
        return {"states": torch.from_numpy(s), "actions": torch.from_numpy(a),
                "returns_to_go": torch.from_numpy(r), "timesteps": torch.from_numpy(ts),
                "attention_mask": torch.from_numpy(m)}


def new_dt(state_dim: int, act_dim: int, cfg: DTTrainConfig):
    from transformers import DecisionTransformerConfig, DecisionTransformerModel

    conf = DecisionTransformerConfig(
        state_dim=state_dim, act_dim=act_dim, hidden_size=cfg.hidden, n_layer=cfg.layers, n_head=cfg.heads,
        n_inner=4 * cfg.hidden, max_ep_len=cfg.max_ep_len, action_tanh=True, activation_function="relu",
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        bos_token_id=None, eos_token_id=None)  # GPT-2's 50256 defaults mean nothing without a vocabulary
    conf._attn_implementation = "eager"
    return DecisionTransformerModel(conf)


def train_dt(cfg: DTTrainConfig, progress: bool = True) -> Path:
    """Train, then write ``cfg.out`` (HF checkpoint + normalization.json + manifest.json); returns it."""
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    data = load_dataset(cfg.dataset)
    env = canonical_env(cfg.env or Path(cfg.dataset).name)
    cfg.env = env
    batcher = DTBatcher(data, cfg.context, cfg.scale, cfg.max_ep_len, cfg.seed)
    model = new_dt(batcher.S, batcher.A, cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    curve: list[dict[str, float]] = []
    t0, run = time.time(), float("nan")
    with tqdm(range(cfg.steps), desc=f"train-dt {env}", disable=not progress) as bar:
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(step, cfg.lr, cfg.warmup, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
            b = batcher.sample(cfg.batch)
            out = model(**b, return_dict=True)
            mask = b["attention_mask"].bool()
            loss = ((out.action_preds - b["actions"]) ** 2)[mask].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            opt.step()
            run = loss.item() if step == 0 else 0.98 * run + 0.02 * loss.item()
            if step % 100 == 0 or step == cfg.steps - 1:
                curve.append({"step": step, "loss": round(run, 5), "seconds": round(time.time() - t0, 1)})
                bar.set_postfix(loss=f"{run:.4f}")
    train_s = time.time() - t0
    model.eval()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # config.json + model.safetensors
    make_readable(out)
    rets = episode_returns(data.as_dict())
    target = float(rets.max())  # condition on the best return in the data (a DT's usual choice)
    write_normalization(out, batcher.mean, batcher.std, env=env, dataset=Path(cfg.dataset).name,
                        scale=cfg.scale, target_return=target)
    evaluation: dict[str, Any] | None = None
    if cfg.eval_episodes > 0:
        r = rollout(env, model, Window(cfg.context), episodes=cfg.eval_episodes, seed=10_000, target_return=target,
                    scale=cfg.scale, state_mean=batcher.mean, state_std=batcher.std, n_envs=cfg.eval_episodes,
                    progress=progress)
        evaluation = {k: r[k] for k in ("policy", "normalized_return_mean", "normalized_return_std", "return_mean",
                                        "episodes", "seed")}
    manifest = {
        "format": "namm-testbed/zoo-dt", "version": 1,
        "command": zoo_command("train-dt"),
        "config": asdict(cfg), "parameters": sum(p.numel() for p in model.parameters()),
        "data": {"transitions": len(data), "episodes": int(len(rets)), "return_mean": float(rets.mean()),
                 "return_max": target},
        "train_seconds": round(train_s, 1), "curve": curve, "eval_window": evaluation,
        "torch": torch.__version__,
    }
    write_json(out / "manifest.json", manifest)
    return out
