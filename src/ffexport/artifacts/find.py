"""Find or build the artifact a backend runs: the ONNX file of a registered module at a precision, or its
TensorRT engine, exported and optimised on demand, and checked against the spec's IO contract.

* ``onnx_artifact``: ``<out>/<module>/{fp32.sim,fp32,fp16,int8}.onnx``; fp32 prefers the simplified file
  when it was made from the present export; its ``ffexport.contract`` metadata must equal the spec's;
* ``engine_artifact``: ``<out>/<module>/<precision>.<flavor>.engine``, built on demand when this machine can
  build engines.

Anything that cannot be found, built or trusted is one line (:class:`ArtifactError`,
:class:`RuntimeUnavailableError`).  The run-time layers (pipeline, bench) ask here; they never call a pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..errors import ArtifactError, FFExportError, RuntimeUnavailableError, UnknownNameError
from ..manifest import Manifest, artifact_dir
from ..vocab import PRECISIONS, RUNNABLE_ONNX

Say = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


# --- contract checks ------------------------------------------------------------------------

def _canonical(obj) -> object:
    return json.loads(json.dumps(obj, sort_keys=True))


def _first_difference(got: dict, want: dict) -> str:
    for key in sorted(set(got) | set(want)):
        if got.get(key) != want.get(key):
            return key
    return "?"


def check_contract(path: str | Path, spec, *, fix: str) -> None:
    """Raise :class:`ArtifactError` unless ``path``'s recorded IO contract equals ``spec.contract()``."""
    from ..export.onnx import read_metadata

    meta = read_metadata(path)
    raw = meta.get("ffexport.contract")
    if raw is None:
        raise ArtifactError(f"{path} carries no ffexport IO contract (not made by `ffexport onnx`); {fix}")
    try:
        got = json.loads(raw)
    except json.JSONDecodeError:
        raise ArtifactError(f"{path} has an unreadable IO contract; {fix}") from None
    want = _canonical(spec.contract())
    if got != want:
        field = _first_difference(got, want) if isinstance(got, dict) else "contract"
        raise ArtifactError(f"{path}: IO contract does not match spec {spec.key} ({field} differs); {fix}")


def _check_manifest_contract(folder: Path, spec, artifact: Path, fix: str) -> None:
    man = Manifest.load(folder)
    recorded = man.data.get("contract")
    if recorded is not None and _canonical(recorded) != _canonical(spec.contract()):
        field = _first_difference(_canonical(recorded), _canonical(spec.contract()))
        raise ArtifactError(f"{artifact}: IO contract in {man.path} does not match spec {spec.key} "
                            f"({field} differs); {fix}")


# --- artifacts ------------------------------------------------------------------------------

def _checkpoint_sha(checkpoint) -> str | None:
    if checkpoint is None:
        return None
    from ..fsutil import sha256_file

    p = Path(checkpoint)
    if not p.is_file():
        from ..errors import CheckpointError

        raise CheckpointError(f"checkpoint {p} does not exist or is not a file")
    return sha256_file(p)


def _fp32_is_from(folder: Path, checkpoint_sha: str | None) -> bool:
    """True when the folder's fp32.onnx was exported from ``checkpoint_sha`` (None: the default weights)."""
    rec = Manifest.load(folder).get("fp32.onnx")
    if rec is None:
        return False
    return rec.get("key", {}).get("checkpoint_sha256") == checkpoint_sha


def _export_cmd(spec, out, checkpoint) -> str:
    ck = f" --checkpoint {checkpoint}" if checkpoint else ""
    return f"`ffexport onnx -m {spec.module} --variant {spec.variant}{ck} --out {out} --force`"


def onnx_artifact(spec, precision: str, out: str | Path = "artifacts", checkpoint=None,
                  build_missing: bool = True, say: Say = _quiet, config_dir=None) -> Path:
    """The ONNX file for ``spec`` at ``precision``, exported/optimised on demand; its contract checked.

    fp32 prefers the simplified ``fp32.sim.onnx`` when it was made from the
    present ``fp32.onnx``.  An export made from other weights than
    ``checkpoint`` (or the default weights) is rebuilt, and so are the pass
    outputs made from an older export.
    """
    if precision not in RUNNABLE_ONNX:
        raise UnknownNameError("precision", precision, PRECISIONS)
    folder = artifact_dir(out, spec)
    fp32 = folder / "fp32.onnx"
    if spec.origin and not spec.builder and not fp32.is_file():
        raise ArtifactError(f"{fp32} is missing: give the user's file again with --onnx {spec.module}=PATH")
    if not (fp32.is_file() and _fp32_is_from(folder, _checkpoint_sha(checkpoint))):
        if not build_missing:
            why = "is missing" if not fp32.is_file() else (
                f"was exported from other weights than {checkpoint or 'the default ones'}")
            raise ArtifactError(f"{fp32} {why}; build it with {_export_cmd(spec, out, checkpoint)}")
        from ..export.onnx import export_module

        say(f"{spec.key}: exporting {fp32}" + (f" from {checkpoint}" if checkpoint else ""))
        try:
            export_module(spec, out, checkpoint=checkpoint, force=True)
        except FFExportError as exc:
            raise ArtifactError(f"{spec.key}: cannot build {fp32}: {exc}") from exc
    if precision == "fp32":
        sim = folder / RUNNABLE_ONNX["fp32"][0]
        path = sim if sim.is_file() and _derived_is_current(folder, sim) else fp32
    else:
        path = folder / RUNNABLE_ONNX[precision][0]
        if not (path.is_file() and _derived_is_current(folder, path)):
            if not build_missing:
                raise ArtifactError(f"{path} is missing or older than {fp32.name}; build it with "
                                    f"`ffexport optimize -m {spec.module} --variant {spec.variant} "
                                    f"--precision {precision} --out {out}`")
            path = _optimize(spec, precision, out, say, config_dir)
    check_contract(path, spec, fix=f"re-export it: {_export_cmd(spec, out, checkpoint)}")
    return path


def _derived_is_current(folder: Path, path: Path, depth: int = 0) -> bool:
    """True when the chain of recorded parents from ``path`` back to ``fp32.onnx`` matches the files now there."""
    if path.name == "fp32.onnx":
        return True
    man = Manifest.load(folder)
    rec = man.get(path.name)
    if rec is None:
        return True  # not made by ffexport's passes: the contract check alone decides
    parent = rec.get("parent") or {}
    pname, psha = parent.get("file"), parent.get("sha256")
    if not pname or not psha:
        return True
    prec = man.get(pname)
    if depth > 8 or pname == path.name or not (folder / pname).is_file() or prec is None or prec.get("sha256") != psha:
        return False
    return _derived_is_current(folder, folder / pname, depth + 1)


def _optimize(spec, precision: str, out, say: Say, config_dir=None) -> Path:
    """Run the passes (they skip what is current and rebuild what is stale; INT8 calibrates on ./calibration)."""
    from .optimize import Settings, optimize

    say(f"{spec.key}: building the {precision} ONNX artifact")
    try:
        return Path(optimize(spec, precision, Settings(out=Path(out), config_dir=config_dir, progress=say)))
    except ArtifactError:
        raise
    except FFExportError as exc:
        raise ArtifactError(f"{spec.key}: cannot build the {precision} artifact: {exc}") from exc


def _engines(folder: Path, precision: str) -> list[Path]:
    """``<precision>.<flavor>.engine`` files, those whose TensorRT flavour is importable here first."""
    from .._lazy import available

    found = sorted(folder.glob(f"{precision}.*.engine")) if folder.is_dir() else []
    return sorted(found, key=lambda p: not available(p.name.split(".")[1]))


def engine_artifact(spec, precision: str, out: str | Path = "artifacts", checkpoint=None,
                    build_missing: bool = True, device: str = "cuda", say: Say = _quiet, config_dir=None) -> Path:
    """The TensorRT engine for ``spec`` at ``precision``, built on demand from its ONNX artifact.

    An engine is used when the manifest's chain of parents leads back to the
    present ``fp32.onnx`` and that was exported from ``checkpoint`` (or the default weights).
    """
    folder = artifact_dir(out, spec)
    fix = f"rebuild it: `ffexport trt -m {spec.module} --variant {spec.variant} --precision {precision} --out {out} --force`"
    sha = _checkpoint_sha(checkpoint)
    found = _engines(folder, precision)
    usable = [e for e in found if _derived_is_current(folder, e)
              and (not (folder / "fp32.onnx").is_file() or _fp32_is_from(folder, sha))]
    if usable:
        _check_manifest_contract(folder, spec, usable[0], fix)
        return usable[0]
    if not build_missing:
        why = "no" if not found else "no current"
        raise ArtifactError(f"{why} {precision} TensorRT engine in {folder}; build it with "
                            f"`ffexport trt -m {spec.module} --variant {spec.variant} --precision {precision} --out {out}`")
    # the lineage's root must come from the requested weights; the passes make the rest
    onnx_artifact(spec, "fp32", out, checkpoint, True, say, config_dir)
    from .engines import build_module_engine

    say(f"{spec.key}: building the {precision} TensorRT engine (one-time, minutes)")
    try:
        rec = build_module_engine(spec, precision, out=out, progress=say, config_dir=config_dir)
    except (ArtifactError, RuntimeUnavailableError):
        raise
    except FFExportError as exc:
        raise ArtifactError(f"{spec.key}: cannot build the {precision} TensorRT engine: {exc}") from exc
    path = folder / rec["file"]
    _check_manifest_contract(folder, spec, path, fix)
    return path
