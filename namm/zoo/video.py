"""``namm zoo train-video``: a small LLaVA-NeXT-Video model trained on procedural long-video QA.

Architecture = HF ``LlavaNextVideoForConditionalGeneration``, shrunk: a 2-layer CLIP vision tower on
32x32 frames (4 px patches -> 8x8 patches -> 2x2 average pool -> 16 tokens per frame), the usual
2-layer projector, and the zoo language model (``namm/weights/zoo/lm``) as its Llama, warm-started
from the zoo LM's weights with ``<video>``/``<image>`` added to its tokenizer. It learns the three
MLVU-style question kinds of :func:`namm.tasks.video_qa.synthetic_items` (needle, count, order) in
their fixed-option form (the same five options every time: a model this small cannot learn to match
option texts, which is retrieval), with the loss on the answer letter only.

Recipe (found on the 2-core box): the projector's last layer is scaled at init so video tokens match
the text embeddings' norm, the new vision side learns at ``lr`` and the warm-started LM at
``lr * lm_lr_scale``, and a frame curriculum (4, 8, then ``frames``) lets the LM find the bright frame
among few tokens first; without these the loss stayed at chance. Training streams are seeded
``seed + 7919 * frames`` per kind; held-out questions use seed 1000.

The folder written is a normal HF checkpoint (config, bf16 safetensors, tokenizer) + ``manifest.json``
(command, seed, curve, held-out accuracy per kind), loadable with
``namm.models.load(path, kind="video")``.

On a real language model (``--lm smollm2-135m``, fetched by ``namm models fetch``) the LM is frozen and only
the vision tower and projector learn (LLaVA's stage 1); the loss still flows through the LM to the video
tokens. The folder then holds only what was trained (``vision.safetensors``: tower + projector, fp32),
``config.json`` and the manifest; :func:`namm.models.zoo.load_zoo_video` rebuilds the model from the
fetched LM. ``train_state.pt`` (every ``checkpoint_every`` steps, at ``--stop-at`` and on Ctrl-C / SIGINT)
makes a run resumable (``--resume``): the data streams are replayed to the stopped step, so a resumed run
follows the same trajectory (tested); ``device: cuda`` trains on a GPU
(``experiments/video-smollm2/gpu_train.sh``). ``--init FOLDER`` starts the vision side from a finished run
(a later stage: more kinds, longer videos). ``--word-answers 1`` trains answers in the option's words with
no options shown (the form a frozen LM learns; letters stay at chance), recorded as ``answer_form`` in the
config so evaluation asks for the same form.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from namm.drivers.video import VideoBatcher, preprocess_frames
from namm.evaluation.video import evaluate_video, load_video_data
from namm.io import write_json
from namm.models.zoo import (
    DEFAULT_LM,
    IMAGE_TOKEN,
    LM_KEYS,
    VIDEO_TOKEN,
    VISION_WEIGHTS,
    ZOO_VIDEO,
    ZOO_VIDEO_TINY,
    is_real_lm,
    load_video_lm,
    with_language_model,
)
from namm.tasks.video_qa import chat_prompt, synthetic_items, synthetic_qa_item, word_prompt

from .common import make_readable, warmup_cosine, zoo_command

__all__ = ["VideoTrainConfig", "video_config", "new_video_model", "train_video", "TRAIN_STATE"]


@dataclass
class VideoTrainConfig:
    out: str = ""  # "" = the shipped folder: namm/weights/zoo/video-smollm2 for a real LM, video-tiny for the zoo LM
    lm: str = str(DEFAULT_LM)
    seed: int = 0
    frames: int = 16
    size: int = 32  # frame side in pixels (= the vision tower's image_size)
    patch: int = 4
    vision_hidden: int = 64
    vision_layers: int = 2
    kinds: str = "needle,count,order"
    steps: int = 1600
    batch: int = 16
    lr: float = 3e-3  # vision tower + projector (new)
    lm_lr_scale: float = 0.1  # the warm-started language model learns at lr * this
    curriculum: bool = True  # 4 frames for the first quarter of the steps, 8 for the second, then `frames`
    warmup: int = 100
    threads: int = 2
    eval_samples: int = 60  # held-out questions per kind after training
    eval_frames: int = 0  # frames of the held-out questions (0: `frames`); longer than training tests length transfer
    freeze_lm: bool | None = None  # None: frozen for a real LM (--lm NAME), trained at lr * lm_lr_scale for a zoo folder
    question_first: float = 0.0  # share of training prompts with the question before the video
    word_answers: float = 0.0  # share of training prompts answered with the option's words, no options shown
    checkpoint_every: int = 50  # steps between train_state.pt saves (0: never)
    resume: bool = False  # continue from out/train_state.pt
    stop_at: int = 0  # > 0: save train_state.pt after this many steps and return (one session's share of a run)
    device: str = "cpu"  # cuda on a lent GPU (the weights are saved from the CPU either way)
    init: str = ""  # a trained video folder on the same frozen LM: start its vision tower + projector from there


def video_config(lm_config, tok, size: int, patch: int, vision_hidden: int, vision_layers: int):
    """The LLaVA-NeXT-Video config around a language model's config: a small CLIP tower on ``size`` px frames
    with ``patch`` px patches, 2x2 average pooling (``(size / patch / 2)^2`` tokens per frame)."""
    from transformers import CLIPVisionConfig, LlavaNextVideoConfig

    text_cfg = lm_config
    text_cfg.vocab_size = len(tok)
    vision = CLIPVisionConfig(image_size=size, patch_size=patch, hidden_size=vision_hidden,
                              intermediate_size=2 * vision_hidden, num_hidden_layers=vision_layers,
                              num_attention_heads=4, projection_dim=vision_hidden)
    return LlavaNextVideoConfig(
        vision_config=vision, text_config=text_cfg, video_token_id=tok.convert_tokens_to_ids(VIDEO_TOKEN),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN), spatial_pool_stride=2, spatial_pool_mode="average",
        vision_feature_layer=-1, vision_feature_select_strategy="default",
        tie_word_embeddings=bool(getattr(lm_config, "tie_word_embeddings", True)),
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)


def _frozen(cfg: VideoTrainConfig) -> bool:
    return is_real_lm(cfg.lm) if cfg.freeze_lm is None else bool(cfg.freeze_lm)


def new_video_model(cfg: VideoTrainConfig):
    """``(model, tokenizer)``: the video model with its language model copied from the zoo LM folder or
    the real LM ``cfg.lm`` names."""
    lm, tok = load_video_lm(cfg.lm)
    conf = video_config(lm.config, tok, cfg.size, cfg.patch, cfg.vision_hidden, cfg.vision_layers)
    torch.manual_seed(cfg.seed)
    model = with_language_model(conf, lm, zero_new=_frozen(cfg))
    # Fresh video tokens are ~8x smaller than the trained text embeddings (norm 0.13 vs ~1), so the LM
    # starts out blind to the video: scale the projector's last layer to match, on real frames.
    with torch.no_grad():
        emb = model.get_input_embeddings().weight[:-2].norm(dim=-1).mean()
        video = next(synthetic_items(1, cfg.frames, cfg.size, cfg.seed + 12345, "needle", fixed_options=True))[0]
        feats = model.model.get_video_features(pixel_values_videos=preprocess_frames(video, model.config))
        feats = getattr(feats, "pooler_output", feats)
        scale = float(emb / feats.reshape(-1, feats.shape[-1]).norm(dim=-1).mean())
        proj = model.model.multi_modal_projector.linear_2
        proj.weight.mul_(scale)
        proj.bias.mul_(scale)
    model.set_attn_implementation("eager")
    return model, tok


TRAIN_STATE = "train_state.pt"
_RESUMABLE = ("resume", "stop_at", "checkpoint_every", "threads", "eval_samples", "eval_frames", "device")


def _trained_state(model, frozen: bool) -> dict[str, torch.Tensor]:
    """What a run trains: everything, or (frozen LM) the vision tower and projector only."""
    sd = model.state_dict()
    if not frozen:
        return sd
    return {k: v for k, v in sd.items() if not k.startswith(LM_KEYS)}


def _init_from(model, folder: Path, frozen: bool) -> None:
    """Load a trained folder's vision tower + projector (``vision.safetensors``) into ``model``: a later stage
    (new kinds, longer videos) starts from what an earlier run learned."""
    from safetensors.torch import load_file

    if not frozen:
        raise ValueError("--init continues a video model on a frozen real LM (--lm NAME); a zoo-LM run has no "
                         f"{VISION_WEIGHTS}")
    if not (folder / VISION_WEIGHTS).is_file():
        raise FileNotFoundError(f"--init: no {VISION_WEIGHTS} in {folder}; give a finished `namm zoo train-video "
                                "--lm NAME` folder")
    want = _trained_state(model, True)
    got = load_file(str(folder / VISION_WEIGHTS))
    bad = sorted(k for k in set(want) | set(got) if k not in got or k not in want or got[k].shape != want[k].shape)
    if bad:
        raise ValueError(f"--init: {folder / VISION_WEIGHTS} does not fit this run's vision tower ({bad[0]} "
                         "differs); use the --size/--patch/--vision-hidden/--vision-layers it was trained with")
    model.load_state_dict(got, strict=False)


def _init_record(init: str) -> dict[str, Any] | None:
    """What the ``--init`` folder's own manifest says of it (command, recipe, time, held-out accuracy): the
    earlier stages of the shipped recipe, kept with it."""
    if not init:
        return None
    import json

    m = json.loads((Path(init) / "manifest.json").read_text(encoding="utf-8"))
    return {"path": init, **{k: m.get(k) for k in ("command", "config", "train_seconds", "heldout_full_cache", "init")}}


def train_video(cfg: VideoTrainConfig, progress: bool = True) -> Path:
    from tqdm.auto import tqdm

    torch.set_num_threads(cfg.threads)
    kinds = [k for k in cfg.kinds.split(",") if k]
    frozen = _frozen(cfg)
    out = Path(cfg.out or (ZOO_VIDEO if is_real_lm(cfg.lm) else ZOO_VIDEO_TINY))
    state_file = out / TRAIN_STATE
    if cfg.resume and not state_file.is_file():
        raise FileNotFoundError(f"--resume: no {TRAIN_STATE} in {out}; start the run without --resume")
    if state_file.is_file() and not cfg.resume:  # never start over a stopped run by accident
        raise FileExistsError(f"{out} holds a stopped run ({TRAIN_STATE}): continue it with --resume, or choose "
                              "another --out")
    model, tok = new_video_model(cfg)
    if cfg.init:
        _init_from(model, Path(cfg.init), frozen)
    model.to(cfg.device)
    if frozen:
        model.model.language_model.requires_grad_(False)
        model.lm_head.requires_grad_(False)
        # SDPA for the LM while training (no attention weights are read); the memory path swaps it anyway
        model.set_attn_implementation({"text_config": "sdpa"})
    batcher = VideoBatcher(model, tok)
    lm_params = set(model.model.language_model.parameters()) | set(model.lm_head.parameters())
    new = [p for p in model.parameters() if p not in lm_params]  # vision tower + projector: from scratch
    groups = [{"params": new, "scale": 1.0}]
    if not frozen:
        groups.append({"params": list(lm_params), "scale": cfg.lm_lr_scale})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.01)
    rng = np.random.default_rng(cfg.seed)
    streams: dict[tuple[str, int], Any] = {}

    def frames_at(step: int) -> int:
        if not cfg.curriculum:
            return cfg.frames
        return min(cfg.frames, 4 if step < cfg.steps // 4 else 8 if step < cfg.steps // 2 else cfg.frames)

    def batch_at(step: int) -> list[tuple[Any, np.ndarray, bool, bool]]:
        """The step's (item, video, question first, word answer) tuples: the same draws whether or not a model
        runs."""
        nf, pairs = frames_at(step), []
        for k in rng.choice(kinds, size=cfg.batch):
            key = (str(k), nf)
            if key not in streams:  # each (kind, frame count) its own seeded stream
                streams[key] = synthetic_items(10**9, nf, cfg.size, cfg.seed + 7919 * nf, str(k), fixed_options=True)
            video, rec = next(streams[key])
            first = bool(cfg.question_first > 0 and rng.random() < cfg.question_first)
            word = bool(cfg.word_answers > 0 and rng.random() < cfg.word_answers)
            item = synthetic_qa_item(rec, str(k), f"{k}_{step}", "synthetic (training)")
            pairs.append((item, video, first, word))
        return pairs

    def prompt_and_answer(item, first: bool, word: bool) -> tuple[str, str]:
        if word:  # a dense signal a frozen LM can give: say what the video shows, in the option's own words
            return word_prompt(item, VIDEO_TOKEN, question_first=first), " " + item.options[item.answer]
        return chat_prompt(item, VIDEO_TOKEN, question_first=first), " " + item.answer_letter

    curve: list[dict] = []
    run, start, spent = float("nan"), 0, 0.0
    # what fixes the trajectory; the rest (when to stop or save, threads, the final evaluation) may change
    fixed = {k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE}
    if cfg.resume:
        st = torch.load(state_file, weights_only=True, map_location=cfg.device)
        diff = sorted(k for k in set(fixed) | set(st["config"]) if fixed.get(k) != st["config"].get(k))
        if diff:
            raise ValueError(f"--resume: {out} was trained with other {', '.join(diff)}; restore them or start "
                             "a new --out")
        model.load_state_dict(st["model"], strict=False)
        opt.load_state_dict(st["opt"])
        start, run, spent, curve = int(st["step"]), float(st["run"]), float(st["seconds"]), list(st["curve"])
        for s in range(start):  # replay the data draws so the streams stand where the stopped run left them
            batch_at(s)

    def save_state(step: int) -> None:
        out.mkdir(parents=True, exist_ok=True)
        tmp = state_file.with_suffix(".tmp")
        torch.save({"step": step, "run": run, "seconds": spent + time.time() - t0, "curve": curve, "config": fixed,
                    "model": _trained_state(model, frozen), "opt": opt.state_dict()}, tmp)
        tmp.replace(state_file)  # atomic: a run killed mid-save keeps its last good state

    t0 = time.time()
    model.train()
    done = start
    try:
        with tqdm(range(start, cfg.steps), desc="train-video", disable=not progress, initial=start,
                  total=cfg.steps) as bar:
            for step in bar:
                for g in opt.param_groups:
                    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
                    g["lr"] = warmup_cosine(step, cfg.lr, cfg.warmup, frac) * g["scale"]
                pairs = batch_at(step)
                texts = [prompt_and_answer(p[0], p[2], p[3]) for p in pairs]
                b = batcher([t[0] for t in texts], [p[1] for p in pairs], answers=[t[1] for t in texts])
                b = {k: v.to(cfg.device) for k, v in b.items()}
                labels = b.pop("labels")
                k = int((labels != -100).sum(-1).max())  # answer tokens, all at the row ends (left padding)
                logits = model(**b, logits_to_keep=k + 1).logits[:, :-1]  # [B, k, V]: predicts the last k tokens
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                         labels[:, -k:].reshape(-1), ignore_index=-100)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(new if frozen else model.parameters(), 1.0)
                opt.step()
                run = loss.item() if step == 0 else 0.97 * run + 0.03 * loss.item()
                done = step + 1
                if step % 50 == 0 or step == cfg.steps - 1:
                    curve.append({"step": step, "loss": round(run, 4), "seconds": round(spent + time.time() - t0, 1)})
                    bar.set_postfix(loss=f"{run:.3f}")
                if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                    save_state(step + 1)
                if 0 < cfg.stop_at == step + 1 < cfg.steps:
                    save_state(step + 1)
                    return out
    except KeyboardInterrupt:  # Ctrl-C / SIGINT (a device's time limit): keep the steps done, resumable
        save_state(done)
        print(f"train-video: interrupted after step {done} of {cfg.steps}; {state_file} holds it, continue with "
              "the same flags and --resume", file=sys.stderr)
        return out
    train_s = spent + time.time() - t0
    model.eval()
    # the form it mostly learned to answer in: what `namm eval-video --answers auto` asks it for
    model.config.answer_form = "words" if cfg.word_answers >= 0.5 else "letter"
    eval_frames = cfg.eval_frames or cfg.frames
    held = load_video_data("zoo", cfg.eval_samples, seed=1000, frames=eval_frames, size=cfg.size, kinds=kinds)
    acc = evaluate_video(model, tok, None, held, progress=progress)
    acc = {k: acc[k] for k in ("accuracy", "by_group", "by_evidence", "n")}
    out.mkdir(parents=True, exist_ok=True)
    model.to("cpu")
    if frozen:  # ship what was trained; the LM comes from `namm models fetch`
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in _trained_state(model, True).items()}, str(out / VISION_WEIGHTS))
        model.config.save_pretrained(out)
    else:
        model.to(torch.bfloat16).save_pretrained(out)  # bf16 halves the shipped size
        tok.save_pretrained(out)
    make_readable(out)
    chance = {k: 100.0 / 5 for k in kinds}  # five fixed options per question
    manifest = {"format": "namm-testbed/zoo-video", "version": 1,
                "command": zoo_command("train-video"),
                "config": asdict(cfg), "parameters": sum(p.numel() for p in model.parameters()),
                "trained_parameters": sum(p.numel() for p in new) + (0 if frozen else sum(p.numel() for p in lm_params)),
                "lm": str(cfg.lm) if frozen else None, "video_token_id": int(model.config.video_token_id),
                "tokens_per_frame": (cfg.size // cfg.patch // 2) ** 2, "train_seconds": round(train_s, 1),
                "curve": curve, "heldout_seed": 1000, "heldout_frames": eval_frames, "heldout_full_cache": acc,
                "answers": model.config.answer_form, "init": _init_record(cfg.init),
                "chance": chance, "torch": torch.__version__}
    write_json(out / "manifest.json", manifest)
    state_file.unlink(missing_ok=True)  # the run is complete: the shipped folder keeps no optimizer state
    return out
