"""Paired NLL of a run on a prefix of a table's instances (e.g. sinks.py with fewer --samples) against
every policy folder of that table: mean NLL and cache on the shared instances, and A - B with a 95%
bootstrap interval. `namm compare` refuses runs that scored different instances; this pairs the subset.

    python experiments/real-models/pair_nll.py runs/real-table/smollm2-135m-1k namm_sinks
"""
import json
import random
import sys
from pathlib import Path

table, name = Path(sys.argv[1]), sys.argv[2]


def load(folder: Path) -> dict[str, dict]:
    rows = map(json.loads, (folder / "predictions.jsonl").open())
    return {r["_id"]: r for r in rows if r.get("nll") is not None}


a = load(table / name)
ids = list(a)


def mean(rows: dict, key: str) -> float:
    return sum(rows[i][key] for i in ids) / len(ids)


print(f"{name}: n {len(ids)}, NLL {mean(a, 'nll'):.3f}, cache {mean(a, 'cache_fraction'):.3f}")
for folder in sorted(p for p in table.iterdir() if (p / "predictions.jsonl").exists() and p.name != name):
    b = load(folder)
    if not set(ids) <= set(b):
        continue
    d = [a[i]["nll"] - b[i]["nll"] for i in ids]
    rng = random.Random(0)
    boot = sorted(sum(rng.choice(d) for _ in d) / len(d) for _ in range(10000))
    print(f"{folder.name:13s} NLL {mean(b, 'nll'):.3f} cache {mean(b, 'cache_fraction'):.3f}  "
          f"{name} - {folder.name} = {sum(d) / len(d):+.3f} [{boot[250]:+.3f}, {boot[9749]:+.3f}]")
