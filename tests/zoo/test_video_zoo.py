"""The video zoo: training the small LLaVA-NeXT-Video, its inputs, and `namm eval-video`."""

from __future__ import annotations

import json

import pytest
import torch

from namm import models
from namm.drivers.video import VideoBatcher
from namm.evaluation.video import answer_video, evaluate_video, load_video_data
from namm.policies import FullCache
from namm.tasks.video_qa import chat_prompt, word_prompt
from namm.zoo.video import VideoTrainConfig, train_video

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("video")
    return train_video(VideoTrainConfig(out=str(out), steps=2, batch=3, eval_samples=1, threads=1), progress=False)


@pytest.fixture(scope="module")
def video(video_dir):
    return models.load(str(video_dir), "video")


def test_trained_folder_and_manifest(video_dir, video):
    man = json.loads((video_dir / "manifest.json").read_text())
    assert man["tokens_per_frame"] == 16 and man["heldout_seed"] == 1000
    assert set(man["heldout_full_cache"]["by_group"]) == {"needle", "count", "order"}
    model, tok = video
    assert model.config.model_type == "llava_next_video"
    assert tok.convert_tokens_to_ids("<video>") == model.config.video_token_id


def test_batcher_expands_video_and_labels_only_the_answer(video):
    model, tok = video
    pairs = load_video_data("zoo", 1, seed=5, frames=16)
    prompts = [chat_prompt(p[0]) for p in pairs]
    b = VideoBatcher(model, tok)(prompts, [p[1] for p in pairs], answers=[" " + p[0].answer_letter for p in pairs])
    assert b["pixel_values_videos"].shape == (3, 16, 3, 32, 32)
    assert int((b["input_ids"][0] == model.config.video_token_id).sum()) == 16 * 16
    for row, (item, _) in enumerate(pairs):
        lab = b["labels"][row][b["labels"][row] != -100].tolist()
        assert tok.decode(lab[:-1]).strip() == item.answer_letter and lab[-1] == tok.eos_token_id
    assert bool((b["attention_mask"][:, -1] == 1).all()) and bool((b["labels"][:, -1] == tok.eos_token_id).all())
    g = VideoBatcher(model, tok)(prompts, [p[1] for p in pairs])
    assert "labels" not in g and bool((g["attention_mask"][:, -1] == 1).all())  # left padded


def test_full_cache_policy_answers_like_the_plain_model(video):
    model, tok = video
    model = model.float()
    pairs = load_video_data("zoo", 2, seed=7, frames=16)
    plain = answer_video(model, tok, pairs, None, batch_size=3)
    full = answer_video(model, tok, pairs, FullCache(n_up=64), batch_size=3)
    assert plain["predictions"] == full["predictions"]
    assert full["cache_fractions"] == [1.0] * len(pairs)


def test_namm_reports_video_stats_and_heatmap(video):
    from namm.checkpoint import resolve_policy

    model, tok = video
    pairs = load_video_data("zoo", 1, seed=9, frames=16)
    res = evaluate_video(model.float(), tok, resolve_policy("namm", n_up=64), pairs, progress=False)
    assert set(res) >= {"policy", "accuracy", "mean_cache_fraction", "by_group"}
    assert 0 < res["mean_cache_fraction"] < 1 and 0 <= res["video_kept"] <= 1
    heat = torch.tensor(res["heatmap"])
    assert heat.shape[1] == 16 and heat.shape[0] >= 4  # >= 4 updates over ~370 tokens at n_up 64


def test_eval_video_cli(video_dir, tmp_path):
    from namm.cli import main

    main(["eval-video", "--model", str(video_dir), "--policy", "namm,full,h2o", "--samples", "1",
          "--budget", "0.5", "--out", str(tmp_path)])
    for name in ("namm", "full", "h2o"):
        doc = json.loads((tmp_path / name / "results.json").read_text())
        assert set(doc) >= {"policy", "accuracy", "mean_cache_fraction", "by_group"}
    assert (tmp_path / "namm" / "frames_kept.png").is_file() and (tmp_path / "summary.csv").is_file()
    h2o = json.loads((tmp_path / "h2o" / "results.json").read_text())
    assert abs(h2o["mean_cache_fraction"] - 0.5) < 0.1


def test_bad_video_data_spec(tmp_path, monkeypatch):
    import namm.models.loaders as lo

    with pytest.raises(ValueError, match="unknown video task 'youtube'"):
        load_video_data("youtube:abc", 1, 0, 16)
    with pytest.raises(ValueError, match="NAME:PATH"):
        load_video_data("mlvu", 1, 0, 16)
    monkeypatch.setattr(lo, "ZOO_VIDEO", tmp_path / "no-video-here")
    with pytest.raises(FileNotFoundError, match="train-video"):
        models.load("zoo", "video")


def test_fixed_option_questions_depend_on_the_video_only():
    from namm.tasks.video_qa import FIXED_COLOURS, synthetic_items

    for kind in ("needle", "count", "order"):
        recs = [r for _, r in synthetic_items(30, 16, 32, 3, kind, fixed_options=True)]
        assert len({tuple(r["candidates"]) for r in recs}) == 1 and len(recs[0]["candidates"]) == 5
        assert all(r["answer"] in r["candidates"] for r in recs)
        assert len({r["answer"] for r in recs}) >= 3  # answers spread over the options
    needle = [r for _, r in synthetic_items(5, 16, 32, 3, "needle", fixed_options=True)]
    assert needle[0]["candidates"] == list(FIXED_COLOURS)
    counts = [r for _, r in synthetic_items(40, 16, 32, 3, "count", fixed_options=True)]
    for r in counts:  # the answer's range holds the true count
        lo, _, hi = r["answer"].partition(" to ")
        assert int(lo) <= r["count"] <= int(hi or lo)


def test_shipped_tiny_video_model_beats_chance():
    """The shipped small model on fresh held-out questions (seed 2000; training used other seeds): five
    options, chance is 20%."""
    model, tok = models.load("zoo-tiny", "video")
    pairs = load_video_data("zoo", 8, seed=2000, frames=16)
    res = evaluate_video(model, tok, None, pairs, progress=False)
    assert res["accuracy"] >= 60.0, res["by_group"]


def test_shipped_video_model_on_smollm2_beats_chance():
    """`--model zoo`: the vision side trained here on the frozen SmolLM2, answering in words. Runs only where
    `namm models fetch smollm2-135m` has been run (never downloads in the test suite)."""
    from namm.models import real

    if not real.is_fetched("smollm2-135m"):
        pytest.skip("smollm2-135m is not fetched (namm models fetch smollm2-135m)")
    model, tok = models.load("zoo", "video")
    assert model.config.answer_form == "words"
    # fresh questions at the length it was trained to (32 frames), 6 per kind; chance 20% (55.6% measured)
    pairs = load_video_data("zoo", 6, seed=2000, frames=32)
    res = evaluate_video(model, tok, None, pairs, batch_size=18, progress=False)
    assert res["answers"] == "words" and res["accuracy"] >= 40.0, res["by_group"]


def test_frozen_lm_run_ships_the_vision_side_only_and_resumes_on_the_same_trajectory(tmp_path, monkeypatch):
    """The real-LM recipe (`--lm smollm2-135m` freezes the LM), run here on the zoo LM: only the vision tower
    and projector learn and ship; a run stopped at step 2 and resumed ends with the same weights."""
    from safetensors.torch import load_file

    from namm.models.zoo import DEFAULT_LM, VISION_WEIGHTS, load_zoo_lm, load_zoo_video

    base = dict(lm=str(DEFAULT_LM), freeze_lm=True, steps=3, batch=2, eval_samples=1, eval_frames=8, threads=1,
                question_first=0.5, word_answers=0.5, checkpoint_every=0, warmup=1)
    a = train_video(VideoTrainConfig(out=str(tmp_path / "a"), **base), progress=False)
    train_video(VideoTrainConfig(out=str(tmp_path / "b"), stop_at=2, **base), progress=False)
    assert (tmp_path / "b" / "train_state.pt").is_file() and not (tmp_path / "b" / VISION_WEIGHTS).exists()
    with pytest.raises(FileExistsError, match="--resume"):  # a stopped run is never overwritten by accident
        train_video(VideoTrainConfig(out=str(tmp_path / "b"), **base), progress=False)
    with pytest.raises(ValueError, match="other lr"):  # what fixes the trajectory must not change on resume
        train_video(VideoTrainConfig(out=str(tmp_path / "b"), resume=True, **{**base, "lr": 0.1}), progress=False)
    b = train_video(VideoTrainConfig(out=str(tmp_path / "b"), resume=True, **base), progress=False)
    assert not (b / "train_state.pt").exists()  # a finished run keeps no optimizer state
    import namm.zoo.video as zv

    schedule = zv.warmup_cosine

    def interrupt_at_step_2(step, *args):  # Ctrl-C as step 2 begins: steps 0 and 1 are kept
        if step == 2:
            raise KeyboardInterrupt
        return schedule(step, *args)

    monkeypatch.setattr(zv, "warmup_cosine", interrupt_at_step_2)
    train_video(VideoTrainConfig(out=str(tmp_path / "c"), **base), progress=False)
    monkeypatch.setattr(zv, "warmup_cosine", schedule)
    assert torch.load(tmp_path / "c" / "train_state.pt", weights_only=True)["step"] == 2
    c = train_video(VideoTrainConfig(out=str(tmp_path / "c"), resume=True, **base), progress=False)
    wa, wb, wc = (load_file(str(x / VISION_WEIGHTS)) for x in (a, b, c))
    assert wa.keys() == wb.keys() == wc.keys() and all(torch.equal(wa[k], wb[k]) and torch.equal(wa[k], wc[k]) for k in wa)
    assert wa and not any(k.startswith(("model.language_model.", "lm_head.")) for k in wa)
    man = json.loads((a / "manifest.json").read_text())
    assert man["lm"] == str(DEFAULT_LM) and 0 < man["trained_parameters"] < man["parameters"]
    assert man["heldout_frames"] == 8 and set(man["heldout_full_cache"]["by_evidence"]) <= {
        "early", "middle", "late", "spread"}
    model, tok = load_zoo_video(a)
    lm, _ = load_zoo_lm(DEFAULT_LM)
    up = model.model.language_model.layers[0].mlp.up_proj.weight
    torch.testing.assert_close(up, lm.model.layers[0].mlp.up_proj.weight)  # the LM is the zoo LM's, untouched
    assert tok.convert_tokens_to_ids("<video>") == model.config.video_token_id == man["video_token_id"]
    with pytest.raises(FileNotFoundError, match="--resume"):
        train_video(VideoTrainConfig(out=str(tmp_path / "d"), resume=True, **base), progress=False)
    # a later stage starts from a finished run's vision side (lr 0: nothing moves, so it ends where `a` did)
    e = train_video(VideoTrainConfig(out=str(tmp_path / "e"), init=str(a), **{**base, "steps": 1, "lr": 0.0}),
                    progress=False)
    we = load_file(str(e / VISION_WEIGHTS))
    assert all(torch.equal(wa[k], we[k]) for k in wa)
    with pytest.raises(FileNotFoundError, match="vision.safetensors"):
        train_video(VideoTrainConfig(out=str(tmp_path / "f"), init=str(tmp_path), **base), progress=False)
    # trained mostly on word answers: the folder says so, and evaluation asks for words by default
    assert man["answers"] == "words" and model.config.answer_form == "words"
    res = evaluate_video(model, tok, None, load_video_data("zoo", 1, seed=3, frames=4), progress=False)
    assert res["answers"] == "words" and len(res["predictions"]) == 3


def test_open_answers_are_matched_to_the_options():
    from namm.tasks.video_qa import match_option, video_prompt

    colours = ["red", "green", "blue"]
    assert match_option(" Red.", colours) == 0 and match_option("blue shape\nmore", colours) == 2
    assert match_option("purple", colours) is None and match_option("", colours) is None
    counts = ["1 to 6", "7 to 12", "13 to 19"]
    assert match_option("13 to 19 frames", counts) == 2 and match_option("1 to 6", counts) == 0
    assert match_option(" 7", counts) == 1  # cut off after its first word: the one option it begins
    assert match_option("a red square", ["a red square", "a red circle"]) == 0
    assert match_option("a red", ["a red square", "a red circle"]) is None  # could be either
    item = load_video_data("zoo", 1, seed=0, frames=4, kinds=["needle"])[0][0]
    assert video_prompt(item, "words") == word_prompt(item) and video_prompt(item) == chat_prompt(item)
    with pytest.raises(ValueError, match="answer form"):
        video_prompt(item, "essay")


def test_evidence_positions_and_question_first_prompts():
    from namm.tasks.video_qa import EVIDENCE, score_by_evidence, synthetic_items

    for kind, key in (("needle", "needle_frame"), ("order", "frames_shown")):
        recs = [r for _, r in synthetic_items(30, 32, 32, 4, kind, fixed_options=True)]
        for r in recs:
            f = r[key] if kind == "needle" else min(r[key])
            assert r["evidence"] == EVIDENCE[min(2, 3 * f // 32)]
        assert {r["evidence"] for r in recs} == set(EVIDENCE)  # every third of the video is asked about
    pairs = load_video_data("zoo", 6, seed=4, frames=32)
    assert {p[0].meta["evidence"] for p in pairs if p[0].group == "count"} == {"spread"}
    item = pairs[0][0]
    first, last = chat_prompt(item, question_first=True), chat_prompt(item)
    assert first.index("Question:") < first.index("<video>") < first.index("Answer with")
    assert last.index("<video>") < last.index("Question:") and first.count("(A)") == last.count("(A)") == 1
    word = word_prompt(item, question_first=True)
    assert "(A)" not in word and word.index("Question:") < word.index("<video>")
    items = [p[0] for p in pairs]
    by = score_by_evidence(items, [it.answer for it in items])
    assert by and all(v == 100.0 for v in by.values())
