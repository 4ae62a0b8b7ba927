"""Artifact folders and the manifest beside them.

Each module's artifacts live in one folder (``artifacts/<module>`` for the
module's default variant, ``artifacts/<module>.<variant>`` for another), with a
``manifest.json`` that records, per artifact file: its sha256 and size, the
parent it was made from, the pass and options, the parity record, tool
versions, input hashes, and timings.  Passes read it to skip unchanged work.

An artifact and its record change together (:meth:`Manifest.commit`): the artifact is made in a staging
folder, the new manifest is written beside the old one, a journal names both, and only then are the two
renamed into place (signals held back).  Whoever next locks the folder (:func:`locked`) finishes a commit the
journal shows half done, or undoes one that had not started renaming, and sweeps what interrupted writers left.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from . import __version__
from ._lazy import version_of
from .errors import ArtifactError
from .fsutil import critical, file_mode, folder_lock, sha256_file, sweep_stale, write_json_atomic
from .toolchain import toolchain

MANIFEST = "manifest.json"
JOURNAL = ".commit.json"
_TOOLS = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxsim", "onnxslim", "onnxconverter-common",
          "tensorrt", "tensorrt-rtx-cu13", "numpy", "av", "opencv-python-headless")


def tool_versions() -> dict[str, str]:
    v = {"ffexport": __version__, "python": platform.python_version()}
    for dist in _TOOLS:
        ver = version_of(dist)
        if ver:
            v[dist] = ver
    return v


def artifact_dir(out: str | Path, spec) -> Path:
    from . import specs

    name = spec.module if spec.variant == specs.default_variant(spec.module) else f"{spec.module}.{spec.variant}"
    return Path(out) / name


def file_record(path: str | Path, name: str | None = None, sha256: str | None = None) -> dict[str, Any]:
    """``path``'s name (or ``name``: a staged file's final name), sha256 (given when already computed) and size."""
    p = Path(path)
    return {"file": name or p.name, "sha256": sha256 or sha256_file(p), "size_bytes": p.stat().st_size}


def recover(folder: str | Path) -> list[str]:
    """Finish or undo a commit that was interrupted (SIGKILL, power loss) between its two renames, then sweep
    staging folders and temporary files.  Only under the folder's lock (:func:`locked`)."""
    folder = Path(folder)
    journal = folder / JOURNAL
    done = []
    if journal.is_file():
        try:
            info = json.loads(journal.read_text())
        except (OSError, json.JSONDecodeError):
            info = None
        if isinstance(info, dict):
            staged, new_manifest = folder / info.get("staged", "?"), folder / info.get("manifest", "?")
            if staged.is_file():  # the artifact was never renamed: the old artifact and record stand
                done.append(f"undid the unfinished commit of {info.get('artifact')}")
            elif new_manifest.is_file():  # the artifact was renamed, its record not yet: finish
                os.replace(new_manifest, folder / MANIFEST)
                done.append(f"finished the interrupted commit of {info.get('artifact')}")
        journal.unlink(missing_ok=True)
    done += sweep_stale(folder)
    return done


def locked(folder: str | Path, progress=None):
    """The artifact folder's lock (:func:`ffexport.fsutil.folder_lock`), recovering the folder when taken."""
    return folder_lock(folder, waiting=progress, on_acquire=recover)


class Manifest:
    """The manifest of one artifact folder. Saved atomically on every change."""

    def __init__(self, folder: str | Path, data: dict[str, Any] | None = None):
        self.folder = Path(folder)
        self.data: dict[str, Any] = data or {"artifacts": {}}

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST

    @classmethod
    def load(cls, folder: str | Path, required: bool = False) -> "Manifest":
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            if required:
                raise ArtifactError(f"no {MANIFEST} in {folder}: run `ffexport onnx` for this module first")
            return cls(folder)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{path} is not readable JSON ({exc}); delete it and re-export with --force") from exc
        data.setdefault("artifacts", {})
        return cls(folder, data)

    def set_module(self, spec) -> None:
        self.data["module"] = spec.module
        self.data["variant"] = spec.variant
        self.data["contract"] = spec.contract()

    def get(self, name: str) -> dict[str, Any] | None:
        return self.data["artifacts"].get(name)

    def put(self, name: str, record: dict[str, Any]) -> None:
        self.data["artifacts"][name] = record
        self.save()

    def drop(self, name: str) -> None:
        if self.data["artifacts"].pop(name, None) is not None:
            self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    def commit(self, name: str, staged: str | Path, record: dict[str, Any]) -> None:
        """Put the staged file ``staged`` at ``<folder>/name`` and its ``record`` in the manifest, both or neither
        (see the module's docstring).  A failure before the renames (a full disk) leaves the previous artifact,
        its record and no new file; hold the folder's lock (:func:`locked`)."""
        staged, final = Path(staged), self.folder / name
        data = json.loads(json.dumps(self.data, default=_default))
        data["artifacts"][name] = json.loads(json.dumps(record, default=_default))
        fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".part", dir=self.folder)
        new_manifest, journal = Path(tmp), self.folder / JOURNAL
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write((json.dumps(data, indent=2, sort_keys=False) + "\n").encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(new_manifest, file_mode(self.path))
            os.chmod(staged, file_mode(final))
            write_json_atomic(journal, {"artifact": name, "staged": str(staged.relative_to(self.folder)),
                                        "manifest": new_manifest.name, "sha256": record.get("sha256")})
        except BaseException:
            new_manifest.unlink(missing_ok=True)
            raise
        with critical():
            try:
                os.replace(staged, final)
            except BaseException:
                new_manifest.unlink(missing_ok=True)
                journal.unlink(missing_ok=True)
                raise
            os.replace(new_manifest, self.path)
            journal.unlink()
        self.data = data

    def is_current(self, name: str, key: dict[str, Any], ignore: tuple[str, ...] = ()) -> bool:
        """True when ``name`` exists, its file still hashes as recorded, and it was made from ``key``
        (fields in ``ignore`` left out of the comparison)."""
        rec = self.get(name)
        f = self.folder / name
        if not rec or not f.is_file() or not isinstance(rec.get("key"), dict):
            return False
        if {k: v for k, v in rec["key"].items() if k not in ignore} != {k: v for k, v in key.items() if k not in ignore}:
            return False
        return sha256_file(f) == rec.get("sha256")


def _default(o):
    from .fsutil import _json_default

    return _json_default(o)


def new_record(artifact: str | Path, *, pass_name: str, parent: str | Path | None, options: dict[str, Any],
               parity: dict[str, Any] | None, inputs: dict[str, Any] | None = None,
               key: dict[str, Any] | None = None, started: float | None = None, name: str | None = None,
               parent_sha256: str | None = None, **extra: Any) -> dict[str, Any]:
    """The manifest record of ``artifact`` (staged: ``name`` is its final name); ``parent_sha256`` is the parent's
    hash taken when the step started (what it was made from), not re-read now."""
    rec = file_record(artifact, name)
    rec.update({
        "pass": pass_name,
        "parent": file_record(parent, sha256=parent_sha256) if parent else None,
        "options": options,
        "inputs": inputs or {},
        "key": key or {},
        "parity": parity,
        "versions": tool_versions(),
        "toolchain": toolchain(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": round(time.time() - started, 3) if started else None,
    })
    rec.update(extra)
    return rec
