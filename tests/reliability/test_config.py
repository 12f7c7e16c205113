"""The `namm evolve` config: YAML + dotted overrides, validated up front with errors that name the key."""

import math
from pathlib import Path

import pytest
import yaml

from namm.evolution.config import ConfigError, EvolveConfig, config_from_dict, dump_config, load_config

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "configs" / "evolve_paper.yaml"
TINY = ROOT / "configs" / "evolve_tiny.yaml"


def test_paper_config_loads_offline():
    cfg = load_config(PAPER)  # validation only: no model, no data, no network
    assert cfg.model.name == "meta-llama/Meta-Llama-3-8B"
    assert math.isclose(cfg.model.rope_theta, 500000 * 7 ** (128 / 126), rel_tol=1e-12)
    assert cfg.model.max_position_embeddings == 32768
    assert (cfg.namm.scorer, cfg.namm.mode, cfg.namm.n_up, cfg.namm.n_fft, cfg.namm.hop) == ("bam", "reference", 512, 32, 16)
    ev = cfg.evolution
    assert (ev.population, ev.elite_ratio, ev.sigma0, ev.mean0, ev.active) == (32, 0.5, 0.065, 0.0, True)
    assert [s.tasks for s in cfg.stages] == [
        ["passage_retrieval_en"], ["passage_retrieval_en", "dureader"],
        ["passage_retrieval_en", "dureader", "narrativeqa"]]
    assert all(cfg.data[t].samples == 64 and cfg.data[t].source == "longbench" for t in cfg.stages[-1].tasks)
    assert not cfg.run.batched_population and cfg.run.checkpoint_every == 1


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("evolve_*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_evolve_config_validates_offline(path):
    raw = yaml.safe_load(path.read_text())
    warm = (raw.get("evolution") or {}).get("init_from") or ""
    # a warm start from an earlier run's output (runs/...) exists only after that run
    cfg = load_config(path, ["evolution.init_from=null"] if warm.startswith("runs/") else [])  # no model, no data
    if "smollm2" in path.stem:  # evolved where no evaluation reads: the corpus's train split
        assert all(cfg.data[t].split == "train" for st in cfg.stages for t in st.tasks)
        assert cfg.evolution.cache_target == 0.5 and "ruler_qa" not in {t for st in cfg.stages for t in st.tasks}


def test_tiny_config_and_round_trip(tmp_path):
    cfg = load_config(TINY)
    assert cfg.model.name == "tiny-random" and cfg.namm.mode == "ragged" and cfg.stages[0].tasks == ["synthetic_recall"]
    (tmp_path / "c.yaml").write_text(dump_config(cfg))  # the resolved config reloads to the same value
    assert load_config(tmp_path / "c.yaml") == cfg
    assert yaml.safe_load(dump_config(cfg)) == cfg.to_dict()


def test_overrides_are_typed_and_dotted():
    cfg = load_config(PAPER, ["evolution.population=8", "run.batch_size=4", "evolution.active=false",
                              "stages.1.generations=5", "data.dureader.samples=3", "model.rope_theta=null",
                              "stages.0.tasks=[passage_retrieval_en, narrativeqa]"])
    assert cfg.evolution.population == 8 and cfg.run.batch_size == 4 and cfg.evolution.active is False
    assert cfg.stages[1].generations == 5 and cfg.model.rope_theta is None
    assert cfg.stages[0].tasks == ["passage_retrieval_en", "narrativeqa"]
    # YAML anchors are un-shared: changing dureader does not change the tasks that alias the same block
    assert cfg.data["dureader"].samples == 3 and cfg.data["narrativeqa"].samples == 64
    assert isinstance(load_config(PAPER, ["evolution.sigma0=1"]).evolution.sigma0, float)


@pytest.mark.parametrize("override, message", [
    ("evolution.popsize=8", "unknown key 'evolution.popsize' (did you mean 'evolution.population'?)"),
    ("evolutoin.population=8", "unknown key 'evolutoin' (did you mean 'evolution'?)"),
    ("data.dureader.sample=3", "unknown key 'data.dureader.sample' (did you mean 'data.dureader.samples'?)"),
    ("run.zzz=1", "unknown key 'run.zzz' (allowed keys under 'run': out, batched_population"),
    ("evolution.population=1", "evolution.population: invalid value 1; use at least 2"),
    ("evolution.population=eight", "evolution.population: invalid value 'eight'; expected an integer"),
    ("evolution.elite_ratio=1.5", "evolution.elite_ratio: invalid value 1.5; use a ratio in (0, 1]"),
    ("evolution.sigma0=-0.1", "evolution.sigma0: invalid value -0.1"),
    ("evolution.active=yes please", "evolution.active: invalid value 'yes please'; expected true or false"),
    ("namm.mode=fast", "namm.mode: invalid value 'fast'; use one of 'reference', 'ragged'"),
    ("namm.n_up=500", "namm.n_up: invalid value 500; must be a multiple of namm.hop (= 16)"),
    ("namm.pool=4", "namm.pool: invalid value 4; use an odd window (1 = off)"),
    ("model.dtype=fp8", "model.dtype: invalid value 'fp8'; use one of 'float32', 'bfloat16', 'float16'"),
    ("model.device=gpu", "model.device: invalid value 'gpu'"),
    ("run.checkpoint_every=0", "run.checkpoint_every: invalid value 0"),
    ("data.narrativeqa.max_prompt_tokens=1", "data.narrativeqa.max_prompt_tokens: invalid value 1"),
    ("stages.0.tasks=[passage_retreival_en]",
     "unknown text task 'passage_retreival_en' (did you mean 'passage_retrieval_en'"),
    ("stages.0.tasks=[]", "stages[0].tasks: invalid value []; list at least one task"),
    ("stages.7.generations=3", "'stages.7' is not an index of a 3-item list"),
    ("run.batched_population=true", "set namm.mode=ragged or run.batched_population=false"),
    ("evolution.population", "expected key=value"),
])
def test_errors_name_the_key_the_value_and_the_fix(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(PAPER, [override])
    assert message in str(e.value)
    assert str(PAPER) in str(e.value)  # and the file


def test_structural_errors():
    with pytest.raises(ConfigError, match="stages: invalid value \\[\\]; list at least one stage"):
        config_from_dict({})
    with pytest.raises(ConfigError, match="task 'narrativeqa' has no 'data.narrativeqa' entry"):
        config_from_dict({"stages": [{"tasks": ["narrativeqa"], "generations": 2}]})
    with pytest.raises(ConfigError, match="stages\\[0\\].generations: invalid value None; set the stage's generations"):
        config_from_dict({"stages": [{"tasks": ["narrativeqa"]}], "data": {"narrativeqa": {}}})
    cfg = config_from_dict({"stages": [{"tasks": ["narrativeqa"]}], "data": {"narrativeqa": None},
                            "evolution": {"generations": 4}})
    assert isinstance(cfg, EvolveConfig) and cfg.stage_generations(0) == 4
    with pytest.raises(ConfigError, match="not found"):
        load_config(ROOT / "configs" / "nope.yaml")
