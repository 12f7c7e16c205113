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
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from namm.drivers.video import VideoBatcher, preprocess_frames
from namm.evaluation.video import evaluate_video, load_video_data
from namm.io import write_json
from namm.models.zoo import DEFAULT_LM, ZOO_VIDEO, load_zoo_lm
from namm.tasks.video_qa import chat_prompt, synthetic_items, synthetic_qa_item

from .common import make_readable, warmup_cosine, zoo_command

__all__ = ["VideoTrainConfig", "new_video_model", "train_video"]

VIDEO_TOKEN, IMAGE_TOKEN = "<video>", "<image>"


@dataclass
class VideoTrainConfig:
    out: str = str(ZOO_VIDEO)
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


def new_video_model(cfg: VideoTrainConfig):
    """``(model, tokenizer)``: the video model with its language model copied from the zoo LM."""
    from transformers import CLIPVisionConfig, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

    lm, tok = load_zoo_lm(cfg.lm)
    tok.add_special_tokens({"additional_special_tokens": [VIDEO_TOKEN, IMAGE_TOKEN]})
    text_cfg = lm.config
    text_cfg.vocab_size = len(tok)
    vision = CLIPVisionConfig(image_size=cfg.size, patch_size=cfg.patch, hidden_size=cfg.vision_hidden,
                              intermediate_size=2 * cfg.vision_hidden, num_hidden_layers=cfg.vision_layers,
                              num_attention_heads=4, projection_dim=cfg.vision_hidden)
    conf = LlavaNextVideoConfig(
        vision_config=vision, text_config=text_cfg, video_token_id=tok.convert_tokens_to_ids(VIDEO_TOKEN),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN), spatial_pool_stride=2, spatial_pool_mode="average",
        vision_feature_layer=-1, vision_feature_select_strategy="default", tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id)
    torch.manual_seed(cfg.seed)
    model = LlavaNextVideoForConditionalGeneration(conf)
    lm.resize_token_embeddings(len(tok))
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.tie_weights()
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


def train_video(cfg: VideoTrainConfig, progress: bool = True) -> Path:
    from tqdm.auto import tqdm

    torch.set_num_threads(cfg.threads)
    kinds = [k for k in cfg.kinds.split(",") if k]
    model, tok = new_video_model(cfg)
    batcher = VideoBatcher(model, tok)
    lm_params = set(model.model.language_model.parameters()) | set(model.lm_head.parameters())
    new = [p for p in model.parameters() if p not in lm_params]  # vision tower + projector: from scratch
    opt = torch.optim.AdamW([{"params": new, "scale": 1.0}, {"params": list(lm_params), "scale": cfg.lm_lr_scale}],
                            lr=cfg.lr, weight_decay=0.01)
    rng = np.random.default_rng(cfg.seed)
    streams: dict[tuple[str, int], Any] = {}

    def frames_at(step: int) -> int:
        if not cfg.curriculum:
            return cfg.frames
        return min(cfg.frames, 4 if step < cfg.steps // 4 else 8 if step < cfg.steps // 2 else cfg.frames)

    curve, run, t0 = [], float("nan"), time.time()
    model.train()
    with tqdm(range(cfg.steps), desc="train-video", disable=not progress) as bar:
        for step in bar:
            for g in opt.param_groups:
                progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
                g["lr"] = warmup_cosine(step, cfg.lr, cfg.warmup, progress) * g["scale"]
            pairs = []
            nf = frames_at(step)
            for k in rng.choice(kinds, size=cfg.batch):
                key = (str(k), nf)
                if key not in streams:  # each (kind, frame count) its own seeded stream
                    streams[key] = synthetic_items(10**9, nf, cfg.size, cfg.seed + 7919 * nf, str(k), fixed_options=True)
                video, rec = next(streams[key])
                pairs.append((synthetic_qa_item(rec, str(k), f"{k}_{step}", "synthetic (training)"), video))
            b = batcher([chat_prompt(p[0], VIDEO_TOKEN) for p in pairs], [p[1] for p in pairs],
                        answers=[" " + p[0].answer_letter for p in pairs])
            labels = b.pop("labels")
            k = int((labels != -100).sum(-1).max())  # answer tokens, all at the row ends (left padding)
            logits = model(**b, logits_to_keep=k + 1).logits[:, :-1]  # [B, k, V]: predicts the last k tokens
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                     labels[:, -k:].reshape(-1), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            run = loss.item() if step == 0 else 0.97 * run + 0.03 * loss.item()
            if step % 50 == 0 or step == cfg.steps - 1:
                curve.append({"step": step, "loss": round(run, 4), "seconds": round(time.time() - t0, 1)})
                bar.set_postfix(loss=f"{run:.3f}")
    train_s = time.time() - t0
    model.eval()
    held = load_video_data("zoo", cfg.eval_samples, seed=1000, frames=cfg.frames, size=cfg.size, kinds=kinds)
    acc = evaluate_video(model, tok, None, held, progress=progress)
    acc = {k: acc[k] for k in ("accuracy", "by_group", "n")}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)  # bf16 halves the shipped size
    tok.save_pretrained(out)
    make_readable(out)
    chance = {k: 100.0 / 5 for k in kinds}  # five fixed options per question
    manifest = {"format": "namm-testbed/zoo-video", "version": 1,
                "command": zoo_command("train-video"),
                "config": asdict(cfg), "parameters": sum(p.numel() for p in model.parameters()),
                "tokens_per_frame": (cfg.size // cfg.patch // 2) ** 2, "train_seconds": round(train_s, 1),
                "curve": curve, "heldout_seed": 1000, "heldout_full_cache": acc, "chance": chance,
                "torch": torch.__version__}
    write_json(out / "manifest.json", manifest)
    return out
