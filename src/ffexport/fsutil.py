"""Files are written whole or not at all: temp file in the same folder, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputExistsError, OutputNotWritableError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that files can be created in it."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritableError(f"cannot create output folder {p}: {exc.strerror}; choose another with --out") from exc
    if not p.is_dir():
        raise OutputNotWritableError(f"output path {p} is not a folder; choose another with --out")
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputNotWritableError(f"output folder {p} is not writable; choose another with --out")
    return p


def check_overwrite(path: str | os.PathLike, force: bool) -> None:
    if Path(path).is_dir():  # --force never removes a folder
        raise OutputExistsError(f"{path} is a folder, not a file: move or rename it, then run again")
    if Path(path).exists() and not force:
        raise OutputExistsError(f"{path} already exists; pass --force to overwrite it")


def current_umask() -> int:
    """The process's umask, read when a file is made (not changed: /proc/self/status where there is one;
    elsewhere os.umask is set and put back at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` only on success.

    On any exception the temporary file is removed and ``final`` is untouched.
    """
    final = Path(final)
    ensure_writable_dir(final.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes owner-only files; artifacts get the usual permissions
            mode = final.stat().st_mode & 0o777 if final.exists() else 0o666 & ~current_umask()
            os.chmod(tmp_path, mode)
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(final: str | os.PathLike, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(final: str | os.PathLike, obj) -> None:
    write_bytes_atomic(final, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
