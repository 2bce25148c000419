"""Files that survive a crash: atomic writes, JSON, and JSON lines with one torn-line rule.

The one rule for JSON lines: a line is complete when it ends with ``\\n``. Appends go out in one
``write`` system call, so a crash can only leave a *last* line without its newline; readers skip
it and :func:`rewrite_jsonl` drops it. A complete line that is not JSON is damage, not a crash,
and raises ``ValueError`` naming the file and line. Both ``interp_causal`` run directories
(``metrics.jsonl``) and probe logs (``probes.jsonl``) are read and written here.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object] | bytes) -> Path:
    """Write ``path`` through a temporary file beside it, then rename it into place, so a crash
    never leaves a half-written ``path``. ``write`` is the bytes, or a function of the open binary
    file (``torch.save``, ``Figure.savefig``, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(write, bytes):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented, key-sorted JSON, written atomically."""
    return atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def jsonable(x: Any) -> Any:
    """``x`` with NaN and infinities as ``None`` and numpy / torch scalars and arrays as lists."""
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return jsonable(x.tolist())
    return x


def jsonl_text(rows: Iterable[dict[str, Any]]) -> str:
    """Rows as JSON lines, each ``\\n``-terminated; NaN and infinities become ``null``."""
    return "".join(json.dumps(jsonable(row), allow_nan=False) + "\n" for row in rows)


def append_jsonl(path: str | os.PathLike, text_or_rows: str | Iterable[dict[str, Any]]) -> None:
    """Append whole lines (text, or rows to encode) with one ``write`` on an append-mode descriptor.

    A reader never sees a line this call half wrote: the bytes go out in one system call, in
    append mode, and reach the OS before returning.
    """
    text = text_or_rows if isinstance(text_or_rows, str) else jsonl_text(text_or_rows)
    data = text.encode("utf-8")
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # a short write is legal; keep going rather than truncate a line
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a torn last line (no ``\\n``: a crash mid-write) is skipped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {number} is not JSON ({exc}); the file is damaged") from exc
    return rows


def rewrite_jsonl(path: str | os.PathLike, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Keep the rows for which ``keep(row)`` holds and drop a torn last line, rewriting ``path``
    atomically when anything goes; returns the rows kept."""
    raw = Path(path).read_bytes()
    rows = read_jsonl(path)
    kept = [r for r in rows if keep(r)]
    text = jsonl_text(kept)
    if len(kept) != len(rows) or (raw and not raw.endswith(b"\n")):
        atomic_write(path, text.encode("utf-8"))
    return kept
