"""glibc malloc tuning vs the default allocator: wall time of one CPU evolution generation.

    .venv/bin/python bench/bench_allocator.py                       # pop 16 x 2 kv prompts of 2k tokens
    .venv/bin/python bench/bench_allocator.py --context-tokens 1024 --samples 4

Why: on CPU the eager attention rows and BAM's masks are tensors of tens of MB (``[B, H, n_up, N]`` fp32).
glibc serves each from a fresh ``mmap`` and returns it on free, so every update page-faults and zeroes
them again (a profile showed as much system time as user time). The tuned setting keeps freed memory in the
heap (trim threshold, top pad) and asks for transparent huge pages on the rest (512x fewer faults).
The Makefile exports it; export it yourself when running ``namm`` directly on Linux.

Runs ``namm evolve`` for one generation (configs/evolve_zoo.yaml, zoo tasks) in a subprocess per
allocator setting, alternating, ``--repeats`` times; prints the median of the generation's ``time_s``
and the ratio, and writes JSON (default runs/bench/allocator.json). Linux + glibc >= 2.35 only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def makefile_tunables() -> str:
    """The ``GLIBC_TUNABLES`` the Makefile exports (one place to change them)."""
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("export GLIBC_TUNABLES"):
            return line.split("=", 1)[1].strip()
    raise SystemExit("bench_allocator: no 'export GLIBC_TUNABLES ?= ...' line in the Makefile")


def one_generation(env_extra: dict[str, str], args: argparse.Namespace) -> float:
    """Seconds of one evolution generation (its own ``time_s``, so start-up and loading do not count)."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env_extra})
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "namm.cli", "evolve", "--config", str(ROOT / "configs/evolve_zoo.yaml"),
               "--out", out, "model.device=cpu", "run.progress=false", "run.plot=false",
               f"evolution.population={args.population}", "evolution.eval_mean_every=0",
               f"data.kv_retrieval.samples={args.samples}", "stages.0.generations=1",
               f"data.kv_retrieval.context_tokens={args.context_tokens}"]
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        return json.loads((Path(out) / "log.jsonl").read_text().splitlines()[0])["time_s"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--samples", type=int, default=2, help="kv_retrieval prompts per member")
    ap.add_argument("--context-tokens", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "runs/bench/allocator.json"))
    args = ap.parse_args(argv)
    if platform.system() != "Linux":
        raise SystemExit("bench_allocator: GLIBC_TUNABLES only exists on Linux (glibc)")

    tuned = makefile_tunables()
    times: dict[str, list[float]] = {"default": [], "tuned": []}
    for _ in range(args.repeats):
        times["default"].append(one_generation({}, args))
        times["tuned"].append(one_generation({"GLIBC_TUNABLES": tuned}, args))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"machine": platform.platform(), "cpus": os.cpu_count(), "args": vars(args), "tunables": tuned,
              "seconds": times, "median_s": med, "speedup": med["default"] / med["tuned"]}
    print(f"one generation: default {med['default']:.1f} s, tuned {med['tuned']:.1f} s, "
          f"x{result['speedup']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
