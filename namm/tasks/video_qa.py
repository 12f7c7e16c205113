"""Long-video multiple-choice QA: LongVideoBench and MLVU from local files, frame sampling, prompts,
answer parsing and accuracy, plus a seeded synthetic video zoo in MLVU format.

    items = load_mlvu("MLVU/json/1_plotQA.json", video_root="MLVU/video")  # or load_longvideobench(...)
    frames = load_frames(items[0], num_frames=32)          # uint8 [32, H, W, 3]
    prompt = chat_prompt(items[0])                          # "USER: <video>\\nQuestion: ... ASSISTANT:"
    print(score(items, predictions))                        # accuracy (%) overall and per group

Formats (one JSON list per file):

* LongVideoBench: ``video_id``, ``video_path``, ``question``, ``candidates`` (or ``option0`` ..
  ``option4``), ``correct_choice`` (index or letter), ``duration_group``. Videos are found at
  ``video_root/video_path`` or ``video_root/videos/video_path`` (``video_root`` defaults to the JSON's folder).
* MLVU (one file per task): ``video``, ``question``, ``candidates``, ``answer`` (the correct
  candidate's text), ``question_type``. Videos are found at ``video_root/video`` or
  ``video_root/<json stem>/video``.

Videos are decoded with PyAV (``pip install av``, imported only when a video file is read); ``.npy``
frame stacks ``[N, H, W, 3]`` uint8 (what the synthetic zoo writes) need nothing extra.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "LETTERS", "VideoQAItem", "VideoQADataError", "MissingVideoError", "VideoDecodeError",
    "load_longvideobench", "load_mlvu", "uniform_indices", "sample_frames", "load_frames",
    "build_prompt", "chat_prompt", "word_prompt", "parse_answer", "score", "make_synthetic_video_qa", "synthetic_items",
    "synthetic_qa_item", "evidence_position", "score_by_evidence",
    "SYNTHETIC_KINDS", "EVIDENCE", "ANSWER_FORMS", "video_prompt", "match_option",
]

LETTERS = "ABCDE"
PathLike = str | os.PathLike


class VideoQADataError(ValueError):
    """An annotation file is unreadable, empty, or has an item with a missing or bad field."""


class MissingVideoError(VideoQADataError, FileNotFoundError):
    """An item's video file does not exist."""


class VideoDecodeError(VideoQADataError):
    """A video file exists but cannot be decoded (corrupt, truncated, no video stream)."""


@dataclass(frozen=True)
class VideoQAItem:
    """One multiple-choice question about one video.

    Attributes:
        id: unique within its source file.
        video: path of the video (a container PyAV reads, or a ``.npy`` frame stack).
        options: 2 to 5 answer texts, lettered A.. in order.
        answer: index of the correct option.
        group: LongVideoBench ``duration_group`` or MLVU ``question_type`` (accuracy is also reported per group).
        source: the annotation file, for error messages.
    """

    id: str
    video: Path
    question: str
    options: tuple[str, ...]
    answer: int
    group: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer]


# ---- loading annotations -----------------------------------------------------------------------
def _read_list(path: Path) -> list[dict]:
    if not path.is_file():
        raise VideoQADataError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VideoQADataError(f"{path}: not valid JSON ({e})") from e
    if isinstance(data, dict):  # tolerate {"data": [...]} wrappers
        data = next((v for v in data.values() if isinstance(v, list)), data)
    if not isinstance(data, list):
        raise VideoQADataError(f"{path}: expected a JSON list of items, got {type(data).__name__}")
    if not data:
        raise VideoQADataError(f"{path}: the annotation list is empty")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise VideoQADataError(f"{path}: item {i} is a {type(rec).__name__}, not an object")
    return data


def _need(rec: dict, key: str, where: str) -> Any:
    if rec.get(key) is None:
        raise VideoQADataError(f"{where}: missing field {key!r} (has: {sorted(rec)})")
    return rec[key]


def _resolve(name: str, roots: Sequence[Path], where: str, check: bool) -> Path:
    """First existing candidate path; with ``check``, a missing video is an error listing the tries."""
    tries = [Path(name)] if Path(name).is_absolute() else [r / name for r in roots]
    for p in tries:
        if p.exists():
            return p
    if check:
        raise MissingVideoError(f"{where}: video file not found; tried {', '.join(map(str, tries))}")
    return tries[0]


def _options(opts: Any, where: str) -> tuple[str, ...]:
    if not isinstance(opts, (list, tuple)) or not 2 <= len(opts) <= len(LETTERS):
        raise VideoQADataError(f"{where}: needs 2 to {len(LETTERS)} options, got {opts!r}")
    return tuple(str(o) for o in opts)


def _choice_index(value: Any, n: int, where: str) -> int:
    """An index from an int, a digit string or a letter."""
    if isinstance(value, str) and value.strip().upper() in LETTERS[:n] and not value.strip().isdigit():
        return LETTERS.index(value.strip().upper())
    try:
        idx = int(value)
    except (TypeError, ValueError):
        raise VideoQADataError(f"{where}: bad correct_choice {value!r}") from None
    if not 0 <= idx < n:
        raise VideoQADataError(f"{where}: correct_choice {idx} out of range for {n} options")
    return idx


def load_longvideobench(json_path: PathLike, video_root: PathLike | None = None, check_videos: bool = True,
                        limit: int | None = None) -> list[VideoQAItem]:
    """LongVideoBench items (e.g. ``lvb_val.json``); ``group`` is the duration group (seconds, as text)."""
    path = Path(json_path)
    root = Path(video_root) if video_root is not None else path.parent
    items = []
    for i, rec in enumerate(_read_list(path)[:limit]):
        where = f"{path}: item {i} ({rec.get('id', rec.get('video_id', '?'))})"
        if rec.get("candidates") is not None:
            opts = rec["candidates"]
        else:
            opts = [rec[f"option{k}"] for k in range(len(LETTERS)) if rec.get(f"option{k}") not in (None, "", "N/A")]
            if not opts:
                raise VideoQADataError(f"{where}: missing field 'candidates' (or option0..option4)")
        options = _options(opts, where)
        video = _resolve(str(_need(rec, "video_path", where)), [root, root / "videos"], where, check_videos)
        items.append(VideoQAItem(
            id=str(rec.get("id") or f"{_need(rec, 'video_id', where)}_{i}"), video=video,
            question=str(_need(rec, "question", where)), options=options,
            answer=_choice_index(_need(rec, "correct_choice", where), len(options), where),
            group=str(_need(rec, "duration_group", where)), source=str(path),
            meta={k: rec[k] for k in ("video_id", "duration", "question_category", "position") if k in rec},
        ))
    return items


_MLVU_FIELDS = ("video", "question", "candidates", "answer", "question_type")


def load_mlvu(json_path: PathLike, video_root: PathLike | None = None, check_videos: bool = True,
              limit: int | None = None) -> list[VideoQAItem]:
    """MLVU multiple-choice items from one task file, or from every ``*.json`` of a folder (sorted);
    ``group`` is the question type. ``limit`` applies per file."""
    path = Path(json_path)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise VideoQADataError(f"{path}: no *.json task files")
        return [it for f in files for it in load_mlvu(f, video_root, check_videos, limit)]
    root = Path(video_root) if video_root is not None else path.parent
    items = []
    for i, rec in enumerate(_read_list(path)[:limit]):
        where = f"{path}: item {i}"
        options = _options(_need(rec, "candidates", where), where)
        ans = _need(rec, "answer", where)
        if str(ans) in options:
            answer = options.index(str(ans))
        elif isinstance(ans, str) and len(ans.strip()) == 1:  # some dumps give the letter
            answer = _choice_index(ans, len(options), where)
        else:
            raise VideoQADataError(f"{where}: answer {ans!r} is not one of the candidates {list(options)}")
        video = _resolve(str(_need(rec, "video", where)), [root, root / path.stem], where, check_videos)
        items.append(VideoQAItem(
            id=f"{path.stem}/{i}", video=video, question=str(_need(rec, "question", where)), options=options,
            answer=answer, group=str(_need(rec, "question_type", where)), source=str(path),
            meta={k: v for k, v in rec.items() if k not in _MLVU_FIELDS},
        ))
    return items


# ---- frames ------------------------------------------------------------------------------------
def uniform_indices(total: int, num: int) -> np.ndarray:
    """``[num]`` frame indices at the centres of ``num`` equal segments of ``total`` frames
    (repeats when the video is shorter than ``num``)."""
    if total < 1 or num < 1:
        raise ValueError(f"need total >= 1 and num >= 1, got total={total}, num={num}")
    return np.minimum(((np.arange(num) + 0.5) * total / num).astype(np.int64), total - 1)


def _import_av():
    try:
        import av
    except ImportError as e:
        raise ImportError("decoding video files needs PyAV: pip install av (or use .npy frame stacks)") from e
    return av


def _npy_frames(path: Path, num: int) -> np.ndarray:
    try:
        stack = np.load(path, mmap_mode="r")
    except Exception as e:  # noqa: BLE001 - numpy raises ValueError/OSError/EOFError on bad files
        raise VideoDecodeError(f"{path}: cannot read the frame stack ({type(e).__name__}: {e}); truncated?") from e
    if stack.ndim != 4 or stack.shape[-1] != 3 or stack.dtype != np.uint8 or len(stack) == 0:
        raise VideoDecodeError(f"{path}: expected a uint8 [N, H, W, 3] frame stack, got {stack.dtype} {stack.shape}")
    return np.ascontiguousarray(stack[uniform_indices(len(stack), num)])


def _av_frames(path: Path, num: int, method: str) -> np.ndarray:
    av = _import_av()
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoDecodeError(f"{path}: no video stream")
            stream = c.streams.video[0]
            total = stream.frames
            if not total:  # container without a frame count: count packets (demuxing is cheap)
                total = sum(1 for p in c.demux(stream) if p.size)
                c.seek(0)
            if total < 1:
                raise VideoDecodeError(f"{path}: no frames")
            want = uniform_indices(total, num)
            if method == "auto":  # seeking pays off when most frames would be decoded for nothing
                method = "seek" if total > 8 * num and stream.average_rate else "decode"
            got = _seek_frames(c, stream, want) if method == "seek" else _decode_frames(c, stream, want)
    except av.FFmpegError as e:
        raise VideoDecodeError(f"{path}: cannot decode ({type(e).__name__}: {e}); corrupt or truncated?") from e
    if len(got) < len(set(want.tolist())):
        raise VideoDecodeError(f"{path}: decoded {len(got)} of the {len(set(want.tolist()))} sampled frames "
                               f"(the container claims {total}); truncated or corrupt?")
    return np.stack([got[i] for i in want.tolist()])


def _decode_frames(c, stream, want: np.ndarray) -> dict[int, np.ndarray]:
    """Decode from the start, keep the wanted indices, stop after the last one."""
    wanted, last, got = set(want.tolist()), int(want.max()), {}
    for i, frame in enumerate(c.decode(stream)):
        if i in wanted:
            got[i] = frame.to_ndarray(format="rgb24")
        if i >= last:
            break
    return got


def _seek_frames(c, stream, want: np.ndarray) -> dict[int, np.ndarray]:
    """Seek to each wanted frame's time (constant frame rate assumed), decode forward to it."""
    rate, tb = float(stream.average_rate), float(stream.time_base)
    start = stream.start_time or 0
    got = {}
    for i in sorted(set(want.tolist())):
        target = start + int(round(i / rate / tb))
        c.seek(target, stream=stream, backward=True, any_frame=False)
        for frame in c.decode(stream):
            if frame.pts is not None and frame.pts >= target - 0.5 / rate / tb:
                got[i] = frame.to_ndarray(format="rgb24")
                break
    return got


def sample_frames(path: PathLike, num_frames: int, method: str = "auto") -> np.ndarray:
    """``num_frames`` uniformly spaced frames of a video file or ``.npy`` stack -> uint8 ``[F, H, W, 3]``.

    ``method`` (video files): ``"decode"`` reads from the start (exact frame indices), ``"seek"`` jumps
    to each frame's timestamp (fast on long videos), ``"auto"`` seeks when the video is long.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingVideoError(f"video file not found: {path}")
    if method not in ("auto", "decode", "seek"):
        raise ValueError(f"method must be 'auto', 'decode' or 'seek', got {method!r}")
    return _npy_frames(path, num_frames) if path.suffix == ".npy" else _av_frames(path, num_frames, method)


def load_frames(item: VideoQAItem, num_frames: int, method: str = "auto") -> np.ndarray:
    """:func:`sample_frames` for an item; errors name the item and its annotation file."""
    try:
        return sample_frames(item.video, num_frames, method)
    except VideoQADataError as e:
        raise type(e)(f"{item.source}: item {item.id}: {e}") from e


# ---- prompts, answers, accuracy ----------------------------------------------------------------
ANSWER_WITH_LETTER = "Answer with the option's letter."


def _question_lines(item: VideoQAItem) -> list[str]:
    return [f"Question: {item.question}", "Options:", *(f"({LETTERS[k]}) {o}" for k, o in enumerate(item.options))]


def build_prompt(item: VideoQAItem) -> str:
    """``Question: ...\\nOptions:\\n(A) ...\\n(B) ...\\nAnswer with the option's letter.``"""
    return "\n".join([*_question_lines(item), ANSWER_WITH_LETTER])


def chat_prompt(item: VideoQAItem, video_token: str = "<video>", question_first: bool = False) -> str:
    """The prompt in LLaVA-NeXT-Video's conversation format (one video token, expanded later): the video
    then the question (the benchmarks' form), or with ``question_first`` the question and its options
    before the video, so the model (and a memory policy) knows what to look for while it reads it."""
    if question_first:
        head = "\n".join(_question_lines(item))
        return f"USER: {head}\n{video_token}\n{ANSWER_WITH_LETTER} ASSISTANT:"
    return f"USER: {video_token}\n{build_prompt(item)} ASSISTANT:"


def word_prompt(item: VideoQAItem, video_token: str = "<video>", question_first: bool = False) -> str:
    """:func:`chat_prompt` without the options: the answer is the option's own words (a training form)."""
    q = f"Question: {item.question}"
    if question_first:
        return f"USER: {q}\n{video_token}\nAnswer in a few words. ASSISTANT:"
    return f"USER: {video_token}\n{q}\nAnswer in a few words. ASSISTANT:"


ANSWER_FORMS = ("letter", "words")  # how a model answers: the option's letter, or the option's own words


def video_prompt(item: VideoQAItem, form: str = "letter", video_token: str = "<video>",
                 question_first: bool = False) -> str:
    """The prompt of answer form ``form``: :func:`chat_prompt` (``letter``) or :func:`word_prompt` (``words``)."""
    if form not in ANSWER_FORMS:
        raise ValueError(f"answer form must be one of {ANSWER_FORMS}, got {form!r}")
    make = chat_prompt if form == "letter" else word_prompt
    return make(item, video_token, question_first=question_first)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", (text or "").lower())


def match_option(text: str, options: Sequence[str]) -> int | None:
    """Index of the option an open answer names, or None: the option whose words begin the answer's first
    line ("red" for " Red.", "7 to 12" for "7 to 12 frames"; the longest such option wins, so "1" never
    takes "13 to 19"), else the one option whose words the answer's words begin (a cut-off answer)."""
    said = _words((text or "").strip().split("\n")[0])
    if not said:
        return None
    opts = [_words(o) for o in options]
    heads = [(len(o), i) for i, o in enumerate(opts) if o and said[: len(o)] == o]
    if heads:
        return max(heads)[1]
    cut = [i for i, o in enumerate(opts) if o[: len(said)] == said]
    return cut[0] if len(cut) == 1 else None


EVIDENCE = ("early", "middle", "late")


def evidence_position(frame: int, frames: int) -> str:
    """Which third of a ``frames``-long video frame ``frame`` lies in: ``early``, ``middle`` or ``late``."""
    return EVIDENCE[min(2, 3 * frame // frames)]


_LETTER = re.compile(r"(?<![A-Za-z])([A-E])(?![A-Za-z])")


def parse_answer(text: str, n_options: int = len(LETTERS)) -> int | None:
    """Index of the first standalone option letter in ``text`` ("B", "(C)", "Answer: D."), or None.
    Letters inside words never count ("Answer" is not an A)."""
    for m in _LETTER.finditer(text or ""):
        idx = LETTERS.index(m.group(1))
        if idx < n_options:
            return idx
    return None


def score(items: Sequence[VideoQAItem], predictions: Sequence[str | int | None]) -> dict[str, Any]:
    """Accuracy in percent.

    Args:
        predictions: per item, raw model text (parsed with :func:`parse_answer`) or an option index;
            unparsable answers count as wrong.
    Returns:
        ``{"accuracy", "n", "by_group": {group: accuracy}, "group_avg"}``; ``group_avg`` is the mean over
        groups (MLVU's M-Avg when groups are question types).
    """
    if len(items) != len(predictions):
        raise ValueError(f"{len(items)} items but {len(predictions)} predictions")
    if not items:
        raise ValueError("no items to score")
    hits: dict[str, list[bool]] = {}
    for it, p in zip(items, predictions):
        idx = parse_answer(p, len(it.options)) if isinstance(p, str) or p is None else int(p)
        hits.setdefault(it.group, []).append(idx == it.answer)
    by_group = {g: 100.0 * float(np.mean(h)) for g, h in sorted(hits.items())}
    overall = 100.0 * float(np.mean([x for h in hits.values() for x in h]))
    group_avg = float(np.mean(list(by_group.values())))
    return {"accuracy": overall, "n": len(items), "by_group": by_group, "group_avg": group_avg}


def score_by_evidence(items: Sequence[VideoQAItem], predictions: Sequence[str | int | None]) -> dict[str, float]:
    """Accuracy (%) by where the evidence sits (``item.meta["evidence"]``: early / middle / late third of the
    video, ``spread`` for counts); items without the field are left out. ``{}`` when none has it."""
    keep = [(it, p) for it, p in zip(items, predictions) if it.meta.get("evidence")]
    if not keep:
        return {}
    regrouped = [replace(it, group=str(it.meta["evidence"])) for it, _ in keep]
    return score(regrouped, [p for _, p in keep])["by_group"]


# ---- synthetic video zoo -----------------------------------------------------------------------
SYNTHETIC_KINDS = ("needle", "count", "order")
_BRIGHT = {"red": (230, 30, 30), "green": (40, 200, 60), "blue": (40, 80, 240), "yellow": (240, 220, 40),
           "magenta": (220, 40, 220), "cyan": (40, 220, 230), "orange": (250, 140, 20), "white": (250, 250, 250)}
_SHAPES = ("square", "circle", "triangle", "cross")
_GREY = (120, 120, 120)


def _shape_mask(shape: str, size: int, cx: int, cy: int, r: int) -> np.ndarray:
    """``[size, size]`` bool mask of a shape of half-size ``r`` centred at ``(cx, cy)``."""
    y, x = np.mgrid[0:size, 0:size]
    dx, dy = np.abs(x - cx), np.abs(y - cy)
    if shape == "square":
        return (dx <= r) & (dy <= r)
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "triangle":  # apex up: half-width grows from 0 at the top to r at the bottom
        return (dy <= r) & (dx <= (y - (cy - r)) / 2)
    if shape == "cross":
        t = max(1, r // 3)
        return ((dx <= t) & (dy <= r)) | ((dy <= t) & (dx <= r))
    raise ValueError(f"unknown shape {shape!r}")


class _Painter:
    """Draws frames for one video: a dark background with mild noise, shapes at random places."""

    def __init__(self, rng: np.random.Generator, frames: int, size: int) -> None:
        self.rng, self.size, self.r = rng, size, max(2, size // 7)
        bg = rng.integers(10, 50, size=3)
        noise = rng.integers(-6, 7, size=(frames, size, size, 3))
        self.video = np.clip(bg + noise, 0, 255).astype(np.uint8)  # [F, S, S, 3]

    def draw(self, f: int, shape: str, colour: tuple[int, int, int]) -> None:
        lo, hi = self.r + 1, self.size - self.r - 1
        cx, cy = (int(v) for v in self.rng.integers(lo, hi, size=2))
        self.video[f][_shape_mask(shape, self.size, cx, cy, self.r)] = colour

    def distractor(self, f: int) -> None:
        self.draw(f, str(self.rng.choice(_SHAPES)), _GREY)


def _other_targets(rng: np.random.Generator, true: tuple[str, str], k: int) -> list[tuple[str, str]]:
    """``k`` distinct (colour, shape) pairs other than ``true``."""
    pool = [(c, s) for c in _BRIGHT for s in _SHAPES if (c, s) != true]
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]


def _name(target: tuple[str, str], article: str = "a") -> str:
    return f"{article} {target[0]} {target[1]}"


FIXED_COLOURS = ("red", "green", "blue", "yellow", "white")  # the options of the fixed-option variant


def _count_bins(frames: int) -> list[tuple[int, int]]:
    """5 contiguous ranges covering 1..frames-1 (the fixed options of a count question)."""
    edges = np.linspace(1, frames, 6).round().astype(int)
    return [(int(a), int(b) - 1) for a, b in zip(edges[:-1], edges[1:])]


def _fixed_item(kind: str, rng: np.random.Generator, frames: int, size: int) -> tuple[np.ndarray, dict]:
    """The same three kinds with the SAME five options every time (colours, or count ranges), so the
    answer letter depends on the video only: a small model can learn it without matching option texts."""
    p = _Painter(rng, frames, size)
    if kind == "needle":
        f, colour = int(rng.integers(frames)), str(rng.choice(FIXED_COLOURS))
        for i in range(frames):
            p.distractor(i)
        p.draw(f, str(rng.choice(_SHAPES)), _BRIGHT[colour])
        q = "Most frames show only grey shapes, but one frame shows a brightly coloured shape. What colour is it?"
        return p.video, {"question": q, "answer": colour, "candidates": list(FIXED_COLOURS), "needle_frame": f,
                         "evidence": evidence_position(f, frames)}
    if kind == "count":
        k = int(rng.integers(1, frames))
        shown = set(rng.choice(frames, size=k, replace=False).tolist())
        for i in range(frames):
            if i in shown:
                p.draw(i, str(rng.choice(_SHAPES)), _BRIGHT["red"])
            else:
                p.distractor(i)
        bins = _count_bins(frames)
        cands = [f"{a}" if a == b else f"{a} to {b}" for a, b in bins]
        ans = next(c for c, (a, b) in zip(cands, bins) if a <= k <= b)
        return p.video, {"question": "In how many frames does a red shape appear?", "answer": ans,
                         "candidates": cands, "count": k}
    if kind == "order":
        ca, cb = (str(c) for c in rng.choice(FIXED_COLOURS, size=2, replace=False))
        fa, fb = sorted(int(v) for v in rng.choice(frames, size=2, replace=False))
        for i in range(frames):
            p.distractor(i)
        p.draw(fa, str(rng.choice(_SHAPES)), _BRIGHT[ca])
        p.draw(fb, str(rng.choice(_SHAPES)), _BRIGHT[cb])
        q = "Two brightly coloured shapes appear, in different frames. What colour is the first one?"
        return p.video, {"question": q, "answer": ca, "candidates": list(FIXED_COLOURS), "frames_shown": [fa, fb],
                         "evidence": evidence_position(fa, frames)}
    raise ValueError(f"kind must be one of {SYNTHETIC_KINDS}, got {kind!r}")


def _synthetic_item(kind: str, rng: np.random.Generator, frames: int, size: int) -> tuple[np.ndarray, dict]:
    p = _Painter(rng, frames, size)
    if kind == "needle":
        f = int(rng.integers(frames))
        true = (str(rng.choice(list(_BRIGHT))), str(rng.choice(_SHAPES)))
        for i in range(frames):
            p.distractor(i)
        p.draw(f, true[1], _BRIGHT[true[0]])
        cands = [_name(true)] + [_name(t) for t in _other_targets(rng, true, 3)]
        q = "Most frames show only grey shapes, but one frame shows a brightly coloured shape. Which shape is it?"
        rec = {"question": q, "answer": _name(true), "needle_frame": f, "evidence": evidence_position(f, frames)}
    elif kind == "count":
        k = int(rng.integers(1, frames))
        shown = set(rng.choice(frames, size=k, replace=False).tolist())
        for i in range(frames):  # red squares only on the counted frames; near misses elsewhere
            if i in shown:
                p.draw(i, "square", _BRIGHT["red"])
            elif rng.random() < 0.5:
                p.draw(i, str(rng.choice(["circle", "triangle"])), _BRIGHT["red"])
            else:
                p.draw(i, "square", _BRIGHT[str(rng.choice(["blue", "green", "yellow"]))])
        wrong = [n for n in range(frames + 1) if n != k]
        cands = [str(k)] + [str(n) for n in rng.choice(wrong, size=min(3, len(wrong)), replace=False)]
        rec = {"question": "In how many frames does a red square appear?", "answer": str(k), "count": k}
    elif kind == "order":
        a = (str(rng.choice(list(_BRIGHT))), str(rng.choice(_SHAPES)))
        b = _other_targets(rng, a, 1)[0]
        fa, fb = (int(v) for v in rng.choice(frames, size=2, replace=False))
        for i in range(frames):
            p.distractor(i)
        p.draw(fa, a[1], _BRIGHT[a[0]])
        p.draw(fb, b[1], _BRIGHT[b[0]])
        cands = [_name(a, "the"), _name(b, "the")]
        q = f"Which appears first in the video: {cands[0]} or {cands[1]}?"
        rec = {"question": q, "answer": cands[0] if fa < fb else cands[1], "frames_shown": [fa, fb],
               "evidence": evidence_position(min(fa, fb), frames)}
    else:
        raise ValueError(f"kind must be one of {SYNTHETIC_KINDS}, got {kind!r}")
    if kind != "order":  # order keeps the question's order; elsewhere the answer's place is random
        cands = [cands[i] for i in rng.permutation(len(cands))]
    return p.video, {**rec, "candidates": cands}


def _write_mp4(path: Path, video: np.ndarray, fps: int) -> None:
    av = _import_av()
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:  # index first: streamable
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        s.options = {"qscale": "2"}  # near-lossless: frames read back close to the .npy
        for frame in video:
            for pkt in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def synthetic_qa_item(rec: dict, kind: str, item_id: str, source: str) -> VideoQAItem:
    """The :class:`VideoQAItem` of one :func:`synthetic_items` record (its video stays in memory)."""
    return VideoQAItem(id=item_id, video=Path(f"{item_id}.npy"), question=rec["question"],
                       options=tuple(rec["candidates"]), answer=rec["candidates"].index(rec["answer"]),
                       group=kind, source=source, meta={"evidence": rec.get("evidence", "spread")})


def synthetic_items(n: int, frames: int, size: int, seed: int, kind: str, fixed_options: bool = False):
    """Yield ``n`` seeded ``(video uint8 [frames, size, size, 3], record)`` pairs of one kind, in memory
    (the records are MLVU-style: question, candidates, answer, plus the kind's ground truth).
    ``fixed_options``: the variant whose five options never change (what the zoo video model learns)."""
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"kind must be one of {SYNTHETIC_KINDS}, got {kind!r}")
    if n < 1 or frames < 2 or size < 16:
        raise ValueError(f"need n >= 1, frames >= 2, size >= 16; got n={n}, frames={frames}, size={size}")
    key = [seed, SYNTHETIC_KINDS.index(kind)] + ([1] if fixed_options else [])
    rng = np.random.default_rng(key)
    make = _fixed_item if fixed_options else _synthetic_item
    for _ in range(n):
        yield make(kind, rng, frames, size)


def make_synthetic_video_qa(n: int, frames: int, size: int, seed: int, kind: str, out_dir: PathLike,
                            mp4: bool | None = None, fps: int = 1) -> list[dict]:
    """Render ``n`` seeded videos with one question each, written in MLVU format.

    Kinds: ``"needle"`` (which brightly coloured shape shows up in one frame among grey ones),
    ``"count"`` (in how many frames a red square appears; red circles and blue squares are near
    misses), ``"order"`` (which of two coloured shapes appears first).

    Writes ``out_dir/<kind>.json`` and per video ``out_dir/<kind>/<kind>_<i>.npy`` (uint8
    ``[frames, size, size, 3]``), plus ``.mp4`` beside it when ``mp4`` (default: when PyAV is
    installed; ``size`` must then be even). Read back with ``load_mlvu(out_dir / f"{kind}.json")``.
    Same arguments -> same records and frames. Returns the records.
    """
    items = synthetic_items(n, frames, size, seed, kind)  # validates the arguments first
    first = next(items)
    if mp4 is None:
        try:
            _import_av()
            mp4 = size % 2 == 0
        except ImportError:
            mp4 = False
    out = Path(out_dir)
    (out / kind).mkdir(parents=True, exist_ok=True)
    records = []
    for i, (video, rec) in enumerate([first, *items]):
        stem = f"{kind}_{i:04d}"
        np.save(out / kind / f"{stem}.npy", video)
        if mp4:
            _write_mp4(out / kind / f"{stem}.mp4", video, fps)
        records.append({"video": f"{stem}.npy", "duration": frames / fps, "question_type": kind, **rec})
    (out / f"{kind}.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return records



# ---- the registry's view -------------------------------------------------------------------------
def _zoo_pairs(fixed_options: bool):
    def pairs(samples: int, seed: int, frames: int, size: int = 32, path: str | None = None,
              kinds: Sequence[str] | None = None) -> list:
        out = []
        for kind in kinds or SYNTHETIC_KINDS:
            for i, (video, rec) in enumerate(synthetic_items(samples, frames, size, seed, kind, fixed_options)):
                out.append((synthetic_qa_item(rec, kind, f"{kind}_{seed}_{i}", f"synthetic seed {seed}"), video))
        return out

    return pairs


def _benchmark_pairs(loader):
    def pairs(samples: int, seed: int, frames: int, size: int = 32, path: str | None = None,
              kinds: Sequence[str] | None = None) -> list:
        if not path:
            raise ValueError(f"{loader.__name__.removeprefix('load_')} needs its annotation file: "
                             "give the data as NAME:PATH.json")
        return [(it, load_frames(it, frames)) for it in loader(path)[:samples]]

    return pairs


def video_task(name: str):
    """``zoo-video`` (the fixed-option questions the zoo video model learned; ``samples`` per kind),
    ``zoo-video-open`` (per-question options), ``mlvu`` / ``longvideobench`` (the first ``samples``
    questions of an annotation file, ``frames`` sampled uniformly)."""
    from .base import VideoTask

    if name in ("zoo-video", "zoo-video-open"):
        return VideoTask(name, _zoo_pairs(name == "zoo-video"), chance=100.0 / len(LETTERS),
                         description="procedural needle / count / order questions, five options")
    loader = {"mlvu": load_mlvu, "longvideobench": load_longvideobench}[name]
    return VideoTask(name, _benchmark_pairs(loader), description=f"{name} annotations + videos from local files")
