"""LLaVA-NeXT-Video under a memory policy (tiny random model built from configs) and the video QA env."""

import json
import sys

import numpy as np
import pytest
import torch

import namm
from namm.adapters import adapter_for
from namm.adapters.llava_next_video import LLAVA_NEXT_VIDEO, tokens_per_frame
from namm.drivers.video import (
    FrameKeepRecorder,
    expand_video_tokens,
    generate_with_video_stats,
    preprocess_frames,
    video_cache_stats,
    video_layout,
)
from namm.models.hub import load_video_model
from namm.policies import H2O, FullCache
from namm.tasks import video_qa as vq

VIDEO_ID, IMAGE_ID, FRAMES = 94, 95, 6
GEN = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False)


def make_tiny_llava(seed: int = 0):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

    torch.manual_seed(seed)
    text = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
    vision = CLIPVisionConfig(image_size=56, patch_size=14, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=2, projection_dim=32)
    cfg = LlavaNextVideoConfig(text_config=text, vision_config=vision, video_token_index=VIDEO_ID,
                               image_token_index=IMAGE_ID)
    return LlavaNextVideoForConditionalGeneration(cfg).eval()


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_llava()


def _inputs(model, frames: int = FRAMES, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, 90, (30,), generator=g).tolist()
    ids = expand_video_tokens([1, 5, 6, VIDEO_ID] + text, frames, model.config)[None]
    pv = torch.randn(1, frames, 3, 56, 56, generator=g)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=pv)


# ---- adapter ---------------------------------------------------------------------------------------
def test_adapter_facts(tiny):
    assert adapter_for(tiny) is LLAVA_NEXT_VIDEO
    assert LLAVA_NEXT_VIDEO.num_layers(tiny) == 2 and LLAVA_NEXT_VIDEO.num_kv_heads(tiny) == 2
    assert LLAVA_NEXT_VIDEO.cache_kwarg(tiny) in ("cache", "past_key_values")
    assert tokens_per_frame(tiny.config) == 4  # (56 / 14)^2 = 16 patches, 2x2 pooled
    from transformers import LlavaNextVideoConfig

    assert tokens_per_frame(LlavaNextVideoConfig()) == 144  # the 7B model's 576 patches -> 144
    ids = expand_video_tokens([1, VIDEO_ID, 7], 3, tiny.config)
    assert ids.tolist() == [1] + [VIDEO_ID] * 12 + [7]
    with pytest.raises(ValueError, match="no video token"):
        expand_video_tokens([1, 2, 3], 3, tiny.config)


def test_adapter_refuses_other_language_models():
    from transformers import GPT2Config, LlavaNextVideoConfig

    fake = torch.nn.Module()
    fake.config = LlavaNextVideoConfig(text_config=GPT2Config(n_layer=1))
    with pytest.raises(ValueError, match="gpt2"):
        LLAVA_NEXT_VIDEO.check(fake)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_full_cache_equals_plain_model(tiny, impl):
    tiny.set_attn_implementation(impl)
    inp = _inputs(tiny)
    with torch.no_grad():
        ref_logits = tiny(**inp).logits
        ref_gen = tiny.generate(**inp, **GEN)
        with namm.memory(tiny, FullCache(n_up=16)) as mem:
            logits = mem.forward(**inp).logits
            gen = mem.generate(**inp, **GEN)
    assert (logits - ref_logits).abs().max() <= 1e-5
    assert torch.equal(gen, ref_gen)
    cfg = tiny.config
    assert (cfg.text_config._attn_implementation, cfg.vision_config._attn_implementation) == (impl, impl)


def test_budgeted_policy_evicts_and_leaves_the_vision_tower_alone(tiny):
    tiny.set_attn_implementation("sdpa")
    inp = _inputs(tiny, seed=1)
    with torch.no_grad():
        ref_feats = tiny.get_video_features(inp["pixel_values_videos"]).pooler_output
        with namm.memory(tiny, H2O(n_up=16, budget=0.5)) as mem:
            assert tiny.config.text_config._attn_implementation == "namm"
            assert tiny.model.vision_tower.config._attn_implementation == "sdpa"
            feats = tiny.get_video_features(inp["pixel_values_videos"]).pooler_output
            out = mem.generate(**inp, **GEN)
            cache = mem.last_cache
    assert torch.equal(feats, ref_feats)  # the ViT computes exactly what it computes outside the block
    assert out.shape[1] == inp["input_ids"].shape[1] + GEN["max_new_tokens"]
    assert cache.cache_fraction() < 0.9
    seen = int(cache.layers[0].seen[0])
    assert all(int(live.max()) < seen for live in cache.live_tokens())
    assert tiny.config.text_config._attn_implementation == "sdpa"


@pytest.mark.parametrize("policy", [FullCache(n_up=16), H2O(n_up=16, budget=0.5)], ids=["full", "h2o"])
def test_video_statistics_and_heatmap(tiny, policy):
    inp = _inputs(tiny, seed=2)
    with namm.memory(tiny, policy) as mem:
        out, rep = generate_with_video_stats(mem, **inp, **GEN)
        cache = mem.last_cache
    hm = rep.heatmaps[0]
    assert hm.shape == (len(cache.layers[0].history), FRAMES) and hm.shape[0] > 2
    vals = hm[~np.isnan(hm)]
    assert vals.size and (vals >= 0).all() and (vals <= 1).all()
    assert not np.isnan(hm[-1]).any()  # every frame has been seen by the last update
    # frames are reached in order: a frame is NaN only until its first token is seen
    first_seen = (~np.isnan(hm)).argmax(0)
    assert (np.diff(first_seen) >= 0).all()
    assert 0 <= rep.video_kept <= 1 and 0 <= rep.text_kept <= 1
    # all frames hold tokens_per_frame tokens, so the last row's mean is the final video fraction
    assert abs(hm[-1].mean() - rep.video_kept) < 1e-6
    stats = video_cache_stats(cache, rep.layout)
    assert stats["video_tokens"] == FRAMES * tokens_per_frame(tiny.config)
    assert stats["text_tokens"] == out.shape[1] - 1 - stats["video_tokens"]  # the last token is never fed
    if isinstance(policy, FullCache):
        assert rep.video_kept == rep.text_kept == 1.0 and (vals == 1).all()
    else:
        assert rep.video_kept < 1 and (vals < 1).any()


def test_video_layout_skips_left_padding(tiny):
    cfg = tiny.config
    a = expand_video_tokens([1, VIDEO_ID, 7, 8], 2, cfg)
    b = expand_video_tokens([1, 9, VIDEO_ID, 7, 8, 9], 2, cfg)
    ids = torch.zeros(2, len(b), dtype=torch.long)
    mask = torch.zeros_like(ids)
    ids[0, 2:], mask[0, 2:] = a, 1
    ids[1], mask[1] = b, 1
    lay = video_layout(ids, cfg, mask)
    assert lay.num_frames == 2 and lay.tokens_per_frame == 4
    assert lay.frame[0, :11].tolist() == [-1] + [0] * 4 + [1] * 4 + [-1, -1]
    assert lay.frame[1].tolist() == [-1, -1] + [0] * 4 + [1] * 4 + [-1, -1, -1]
    pos = torch.tensor([[0, 1, 8, 9, 40, -1], [0, 2, 9, 10, 40, -1]])
    assert lay.frame_of(pos).tolist() == [[-1, 0, 1, -1, -1, -1], [-1, 0, 1, -1, -1, -1]]
    with pytest.raises(ValueError, match="expanded"):
        video_layout(torch.tensor([[1, VIDEO_ID, 7]]), cfg)


def test_recorder_sees_every_row_and_update(tiny):
    """Direct use of the recorder on a forward pass (no generate): one row per update boundary."""
    inp = _inputs(tiny, seed=3)
    n = inp["input_ids"].shape[1]
    with torch.no_grad(), namm.memory(tiny, H2O(n_up=8, budget=0.5)) as mem:
        kw = mem.cache_kwargs()
        rec = FrameKeepRecorder(mem.last_cache, video_layout(inp["input_ids"], tiny.config))
        tiny(**inp, use_cache=True, **kw)
    assert rec.heatmap(0).shape == (n // 8, FRAMES)


def test_load_video_model_from_disk(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "tiny-llava-video")
    loaded = load_video_model(str(tmp_path / "tiny-llava-video"), dtype=torch.float32, device="cpu")
    model, processor, tokenizer = loaded
    assert type(model).__name__ == "LlavaNextVideoForConditionalGeneration" and not model.training
    assert processor is None and tokenizer is None  # a bare model folder: inputs are built by hand
    inp = _inputs(tiny, seed=4)
    with torch.no_grad():
        assert torch.allclose(model(**inp).logits, tiny(**inp).logits, atol=1e-6)
    assert adapter_for(model) is LLAVA_NEXT_VIDEO


def test_preprocess_frames_and_end_to_end_on_a_synthetic_video(tiny, tmp_path):
    recs = vq.make_synthetic_video_qa(1, 8, 48, seed=0, kind="needle", out_dir=tmp_path, mp4=False)
    item = vq.load_mlvu(tmp_path / "needle.json")[0]
    frames = vq.load_frames(item, FRAMES)  # uint8 [6, 48, 48, 3]
    pv = preprocess_frames(frames, tiny.config)
    assert pv.shape == (1, FRAMES, 3, 56, 56) and pv.dtype == torch.float32
    assert preprocess_frames(np.zeros((2, 30, 80, 3), np.uint8), tiny.config).shape == (1, 2, 3, 56, 56)
    ids = expand_video_tokens([1, VIDEO_ID] + list(range(10, 40)), FRAMES, tiny.config)[None]
    with namm.memory(tiny, H2O(n_up=16, budget=0.5)) as mem:
        out, rep = generate_with_video_stats(mem, input_ids=ids, attention_mask=torch.ones_like(ids),
                                             pixel_values_videos=pv, **GEN)
    assert out.shape[1] == ids.shape[1] + GEN["max_new_tokens"] and rep.heatmaps[0].shape[1] == FRAMES
    assert recs[0]["answer"] in item.options


# ---- video QA formats --------------------------------------------------------------------------
def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def _stack(path, n=10, size=8):
    v = (np.arange(n)[:, None, None, None] * 10 + np.zeros((n, size, size, 3))).astype(np.uint8)  # frame i = 10*i
    np.save(path, v)
    return path


def test_longvideobench_format(tmp_path):
    (tmp_path / "videos").mkdir()
    _stack(tmp_path / "videos" / "v1.npy")
    _stack(tmp_path / "v2.npy")
    recs = [
        {"video_id": "v1", "video_path": "v1.npy", "question": "What?", "option0": "x", "option1": "y",
         "option2": "z", "option3": None, "option4": None, "correct_choice": 2, "duration_group": 15},
        {"id": "q2", "video_id": "v2", "video_path": "v2.npy", "question": "Why?", "candidates": ["a", "b", "c", "d"],
         "correct_choice": "B", "duration_group": 3600},
    ]
    items = vq.load_longvideobench(_write(tmp_path / "lvb_val.json", recs))
    assert [it.options for it in items] == [("x", "y", "z"), ("a", "b", "c", "d")]
    assert [it.answer for it in items] == [2, 1] and [it.group for it in items] == ["15", "3600"]
    assert items[0].video == tmp_path / "videos" / "v1.npy" and items[1].id == "q2"
    frames = vq.load_frames(items[0], 4)
    assert frames.shape == (4, 8, 8, 3) and frames.dtype == np.uint8
    assert frames[:, 0, 0, 0].tolist() == [10, 30, 60, 80]  # centres of 4 segments of 10 frames
    # bad inputs name the file and the item
    with pytest.raises(vq.MissingVideoError, match=r"lvb_bad.json: item 0 \(v9\).*not found"):
        bad = [{**recs[0], "video_id": "v9", "video_path": "v9.mp4"}]
        vq.load_longvideobench(_write(tmp_path / "lvb_bad.json", bad))
    missing = {k: v for k, v in recs[1].items() if k != "question"}
    with pytest.raises(vq.VideoQADataError, match=r"lvb_q.json: item 1 \(q2\): missing field 'question'"):
        vq.load_longvideobench(_write(tmp_path / "lvb_q.json", [recs[0], missing]))
    with pytest.raises(vq.VideoQADataError, match="lvb_empty.json: the annotation list is empty"):
        vq.load_longvideobench(_write(tmp_path / "lvb_empty.json", []))
    with pytest.raises(vq.VideoQADataError, match="out of range"):
        vq.load_longvideobench(_write(tmp_path / "lvb_r.json", [{**recs[0], "correct_choice": 3}]))
    # without checking, a missing video fails when its frames are read, naming item and file
    lazy = vq.load_longvideobench(tmp_path / "lvb_bad.json", check_videos=False)
    with pytest.raises(vq.MissingVideoError, match=r"lvb_bad.json: item v9_0: video file not found"):
        vq.load_frames(lazy[0], 4)


def test_mlvu_format_and_folder(tmp_path):
    (tmp_path / "json").mkdir()
    (tmp_path / "video" / "1_plotQA").mkdir(parents=True)
    _stack(tmp_path / "video" / "1_plotQA" / "a.npy")
    _stack(tmp_path / "video" / "b.npy")
    rec = {"video": "a.npy", "duration": 10, "question": "Who?", "candidates": ["cat", "dog", "owl"],
           "answer": "dog", "question_type": "plotQA"}
    _write(tmp_path / "json" / "1_plotQA.json", [rec])
    _write(tmp_path / "json" / "2_count.json", [{**rec, "video": "b.npy", "question_type": "count", "answer": "C"}])
    items = vq.load_mlvu(tmp_path / "json", video_root=tmp_path / "video")
    assert [(it.id, it.answer, it.group) for it in items] == [("1_plotQA/0", 1, "plotQA"), ("2_count/0", 2, "count")]
    assert items[0].meta["duration"] == 10
    with pytest.raises(vq.VideoQADataError, match=r"bad.json: item 0: answer 'emu' is not one of"):
        vq.load_mlvu(_write(tmp_path / "bad.json", [{**rec, "answer": "emu"}]), video_root=tmp_path / "video")
    with pytest.raises(vq.VideoQADataError, match=r"nocand.json: item 0: missing field 'candidates'"):
        vq.load_mlvu(_write(tmp_path / "nocand.json", [{k: v for k, v in rec.items() if k != "candidates"}]))
    with pytest.raises(vq.VideoQADataError, match="annotation file not found"):
        vq.load_mlvu(tmp_path / "nope.json")


def test_truncated_frame_stack_is_a_clear_error(tmp_path):
    p = _stack(tmp_path / "t.npy", n=20, size=16)
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(vq.VideoDecodeError, match=r"t.npy: cannot read the frame stack"):
        vq.sample_frames(p, 4)
    np.save(tmp_path / "gray.npy", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(vq.VideoDecodeError, match=r"\[N, H, W, 3\]"):
        vq.sample_frames(tmp_path / "gray.npy", 2)


def test_video_files_with_pyav(tmp_path):
    pytest.importorskip("av")
    recs = vq.make_synthetic_video_qa(1, 24, 32, seed=1, kind="order", out_dir=tmp_path, mp4=True)
    mp4 = tmp_path / "order" / "order_0000.mp4"
    ref = np.load(mp4.with_suffix(".npy"))[vq.uniform_indices(24, 6)]
    dec = vq.sample_frames(mp4, 6, method="decode")
    assert dec.shape == (6, 32, 32, 3) and dec.dtype == np.uint8
    assert np.abs(dec.astype(int) - ref).mean() < 10  # lossy mpeg4, same frames
    assert np.array_equal(vq.sample_frames(mp4, 6, method="seek"), dec)
    assert recs[0]["video"] == "order_0000.npy"
    bad = tmp_path / "trunc.mp4"
    bad.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    with pytest.raises(vq.VideoDecodeError, match=r"trunc.mp4: decoded \d+ of the 6 sampled frames"):
        vq.sample_frames(bad, 6)  # the index (written first) promises frames the file no longer has
    (tmp_path / "junk.mp4").write_bytes(b"\x00not a video" * 50)
    with pytest.raises(vq.VideoDecodeError, match="junk.mp4"):
        vq.sample_frames(tmp_path / "junk.mp4", 4)


def test_missing_pyav_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "v.mp4").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(ImportError, match="pip install av"):
        vq.sample_frames(tmp_path / "v.mp4", 4)


def test_prompt_parse_and_score():
    it = vq.VideoQAItem(id="0", video=None, question="Which?", options=("red", "blue", "green"), answer=1,
                        group="15", source="x.json")
    body = "Question: Which?\nOptions:\n(A) red\n(B) blue\n(C) green\nAnswer with the option's letter."
    assert vq.build_prompt(it) == body
    assert vq.chat_prompt(it) == f"USER: <video>\n{body} ASSISTANT:"
    assert [vq.parse_answer(t) for t in ["B", "(C) green", "Answer: D.", "The answer is E", "none", "", "Bob"]] == \
        [1, 2, 3, 4, None, None, None]
    assert vq.parse_answer("E) ... or A", n_options=3) == 0  # letters beyond the options are skipped
    items = [it, vq.VideoQAItem("1", None, "q", ("a", "b"), 0, "60", "x"),
             vq.VideoQAItem("2", None, "q", ("a", "b"), 1, "60", "x")]
    s = vq.score(items, ["B", 0, "I am not sure"])
    assert s["n"] == 3 and s["by_group"] == {"15": 100.0, "60": 50.0}
    assert abs(s["accuracy"] - 200 / 3) < 1e-9 and s["group_avg"] == 75.0
    with pytest.raises(ValueError, match="predictions"):
        vq.score(items, ["A"])


@pytest.mark.parametrize("kind", vq.SYNTHETIC_KINDS)
def test_synthetic_zoo(tmp_path, kind):
    a = vq.make_synthetic_video_qa(4, 10, 32, seed=7, kind=kind, out_dir=tmp_path / "a", mp4=False)
    b = vq.make_synthetic_video_qa(4, 10, 32, seed=7, kind=kind, out_dir=tmp_path / "b", mp4=False)
    c = vq.make_synthetic_video_qa(4, 10, 32, seed=8, kind=kind, out_dir=tmp_path / "c", mp4=False)
    assert a == b and a != c
    items = vq.load_mlvu(tmp_path / "a" / f"{kind}.json")
    assert len(items) == 4 and all(it.group == kind for it in items)
    for rec, it in zip(a, items):
        v = np.load(it.video)
        assert v.shape == (10, 32, 32, 3) and v.dtype == np.uint8
        assert np.array_equal(v, np.load(tmp_path / "b" / kind / it.video.name))
        assert rec["answer"] == it.options[it.answer]
        bright = [(np.abs(f.astype(int) - 120).max(-1) > 20) & (f.max(-1) > 150) for f in v]  # not grey, not bg
        if kind == "needle":
            assert [i for i, m in enumerate(bright) if m.any()] == [rec["needle_frame"]]
        elif kind == "count":
            r = 32 // 7
            red_square = [int(((f == (230, 30, 30)).all(-1)).sum() == (2 * r + 1) ** 2) for f in v]
            assert sum(red_square) == rec["count"] == int(rec["answer"])
        else:
            fa, fb = rec["frames_shown"]
            assert sorted(i for i, m in enumerate(bright) if m.any()) == sorted([fa, fb])
            assert rec["answer"] == it.options[0 if fa < fb else 1]
    with pytest.raises(ValueError, match="kind"):
        vq.make_synthetic_video_qa(1, 4, 32, seed=0, kind="dance", out_dir=tmp_path)
