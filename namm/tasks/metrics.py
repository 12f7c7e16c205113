"""LongBench (v1) metrics, re-implemented to give the official `eval.py` numbers.

Every per-example metric maps ``(prediction, ground_truth, all_classes)`` to a score in [0, 1].
:func:`score` turns a task's predictions into the reported number: the best score over each
example's ground truths, averaged and multiplied by 100.

Where the official code has quirks they are kept on purpose, so that numbers stay comparable
with published tables; each one is marked "official quirk" below. Known differences:

* Rouge-L matches ``rouge==1.0.1`` (``Rouge().get_scores(..., avg=True)["rouge-l"]["f"]``),
  except that the package hits Python's recursion limit (and LongBench then scores 0) when a
  single "sentence" pair is longer than ~1000 words in total; here such pairs are scored.
* Code similarity follows ``fuzzywuzzy.fuzz.ratio`` as LongBench installs it, i.e. without
  python-Levenshtein, which falls back to :class:`difflib.SequenceMatcher`.
  (``rapidfuzz.fuzz.ratio`` and python-Levenshtein use the Indel ratio, which differs slightly.)
* Chinese metrics need ``jieba`` (imported lazily), as the official ones do.
"""

from __future__ import annotations

import difflib
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

Classes = Sequence[str] | None  # a task's class names (classification tasks only)


class MetricFn(Protocol):
    """A per-example metric: ``fn(prediction, ground_truth, all_classes=None) -> [0, 1]``."""

    def __call__(self, prediction: str, ground_truth: str, all_classes: Classes = None) -> float: ...


# --------------------------------------------------------------------------- text helpers

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_EN_PUNCT = frozenset(string.punctuation)
# The official Chinese punctuation list (full-width forms, CJK brackets, dashes, quotes, "…").
_ZH_PUNCT = _EN_PUNCT | frozenset(
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
)


def normalize_answer(text: str) -> str:
    """English SQuAD-style normalisation: lowercase, drop punctuation and articles, squeeze spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _EN_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalize_zh_answer(text: str) -> str:
    """Chinese normalisation: lowercase, drop (CJK and ASCII) punctuation and all whitespace."""
    return "".join(ch for ch in text.lower() if ch not in _ZH_PUNCT and not ch.isspace())


def _jieba_cut(text: str) -> list[str]:
    """Segment Chinese text into words with jieba (precise mode, as the official metrics)."""
    try:
        import jieba  # lazy: ~0.6 s dictionary load, only needed for the Chinese tasks
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The Chinese LongBench metrics (multifieldqa_zh, dureader, vcsum) segment words with "
            "jieba, like the official ones: `pip install jieba`."
        ) from err
    return list(jieba.cut(text, cut_all=False))


def first_line(prediction: str) -> str:
    """The first line after leading newlines (official rule for trec/triviaqa/samsum/lsht)."""
    return prediction.lstrip("\n").split("\n")[0]


# --------------------------------------------------------------------------- QA F1

def token_f1(prediction: Sequence[str], ground_truth: Sequence[str]) -> float:
    """Bag-of-tokens F1 between two token lists (0 when nothing overlaps)."""
    same = sum((Counter(prediction) & Counter(ground_truth)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(ground_truth)
    return 2 * precision * recall / (precision + recall)


def qa_f1_score(prediction: str, ground_truth: str, all_classes: Classes = None) -> float:
    """Token F1 after English normalisation (narrativeqa, qasper, hotpotqa, triviaqa, ...)."""
    return token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def qa_f1_zh_score(prediction: str, ground_truth: str, all_classes: Classes = None) -> float:
    """Word F1 over jieba words, each normalised and empty ones dropped (multifieldqa_zh)."""

    def words(text: str) -> list[str]:
        return [w for w in map(normalize_zh_answer, _jieba_cut(text)) if w]

    return token_f1(words(prediction), words(ground_truth))


# --------------------------------------------------------------------------- Rouge-L

def _sentences(text: str) -> list[list[str]]:
    """Split like `rouge`: sentences on ".", words on single spaces after squeezing whitespace.

    A whitespace-only piece becomes the one-word sentence [""]; the package counts it, so do we.
    """
    return [" ".join(piece.split()).split(" ") for piece in text.split(".") if piece]


def _lcs_words(ref: list[str], hyp: list[str]) -> set[str]:
    """Words of one longest common subsequence, traced back with the package's tie-breaking."""
    n, m = len(ref), len(hyp)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        row, prev, r = table[i], table[i - 1], ref[i - 1]
        for j in range(1, m + 1):
            row[j] = prev[j - 1] + 1 if r == hyp[j - 1] else max(prev[j], row[j - 1])
    words, i, j = set(), n, m
    while i and j:
        if ref[i - 1] == hyp[j - 1]:
            words.add(ref[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return words


def rouge_l_f(hypothesis: str, reference: str) -> float:
    """Summary-level Rouge-L F of the `rouge` package (v1.0.1, default exclusive mode).

    Counts are over *distinct* words: with m (n) the distinct words of the reference (hypothesis)
    and U the distinct words in the union of the LCS of every (reference sentence, hypothesis
    sentence) pair, R = |U|/m, P = |U|/n, F = 2PR / (P + R + 1e-8). Case is kept.
    Raises ValueError when either text has no sentence (the package does too).
    """
    hyp, ref = _sentences(hypothesis), _sentences(reference)
    if not hyp or not ref:
        raise ValueError("Rouge-L needs at least one sentence on each side.")
    union: set[str] = set()
    for r in ref:
        for h in hyp:
            union |= _lcs_words(r, h)
    recall = len(union) / len({w for s in ref for w in s})
    precision = len(union) / len({w for s in hyp for w in s})
    return 2.0 * precision * recall / (precision + recall + 1e-8)


def rouge_score(prediction: str, ground_truth: str, all_classes: Classes = None) -> float:
    """Rouge-L F (gov_report, qmsum, multi_news, samsum); 0 where the package would raise."""
    try:
        return rouge_l_f(prediction, ground_truth)
    except ValueError:  # official: any exception from `rouge` scores 0 (e.g. empty prediction)
        return 0.0


def rouge_zh_score(prediction: str, ground_truth: str, all_classes: Classes = None) -> float:
    """Rouge-L F over jieba words joined by spaces (dureader, vcsum)."""
    return rouge_score(" ".join(_jieba_cut(prediction)), " ".join(_jieba_cut(ground_truth)))


# --------------------------------------------------------------------------- classification, counts, code

def classification_score(
    prediction: str, ground_truth: str, all_classes: Classes = None
) -> float:
    """1/k if the ground truth is among the k class names found in the prediction, else 0 (trec, lsht).

    Class names that are proper substrings of the ground truth are not counted against it.
    """
    if not all_classes:
        raise ValueError("classification_score needs all_classes (the task's list of class names).")
    found = [c for c in all_classes if c in prediction]
    kept, skip_next = [], False
    for name in found:
        # Official quirk: it removes from the list while iterating over it, so the item right
        # after a removed one is never checked. (Its difflib fallback for "no class found" is
        # unreachable, `list != 0` being always true, so none here either.)
        if not skip_next and name in ground_truth and name != ground_truth:
            skip_next = True
            continue
        kept.append(name)
        skip_next = False
    return 1.0 / len(kept) if ground_truth in kept else 0.0


def _number_share(prediction: str, target: str) -> float:
    """Share of the integers in the prediction that equal the target (0 if it has none)."""
    numbers = re.findall(r"\d+", prediction)
    return sum(n == target for n in numbers) / len(numbers) if numbers else 0.0


def count_score(prediction: str, ground_truth: str, all_classes: Classes = None) -> float:
    """passage_count: share of the numbers in the prediction equal to the true count."""
    return _number_share(prediction, str(ground_truth))


def _paragraph_id(ground_truth: str, pattern: str) -> str:
    match = re.search(pattern, ground_truth)
    if match is None:
        raise ValueError(f"ground truth {ground_truth!r} does not match {pattern!r}")
    return match.group(1)


def retrieval_score(prediction: str, ground_truth: str, all_classes: Classes = None) -> float:
    """passage_retrieval_en: share of the numbers in the prediction equal to N of "Paragraph N"."""
    return _number_share(prediction, _paragraph_id(ground_truth, r"Paragraph (\d+)"))


def retrieval_zh_score(prediction: str, ground_truth: str, all_classes: Classes = None) -> float:
    """passage_retrieval_zh: as :func:`retrieval_score`, with ground truths "段落N"."""
    return _number_share(prediction, _paragraph_id(ground_truth, r"段落(\d+)"))


def fuzz_ratio(a: str, b: str) -> int:
    """`fuzzywuzzy.fuzz.ratio` without python-Levenshtein: round(100 * difflib ratio), 0..100."""
    if a == b:
        return 100
    if not a or not b:
        return 0
    return int(round(100 * difflib.SequenceMatcher(None, a, b).ratio()))


def code_sim_score(prediction: str, ground_truth: str, all_classes: Classes = None) -> float:
    """Edit similarity of the first prediction line with no "`", "#" or "//" (lcc, repobench-p)."""
    lines = prediction.lstrip("\n").split("\n")
    line = next((s for s in lines if "`" not in s and "#" not in s and "//" not in s), "")
    return fuzz_ratio(line, ground_truth) / 100


def exact_contains_score(prediction: str, ground_truth: str, all_classes: Classes = None) -> float:
    """1.0 if the (stripped, case-folded) answer occurs in the prediction: the language zoo's copy tasks."""
    truth = ground_truth.strip().casefold()
    return float(bool(truth) and truth in prediction.casefold())


def string_match_score(prediction: str, ground_truth: str, all_classes: Classes = None) -> float:
    """RULER's string match: 1.0 if the expected string occurs in the prediction (case-insensitive). A task
    that expects several strings averages this over them (``TextTask.all_answers``: RULER's recall)."""
    truth = ground_truth.strip().casefold()
    return float(bool(truth) and truth in prediction.casefold())


# --------------------------------------------------------------------------- registries and scoring

METRICS: dict[str, MetricFn] = {
    "qa_f1": qa_f1_score,
    "qa_f1_zh": qa_f1_zh_score,
    "rouge": rouge_score,
    "rouge_zh": rouge_zh_score,
    "classification": classification_score,
    "retrieval": retrieval_score,
    "retrieval_zh": retrieval_zh_score,
    "count": count_score,
    "code_sim": code_sim_score,
    "edit_sim": code_sim_score,  # the language zoo's name for it
    "exact_contains": exact_contains_score,
    "string_match": string_match_score,
}

# Official dataset -> metric table; `namm.tasks.longbench.register_task` adds project tasks here.
TASK_METRICS: dict[str, str] = {
    **dict.fromkeys(["narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa",
                     "musique", "triviaqa"], "qa_f1"),
    "multifieldqa_zh": "qa_f1_zh",
    **dict.fromkeys(["gov_report", "qmsum", "multi_news", "samsum"], "rouge"),
    **dict.fromkeys(["dureader", "vcsum"], "rouge_zh"),
    **dict.fromkeys(["trec", "lsht"], "classification"),
    "passage_count": "count",
    "passage_retrieval_en": "retrieval",
    "passage_retrieval_zh": "retrieval_zh",
    **dict.fromkeys(["lcc", "repobench-p"], "code_sim"),
}

# Tasks whose predictions are cut to their first line before scoring (few-shot tasks).
FIRST_LINE_TASKS: set[str] = {"trec", "triviaqa", "samsum", "lsht"}


def register_metric(name: str, fn: Callable[..., float], *, overwrite: bool = False) -> None:
    """Make ``fn(prediction, ground_truth, all_classes=None) -> [0, 1]`` available as ``name``."""
    if not callable(fn):
        raise TypeError(f"metric {name!r} must be callable, got {type(fn).__name__}")
    if name in METRICS and METRICS[name] is not fn and not overwrite:
        raise ValueError(f"metric {name!r} is already registered; pass overwrite=True to replace it")
    METRICS[name] = fn


def get_metric(name: str) -> MetricFn:
    """The metric function registered as ``name``, or that of the task called ``name``."""
    key = TASK_METRICS.get(name, name)
    if key not in METRICS:
        raise ValueError(
            f"unknown metric or task {name!r}. Metrics: {', '.join(sorted(METRICS))}. "
            f"Tasks: {', '.join(sorted(TASK_METRICS))}. Add one with register_metric()."
        )
    return METRICS[key]


def example_scores(
    task_or_metric_name: str,
    predictions: Sequence[str],
    answers_list: Sequence[Sequence[str]],
    all_classes: Classes = None,
    *,
    first_line_only: bool | None = None,
) -> list[float]:
    """Per-example scores in 0..1: the best metric over each example's ground truths.

    ``task_or_metric_name`` is a task (official or registered) or a metric name. Predictions
    are cut to their first line for trec/triviaqa/samsum/lsht unless ``first_line_only`` says
    otherwise.
    """
    metric = get_metric(task_or_metric_name)
    if first_line_only is None:
        first_line_only = task_or_metric_name in FIRST_LINE_TASKS
    if len(predictions) != len(answers_list):
        raise ValueError(f"{len(predictions)} predictions but {len(answers_list)} answer lists")
    if not predictions:
        raise ValueError(f"no predictions to score for {task_or_metric_name!r}")
    out = []
    for i, (pred, truths) in enumerate(zip(predictions, answers_list)):
        if isinstance(truths, str) or not truths:
            raise ValueError(f"example {i}: answers must be a non-empty list of strings, got {truths!r}")
        if first_line_only:
            pred = first_line(pred)
        out.append(max(0.0, *(metric(pred, truth, all_classes=all_classes) for truth in truths)))
    return out


def score(
    task_or_metric_name: str,
    predictions: Sequence[str],
    answers_list: Sequence[Sequence[str]],
    all_classes: Classes = None,
    *,
    first_line_only: bool | None = None,
) -> float:
    """Task score in 0..100: the mean of :func:`example_scores`, x100. Not rounded (the official
    table rounds to 2 decimals)."""
    per = example_scores(task_or_metric_name, predictions, answers_list, all_classes, first_line_only=first_line_only)
    return 100.0 * sum(per) / len(per)
