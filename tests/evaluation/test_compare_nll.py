"""`namm compare` on a likelihood task pairs the NLL too (nats per token, B - A)."""

from __future__ import annotations

import json

from namm.cli import main
from namm.evaluation.text import compare


def _write(folder, nlls):
    folder.mkdir(parents=True)
    recs = [{"task": "lm_continuation", "_id": str(i), "score": 2.718281828 ** -x, "nll": x, "cache_fraction": 0.5,
             "prediction": f"nll={x}", "answers": ["<256 tokens>"]} for i, x in enumerate(nlls)]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_nll_difference_and_interval(tmp_path, capsys):
    _write(tmp_path / "a", [1.0, 1.5, 2.0, 1.2])
    _write(tmp_path / "b", [1.1, 1.7, 2.1, 1.3])  # B is worse on every file
    t = compare(tmp_path / "a", tmp_path / "b", n_boot=500)["tasks"]["lm_continuation"]
    assert abs(t["nll_diff"] - 0.125) < 1e-9 and abs(t["a_nll"] - 1.425) < 1e-9
    assert 0.1 - 1e-9 <= t["nll_ci"][0] <= t["nll_diff"] <= t["nll_ci"][1] <= 0.2 + 1e-9
    assert t["diff"] < 0 and t["losses"] == 4
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--n-boot", "100"]) == 0
    assert "NLL (nats/token)" in capsys.readouterr().out
