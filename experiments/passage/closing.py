"""Is passage_retrieval hard for the zoo LM because the label comes BEFORE the quoted line?

    python experiments/passage/closing.py zeroshot OUT [N]    # shipped LM on both formats, 1k tokens, N per format
    python experiments/passage/closing.py finetune OUT STEPS  # fine-tune on the closing format only
    python experiments/passage/closing.py long OUT            # 1000 steps (512 then 1024 tokens), 15% text rows
    python experiments/passage/closing.py short OUT           # few paragraphs first: ~2 -> 4 -> 6, label accuracy
    python experiments/passage/closing.py induction OUT       # no question: does the LM copy the label after the line?

The shipped format is "Paragraph k:\\n<text>" and the cue is a line from <text>: to answer, the model has
to find the line and then look BACK to the nearest header. kv_retrieval, which the LM solves, only ever
copies what comes AFTER the match. The "closing" format ends every paragraph with "(end of Paragraph k)"
and quotes the paragraph's LAST line, so the label sits right after the match, as in kv_retrieval.
An experiment: the variant is registered as its own task, ``passage_retrieval_closing`` (built from the zoo's
public building blocks), beside the shipped one. Findings: results/passage-closing-2026-11-26/README.md.
"""
import json
import sys
from pathlib import Path

from namm import models
from namm.tasks import zoo as zt
from namm.tasks.corpus import HELDOUT, TRAIN, default_corpus

CLOSING = "passage_retrieval_closing"


def closing_maker(pool, rng, target, u):
    """The shipped passage maker with a trailing label on every paragraph and the last line as the cue."""
    cands = zt.passage_candidates(pool, rng, target, label_tokens=14)  # header + trailing label
    if not cands:
        return None
    last = cands[0][0].split("\n")[-1].strip()
    if last not in zt.cue_lines(cands[0][0]):
        return None
    needle, cue = cands[0], last
    others = [c for c in cands[1:] if cue not in c[0]]

    def build(budget):
        order, k = zt.passage_order(needle, others, budget, u)
        blocks = [f"Paragraph {j + 1}:\n{text}\n(end of Paragraph {j + 1})" for j, (text, _, _) in enumerate(order)]
        pos = sum(len(b) + 2 for b in blocks[:k])
        return {"context": "\n\n".join(blocks), "needle": pos, "answer": f"Paragraph {k + 1}",
                "doc_ids": {d for _, _, d in order}}

    got = zt.fit_to_tokens(pool, build, target)
    if got is None or got["context"].count(cue) != 1:
        return None
    return {**got, "input": f"Which paragraph contains the following line?\n{cue}",
            "answers": [got.pop("answer")]}


def short_curriculum(out, phases=((200, 300), (350, 200), (500, 200)), batch=16, lr=1e-3):
    """Fine-tune on closing rows with FEW paragraphs first (train-lm drops rows under ~256 tokens, so its
    stages cannot start this small): contexts of 200 / 350 / 500 tokens hold ~2 / 4 / 6 paragraphs of
    ~64-78 tokens (chance 0.48 / 0.25 measured). Loss = prompt LM loss + 5 x answer loss; logs the greedy label accuracy
    against chance."""
    import random

    import torch

    torch.manual_seed(0)
    torch.set_num_threads(2)
    model, tok = models.load("zoo")
    model.float().train()
    pool = zt.Pool(tok, zt.select_docs(default_corpus(), TRAIN))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng, curve, step = random.Random(0), [], 0
    for target, steps in phases:
        for _ in range(steps):
            rows, n_par = [], []
            while len(rows) < batch:
                ex = closing_maker(pool, random.Random(rng.getrandbits(64)), target, rng.random())
                if ex is None:
                    continue
                p = tok(zt.format_prompt(CLOSING, ex), add_special_tokens=False)["input_ids"]
                a = tok(ex["answers"][0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                rows.append((p, a))
                n_par.append(ex["context"].count("(end of Paragraph "))
            width = max(len(p) + len(a) for p, a in rows)
            ids = torch.full((batch, width), tok.eos_token_id)
            in_prompt, in_answer = torch.zeros(batch, width), torch.zeros(batch, width)
            label_at = []
            for i, (p, a) in enumerate(rows):  # right-padded; pads carry no weight
                ids[i, : len(p) + len(a)] = torch.tensor(p + a)
                in_prompt[i, : len(p)] = 1.0
                in_answer[i, len(p): len(p) + len(a)] = 1.0
                label_at.append(len(p) + len(a) - 2)  # the number token, before eos
            logits = model(input_ids=ids).logits[:, :-1]
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                   reduction="none").view(batch, -1)
            # as train-lm: LM loss on the prompt + 5 x the mean loss of the answer tokens
            loss = ((ce * in_prompt[:, 1:]).sum() / in_prompt[:, 1:].sum()
                    + 5.0 * (ce * in_answer[:, 1:]).sum() / in_answer[:, 1:].sum())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                hit = [float(logits[i, j - 1].argmax() == ids[i, j]) for i, j in enumerate(label_at)]
            curve.append({"step": step, "target": target, "loss": loss.item(),
                          "label_acc": sum(hit) / batch, "chance": sum(1 / k for k in n_par) / batch})
            step += 1
            if step % 20 == 0:
                last = curve[-20:]
                print(f"step {step} target {target}: label acc {sum(c['label_acc'] for c in last) / 20:.3f} "
                      f"chance {sum(c['chance'] for c in last) / 20:.3f} loss {loss.item():.3f}", flush=True)
                (out / "curve_short.json").write_text(json.dumps(curve))
    model.save_pretrained(out / "model")


def induction_probe(out, n=40):
    """The easiest form of the task: the held-out closing context, then the quoted line again and
    "(end of Paragraph": the next token is the label, one plain induction copy away. Greedy accuracy."""
    import random

    import torch

    model, tok = models.load("zoo")
    model.float().eval()
    pool = zt.Pool(tok, zt.select_docs(default_corpus(), HELDOUT))
    res = {}
    for target in (200, 500, 1000):
        rng, hits, chance, done = random.Random(1), 0, 0.0, 0
        while done < n:
            ex = closing_maker(pool, random.Random(rng.getrandbits(64)), target, rng.random())
            if ex is None:
                continue
            cue = ex["input"].split("\n", 1)[1]
            ids = tok(ex["context"] + "\n\n" + cue + "\n(end of Paragraph", add_special_tokens=False,
                      return_tensors="pt")["input_ids"]
            with torch.no_grad():
                nxt = model(input_ids=ids).logits[0, -1].argmax().item()
            hits += nxt == tok(ex["answers"][0], add_special_tokens=False)["input_ids"][-1]
            chance += 1 / ex["context"].count("(end of Paragraph ")
            done += 1
        res[target] = {"accuracy": hits / n, "chance": round(chance / n, 3), "n": n}
        print(target, res[target], flush=True)
    (out / "induction.json").write_text(json.dumps(res, indent=1))


def use_closing():
    """Register the variant (same template, length and metric as the shipped passage task)."""
    p = zt.ZOO_TASKS["passage_retrieval"]
    zt.register_zoo_task(zt.ZooTask(CLOSING, closing_maker, p.prompt, p.max_new_tokens, p.metric))


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    if mode == "zeroshot":
        from namm.evaluation.text import score_task, task_examples

        n = int(sys.argv[3]) if len(sys.argv) > 3 else 16
        model, tok = models.load("zoo")
        use_closing()
        res = {}
        for fmt, task in (("shipped", "passage_retrieval"), ("closing", CLOSING)):
            exs = task_examples(tok, task, n, seed=500, context_tokens=1024)
            r = score_task(model, tok, task, exs, policy=None, batch_size=4)
            res[fmt] = {"score": r["score"], "n": n, "predictions": r["predictions"][:8]}
            print(fmt, r["score"], r["predictions"][:8], flush=True)
        (out / "zeroshot.json").write_text(json.dumps(res, indent=1))
    elif mode == "finetune":
        from namm.models.zoo import DEFAULT_LM
        from namm.zoo.lm import LMTrainConfig, train_lm

        use_closing()
        train_lm(LMTrainConfig(out=str(out), init_from=str(DEFAULT_LM), tasks=CLOSING,
                               task_fraction=1.0, answer_weight=5.0, stages=[(512, 8, int(sys.argv[3]))], lr=1e-3,
                               warmup=20, threads=2, eval_examples=0, checkpoint_minutes=2))
    elif mode == "long":
        # 512-token rows hold 5-6 paragraphs (train-lm drops a row whose prompt + answer overflows it, so
        # 256-token rows would hold no task); 15% plain-text rows keep the language model exercised.
        from namm.models.zoo import DEFAULT_LM
        from namm.zoo.lm import LMTrainConfig, train_lm

        use_closing()
        train_lm(LMTrainConfig(out=str(out), init_from=str(DEFAULT_LM), tasks=CLOSING,
                               task_fraction=0.85, answer_weight=5.0, lr=1e-3, warmup=20, threads=2,
                               stages=[(512, 8, 700), (1024, 4, 300)],
                               eval_examples=0, checkpoint_minutes=5))
    elif mode == "short":
        short_curriculum(out)
    elif mode == "induction":
        induction_probe(out)
    else:
        sys.exit(f"mode {mode!r}: use 'zeroshot', 'finetune', 'long', 'short' or 'induction'")
