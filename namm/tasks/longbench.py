"""LongBench (v1): the 21 tasks with their official prompts and generation lengths, a JSONL
loader with clear errors, prompt building, middle truncation and scoring.

    spec = get_task("hotpotqa")
    examples = load_task("hotpotqa", data_dir="LongBench/data", limit=50)
    prompt = build_prompt(spec, examples[0])           # then tokenise, truncate_middle(ids, 4096)
    print(score_examples(spec, predictions, examples))  # 0..100

The data is the official release: ``data.zip`` of the Hugging Face dataset ``THUDM/LongBench``,
one ``{task}.jsonl`` per task (``{task}_e.jsonl`` for LongBench-E). Project tasks join the
registry with :func:`register_task`, with a metric of their own if they need one.
"""

from __future__ import annotations

import json
import os
import string
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import metrics
from .base import TextTask

HF_DATASET_ID = "THUDM/LongBench"
DATA_URL = "https://huggingface.co/datasets/THUDM/LongBench/resolve/main/data.zip"
DATA_DIR_ENV = "LONGBENCH_DIR"  # default data_dir when none is passed
REQUIRED_FIELDS = ("input", "context", "answers")


class LongBenchDataError(ValueError):
    """A LongBench data file is unreadable, empty, or has examples without the required fields."""


@dataclass(frozen=True)
class TaskSpec:
    """How to prompt, generate for, and score one task.

    ``prompt`` is a ``str.format`` template with the fields ``{context}`` and ``{input}``
    (write literal braces as ``{{`` and ``}}``). ``metric`` names an entry of
    :data:`namm.tasks.metrics.METRICS`.
    """

    name: str
    metric: str
    max_new_tokens: int
    prompt: str
    language: str  # "en", "zh" or "code"
    category: str = "custom"
    chat_template: bool = True  # official: few-shot and code tasks are fed raw, without a chat template
    first_line_only: bool = False  # score only the first line of a prediction
    stop_on_newline: bool = False  # official samsum generation also stops at "\n"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("TaskSpec.name must be a non-empty string")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens <= 0:
            raise ValueError(f"task {self.name!r}: max_new_tokens must be a positive int, "
                             f"got {self.max_new_tokens!r}")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.prompt) if f is not None}
        except ValueError as err:
            raise ValueError(f"task {self.name!r}: prompt is not a valid format string ({err}); "
                             "write literal braces as '{{' and '}}'") from err
        if not fields <= {"context", "input"}:
            raise ValueError(f"task {self.name!r}: prompt may only use {{context}} and {{input}}, "
                             f"found {sorted(fields)}; write literal braces as '{{{{' and '}}}}'")


# --------------------------------------------------------------------------- the official tasks

_PROMPTS: dict[str, str] = {
    "narrativeqa": (
        "You are given a story, which can be either a novel or a movie script, and a question. "
        "Answer the question as concisely as you can, using a single phrase if possible. "
        "Do not provide any explanation.\n\nStory: {context}\n\nNow, answer the question based on "
        "the story as concisely as you can, using a single phrase if possible. "
        "Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:"
    ),
    "qasper": (
        "You are given a scientific article and a question. Answer the question as concisely as "
        "you can, using a single phrase or sentence if possible. If the question cannot be "
        'answered based on the information in the article, write "unanswerable". If the question '
        'is a yes/no question, answer "yes", "no", or "unanswerable". Do not provide any '
        "explanation.\n\nArticle: {context}\n\n Answer the question based on the above article as "
        "concisely as you can, using a single phrase or sentence if possible. If the question "
        'cannot be answered based on the information in the article, write "unanswerable". If the '
        'question is a yes/no question, answer "yes", "no", or "unanswerable". Do not provide any '
        "explanation.\n\nQuestion: {input}\n\nAnswer:"
    ),
    "multifieldqa_en": (
        "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following "
        "question based on the above text, only give me the answer and do not output any other "
        "words.\n\nQuestion: {input}\nAnswer:"
    ),
    "multifieldqa_zh": (
        "阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，"
        "只告诉我答案，不要输出任何其他字词。\n\n问题：{input}\n回答："
    ),
    "hotpotqa": (
        "Answer the question based on the given passages. Only give me the answer and do not "
        "output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the "
        "question based on the given passages. Only give me the answer and do not output any "
        "other words.\n\nQuestion: {input}\nAnswer:"
    ),
    "dureader": (
        "请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回答："
    ),
    "gov_report": (
        "You are given a report by a government agency. Write a one-page summary of the report."
        "\n\nReport:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:"
    ),
    "qmsum": (
        "You are given a meeting transcript and a query containing a question or instruction. "
        "Answer the query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the "
        "query based on the above meeting transcript in one or more sentences.\n\n"
        "Query: {input}\nAnswer:"
    ),
    "multi_news": (
        "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n"
        "{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:"
    ),
    "vcsum": (
        "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结："
    ),
    "trec": (
        "Please determine the type of the question below. Here are some examples of questions."
        "\n\n{context}\n{input}"
    ),
    "triviaqa": (
        "Answer the question based on the given passage. Only give me the answer and do not output "
        "any other words. The following are some examples.\n\n{context}\n\n{input}"
    ),
    "samsum": (
        "Summarize the dialogue into a few short sentences. The following are some examples."
        "\n\n{context}\n\n{input}"
    ),
    "lsht": "请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}",
    "passage_count": (
        "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. "
        "Please carefully read these paragraphs and determine how many unique paragraphs there are "
        "after removing duplicates. In other words, how many non-repeating paragraphs are there in "
        "total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after removing "
        "duplicates. The output format should only contain the number, such as 1, 2, 3, and so on."
        "\n\nThe final answer is: "
    ),
    "passage_retrieval_en": (
        "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which "
        "paragraph the abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}"
        "\n\nPlease enter the number of the paragraph that the abstract is from. The answer format "
        'must be like "Paragraph 1", "Paragraph 2", etc.\n\nThe answer is: '
    ),
    "passage_retrieval_zh": (
        "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n"
        '下面是一个摘要\n\n{input}\n\n请输入摘要所属段落的编号。答案格式必须是"段落1"，"段落2"等格式\n\n答案是：'
    ),
    "lcc": "Please complete the code given below. \n{context}Next line of code:\n",
    "repobench-p": "Please complete the code given below. \n{context}{input}Next line of code:\n",
}
# The three multi-document QA tasks share one prompt.
_PROMPTS["2wikimqa"] = _PROMPTS["musique"] = _PROMPTS["hotpotqa"]

# name, max_new_tokens, language, category (metrics come from metrics.TASK_METRICS), in paper order.
_OFFICIAL: list[tuple[str, int, str, str]] = [
    ("narrativeqa", 128, "en", "single-doc QA"),
    ("qasper", 128, "en", "single-doc QA"),
    ("multifieldqa_en", 64, "en", "single-doc QA"),
    ("multifieldqa_zh", 64, "zh", "single-doc QA"),
    ("hotpotqa", 32, "en", "multi-doc QA"),
    ("2wikimqa", 32, "en", "multi-doc QA"),
    ("musique", 32, "en", "multi-doc QA"),
    ("dureader", 128, "zh", "multi-doc QA"),
    ("gov_report", 512, "en", "summarization"),
    ("qmsum", 512, "en", "summarization"),
    ("multi_news", 512, "en", "summarization"),
    ("vcsum", 512, "zh", "summarization"),
    ("trec", 64, "en", "few-shot"),
    ("triviaqa", 32, "en", "few-shot"),
    ("samsum", 128, "en", "few-shot"),
    ("lsht", 64, "zh", "few-shot"),
    ("passage_count", 32, "en", "synthetic"),
    ("passage_retrieval_en", 32, "en", "synthetic"),
    ("passage_retrieval_zh", 32, "zh", "synthetic"),
    ("lcc", 64, "code", "code"),
    ("repobench-p", 64, "code", "code"),
]
_NO_CHAT_TEMPLATE = {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"}

OFFICIAL_TASKS: tuple[str, ...] = tuple(row[0] for row in _OFFICIAL)

TASKS: dict[str, TaskSpec] = {
    name: TaskSpec(
        name=name,
        metric=metrics.TASK_METRICS[name],
        max_new_tokens=max_new,
        prompt=_PROMPTS[name],
        language=lang,
        category=category,
        chat_template=name not in _NO_CHAT_TEMPLATE,
        first_line_only=name in metrics.FIRST_LINE_TASKS,
        stop_on_newline=name == "samsum",
    )
    for name, max_new, lang, category in _OFFICIAL
}


def register_task(
    spec: TaskSpec, metric_fn: Callable[..., float] | None = None, *, overwrite: bool = False
) -> TaskSpec:
    """Add a task to :data:`TASKS` (and to the metric lookup, so ``metrics.score(name, ...)`` works).

    ``metric_fn(prediction, ground_truth, all_classes=None) -> [0, 1]``, if given, is registered
    under ``spec.metric``; otherwise ``spec.metric`` must already be a registered metric.
    """
    if spec.name in TASKS and TASKS[spec.name] != spec and not overwrite:
        raise ValueError(f"task {spec.name!r} is already registered; pass overwrite=True to replace it")
    if metric_fn is not None:
        metrics.register_metric(spec.metric, metric_fn, overwrite=overwrite)
    elif spec.metric not in metrics.METRICS:
        raise ValueError(f"task {spec.name!r}: unknown metric {spec.metric!r}. Known: "
                         f"{', '.join(sorted(metrics.METRICS))}; or pass metric_fn= to register it.")
    TASKS[spec.name] = spec
    metrics.TASK_METRICS[spec.name] = spec.metric
    if spec.first_line_only:
        metrics.FIRST_LINE_TASKS.add(spec.name)
    else:
        metrics.FIRST_LINE_TASKS.discard(spec.name)
    return spec


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The spec of a task; ``{task}_e`` (LongBench-E) gives the spec of ``{task}``."""
    if isinstance(name, TaskSpec):
        return name
    if name in TASKS:
        return TASKS[name]
    if name.endswith("_e") and name[:-2] in TASKS:
        return TASKS[name[:-2]]
    raise ValueError(f"unknown LongBench task {name!r}. Known tasks: {', '.join(TASKS)} "
                     "(add '_e' for LongBench-E; add your own with register_task()).")


# --------------------------------------------------------------------------- loading

def _check_example(example: Any, spec: TaskSpec, where: str) -> dict[str, Any]:
    """Validate one record and fill the optional fields; ``where`` is e.g. 'file.jsonl:12'."""
    if not isinstance(example, dict):
        raise LongBenchDataError(f"{where}: expected a JSON object, got {type(example).__name__}")
    missing = [f for f in REQUIRED_FIELDS if f not in example]
    if missing:
        raise LongBenchDataError(
            f"{where}: example lacks required field(s) {missing} (has {sorted(example)}). "
            f"Every LongBench line needs {list(REQUIRED_FIELDS)}."
        )
    for field in ("input", "context"):
        if not isinstance(example[field], str):
            raise LongBenchDataError(
                f"{where}: field {field!r} must be a string, got {type(example[field]).__name__}")
    answers = example["answers"]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise LongBenchDataError(
            f"{where}: field 'answers' must be a non-empty list of strings, got {answers!r:.80}")
    if spec.metric == "classification" and not example.get("all_classes"):
        raise LongBenchDataError(f"{where}: task {spec.name!r} is scored by classification and needs "
                                 "a non-empty 'all_classes' list")
    for field in ("length", "dataset", "language", "all_classes", "_id"):
        example.setdefault(field, None)
    return example


def _read_jsonl(path: Path, spec: TaskSpec, limit: int | None) -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and len(examples) >= limit:
                break
            if not line.strip():
                continue  # tolerate blank lines (e.g. a trailing newline)
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise LongBenchDataError(
                    f"{path}:{lineno}: not valid JSON ({err.msg}, column {err.colno}). Each line must "
                    "be one JSON object: fix that line or download the file again."
                ) from None
            examples.append(_check_example(record, spec, f"{path}:{lineno}"))
    if not examples and limit != 0:
        raise LongBenchDataError(f"{path} has no examples (the file is empty). "
                                 f"Download it again ({DATA_URL}).")
    return examples


def _load_from_hub(name: str, split: str, limit: int | None, spec: TaskSpec) -> list[dict[str, Any]]:
    """Read a task through `datasets` (needs the network; raises on any failure)."""
    import datasets  # optional dependency, only for users who are online

    try:
        data = datasets.load_dataset(HF_DATASET_ID, name, split=split, trust_remote_code=True)
    except TypeError:  # newer `datasets` dropped trust_remote_code
        data = datasets.load_dataset(HF_DATASET_ID, name, split=split)
    n = len(data) if limit is None else min(limit, len(data))
    return [_check_example(dict(data[i]), spec, f"{HF_DATASET_ID}/{name}[{i}]") for i in range(n)]


def _importable(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


def load_task(
    name: str,
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """A task's examples as dicts: input, context, answers, length, dataset, language, all_classes, _id.

    Reads ``{data_dir}/{name}.jsonl`` (or ``{data_dir}/data/{name}.jsonl``, as unzipped);
    ``data_dir`` defaults to ``$LONGBENCH_DIR``. Only when no file is found, and the ``datasets``
    package is installed and the hub is not switched off, it tries ``THUDM/LongBench`` on the hub.
    ``limit`` keeps the first examples only.
    """
    spec = get_task(name)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    data_dir = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    looked: list[Path] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        looked = [root / f"{name}.jsonl", root / "data" / f"{name}.jsonl"]
        for path in looked:
            if path.is_file():
                return _read_jsonl(path, spec, limit)

    hub_note = "the `datasets` package is not installed"
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if offline:
        hub_note = "the hub is switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
    elif "datasets" in sys.modules or _importable("datasets"):
        try:
            return _load_from_hub(name, split, limit, spec)
        except LongBenchDataError:
            raise
        except Exception as err:  # network, auth or format problems: report them with the fix below
            hub_note = f"loading {HF_DATASET_ID!r} from the hub failed: {type(err).__name__}: {err}"
    where = (", ".join(str(p) for p in looked) if looked
             else f"nowhere (no data_dir given and ${DATA_DIR_ENV} is unset)")
    raise FileNotFoundError(
        f"LongBench task {name!r}: no data file. Looked in {where}; {hub_note}. "
        f"Download {DATA_URL}, unzip it and pass data_dir='<unzipped>/data' (or set ${DATA_DIR_ENV})."
    )


# --------------------------------------------------------------------------- prompts, truncation, score

def build_prompt(spec: TaskSpec | str, example: dict[str, Any]) -> str:
    """Fill the task's template with the example's ``context`` and ``input``."""
    spec = get_task(spec)
    try:
        return spec.prompt.format(context=example["context"], input=example["input"])
    except KeyError as err:
        raise LongBenchDataError(
            f"task {spec.name!r}: example lacks field {err.args[0]!r} needed by the prompt") from None


T = TypeVar("T")


def truncate_middle(token_ids: T, max_len: int) -> T:
    """Keep the first and last ``max_len // 2`` tokens if the sequence is longer than ``max_len``.

    As LongBench does: the instructions sit at both ends of the prompt, so the middle is cut.
    Works on lists/tuples (returns a list) and on torch/numpy arrays (cut along the last axis).
    """
    if max_len <= 0:
        raise ValueError(f"max_len must be positive, got {max_len}")
    n = token_ids.shape[-1] if hasattr(token_ids, "shape") else len(token_ids)  # type: ignore
    if n <= max_len:
        return token_ids
    half = max_len // 2  # an odd max_len keeps max_len - 1 tokens, as the official code does
    if isinstance(token_ids, (list, tuple)):
        return list(token_ids[:half]) + list(token_ids[n - half:])  # type: ignore[return-value]
    head, tail = token_ids[..., :half], token_ids[..., n - half:]  # type: ignore[index]
    torch = sys.modules.get("torch")  # a tensor implies torch is loaded already
    if torch is not None and isinstance(token_ids, torch.Tensor):
        return torch.cat([head, tail], dim=-1)
    import numpy as np

    return np.concatenate([head, tail], axis=-1)  # type: ignore[return-value]


def score_examples(
    task: TaskSpec | str, predictions: Sequence[str], examples: Sequence[dict[str, Any]]
) -> float:
    """Score predictions (one per example, in order) against the examples' answers, 0..100."""
    spec = get_task(task)
    all_classes = next((ex.get("all_classes") for ex in examples if ex.get("all_classes")), None)
    return metrics.score(
        spec.metric, predictions, [ex["answers"] for ex in examples], all_classes,
        first_line_only=spec.first_line_only,
    )


def text_task(name: str) -> TextTask:
    """The registry's view of a LongBench task: the first ``n`` examples of ``{data_dir}/{name}.jsonl``."""
    spec = get_task(name)

    def make(tokenizer, n: int, seed: int, context_tokens: int, data_dir: str | None) -> list[dict]:
        return load_task(name, data_dir=data_dir, limit=n)

    return TextTask(name=name, make_examples=make, template=spec.prompt, metric=spec.metric,
                    max_new_tokens=spec.max_new_tokens, chat=spec.chat_template, first_line_only=spec.first_line_only,
                    source="files", family="longbench", description=spec.category)
