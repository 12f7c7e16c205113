"""curves.png: passage_retrieval answer loss during the two CPU fine-tunes."""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

here = Path(__file__).parent
fig, ax = plt.subplots(figsize=(6, 3.5))
for name in ("curve_any_line.json", "curve_opening_line.json"):
    c = json.loads((here / name).read_text())
    steps = sorted(c["steps"], key=int)
    ax.plot([int(s) for s in steps], [c["steps"][s] for s in steps], label=c["variant"])
ax.set_xlabel("fine-tuning step (8 rows of 512 tokens)")
ax.set_ylabel("answer loss (per answer token)")
ax.set_title("zoo LM, passage_retrieval fine-tune on the CPU")
ax.legend()
fig.tight_layout()
fig.savefig(here / "curves.png", dpi=120)
