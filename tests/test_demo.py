from namm.demo import run_demo


def test_demo_runs_every_policy(tmp_path):
    report = run_demo(out=tmp_path, prompt_len=192, new_tokens=32, n_up=64)
    assert set(report) == {"full", "h2o", "l2", "namm"}
    assert report["full"]["cache_fraction"] == 1.0
    assert report["h2o"]["cache_fraction"] <= 0.5 and report["l2"]["cache_fraction"] <= 0.5
    seen = [row[0] for row in report["h2o"]["curve"]]
    assert seen == [64, 128, 192]  # one update every n_up tokens seen (prefill and generation)
    assert (tmp_path / "demo.json").exists() and (tmp_path / "tiny-llama" / "config.json").exists()
