"""Artifact folders and the manifest beside them.

Each module's artifacts live in one folder (``artifacts/<module>`` for the
module's default variant, ``artifacts/<module>.<variant>`` for another), with a
``manifest.json`` that records, per artifact file: its sha256 and size, the
parent it was made from, the pass and options, the parity record, tool
versions, input hashes, and timings.  Passes read it to skip unchanged work.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from . import __version__
from ._lazy import version_of
from .errors import ArtifactError
from .fsutil import sha256_file, write_json_atomic
from .toolchain import toolchain

MANIFEST = "manifest.json"
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


def file_record(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    return {"file": p.name, "sha256": sha256_file(p), "size_bytes": p.stat().st_size}


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


def new_record(artifact: str | Path, *, pass_name: str, parent: str | Path | None, options: dict[str, Any],
               parity: dict[str, Any] | None, inputs: dict[str, Any] | None = None,
               key: dict[str, Any] | None = None, started: float | None = None, **extra: Any) -> dict[str, Any]:
    rec = file_record(artifact)
    rec.update({
        "pass": pass_name,
        "parent": file_record(parent) if parent else None,
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
