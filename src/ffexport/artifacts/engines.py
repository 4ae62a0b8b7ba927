"""Engines of registered modules: ``artifacts/<module>/<precision>.<flavor>.engine`` from the module's ONNX
artifact for that precision, made through the passes first when it is missing or stale."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..backends import trt_flavors as F
from ..errors import CalibrationError
from ..manifest import artifact_dir
from ..passes.trt import DEFAULT_CACHE
from ..vocab import PRECISION_ONNX, engine_name

DEFAULT_CALIB = Path("calibration")  # what the passes calibrate on when --calib is not given


def source_onnx(spec, precision: str, *, out: str | Path = "artifacts", calib: str | Path | None = None,
                progress: Callable[[str], None] | None = None, config_dir=None) -> Path:
    """The ONNX artifact a ``precision`` engine is built from, made through the passes when missing or stale.

    INT8 needs calibration faces (``--calib DIR``, or ``./calibration`` as the passes default to); without
    any, an existing ``int8.onnx`` is used as it is, and with neither the answer is one line.
    """
    folder = artifact_dir(out, spec)
    want = folder / PRECISION_ONNX[precision]
    if precision == "int8" and calib is None and not DEFAULT_CALIB.is_dir():
        if want.is_file():
            return want
        raise CalibrationError(f"{spec.key}: --precision int8 needs calibration images (--calib DIR, or a "
                               f"./{DEFAULT_CALIB} folder) or an existing {want}; there is none of them")
    from .optimize import Settings, optimize

    settings = Settings(out=Path(out), config_dir=config_dir, calib=Path(calib) if calib else None, progress=progress)
    return Path(optimize(spec, precision, settings, reprove=False))


def build_module_engine(spec, precision: str, *, out: str | Path = "artifacts", calib: str | Path | None = None,
                        flavor: str = "auto", batch: Sequence[int] | None = None,
                        dims: Mapping[str, Sequence[int]] | None = None, workspace_mb: int | None = None,
                        opt_level: int | None = None, target_cc: Sequence[str] | None = None,
                        version_compatible: bool = False, cache_dir: str | Path | None = None, force: bool = False,
                        config_dir=None, progress: Callable[[str], None] | None = None) -> dict:
    """``artifacts/<module>/<precision>.<flavor>.engine`` from the module's ONNX artifact for ``precision``
    (made first through the passes, with the same ``config_dir``), by the registered ``trt`` pass."""
    options = trt_options(spec, config_dir, out=out, flavor=flavor, batch=batch, dims=dims, workspace_mb=workspace_mb,
                          opt_level=opt_level, target_cc=target_cc, version_compatible=version_compatible,
                          cache_dir=cache_dir)
    F.resolve(options.flavor)  # fail before the upstream passes when no TensorRT can build here
    onnx_path = source_onnx(spec, precision, out=out, calib=calib, progress=progress, config_dir=config_dir)
    return engine_from_onnx(spec, precision, onnx_path, options, out=out, force=force, progress=progress)


def trt_options(spec, config_dir=None, *, out: str | Path = "artifacts", flavor: str = "auto",
                batch: Sequence[int] | None = None, dims: Mapping[str, Sequence[int]] | None = None,
                workspace_mb: int | None = None, opt_level: int | None = None, target_cc: Sequence[str] | None = None,
                version_compatible: bool = False, cache_dir: str | Path | None = None):
    """The ``trt`` pass's options for ``spec``: ``configs/<module>.yaml``'s ``trt`` section, then these."""
    from ..config import load_module_config, module_config_label
    from ..passes.registry import get as get_pass

    section = dict(load_module_config(spec.module, config_dir).get("trt") or {})
    return get_pass("trt").configure(section, spec, {
        "dims": {**dict(section.get("dims") or {}), **dict(dims or {})}, "flavor": flavor,
        "batch": tuple(batch) if batch else None, "workspace_mb": workspace_mb, "opt_level": opt_level,
        "target_cc": tuple(target_cc) if target_cc else None, "version_compatible": version_compatible,
        "cache_dir": str(cache_dir or Path(out) / DEFAULT_CACHE)}, where=module_config_label(spec.module, config_dir))


def engine_from_onnx(spec, precision: str, onnx_path: str | Path, options, *, out: str | Path = "artifacts",
                     force: bool = False, progress: Callable[[str], None] | None = None) -> dict:
    """The engine of ``spec`` at ``precision`` built from an ONNX artifact already made (``onnx_path``), in the
    module's folder under ``out``; returns its record (``engine_cache_hit`` when nothing had to be built)."""
    from ..passes.base import Proof
    from ..passes.registry import get as get_pass

    fl = F.resolve(options.flavor)
    out_path = artifact_dir(out, spec) / engine_name(precision, fl.name)
    return get_pass("trt").run(onnx_path, out_path, Proof(progress=progress, spec=spec), replace(options, flavor=fl),
                               force=force)
