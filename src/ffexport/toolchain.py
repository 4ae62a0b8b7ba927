"""The pinned toolchain: ``constraints.txt`` at the repository root pins every package the README's
commands install.  Each manifest record says whether the installed versions match it (``toolchain``), so
an artifact made with a drifted onnxruntime or torch says so itself."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

CONSTRAINTS = "constraints.txt"
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints_path() -> Path | None:
    """``$FFEXPORT_CONSTRAINTS``, else the source tree's ``constraints.txt`` (editable installs and
    checkouts run with PYTHONPATH=src); None for an installed wheel without one."""
    env = os.environ.get("FFEXPORT_CONSTRAINTS")
    for cand in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[2] / CONSTRAINTS]:
        if cand.is_file():
            return cand
    return None


def read_pins(path: str | Path) -> dict[str, str]:
    """Normalised distribution name -> pinned version, from ``name==version`` lines."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        m = _PIN.match(line)
        if m:
            pins[_normal(m.group(1))] = m.group(2)
    return pins


def _same(installed: str, pinned: str) -> bool:
    # a local build tag (torch 2.13.0+cpu) matches the public pin, as pip's == does
    return installed == pinned or installed.split("+", 1)[0] == pinned


@functools.lru_cache(maxsize=1)
def toolchain() -> dict:
    """``{"constraints": file, "sha256", "pinned": N, "matches": bool, "drift": {dist: {pinned, installed}}}``;
    a pinned package that is not installed is not drift (extras are optional)."""
    from importlib import metadata

    path = constraints_path()
    if path is None:
        return {"constraints": None, "matches": None,
                "note": f"no {CONSTRAINTS} found (not a source checkout): versions recorded, not checked"}
    pins = read_pins(path)
    drift = {}
    for dist, pinned in sorted(pins.items()):
        try:
            have = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        if not _same(have, pinned):
            drift[dist] = {"pinned": pinned, "installed": have}
    return {"constraints": CONSTRAINTS, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "pinned": len(pins), "matches": not drift, "drift": drift}
