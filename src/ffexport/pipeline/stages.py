"""A pipeline stage: one module's spec and the runner that executes it (torch, onnxruntime or TensorRT).

``make_runner`` finds (or builds) the artifact a backend needs and checks its
IO contract against the spec before anything runs:

* ``torch``: the module built by ``build_model`` (seeded, trained package
  weights, or ``checkpoint``), fp32 or fp16;
* ``ort``: ``<out>/<module>/{fp32.sim,fp32,fp16,int8}.onnx``, exported and
  optimised on demand; its ``ffexport.contract`` metadata must equal the spec's;
* ``trt``: ``<out>/<module>/<precision>.<flavor>.engine``, built on demand
  when this machine can build engines.

Anything that cannot be found, built or trusted is one line
(:class:`ArtifactError`, :class:`RuntimeUnavailableError`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Mapping

import torch

from ..errors import ArtifactError, FFExportError, RuntimeUnavailableError, UnknownNameError
from ..manifest import Manifest, artifact_dir
from ..backends.base import BACKENDS, Runner

ONNX_FILES = {"fp32": ("fp32.sim.onnx", "fp32.onnx"), "fp16": ("fp16.onnx",), "int8": ("int8.onnx",)}
PRECISIONS = tuple(ONNX_FILES)

Say = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


class Stage:
    """One module of the pipeline: ``stage(name=tensor, ...) -> {output: float32 tensor}``."""

    def __init__(self, spec, runner: Runner, backend: str, precision: str, source: str = ""):
        self.spec, self.runner = spec, runner
        self.backend, self.precision, self.source = backend, precision, source
        # largest batch one call may take (TensorRT engines are built for a batch profile)
        self.max_batch: int | None = int(spec.batch_profile[2]) if backend == "trt" else None
        # onnxruntime CUDA re-plans a convolutional model whenever its input shape changes; a model kept
        # in one session (too large for a session per shape) is fed one item at a time instead, so the
        # number of faces in a frame never changes its shape
        if (backend == "ort" and str(getattr(runner, "device", "")).startswith("cuda")
                and getattr(runner, "convolutional", False) and (getattr(runner, "shape_sessions", 1) or 1) <= 1):
            self.max_batch = 1

    @property
    def module(self) -> str:
        return self.spec.module

    def run(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = next(iter(feeds.values())).shape[0]
        if self.max_batch is None or n <= self.max_batch:
            return self._run(feeds)
        parts = [self._run({k: v[i:i + self.max_batch] for k, v in feeds.items()})
                 for i in range(0, n, self.max_batch)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _run(self, feeds):
        out = self.runner.infer(feeds)
        return {k: (v.float() if v.is_floating_point() and v.dtype != torch.float32 else v) for k, v in out.items()}

    __call__ = run

    def close(self) -> None:
        self.runner.deactivate()

    def describe(self) -> dict:
        return {"module": self.spec.key, "backend": self.backend, "precision": self.precision, "source": self.source}


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
                  build_missing: bool = True, say: Say = _quiet) -> Path:
    """The ONNX file for ``spec`` at ``precision``, exported/optimised on demand; its contract checked.

    fp32 prefers the simplified ``fp32.sim.onnx`` when it was made from the
    present ``fp32.onnx``.  An export made from other weights than
    ``checkpoint`` (or the default weights) is rebuilt, and so are the pass
    outputs made from an older export.
    """
    if precision not in ONNX_FILES:
        raise UnknownNameError("precision", precision, PRECISIONS)
    folder = artifact_dir(out, spec)
    fp32 = folder / "fp32.onnx"
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
        sim = folder / ONNX_FILES["fp32"][0]
        path = sim if sim.is_file() and _derived_is_current(folder, sim) else fp32
    else:
        path = folder / ONNX_FILES[precision][0]
        if not (path.is_file() and _derived_is_current(folder, path)):
            if not build_missing:
                raise ArtifactError(f"{path} is missing or older than {fp32.name}; build it with "
                                    f"`ffexport optimize -m {spec.module} --variant {spec.variant} "
                                    f"--precision {precision} --out {out}`")
            path = _optimize(spec, precision, out, say)
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


def _optimize(spec, precision: str, out, say: Say) -> Path:
    """Run the passes (they skip what is current and rebuild what is stale; INT8 calibrates on ./calibration)."""
    try:
        from ..passes.optimize import optimize
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("ffexport.passes"):
            raise ArtifactError(f"{spec.key}: no {precision} ONNX artifact and this build has no passes "
                                f"module to make one; use --precision fp32") from exc
        raise
    say(f"{spec.key}: building the {precision} ONNX artifact")
    try:
        return Path(optimize(spec, precision, out=out, progress=say))
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
                    build_missing: bool = True, device: str = "cuda", say: Say = _quiet) -> Path:
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
    onnx_artifact(spec, "fp32", out, checkpoint, True, say)
    try:
        from ..passes.trt import build_module_engine
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("ffexport.passes"):
            raise RuntimeUnavailableError("this build has no TensorRT pass; use --backend ort or torch") from exc
        raise
    say(f"{spec.key}: building the {precision} TensorRT engine (one-time, minutes)")
    try:
        rec = build_module_engine(spec, precision, out=out, progress=say)
    except (ArtifactError, RuntimeUnavailableError):
        raise
    except FFExportError as exc:
        raise ArtifactError(f"{spec.key}: cannot build the {precision} TensorRT engine: {exc}") from exc
    path = folder / rec["file"]
    _check_manifest_contract(folder, spec, path, fix)
    return path


# --- runners --------------------------------------------------------------------------------

def make_runner(spec, backend: str, precision: str = "fp32", device: str = "cpu", out: str | Path = "artifacts",
                checkpoint=None, build_missing: bool = True, say: Say = _quiet) -> Runner:
    """A runner for ``spec`` on ``backend`` at ``precision`` on ``device`` (see the module docstring)."""
    if backend not in BACKENDS:
        raise UnknownNameError("backend", backend, BACKENDS)
    if precision not in PRECISIONS:
        raise UnknownNameError("precision", precision, PRECISIONS)
    if backend == "torch":
        if precision == "int8":
            raise RuntimeUnavailableError(f"{spec.key}: the torch backend runs fp32 or fp16, not int8; "
                                          "use --backend ort or trt for int8")
        from ..backends.torch import TorchRunner
        from ..models import build_model

        return TorchRunner(build_model(spec, checkpoint=checkpoint), spec=spec, device=device, precision=precision)
    if backend == "ort":
        from ..backends.ort import OrtRunner

        path = onnx_artifact(spec, precision, out, checkpoint, build_missing, say)
        return OrtRunner(path, spec=spec, device=device)
    if not device.startswith("cuda"):
        raise RuntimeUnavailableError("the TensorRT backend runs on a GPU: use --device cuda, or --backend ort/torch")
    from ..backends.trt import TrtRunner

    path = engine_artifact(spec, precision, out, checkpoint, build_missing, device, say)
    return TrtRunner(path, spec=spec, device=device)


def make_stage(spec, backend: str, precision: str = "fp32", device: str = "cpu", out: str | Path = "artifacts",
               checkpoint=None, build_missing: bool = True, say: Say = _quiet) -> Stage:
    runner = make_runner(spec, backend, precision, device, out, checkpoint, build_missing, say)
    source = str(getattr(runner, "path", "")) or (f"torch ({checkpoint})" if checkpoint else "torch (default weights)")
    runner.activate()
    return Stage(spec, runner, backend, precision, source)
