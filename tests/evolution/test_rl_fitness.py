"""The fitness is injected: the same CMA-ES loop evolves a NAMM on Decision Transformer rollouts
(``modality: rl``), resumable like a language run. Uses the shipped zoo hopper DT, 20-step episodes."""

from __future__ import annotations

import numpy as np
import pytest

from namm.evolution import evolve, load_config
from namm.evolution.fitness import FITNESSES

pytestmark = pytest.mark.usefixtures("one_thread")

OVER = ["modality=rl", "model.name=dt-{env}-medium", "model.device=cpu", "namm.n_up=48", "namm.mode=ragged",
        "namm.hidden=4", "evolution.population=4", "evolution.eval_mean_every=0",
        "stages=[{tasks: [hopper], generations: 2}]", "data={hopper: {samples: 2, max_steps: 20}}",
        "run.progress=false", "run.plot=false"]


def test_rl_fitness_evolves_and_resumes(tmp_path):
    from pathlib import Path

    tiny = Path(__file__).resolve().parents[2] / "configs" / "evolve_tiny.yaml"
    assert FITNESSES["rl"].task_kind == "rl"
    straight = evolve(load_config(tiny, [*OVER, f"run.out={tmp_path / 'a'}"]))
    assert straight.generation == 2
    row = straight.history[0]
    assert row["tasks"] == ["hopper"] and len(row["fitness"]) == 4 and all(np.isfinite(row["fitness"]))
    assert 0 < row["cache_fraction_mean"] <= 1 and set(row["reference_scores"]) == {"hopper"}
    cfg = load_config(tiny, [*OVER, f"run.out={tmp_path / 'b'}"])
    evolve(cfg, stop_after=1)
    resumed = evolve(cfg, resume=True)
    assert [r["fitness"] for r in resumed.history] == [r["fitness"] for r in straight.history]
    assert np.array_equal(resumed.mean, straight.mean)


def test_rl_tasks_are_checked_against_the_rl_registry(tmp_path):
    from pathlib import Path

    from namm.config import ConfigError

    tiny = Path(__file__).resolve().parents[2] / "configs" / "evolve_tiny.yaml"
    with pytest.raises(ConfigError, match="unknown rl task 'kv_retrieval'"):
        load_config(tiny, [*OVER, "stages=[{tasks: [kv_retrieval], generations: 1}]", "data={kv_retrieval: {}}"])
