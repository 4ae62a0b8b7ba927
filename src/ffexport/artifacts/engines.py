"""Engines of registered modules: ``artifacts/<module>/<precision>.<flavor>.engine`` from the module's ONNX
artifact for that precision, made through the passes first when it is missing or stale."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..backends import trt_flavors as F
from ..errors import CalibrationError
from ..manifest import artifact_dir
from ..passes.trt import DEFAULT_CACHE, build_engine, config_dims
from ..vocab import PRECISION_ONNX, engine_name

DEFAULT_CALIB = Path("calibration")  # what the passes calibrate on when --calib is not given


def source_onnx(spec, precision: str, *, out: str | Path = "artifacts", calib: str | Path | None = None,
                progress: Callable[[str], None] | None = None) -> Path:
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
    from .optimize import optimize

    return Path(optimize(spec, precision, out=out, calib=calib, progress=progress, reprove=False))


def build_module_engine(spec, precision: str, *, out: str | Path = "artifacts", calib: str | Path | None = None,
                        flavor: str = "auto", batch: Sequence[int] | None = None,
                        dims: Mapping[str, Sequence[int]] | None = None, workspace_mb: int | None = None,
                        opt_level: int | None = None, target_cc: Sequence[str] | None = None,
                        version_compatible: bool = False, cache_dir: str | Path | None = None, force: bool = False,
                        config_dir=None, progress: Callable[[str], None] | None = None) -> dict:
    """``artifacts/<module>/<precision>.<flavor>.engine`` from the module's ONNX artifact for ``precision``."""
    merged = {**config_dims(spec.module, config_dir), **dict(dims or {})}
    fl = F.resolve(flavor)  # fail before the upstream passes when no TensorRT can build here
    onnx_path = source_onnx(spec, precision, out=out, calib=calib, progress=progress)
    out_path = artifact_dir(out, spec) / engine_name(precision, fl.name)
    return build_engine(onnx_path, spec, precision=precision, out_path=out_path, flavor=fl, batch=batch, dims=merged,
                        workspace_mb=workspace_mb, opt_level=opt_level, target_cc=target_cc,
                        version_compatible=version_compatible, cache_dir=cache_dir or Path(out) / DEFAULT_CACHE,
                        force=force, progress=progress)
