"""``namm pipeline``: evolve on language -> evaluate on the language zoo -> zero-shot video QA and Gym
rollouts -> one report folder.

One NAMM weights file flows through every stage unchanged. In each modality the NAMM runs first; the
capped baselines then run at the NAMM's *measured* mean cache fraction for that task, so every row of the
transfer table compares policies at the same memory. The report folder holds::

    OUT/config.yaml        the resolved config (re-run it with --config OUT/config.yaml)
    OUT/results.json       every row: modality, task, policy, score, mean_cache_fraction (+ provenance)
    OUT/table.csv          the same rows, flat
    OUT/report.md          the transfer table, the plots, the machine and how to scale up
    OUT/evolve/            the evolution run (fitness.png, log, namm.safetensors), when it evolved
    OUT/language/ OUT/real/ OUT/video/ OUT/rl/   per-policy results.json / CSV, and each stage's plots

The dataclass defaults below ARE the embedded default (``make demo``): a short warm-started evolution and
small samples that finish on a 2-core CPU in minutes. ``configs/pipeline_*.yaml`` are the larger ones.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from . import config as _config
from . import models, tasks
from .checkpoint import SHIPPED_NAMMS, resolve_policy, shipped_namm
from .config import ConfigError
from .config import require as _require
from .evaluation.rl import rollout
from .evaluation.rl import write_results as write_rl_results
from .evaluation.table import matched_budget as _matched_budget
from .evaluation.table import matched_table
from .evaluation.text import task_examples
from .evaluation.video import evaluate_video, load_video_data, plot_heatmap, write_video_results
from .evolution import config_from_dict, evolve, load_config
from .io import write_csv, write_json, write_text
from .memory import memory
from .plots import return_vs_cache, save_heatmap
from .policies import POLICIES, FullCache
from .tasks.zoo import ZOO_TASKS, format_prompt

__all__ = ["PipelineConfig", "load_pipeline_config", "run_pipeline", "TABLE_POLICIES"]

TABLE_POLICIES = ("full", "window", "namm", "h2o", "l2", "streamingllm", "snapkv", "tova")  # report column order


# --------------------------------------------------------------------------- config
# The embedded evolution of `make demo`: continue from the zoo-evolved NAMM for 3 short generations on the
# language zoo (instances generated from the offline corpus with seed 0; evaluation uses seed 1000).
DEMO_EVOLVE: dict[str, Any] = {
    "model": {"name": "zoo", "dtype": "float32", "device": "cpu", "seed": 0},
    "namm": {"scorer": "bam", "mode": "ragged", "n_up": 128},
    "evolution": {"population": 6, "sigma0": 0.02, "init_from": "namm-zoo", "seed": 0, "eval_mean_every": 0,
                  "cache_target": 0.4, "cache_penalty": 1.0, "fitness": "likelihood"},  # the shipped recipe
    "stages": [{"tasks": ["kv_retrieval"], "generations": 3}],
    "data": {"kv_retrieval": {"source": "zoo", "examples": 6, "samples": 3, "seed": 0,
                              "context_tokens": 1024, "max_prompt_tokens": 1100}},
    "run": {"batched_population": True, "batch_size": 8, "checkpoint_every": 1},
}


@dataclass
class EvolveStage:
    """``weights``: ``evolve`` (run ``config``, or the embedded :data:`DEMO_EVOLVE` when null, plus
    ``overrides``), a shipped name (``shipped`` = ``namm``, or a key of
    :data:`~namm.checkpoint.SHIPPED_NAMMS`), or a NAMM weights file."""

    weights: str = "evolve"
    config: str | None = None
    overrides: list[str] = field(default_factory=list)

    def check(self, at: str) -> None:
        if self.weights != "evolve" and shipped_namm(self.weights) is None:
            _require(Path(self.weights).is_file(), f"{at}.weights", self.weights,
                     f"use 'evolve', a shipped name (shipped, {', '.join(SHIPPED_NAMMS)}) or an existing NAMM "
                     ".safetensors / reference .pt file")
        if self.weights == "evolve":
            self.evolve_config("runs/check")  # validates the evolve config + overrides before anything runs

    def evolve_config(self, out: str, extra: Sequence[str] = ()):
        """The resolved :class:`~namm.evolution.EvolveConfig` of this stage, written to ``out``."""
        over = [*self.overrides, f"run.out={out}", *extra]
        try:
            return config_from_dict(DEMO_EVOLVE, over) if self.config is None else load_config(self.config, over)
        except ConfigError as e:
            raise ConfigError(f"evolve (config {self.config or 'embedded'}, overrides {self.overrides}): {e}") from None


@dataclass
class LanguageStage:
    enabled: bool = True
    model: str = "zoo"  # zoo | a zoo folder name | a local path | an HF id
    tasks: list[str] = field(default_factory=lambda: ["kv_retrieval", "passage_retrieval", "code_completion", "qa_f1"])
    samples: int = 10
    seed: int = 1000  # held-out instances: evolution draws with seeds 0..
    context_tokens: int = 1536
    data_dir: str | None = None  # LongBench JSONL folder for LongBench task names (default: $LONGBENCH_DIR)
    batch_size: int = 2
    n_up: int | None = None  # default: the weights' own

    def check(self, at: str) -> None:
        _require(self.samples >= 1, f"{at}.samples", self.samples, "use at least 1")
        _require(len(self.tasks) >= 1, f"{at}.tasks", self.tasks, "list at least one task")
        _require(self.context_tokens >= 128, f"{at}.context_tokens", self.context_tokens, "use >= 128 tokens")
        try:
            self.tasks = tasks.expand(self.tasks)
        except tasks.UnknownTaskError as e:
            raise ConfigError(f"{at}.tasks: {e}") from None


@dataclass
class RealStage(LanguageStage):
    """The language table on a real pretrained model (fetched on first use; skipped with the reason offline)."""

    model: str = "smollm2-135m"
    tasks: list[str] = field(default_factory=lambda: ["lm_continuation"])
    samples: int = 4
    context_tokens: int = 1024
    batch_size: int = 4


@dataclass
class VideoStage:
    enabled: bool = True
    model: str = "zoo-tiny"  # zoo-tiny (nothing to fetch) | zoo (on SmolLM2) | a LLaVA-NeXT-Video folder | an HF id
    data: str = "zoo"  # zoo | zoo-open | mlvu:PATH.json | longvideobench:PATH.json
    frames: int = 16
    samples: int = 10  # per question kind (zoo) or in all (benchmarks)
    seed: int = 1000  # held-out: the zoo video model trained on seeds 0..
    n_up: int = 64
    batch_size: int = 10
    question_first: bool = False  # the question before the video (default: after it, the benchmarks' form)
    answers: str = "auto"  # letter | words | auto (the form the model was trained to answer in)

    def check(self, at: str) -> None:
        _require(self.frames >= 1 and self.samples >= 1, f"{at}.frames/samples", (self.frames, self.samples),
                 "use positive counts")
        _require(self.data in ("zoo", "zoo-open") or self.data.partition(":")[0] in ("mlvu", "longvideobench"), f"{at}.data",
                 self.data, "use zoo, zoo-open, mlvu:PATH.json or longvideobench:PATH.json")
        _require(self.answers in ("auto", "letter", "words"), f"{at}.answers", self.answers, "use auto, letter or words")


@dataclass
class RLStage:
    enabled: bool = True
    envs: list[str] = field(default_factory=lambda: ["hopper", "halfcheetah", "walker2d"])
    levels: list[str] = field(default_factory=lambda: ["medium"])
    models: dict[str, str] = field(default_factory=dict)  # "env-level" -> DT folder / HF id (default: the zoo's)
    episodes: int = 5
    seed: int = 0
    max_ep_len: int = 1000
    n_envs: int = 5
    n_up: int = 48

    def check(self, at: str) -> None:
        known = tasks.task_ids("rl")
        for e in self.envs:
            _require(e in known, f"{at}.envs", e, f"use env names from {known}")
        _require(self.episodes >= 1, f"{at}.episodes", self.episodes, "use at least 1")
        _require(self.n_up % 3 == 0, f"{at}.n_up", self.n_up, "use a multiple of 3 (whole R, s, a steps)")


@dataclass
class PipelineConfig:
    out: str = "runs/pipeline"
    device: str = "cpu"  # "cpu", "cuda", "auto"
    dtype: str = "float32"  # language/video model dtype: float32 | bfloat16
    baselines: list[str] = field(default_factory=lambda: ["h2o", "l2", "streamingllm", "snapkv", "tova"])
    evolve: EvolveStage = field(default_factory=EvolveStage)
    language: LanguageStage = field(default_factory=LanguageStage)
    real: RealStage = field(default_factory=RealStage)
    video: VideoStage = field(default_factory=VideoStage)
    rl: RLStage = field(default_factory=RLStage)
    progress: bool = True

    def check(self) -> None:
        for b in self.baselines:
            _require(b in POLICIES and b not in ("full", "namm"), "baselines", b,
                     f"use capped baselines from {sorted(set(POLICIES) - {'full', 'namm'})}")
        _require(self.dtype in ("float32", "bfloat16"), "dtype", self.dtype, "use float32 or bfloat16")
        self.evolve.check("evolve")
        self.language.check("language")
        self.real.check("real")
        self.video.check("video")
        self.rl.check("rl")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_pipeline_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> PipelineConfig:
    """The embedded default (``path=None``) or a YAML file, plus ``a.b=value`` overrides; validated."""
    return _config.load(PipelineConfig, path, overrides)


# --------------------------------------------------------------------------- helpers
def _device(cfg: PipelineConfig) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device


def _row(modality: str, task: str, policy: str, score: float, frac: float, **extra) -> dict[str, Any]:
    return {"modality": modality, "task": task, "policy": policy, "score": float(score),
            "mean_cache_fraction": float(frac), **extra}


# --------------------------------------------------------------------------- stages
def stage_weights(cfg: PipelineConfig, out: Path, resume: bool = False) -> tuple[Path, dict[str, Any]]:
    """Evolve (or pick) the NAMM weights every later stage uses unchanged. ``resume``: continue the run
    already in ``out/evolve`` (a finished one runs no generation and keeps its weights)."""
    ev = cfg.evolve
    if ev.weights != "evolve":
        shipped = shipped_namm(ev.weights)
        path = shipped or Path(ev.weights)
        print(f"[1/4] evolve: skipped, using {path}")
        return path, {"source": "shipped" if shipped else "file", "path": str(path)}
    print(f"[1/4] evolve: {ev.config or 'the embedded demo evolution'} {' '.join(ev.overrides)}")
    t0 = time.time()
    res = evolve(ev.evolve_config(str(out / "evolve"), [f"run.progress={str(cfg.progress).lower()}",
                                                         f"model.device={_device(cfg)}", f"model.dtype={cfg.dtype}"]),
                 resume=resume)
    path = out / "evolve" / "namm.safetensors"
    info = {"source": "evolved", "path": str(path), "config": ev.config, "overrides": ev.overrides,
            "generations": int(getattr(res, "generation", 0)), "wall_s": round(time.time() - t0, 1)}
    return path, info


def _kept_heatmap(model, tok, policy, prompt: str, path: Path, title: str) -> None:
    """Which prompt positions each layer still holds after one NAMM generation (fraction of heads)."""
    ids = tok(prompt, return_tensors="pt")["input_ids"][:, -2048:].to(model.device)
    with memory(model, policy) as mem:
        mem.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                     pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    cache = mem.last_cache
    n = int(max(int(l.pos[l.valid].max()) for l in cache.layers if l.valid.any())) + 1
    grid = torch.zeros(len(cache.layers), n)
    for i, layer in enumerate(cache.layers):
        pos, valid = layer.pos[0].cpu(), layer.valid[0].cpu()  # [H, N]
        for h in range(pos.shape[0]):
            grid[i, pos[h][valid[h]]] += 1.0 / pos.shape[0]
    save_heatmap(grid.numpy(), path, title, "token position", "layer", "fraction of heads keeping it")


def stage_language(cfg: PipelineConfig, weights: Path, out: Path, lc: LanguageStage | RealStage | None = None,
                   modality: str = "language", step: str = "[2/4] language") -> list[dict[str, Any]]:
    """The language table on ``lc`` (default: the language section) into ``out / modality``."""
    lc = lc or cfg.language
    dev = _device(cfg)
    model, tok = models.load(lc.model, "lm", device=dev, dtype=getattr(torch, cfg.dtype))
    print(f"{step}: {lc.model} on {lc.tasks}, {lc.samples} held-out samples (seed {lc.seed}), "
          f"{lc.context_tokens} tokens")
    examples = {t: task_examples(tok, t, lc.samples, lc.seed, lc.context_tokens, lc.data_dir) for t in lc.tasks}
    namm = resolve_policy(str(weights), n_up=lc.n_up)
    results = matched_table(model, tok, lc.tasks, namm, out / modality, baselines=cfg.baselines, samples=lc.samples,
                            seed=lc.seed, context_tokens=lc.context_tokens, batch_size=lc.batch_size,
                            progress=cfg.progress, examples=examples, info={"model": lc.model})
    task = (lambda t: t) if modality == "language" else (lambda t: f"{lc.model}: {t}")
    rows = [_row(modality, task(t), name, v["score"], v["mean_cache_fraction"], n=v["n"],
                 describe=v.get("describe", r["policy"]))
            for name, r in results.items() for t, v in r["tasks"].items()]
    if modality == "language":
        ex = examples[lc.tasks[0]][0]
        prompt = format_prompt(lc.tasks[0], ex) if lc.tasks[0] in ZOO_TASKS else ex.get("context", "")
        _kept_heatmap(model, tok, namm, prompt, out / "language" / "namm_kept.png",
                      f"NAMM: prompt tokens kept after one {lc.tasks[0]} generation")
    return rows


def stage_real(cfg: PipelineConfig, weights: Path, out: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The language table on a real pretrained model; returns (rows, why it did not run)."""
    try:
        return stage_language(cfg, weights, out, cfg.real, "real", "[2b/4] real model"), None
    except models.ModelUnavailable as e:
        return [], str(e)


def stage_video(cfg: PipelineConfig, weights: Path, out: Path) -> tuple[list[dict[str, Any]], str | None]:
    """Zero-shot video QA; returns (rows, the reason it did not run)."""
    vc = cfg.video
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    try:
        model, tok = models.load(vc.model, "video", device=_device(cfg), dtype=dtype)
    except (models.ModelUnavailable, FileNotFoundError) as e:  # a zoo folder not built, its LM not fetchable
        return [], f"video.model {vc.model!r}: {e}"
    pairs = load_video_data(vc.data, vc.samples, vc.seed, vc.frames, size=int(model.config.vision_config.image_size))
    task = f"{vc.data}-video" if vc.data.startswith("zoo") else Path(vc.data.partition(":")[2]).stem
    print(f"[3/4] video: {vc.model} on {vc.data} ({len(pairs)} questions, {vc.frames} frames, n_up {vc.n_up})")
    rows: list[dict[str, Any]] = []

    def run(name: str, policy) -> dict[str, Any]:
        res = evaluate_video(model, tok, policy, pairs, vc.batch_size, progress=cfg.progress,
                             question_first=vc.question_first, form=vc.answers)
        res.update(model=vc.model, data=vc.data, seed=vc.seed, frames=vc.frames)
        write_video_results(out / "video" / name, res)
        rows.append(_row("video", task, name, res["accuracy"], res["mean_cache_fraction"], n=res["n"],
                         describe=res["policy"], by_group=res["by_group"], by_evidence=res["by_evidence"],
                         video_kept=res["video_kept"], text_kept=res["text_kept"]))
        return res

    nres = run("namm", resolve_policy(str(weights), n_up=vc.n_up))
    if nres["heatmap"] is not None:
        plot_heatmap(nres["heatmap"], out / "video" / "namm_frames.png", "NAMM: frame tokens kept (first question)")
    run("full", FullCache(n_up=vc.n_up))
    budget = _matched_budget(nres["mean_cache_fraction"])
    for b in cfg.baselines:
        run(b, resolve_policy(b, n_up=vc.n_up, budget=budget))
    return rows, None


def stage_rl(cfg: PipelineConfig, weights: Path, out: Path) -> list[dict[str, Any]]:
    from .drivers.dt import Window

    rc = cfg.rl
    dev = _device(cfg)
    rows: list[dict[str, Any]] = []
    print(f"[4/4] rl: {rc.envs} x {rc.levels}, {rc.episodes} episodes each (seeds {rc.seed}..)")
    for env in rc.envs:
        for level in rc.levels:
            task = f"{env}-{level}"
            ref = rc.models.get(task) or f"dt-{task}"
            model, norm = models.load(ref, "dt", device=dev)
            kw = dict(episodes=rc.episodes, seed=rc.seed, max_ep_len=rc.max_ep_len, n_envs=rc.n_envs, device=dev,
                      progress=cfg.progress, state_mean=norm.state_mean if norm else None,
                      state_std=norm.state_std if norm else None,
                      target_return=norm.target_return if norm else None,
                      **({"scale": norm.scale} if norm and norm.scale else {}))

            def run(name: str, policy) -> dict[str, Any]:
                r = rollout(env, model, policy, **kw)
                r["model"] = ref
                write_rl_results(out / "rl" / task / name, r)
                rows.append(_row("rl", task, name, r["normalized_return_mean"], r["mean_cache_fraction"],
                                 std=r["normalized_return_std"], n=r["episodes"], describe=r["policy"]))
                return r

            nres = run("namm", resolve_policy(str(weights), n_up=rc.n_up))
            run("full", resolve_policy("full", n_up=rc.n_up))
            run("window", Window())
            budget = _matched_budget(nres["mean_cache_fraction"])
            for b in cfg.baselines:
                run(b, resolve_policy(b, n_up=rc.n_up, budget=budget))
    return rows

# --------------------------------------------------------------------------- report
def _table(rows: list[dict[str, Any]]) -> str:
    cols = [p for p in TABLE_POLICIES if any(r["policy"] == p for r in rows)]
    cols += sorted({r["policy"] for r in rows} - set(cols))
    head = "| modality | task | " + " | ".join(cols) + " |\n|---|---|" + "---|" * len(cols) + "\n"
    lines = []
    keys = list(dict.fromkeys((r["modality"], r["task"]) for r in rows))
    for mod, task in keys:
        cells = []
        for c in cols:
            r = next((x for x in rows if (x["modality"], x["task"], x["policy"]) == (mod, task, c)), None)
            if r is None:
                cells.append("")
            else:
                sd = f" ± {r['std']:.1f}" if "std" in r else ""
                cells.append(f"{r['score']:.1f}{sd} ({r['mean_cache_fraction']:.2f})")
        lines.append(f"| {mod} | {task} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def _machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    import os

    return f"{platform.node() or 'unknown host'}: {os.cpu_count()} CPUs, {dev}, torch {torch.__version__}, " \
           f"Python {platform.python_version()}"


def write_report(cfg: PipelineConfig, out: Path, rows: list[dict[str, Any]], weights_info: dict[str, Any],
                 skipped: dict[str, str], wall: float, config_path: str | None) -> Path:
    doc = {"format": "namm-testbed/pipeline", "version": 1, "weights": weights_info, "rows": rows,
           "skipped": skipped, "machine": _machine(), "wall_s": round(wall, 1), "config": cfg.to_dict()}
    write_json(out / "results.json", doc)
    keys = ["modality", "task", "policy", "score", "std", "mean_cache_fraction", "n", "describe"]
    write_csv(out / "table.csv", rows, keys)
    return_vs_cache([r for r in rows if r["modality"] == "rl"], out / "rl" / "return_vs_cache.png")
    plots = [("evolution fitness", out / "evolve" / "fitness.png"),
             ("language: score vs cache fraction", out / "language" / "score_vs_cache.png"),
             ("language: prompt tokens the NAMM kept", out / "language" / "namm_kept.png"),
             ("real model: score vs cache fraction", out / "real" / "score_vs_cache.png"),
             ("video: frame tokens the NAMM kept", out / "video" / "namm_frames.png"),
             ("rl: return vs cache fraction", out / "rl" / "return_vs_cache.png")]
    md = ["# NAMM transfer report\n",
          f"Weights: **{weights_info['source']}** `{weights_info['path']}`"
          + (f" ({weights_info['generations']} generations, {weights_info['wall_s']} s)"
             if "generations" in weights_info else "")
          + ", used unchanged in every row.\n",
          f"Machine: {_machine()}. Wall time: {wall / 60:.1f} min. Config: `config.yaml`"
          + (f" (from `{config_path}`)" if config_path else " (the embedded default)") + ".\n",
          "## Transfer table\n",
          "Cells: score (mean cache fraction). Language: task metric 0-100 on held-out instances; real: the "
          "same on a real pretrained model (lm_continuation: 100 exp(-NLL) of the next 256 tokens); RL: D4RL "
          "normalised return, mean ± std over episodes. Capped baselines run at the NAMM's measured cache "
          "fraction for that row; `full` keeps everything; `window` is the DT's 20-step re-encoded context.\n",
          _table(rows)]
    if skipped:
        md.append("\nNot run: " + "; ".join(f"**{k}**: {v}" for k, v in skipped.items()) + "\n")
    md.append("\n## Plots\n")
    md += [f"- {name}: ![{name}]({p.relative_to(out)})" for name, p in plots if p.is_file()]
    md.append("\n\n## Scale up\n\n"
              "- GPU, whole zoo, larger samples: `namm pipeline --config configs/pipeline_gpu.yaml`\n"
              "- Paper scale (Llama 3 8B, LLaVA-NeXT-Video 7B, edbeeching DTs; needs the hub or local copies): "
              "`namm pipeline --config configs/pipeline_paper.yaml`\n"
              "- Reuse the shipped weights instead of evolving: add `--reuse-weights`\n")
    return write_text(out / "report.md", "\n".join(md))


def run_pipeline(cfg: PipelineConfig, config_path: str | None = None, resume: bool = False) -> Path:
    """Run every enabled stage and write the report folder; returns ``OUT/report.md``. ``resume``: reuse
    or continue the evolution already in ``OUT/evolve``; the later stages always run again."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", _config.dump(cfg))
    t0 = time.time()
    weights, info = stage_weights(cfg, out, resume)
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    if cfg.language.enabled:
        rows += stage_language(cfg, weights, out)
    else:
        skipped["language"] = "disabled in the config"
    # stages that may skip themselves (a model not fetched, an extra not installed) say why
    for name, label, stage, enabled in (("real", "[2b/4] real model", stage_real, cfg.real.enabled),
                                         ("video", "[3/4] video", stage_video, cfg.video.enabled)):
        if not enabled:
            skipped[name] = "disabled in the config"
            continue
        srows, why = stage(cfg, weights, out)
        rows += srows
        if why:
            print(f"{label}: skipped ({why})")
            skipped[name] = why
    if cfg.rl.enabled:
        rows += stage_rl(cfg, weights, out)
    else:
        skipped["rl"] = "disabled in the config"
    return write_report(cfg, out, rows, info, skipped, time.time() - t0, config_path)
