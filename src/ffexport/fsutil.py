"""Files are written whole or not at all: temp file in the same folder, then rename.

Artifacts go further (see :meth:`ffexport.manifest.Manifest.commit`): they are made in a staging folder beside
their final name and renamed together with their manifest record, under a lock per artifact folder
(:func:`folder_lock`), with SIGINT/SIGTERM held back during the renames (:func:`critical`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Iterator

from .errors import OutputExistsError, OutputNotWritableError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def final_name(path: str | os.PathLike) -> str:
    """The name a file is written for: ``fp16.onnx`` for its temporary ``.fp16.onnx.x1y2z3.part`` (records and
    messages name the artifact, not the temporary file it was checked as)."""
    name = Path(path).name
    m = re.fullmatch(r"\.(.+)\.[^.]+\.part", name)
    return m.group(1) if m else name


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
            os.chmod(tmp_path, file_mode(final))
        with critical():
            os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


STAGE_PREFIX = ".stage-"  # staging folders of artifacts being made: swept when their folder is next locked
LOCK_FILE = ".lock"


@contextlib.contextmanager
def staging(final: str | os.PathLike) -> Iterator[Path]:
    """Yield ``<folder>/.stage-XXXX/<name>``: where an artifact is made under its own name before
    :meth:`ffexport.manifest.Manifest.commit` renames it over ``final``.  The staging folder is removed on the way
    out, committed or not (an uncommitted file goes with it)."""
    final = Path(final)
    ensure_writable_dir(final.parent)
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=final.parent))
    try:
        yield stage / final.name
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def file_mode(final: Path) -> int:
    """The permission bits a new version of ``final`` gets: the old file's, else the umask's."""
    return final.stat().st_mode & 0o777 if final.exists() else 0o666 & ~current_umask()


# SIGINT/SIGTERM inside a critical section are held back until it ends (ffexport.cli.main's handlers ask
# `deferring`); so a commit's two renames are never separated by Ctrl-C or a polite kill.
_critical = threading.local()
_pending: list[int] = []


def deferring(signum: int) -> bool:
    """True (and the signal remembered) when the main thread is inside :func:`critical`."""
    if getattr(_critical, "depth", 0) > 0:
        _pending.append(signum)
        return True
    return False


@contextlib.contextmanager
def critical() -> Iterator[None]:
    _critical.depth = getattr(_critical, "depth", 0) + 1
    try:
        yield
    finally:
        _critical.depth -= 1
        if _critical.depth == 0 and _pending:
            import signal

            signum = _pending.pop(0)
            _pending.clear()
            signal.raise_signal(signum)  # delivered now, outside the section


class _Lock:
    def __init__(self):
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None


_locks: dict[str, _Lock] = {}
_locks_guard = threading.Lock()


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, waiting=None, on_acquire=None) -> Iterator[None]:
    """An exclusive lock on an artifact folder, shared by every ffexport process and thread: re-entrant in one
    thread, waited for by the others (``waiting(message)`` is told once).  ``on_acquire(folder)`` runs when this
    process first takes it (the manifest's recovery).  The lock file is removed on release; a waiter that then
    holds the lock of a removed file takes the new one."""
    import fcntl

    folder = ensure_writable_dir(folder)
    with _locks_guard:
        lk = _locks.setdefault(str(folder.resolve()), _Lock())
    with lk.thread_lock:
        if lk.depth:
            lk.depth += 1
            try:
                yield
            finally:
                lk.depth -= 1
            return
        path = folder / LOCK_FILE
        told = False
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not told:  # said once, as a warning line (seen in logs too) and to the caller's progress
                    msg = f"waiting for {folder}: another ffexport process is writing there"
                    warnings.warn(msg, stacklevel=2)
                    if waiting:
                        waiting(msg)
                    told = True
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        lk.fd, lk.depth = fd, 1
        try:
            if on_acquire:
                on_acquire(folder)
            yield
        finally:
            with critical():
                lk.depth, lk.fd = 0, None
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                os.close(fd)  # releases the flock


def sweep_stale(folder: Path) -> list[str]:
    """Remove what interrupted writers left in ``folder`` (staging folders, ``.*.part`` files); call it only
    while holding the folder's lock, when no writer can be at work there."""
    gone = []
    for p in folder.iterdir():
        if p.name.startswith(STAGE_PREFIX) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p.name)
        elif p.name.startswith(".") and p.name.endswith(".part") and p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p.name)
    return gone


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
