"""Backends behind one runner interface. ``open_runner`` picks one by name."""

from __future__ import annotations

from pathlib import Path

from ..errors import UnknownNameError
from .base import BACKENDS, Runner  # noqa: F401


def open_runner(backend: str, *, spec=None, model=None, path: str | Path | None = None,
                device: str = "cpu", precision: str = "fp32", **kw) -> Runner:
    """A runner for ``backend``: torch and compile need ``model``; ort and trt need ``path`` (ONNX / engine)."""
    if backend == "torch":
        from .torch import TorchRunner

        return TorchRunner(model, spec=spec, device=device, precision=precision, **kw)
    if backend == "compile":
        from .compiled import CompileRunner

        return CompileRunner(model, spec=spec, device=device, precision=precision, **kw)
    if backend == "ort":
        from .ort import OrtRunner

        return OrtRunner(path, spec=spec, device=device, **kw)
    if backend == "trt":
        from .trt import TrtRunner

        return TrtRunner(path, spec=spec, device=device, **kw)
    raise UnknownNameError("backend", backend, BACKENDS)
