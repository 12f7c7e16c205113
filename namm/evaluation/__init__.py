"""Evaluation per modality: language (:mod:`.text`: tasks, scores, paired comparisons), video QA
(:mod:`.video`) and Gym rollouts of Decision Transformers (:mod:`.rl`). Each runs a policy through a
driver on a task and writes one results folder per policy."""
