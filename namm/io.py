"""Files the project writes: one temp-file-and-rename for all of them, so a crash never leaves a half-written
result, weights file or log behind.

Bottom of the house: imports nothing of ``namm``. Every layer above writes through these helpers.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = ["atomic_write", "write_text", "write_json", "write_jsonl", "read_jsonl", "write_csv"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename over ``path`` (parents are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results and weights are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text(path: str | os.PathLike, text: str | Iterable[str]) -> Path:
    """``text``: a string, or chunks written one after another (a large file is never joined in memory)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines([text] if isinstance(text, str) else text)

    return atomic_write(path, write)


def write_json(path: str | os.PathLike, doc: Any, indent: int | None = 1) -> Path:
    """JSON with ``default=str`` (paths, numpy scalars' reprs) so a result never fails to save."""
    return write_text(path, json.dumps(doc, indent=indent, default=str))


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """One JSON object per line."""
    return write_text(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The objects of a JSONL file; a bad line raises ``ValueError`` naming the file and line."""
    path = Path(path)
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i + 1}: not a JSON line ({e.msg})") from None
    return out


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any] | Sequence[Any]],
              fieldnames: Sequence[str] | None = None) -> Path:
    """Dict rows with ``fieldnames`` (extra keys ignored), or plain rows whose first is the header."""
    buf = io.StringIO()
    if fieldnames is not None:
        w = csv.DictWriter(buf, fieldnames=list(fieldnames), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)  # type: ignore[arg-type]
    else:
        csv.writer(buf).writerows(rows)  # type: ignore[arg-type]
    return write_text(path, buf.getvalue())
