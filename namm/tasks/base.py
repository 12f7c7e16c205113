"""What a task is, per modality: the objects :func:`namm.tasks.make` returns.

* :class:`TextTask`: examples (LongBench-style dicts: ``context``, ``input``, ``answers``, ``_id``, ...),
  a prompt template, a generation length and a metric; or, for ``scoring="likelihood"`` tasks, a target
  whose teacher-forced log-likelihood is the score (``lm_continuation``).
* :class:`VideoTask`: ``(VideoQAItem, frames)`` pairs and their accuracy.
* :class:`RLTask`: a Gymnasium environment and its D4RL normalisation.

Tasks hold no model: evaluation and evolution feed their prompts through a driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

from . import metrics
from .corpus import HELDOUT  # the corpus split every evaluation reads

__all__ = ["TextTask", "VideoTask", "RLTask", "chat_wrap"]

# (tokenizer, n, seed, context_tokens, data_dir[, split]) -> examples; split is passed when it is not heldout
Examples = Callable[..., list[dict]]


def chat_wrap(tokenizer, text: str) -> str:
    """``text`` as one user turn of the tokenizer's chat template, ready for the assistant's answer; the
    text unchanged when the tokenizer has no template (a base model, the zoo LM)."""
    if not getattr(tokenizer, "chat_template", None):
        return text
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


@dataclass(frozen=True)
class TextTask:
    """A language task.

    Attributes:
        name: the registry id.
        make_examples: ``(tokenizer, n, seed, context_tokens, data_dir[, split]) -> [example]``; generated
            tasks size their contexts with the tokenizer, file-based ones (LongBench) read ``data_dir``;
            ``split``, passed only when it is not ``heldout``, is the corpus split documents come from.
        template: ``str.format`` template over ``{context}`` and ``{input}``; the answer follows it.
        answer_prefix: the start of the answer, written for the model after the template (after the
            assistant's turn opens, with a chat template), e.g. RULER's "The special magic number ... is";
            an example's own ``answer_prefix`` wins.
        metric: a name in :data:`namm.tasks.metrics.METRICS` (0..1 per example, best over the answers).
        max_new_tokens: generation length.
        chat: wrap the prompt in the model's chat template when it has one (instruct models).
        first_line_only: score only the first line of a prediction (LongBench's few-shot tasks).
        all_answers: every string in ``answers`` is expected (RULER): the score is the share found,
            instead of the best match over alternatives.
        scoring: ``"generate"`` (greedy answer, metric) or ``"likelihood"`` (the first answer is a target
            continuation; score = ``100 exp(-NLL)``, see :meth:`likelihood_score`).
        source: ``"generated"`` (seeded, ``n`` drawn) or ``"files"`` (read, the first ``n``).
        chance: what guessing scores (0..100), recorded with results; ``None`` when undefined.
        chance_fn: computes the chance level from the examples instead (e.g. 1 / paragraphs in view).
        provenance: what generated examples depend on beyond the seed (e.g. the corpus fingerprint),
            recorded with results.
        family: a group name (``ruler-niah``, ``zoo``, ``longbench``): held-out splits are by family.
        splits: the corpus splits the task can draw documents from. Evaluation always reads ``heldout``;
            evolving on the ``train`` split keeps every evaluated file unseen (the zoo LM trained on those
            files, a real model did not).
    """

    name: str
    make_examples: Examples
    template: str = "{context}\n\n{input}\n"
    answer_prefix: str = ""
    metric: str = "qa_f1"
    max_new_tokens: int = 32
    chat: bool = False
    first_line_only: bool = False
    all_answers: bool = False
    scoring: Literal["generate", "likelihood"] = "generate"
    source: Literal["generated", "files"] = "generated"
    chance: float | None = None
    chance_fn: Callable[[list[dict]], float] | None = None
    provenance: Callable[[], dict] | None = None
    family: str = ""
    splits: tuple[str, ...] = (HELDOUT,)
    description: str = field(default="", compare=False)

    def chance_level(self, examples: list[dict]) -> float | None:
        """What guessing scores on these examples (0..100), or ``None`` when it is not defined."""
        return self.chance_fn(examples) if self.chance_fn is not None else self.chance

    def examples(self, tokenizer, n: int, seed: int = 0, context_tokens: int = 2048,
                 data_dir: str | None = None, split: str = HELDOUT) -> list[dict]:
        """``n`` examples (generated with ``seed`` at ``context_tokens`` from the documents of ``split``, or
        the first ``n`` of the files)."""
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} cannot draw from the {split!r} split (it has {list(self.splits)}); "
                             f"use split: {self.splits[0]}")
        # a task that only reads held-out documents need not take a split argument
        extra = () if split == HELDOUT else (split,)
        out = self.make_examples(tokenizer, n, seed, context_tokens, data_dir, *extra)
        if not out:
            raise ValueError(f"task {self.name!r}: no examples (n={n})")
        return out

    def chat_wrapped(self, tokenizer) -> bool:
        """Whether :meth:`prompt` puts the text in ``tokenizer``'s chat template; such a prompt holds its special
        tokens already, so tokenizing it adds none (a plain prompt gets the tokenizer's BOS)."""
        return self.chat and tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))

    def prompt(self, example: dict, tokenizer=None) -> str:
        """The model input: the template filled in, in the chat template when ``chat`` and the tokenizer
        has one."""
        try:
            text = self.template.format(context=example["context"], input=example["input"])
        except KeyError as e:
            raise ValueError(f"task {self.name!r}: example lacks field {e.args[0]!r} needed by the prompt") from None
        prefix = example.get("answer_prefix", self.answer_prefix)
        if self.chat_wrapped(tokenizer):
            return chat_wrap(tokenizer, text) + prefix  # the answer starts inside the assistant's turn
        return f"{text}\n{prefix}" if prefix else text

    def target(self, example: dict) -> str:
        """What the model should write: the first gold answer (all of them, comma-separated, when every
        answer is expected); the likelihood tasks' continuation."""
        return ", ".join(example["answers"]) if self.all_answers else example["answers"][0]

    def example_scores(self, predictions: Sequence[str], examples: Sequence[dict]) -> list[float]:
        """Per-example scores in 0..1 (generation tasks)."""
        if self.all_answers:
            fn = metrics.get_metric(self.metric)
            return [sum(fn(p, a) for a in ex["answers"]) / len(ex["answers"]) for p, ex in zip(predictions, examples)]
        all_classes = next((ex.get("all_classes") for ex in examples if ex.get("all_classes")), None)
        return metrics.example_scores(self.metric, predictions, [ex["answers"] for ex in examples], all_classes,
                                      first_line_only=self.first_line_only)

    def score(self, predictions: Sequence[str], examples: Sequence[dict]) -> float:
        per = self.example_scores(predictions, examples)
        return 100.0 * sum(per) / len(per)

    @staticmethod
    def likelihood_score(mean_logprob: float) -> float:
        """A likelihood task's score in 0..100, higher is better: ``100 exp(-NLL)``, the geometric-mean
        probability of the target's tokens (NLL 1.51 nats/token -> 22.1). Results keep the raw ``nll`` too."""
        import math

        return 100.0 * math.exp(float(mean_logprob))


@dataclass(frozen=True)
class VideoTask:
    """Video QA: ``pairs(samples, seed, frames, size)`` -> ``[(VideoQAItem, frames [F, H, W, 3])]``;
    benchmark tasks read ``path`` (their annotation file), generated ones may keep only some ``kinds``."""

    name: str
    make_pairs: Callable[..., list]
    chance: float | None = None
    description: str = field(default="", compare=False)

    def pairs(self, samples: int, seed: int, frames: int, size: int = 32, path: str | None = None,
              kinds: Sequence[str] | None = None) -> list:
        return self.make_pairs(samples=samples, seed=seed, frames=frames, size=size, path=path, kinds=kinds)


@dataclass(frozen=True)
class RLTask:
    """A Gymnasium MuJoCo environment of a D4RL task, scored by D4RL normalised return."""

    name: str  # the D4RL key: hopper, halfcheetah, walker2d
    gym_id: str
    make_env_fn: Callable[..., Any]
    normalize_fn: Callable[[str, float], float]
    description: str = field(default="", compare=False)

    def make_env(self, **kwargs):
        """A fresh ``gymnasium.Env`` (``kwargs`` go to ``gymnasium.make``)."""
        return self.make_env_fn(self.name, **kwargs)

    def normalized_score(self, total_return: float) -> float:
        return self.normalize_fn(self.name, total_return)
