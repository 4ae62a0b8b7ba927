"""ffexport: PyTorch face-swap pipeline modules to proven ONNX, FP16, INT8 and TensorRT artifacts.

Importing ffexport is cheap: torch, onnx, onnxruntime and TensorRT load only
when a function that needs them runs.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "export_onnx": ("ffexport.export.onnx", "export_onnx"),
    "export_module": ("ffexport.export.onnx", "export_module"),
    "build_model": ("ffexport.models", "build_model"),
    "check_parity": ("ffexport.export.parity", "check_parity"),
    "Pipeline": ("ffexport.pipeline.pipeline", "Pipeline"),
    "open_runner": ("ffexport.backends", "open_runner"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'ffexport' has no attribute {name!r}")
