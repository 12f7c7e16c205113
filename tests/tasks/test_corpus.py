"""Offline corpus: deterministic build, split by file, JSONL round trip, tiny BPE tokenizer."""
import json
import sysconfig
from pathlib import Path

import pytest

from namm.tasks.corpus import HELDOUT, TRAIN, Corpus, collect_corpus, split_of, train_tokenizer

STDLIB = [("stdlib", Path(sysconfig.get_paths()["stdlib"]))]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return collect_corpus(max_bytes=400_000, seed=0, heldout_frac=0.2, roots=STDLIB)


def test_build_is_deterministic_and_capped(corpus):
    again = collect_corpus(max_bytes=400_000, seed=0, heldout_frac=0.2, roots=STDLIB)
    assert [(d.id, d.text, d.split) for d in again.docs] == [(d.id, d.text, d.split) for d in corpus.docs]
    other = collect_corpus(max_bytes=400_000, seed=1, heldout_frac=0.2, roots=STDLIB)
    assert {d.id for d in other.docs} != {d.id for d in corpus.docs}
    stats = corpus.stats()
    assert 400_000 <= stats["bytes"] < 400_000 + 128_000 and stats["files"] == len(corpus)
    assert all(d.id.startswith("stdlib:") and d.id.endswith((".py", ".md", ".rst", ".txt"))
               for d in corpus.docs)
    assert len({d.text for d in corpus.docs}) == len(corpus)  # deduplicated by content


def test_split_is_by_file_and_disjoint(corpus):
    train, held = {d.id for d in corpus.train}, {d.id for d in corpus.heldout}
    assert train and held and not train & held and len(train) + len(held) == len(corpus)
    assert all(d.split == split_of(d.id, 0.2) for d in corpus.docs)
    # The split of a file does not depend on the seed or the cap.
    other = collect_corpus(max_bytes=200_000, seed=3, heldout_frac=0.2, roots=STDLIB)
    before = {d.id: d.split for d in corpus.docs}
    assert all(before.get(d.id, d.split) == d.split == split_of(d.id, 0.2) for d in other.docs)
    assert split_of("stdlib:os.py", 0.0) == TRAIN and split_of("stdlib:os.py", 1.0) == HELDOUT


def test_save_load_roundtrip(corpus, tmp_path):
    corpus.save(tmp_path)
    loaded = Corpus.load(tmp_path)
    assert loaded.docs == corpus.docs
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["files"] == len(corpus) and manifest["python_version"]
    assert manifest["splits"][HELDOUT]["files"] == len(corpus.heldout)
    assert "stdlib" in manifest["sources"]


def test_tokenizer_train_save_reload(corpus, tmp_path):
    from transformers import AutoTokenizer

    tok = train_tokenizer(corpus, vocab_size=512)
    assert len(tok) == 512
    tok.save_pretrained(tmp_path)
    re = AutoTokenizer.from_pretrained(tmp_path)
    text = "def f(x):\n    return x  + 1  # café\n"
    ids = re(text).input_ids
    assert ids == tok(text).input_ids and ids[0] == re.bos_token_id
    assert re.decode(ids, skip_special_tokens=True) == text  # byte-level: lossless, spaces kept
    specials = {re.bos_token, re.eos_token, re.pad_token, re.unk_token}
    assert specials == {"<s>", "</s>", "<pad>", "<unk>"}
    assert len({re.bos_token_id, re.eos_token_id, re.pad_token_id, re.unk_token_id}) == 4
    batch = re(["a", "abc def"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, -1].item() == re.pad_token_id


def test_tokenizer_uses_train_split_only(corpus):
    """Training on a corpus whose held-out part is junk must give the same tokenizer."""
    from namm.tasks.corpus import Document

    junk = [Document(d.id, "zzqx " * 500, d.split) for d in corpus.heldout]
    a = train_tokenizer(corpus, vocab_size=300)
    b = train_tokenizer(Corpus(corpus.train + junk), vocab_size=300)
    assert a.get_vocab() == b.get_vocab()
