"""Bad input as a new user types it: one clear line on stderr naming the problem and the fix, exit status
2, no traceback, nothing written."""

from __future__ import annotations

import pytest

from namm.checkpoint import SHIPPED_HEADS
from namm.cli import main

CASES = [
    (["eval", "--model", "meta-llama/Meta-Llama-3-8B", "--tasks", "kv_retrieval"], "hub is offline"),
    (["eval", "--model", "smollm2", "--tasks", "kv_retrieval"], "did you mean 'smollm2-135m'"),
    (["eval", "--tasks", "kv_retrieva"], "unknown text task 'kv_retrieva' (did you mean 'kv_retrieval'"),
    (["eval", "--context-tokens", "99999", "--tasks", "kv_retrieval"], "exceeds the model's 8192 positions"),
    (["eval", "--policy", "h2oo", "--tasks", "kv_retrieval"], "unknown policy 'h2oo'"),
    (["rollout", "--env", "hopperx", "--policy", "full"], "unknown rl task 'hopperx' (did you mean 'hopper'"),
    (["models", "fetch", "llama-9000"], "unknown real model 'llama-9000'"),
    (["table", "--baselines", "h2o,nope", "--tasks", "kv_retrieval"], "unknown policy 'nope'"),
    (["eval", "--whole-heads", "0.3", "--tasks", "kv_retrieval"], "no head ranking for 'zoo'"),
    (["table", "--whole-heads", "1.5", "--tasks", "kv_retrieval"], "whole-head fraction must be in (0, 1]"),
    (["eval", "--model", "tiny-random", "--whole-heads", "0.3", "--heads", str(SHIPPED_HEADS["gemma3-270m"]),
      "--context-tokens", "256", "--tasks", "kv_retrieval"], "whole heads [(5, 0)] are not (layer, KV head)s"),
    (["eval", "--heads", "h.json", "--tasks", "kv_retrieval"], "but no --whole-heads F says how many"),
    (["table", "--budget", "half", "--tasks", "kv_retrieval"], "--budget 'half': give a fraction like 0.4"),
    (["eval", "--layer-budgets", "0-x=1", "--tasks", "kv_retrieval"], "--layer-budgets item '0-x=1': write FIRST-LAST=B"),
    (["eval", "--model", "tiny-random", "--layer-budgets", "0=1 40=0.5", "--context-tokens", "256",
      "--tasks", "kv_retrieval"], "--layer-budgets names layers [40] this model does not manage"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[c[0][0] + ":" + c[1][:24] for c in CASES])
def test_one_line_naming_the_problem(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")] if argv[0] in ("eval", "rollout", "table") else argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
