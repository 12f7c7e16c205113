"""Tasks for every modality, behind one Gymnasium-style registry (:mod:`namm.tasks.registry`).

    from namm import tasks
    task = tasks.make("kv_retrieval")                 # a TextTask
    exs = task.examples(tokenizer, n=64, seed=1000, context_tokens=2048)
    tasks.expand("ruler,lm_continuation")            # suite names -> task ids

Built-in ids (registered here, on import; entry points are imported only when a task is made):

* text: the language zoo (``kv_retrieval``, ``passage_retrieval``, ``code_completion``, ``qa_f1``;
  suite ``zoo``), the RULER-style suite (``ruler_niah_single`` ... ``ruler_qa``; suite ``ruler``),
  ``lm_continuation``, ``synthetic_recall``, the 21 LongBench tasks (suite ``longbench``; JSONL files);
* video: ``zoo-video``, ``zoo-video-open``, ``mlvu``, ``longvideobench``;
* rl: ``hopper``, ``halfcheetah``, ``walker2d`` (Gymnasium v5 MuJoCo, D4RL-normalised).
"""

from .base import RLTask, TextTask, VideoTask
from .registry import UnknownTaskError, expand, make, register, register_suite, spec, task_ids

__all__ = ["TextTask", "VideoTask", "RLTask", "register", "register_suite", "make", "spec", "task_ids", "expand",
           "UnknownTaskError"]

_ZOO = ("kv_retrieval", "passage_retrieval", "code_completion", "qa_f1")
for _name in _ZOO:
    register(_name, "namm.tasks.zoo:text_task", family="zoo", name=_name)
register_suite("zoo", list(_ZOO))

register("synthetic_recall", "namm.tasks.synthetic:text_task", family="synthetic")

_RULER = ("ruler_niah_single", "ruler_niah_multikey", "ruler_niah_multivalue", "ruler_niah_multiquery", "ruler_vt",
          "ruler_cwe", "ruler_fwe", "ruler_qa")
for _name in _RULER:
    register(_name, "namm.tasks.ruler:text_task", family="ruler", name=_name)
register_suite("ruler", list(_RULER))
register("lm_continuation", "namm.tasks.continuation:text_task", family="lm_continuation")


def _longbench_names() -> tuple[str, ...]:
    from .longbench import OFFICIAL_TASKS  # a plain table: cheap to import

    return OFFICIAL_TASKS


for _name in _longbench_names():
    register(_name, "namm.tasks.longbench:text_task", family="longbench", name=_name)
register_suite("longbench", list(_longbench_names()))

for _name in ("zoo-video", "zoo-video-open", "mlvu", "longvideobench"):
    register(_name, "namm.tasks.video_qa:video_task", kind="video", family="video", name=_name)

for _name in ("hopper", "halfcheetah", "walker2d"):
    register(_name, "namm.tasks.gym_envs:rl_task", kind="rl", family="d4rl", name=_name)
