"""Collect sweep.sh's folders into one table: full-cache score (chance) per model, task and context.

    python experiments/real-models/sweep_table.py OUT   # writes OUT/sweep.md and OUT/sweep.csv
"""
import csv
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
rows = []
for f in sorted(out.glob("*-*/results.json")):
    model, ctx = f.parent.name.rsplit("-", 1)
    r = json.loads(f.read_text())
    for t, v in r["tasks"].items():
        rows.append({"model": model, "context": int(ctx), "task": t, "score": round(v["score"], 1),
                     "chance": None if v.get("chance") is None else round(v["chance"], 1),
                     "nll": None if v.get("nll") is None else round(v["nll"], 3), "n": v["n"]})
with open(out / "sweep.csv", "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
tasks = list(dict.fromkeys(r["task"] for r in rows))
short = [t.removeprefix("ruler_").replace("niah_", "niah ") for t in tasks]
lines = ["| model | context | n per task | " + " | ".join(short) + " |", "|---|---|---|" + "---|" * len(tasks)]
for (m, c) in dict.fromkeys((r["model"], r["context"]) for r in rows):
    cells = []
    for t in tasks:
        r = next((x for x in rows if (x["model"], x["context"], x["task"]) == (m, c, t)), None)
        if r is None:
            cells.append("")
        elif r["nll"] is not None:
            cells.append(f"{r['score']:.1f} (NLL {r['nll']:.2f})")
        else:
            cells.append(f"{r['score']:.1f}" + ("" if r["chance"] is None else f" ({r['chance']:.1f})"))
    n = max(x["n"] for x in rows if (x["model"], x["context"]) == (m, c))
    lines.append(f"| {m} | {c} | {n} | " + " | ".join(cells) + " |")
(out / "sweep.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
