"""Every figure of namm.plots writes a PNG atomically from plain numbers."""

from __future__ import annotations

from namm import plots


def test_each_plot_writes_a_png(tmp_path):
    out = [
        plots.save_heatmap([[0.1, 0.9], [float("nan"), 0.5]], tmp_path / "h.png", "t", "x", "y", "kept"),
        plots.save_bars(tmp_path / "b.png", ["0", "1", "2"], {"kept": [0.2, 0.5, 1.0], "sinks": [0.0, 1.0, 0.5]},
                        title="t", xlabel="layer"),
        plots.score_vs_cache([{"name": "full", "mean_cache_fraction": 1.0, "mean_score": 50.0},
                              {"name": "h2o", "mean_cache_fraction": 0.4, "mean_score": 30.0}], tmp_path / "s.png"),
    ]
    for p in out:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["b.png", "h.png", "s.png"]  # no temp files left
