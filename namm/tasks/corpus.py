"""Offline text corpus and byte-level BPE tokenizer for the testbed's own small LM.

The corpus is built from text that every machine with this project installed already has:
the Python standard library source and the installed site-packages (.py/.md/.rst/.txt).
Nothing is downloaded. Documents are split into train / held-out BY SOURCE FILE with a salted
hash of the document id, so the split of a file never depends on the seed or the size cap:
a file that is held out in one build is held out in every build on every machine.

    corpus = collect_corpus()                  # ~40 MB, a few seconds
    corpus.save("runs/corpus")                 # documents.jsonl + manifest.json
    tok = train_tokenizer(corpus)              # BPE on the train split only
    tok.save_pretrained("runs/tokenizer")      # AutoTokenizer.from_pretrained(...) offline

Command line: ``python -m namm.tasks.corpus OUT_DIR [--max-mb 40] [--vocab 4096]``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import random
import re
import sys
import sysconfig
import time
from pathlib import Path
from typing import Iterable, Iterator

from namm.io import write_text

__all__ = [
    "Document", "Corpus", "collect_corpus", "default_corpus", "corpus_roots", "split_of",
    "train_tokenizer", "SPECIAL_TOKENS", "TRAIN", "HELDOUT",
]

TRAIN, HELDOUT = "train", "heldout"
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
TEXT_EXTS = (".py", ".md", ".rst", ".txt")
# Fixed salt: the split must not move when the seed or the size cap changes.
_SPLIT_SALT = "namm-corpus-split-v1"
# Directories that hold metadata, caches or test data blobs rather than prose/code.
_SKIP_DIRS = {
    "__pycache__", "data", "testdata", "test_data", "tests_data", "fixtures", "mpl-data",
    "sample_data", "site-packages", "dist-packages", "node_modules", ".git", "bin",
}
_SKIP_DIR_SUFFIXES = (".dist-info", ".egg-info", ".data")
# Top-level packages (and single-file modules) installed since the zoo's corpus was fixed: the GGUF
# conversion of the real models and what it pulls in, the lint gate. Every zoo task instance and table
# was drawn from the corpus without them; leaving them out keeps it byte-identical (1898 documents at
# 24 MB on the 2-core box). Add a package here when the project starts depending on a new one.
_SKIP_PACKAGES = {"gguf", "accelerate", "requests", "urllib3", "certifi", "charset_normalizer", "psutil",
                  "mypy", "mypyc", "mypy_extensions", "librt", "ast_serialize", "pathspec", "ruff"}
_MAX_RAW_BYTES = 2_000_000  # larger files are generated tables / blobs, never read
_NON_ASCII, _DIGIT, _LETTER = re.compile(r"[^\x00-\x7f]"), re.compile(r"[0-9]"), re.compile(r"[A-Za-z]")


@dataclasses.dataclass(frozen=True)
class Document:
    """One source file. ``id`` is ``"origin:relative/path"`` and is stable across builds."""

    id: str
    text: str
    split: str

    @property
    def ext(self) -> str:
        return os.path.splitext(self.id)[1]


def split_of(doc_id: str, heldout_frac: float = 0.05) -> str:
    """Deterministic split of a document id (salted hash; independent of seed and cap)."""
    h = int.from_bytes(hashlib.sha256(f"{_SPLIT_SALT}:{doc_id}".encode()).digest()[:8], "big")
    return HELDOUT if h / 2.0**64 < heldout_frac else TRAIN


def corpus_roots() -> list[tuple[str, Path]]:
    """(origin, root) pairs: the stdlib source and every distinct site-packages directory."""
    paths = sysconfig.get_paths()
    roots: list[tuple[str, Path]] = [("stdlib", Path(paths["stdlib"]))]
    seen = {roots[0][1].resolve()}
    for key in ("purelib", "platlib"):
        p = Path(paths[key])
        if p.is_dir() and p.resolve() not in seen:
            seen.add(p.resolve())
            roots.append(("site", p))
    return roots


def _candidates(origin: str, root: Path) -> Iterator[tuple[str, Path]]:
    """Yield (doc_id, path) for the text files under root, in sorted (deterministic) order."""
    for dirpath, dirnames, filenames in os.walk(root):
        top = Path(dirpath) == root and origin == "site"
        dirnames[:] = sorted(d for d in dirnames
                             if d not in _SKIP_DIRS and not d.endswith(_SKIP_DIR_SUFFIXES)
                             and not d.startswith(".") and not (top and d in _SKIP_PACKAGES))
        for name in sorted(filenames):
            if not name.endswith(TEXT_EXTS) or (top and (name.rsplit(".", 1)[0] in _SKIP_PACKAGES
                                                         or name.startswith("__editable__"))):
                continue  # an editable install's finder is generated, and its size depends on the checkout path
            path = Path(dirpath) / name
            try:
                if path.is_symlink() or not 200 <= path.stat().st_size <= _MAX_RAW_BYTES:
                    continue
            except OSError:
                continue
            yield f"{origin}:{path.relative_to(root).as_posix()}", path


def _clean(raw: bytes, max_file_bytes: int) -> str | None:
    """Decode and quality-filter one file; None for binary, undecodable or data-like files."""
    if b"\x00" in raw[:8192]:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    if len(text) > max_file_bytes:  # cap at a line boundary, keep the head of the file
        cut = text.rfind("\n", 0, max_file_bytes)
        text = text[: cut + 1 if cut > 0 else max_file_bytes]
    n = len(text)
    lines = text.split("\n")
    if n < 200 or len(lines) < 5:
        return None
    # Data blobs: long lines (minified / tables), mostly digits, or mostly non-ASCII.
    if max(map(len, lines)) > 1000 or n / len(lines) > 120:
        return None
    non_ascii = 0 if text.isascii() else len(_NON_ASCII.findall(text))
    digits = len(_DIGIT.findall(text))
    letters = len(_LETTER.findall(text))
    if non_ascii > 0.03 * n or digits > 0.25 * n or letters < 0.3 * n:
        return None
    return text


@dataclasses.dataclass
class Corpus:
    """Documents plus a manifest describing how they were built."""

    docs: list[Document]
    manifest: dict = dataclasses.field(default_factory=dict)

    @property
    def train(self) -> list[Document]:
        return [d for d in self.docs if d.split == TRAIN]

    @property
    def heldout(self) -> list[Document]:
        return [d for d in self.docs if d.split == HELDOUT]

    def __len__(self) -> int:
        return len(self.docs)

    def fingerprint(self, split: str | None = HELDOUT) -> str:
        """12 hex digits naming the documents of ``split`` (ids and texts): two runs drew their
        instances from the same documents iff their fingerprints agree."""
        h = hashlib.sha1()
        for d in self.docs:
            if split is None or d.split == split:
                h.update(f"{d.id}\0{hashlib.sha1(d.text.encode()).hexdigest()}\n".encode())
        return h.hexdigest()[:12]

    def stats(self) -> dict:
        """Counts and UTF-8 bytes per split and per origin."""
        out: dict = {"files": len(self.docs), "bytes": 0, "splits": {}, "origins": {}}
        for d in self.docs:
            b = len(d.text.encode("utf-8"))
            out["bytes"] += b
            for key, name in (("splits", d.split), ("origins", d.id.split(":", 1)[0])):
                slot = out[key].setdefault(name, {"files": 0, "bytes": 0})
                slot["files"] += 1
                slot["bytes"] += b
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``documents.jsonl`` and ``manifest.json`` (each atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_text(directory / "documents.jsonl",
                      (json.dumps(dataclasses.asdict(d), ensure_ascii=False) + "\n" for d in self.docs))
        manifest = {**self.manifest, **self.stats()}
        write_text(directory / "manifest.json", [json.dumps(manifest, indent=2) + "\n"])
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Corpus":
        directory = Path(directory)
        with open(directory / "documents.jsonl", encoding="utf-8") as f:
            docs = [Document(**json.loads(line)) for line in f if line.strip()]
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        return cls(docs, manifest)


def collect_corpus(max_bytes: int = 40_000_000, seed: int = 0, heldout_frac: float = 0.05,
                   max_file_bytes: int = 128_000, max_package_frac: float = 0.1,
                   roots: list[tuple[str, Path]] | None = None) -> Corpus:
    """Build the corpus: list candidates, visit them in a seeded order, keep clean unique ones.

    The seed only decides WHICH files fit under ``max_bytes`` (a seeded shuffle gives a mix of
    packages instead of the alphabetically first ones); documents are then sorted by id, so the
    result is fully deterministic for a given machine, seed and cap. Duplicate contents (vendored
    copies) are dropped by SHA-1, keeping the first in visiting order. No top-level package may
    take more than ``max_package_frac`` of the cap, so a few huge packages (or generated
    bindings) cannot crowd out the rest.
    """
    t0 = time.perf_counter()
    roots = corpus_roots() if roots is None else [(o, Path(r)) for o, r in roots]
    cands = [c for origin, root in roots if root.is_dir()
             for c in _candidates(origin, root)]
    order = sorted(cands, key=lambda c: hashlib.sha1(f"{seed}:{c[0]}".encode()).digest())
    seen: set[bytes] = set()
    per_package: dict[str, int] = {}
    package_cap = max(max_file_bytes, int(max_package_frac * max_bytes))
    docs: list[Document] = []
    total = skipped = dupes = 0
    for doc_id, path in order:
        if total >= max_bytes:
            break
        package = doc_id.split("/", 1)[0] if "/" in doc_id else doc_id.split(":", 1)[0]
        if per_package.get(package, 0) >= package_cap:
            continue
        try:
            text = _clean(path.read_bytes(), max_file_bytes)
        except OSError:
            text = None
        if text is None:
            skipped += 1
            continue
        digest = hashlib.sha1(text.encode("utf-8")).digest()
        if digest in seen:
            dupes += 1
            continue
        seen.add(digest)
        docs.append(Document(doc_id, text, split_of(doc_id, heldout_frac)))
        size = len(text.encode("utf-8"))
        total += size
        per_package[package] = per_package.get(package, 0) + size
    docs.sort(key=lambda d: d.id)
    manifest = {
        "max_bytes": max_bytes, "seed": seed, "heldout_frac": heldout_frac,
        "max_file_bytes": max_file_bytes,
        "max_package_frac": max_package_frac, "split_salt": _SPLIT_SALT,
        "sources": {origin: str(root) for origin, root in roots},
        "python_version": platform.python_version(), "platform": sys.platform,
        "candidates": len(cands), "skipped": skipped, "duplicates": dupes,
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    return Corpus(docs, manifest)


@functools.lru_cache(maxsize=1)
def default_corpus() -> Corpus:
    """The corpus the zoo tasks are drawn from (24 MB, seed 0), built once per process."""
    return collect_corpus(max_bytes=24_000_000)


def _training_texts(corpus: Corpus | Iterable[Document], seed: int,
                    max_bytes: int) -> list[str]:
    """Train-split texts in a seeded order, capped at ``max_bytes`` (keeps BPE training fast)."""
    docs = corpus.train if isinstance(corpus, Corpus) else [d for d in corpus if d.split == TRAIN]
    rng = random.Random(f"tokenizer:{seed}")
    docs = sorted(docs, key=lambda d: d.id)
    rng.shuffle(docs)
    texts, total = [], 0
    for d in docs:
        if total >= max_bytes:
            break
        texts.append(d.text)
        total += len(d.text)
    return texts


def train_tokenizer(corpus: Corpus | Iterable[Document], vocab_size: int = 4096, seed: int = 0,
                    max_train_bytes: int = 48_000_000, min_frequency: int = 2,
                    model_max_length: int = 65536):
    """Train a byte-level BPE tokenizer on the TRAIN split only; returns a PreTrainedTokenizerFast.

    Llama conventions: ``<s>`` is prepended to every encoded sequence (post-processor), ``</s>``
    ends documents, ``<pad>`` is a separate id (pad with attention_mask, never with eos), and
    ``<unk>`` exists for API completeness only (byte-level BPE never needs it). Spaces are kept
    verbatim (no cleanup on decode) because the text is mostly code.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [SPECIAL_TOKENS[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")]
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    texts = _training_texts(corpus, seed, max_train_bytes)
    if not texts:
        raise ValueError("no train-split documents to train the tokenizer on")
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length,
        clean_up_tokenization_spaces=False, padding_side="right", **SPECIAL_TOKENS)


def main(argv: list[str] | None = None) -> None:
    """Build the default corpus + tokenizer into OUT_DIR/corpus and OUT_DIR/tokenizer."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--max-mb", type=float, default=40.0)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    corpus = collect_corpus(max_bytes=int(args.max_mb * 1e6), seed=args.seed)
    corpus.save(out / "corpus")
    s = corpus.stats()
    print(f"corpus: {s['files']} files, {s['bytes'] / 1e6:.1f} MB in "
          f"{corpus.manifest['build_seconds']}s; splits {s['splits']}")
    t0 = time.perf_counter()
    tok = train_tokenizer(corpus, vocab_size=args.vocab, seed=args.seed)
    tok.save_pretrained(out / "tokenizer")
    print(f"tokenizer: vocab {len(tok)} in {time.perf_counter() - t0:.1f}s -> {out / 'tokenizer'}")


if __name__ == "__main__":
    main()
