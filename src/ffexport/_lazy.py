"""Lazy imports of heavy optional dependencies, with an install hint when missing.

ffexport never installs anything itself: a missing package is a one-line user
error that names the extra to install.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from types import ModuleType

# module name -> (distribution name, extra that provides it)
_EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("torch", "pip install torch==2.13.0"),
    "onnx": ("onnx", "pip install 'ffexport[export]'"),
    "onnxruntime": ("onnxruntime", "pip install 'ffexport[export]' (or 'ffexport[gpu]' for CUDA)"),
    "onnxsim": ("onnxsim", "pip install 'ffexport[passes]'"),
    "onnxslim": ("onnxslim", "pip install 'ffexport[passes]'"),
    "onnxconverter_common": ("onnxconverter-common", "pip install 'ffexport[passes]'"),
    "tensorrt": ("tensorrt", "pip install tensorrt (TensorRT 10/11), or 'ffexport[trt]' for TensorRT for RTX"),
    "tensorrt_rtx": ("tensorrt-rtx-cu13", "pip install 'ffexport[trt]'"),
    "av": ("av", "pip install 'ffexport[video]'"),
    "cv2": ("opencv-python-headless", "pip install 'ffexport[video]'"),
    "matplotlib": ("matplotlib", "pip install 'ffexport[bench]'"),
    "PIL": ("pillow", "pip install pillow"),
    "yaml": ("pyyaml", "pip install pyyaml"),
    "pynvml": ("nvidia-ml-py", "pip install nvidia-ml-py"),
}


def require(name: str, purpose: str = "") -> ModuleType:
    """Import ``name`` or raise :class:`MissingDependencyError` with the install command."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        from .errors import MissingDependencyError

        top = name.split(".")[0]
        hint = _EXTRAS.get(top, (top, f"pip install {top}"))[1]
        why = f" (needed for {purpose})" if purpose else ""
        raise MissingDependencyError(f"{top} is not installed{why}: {hint}") from exc


def available(name: str) -> bool:
    """True when ``name`` can be imported (without importing it)."""
    return importlib.util.find_spec(name) is not None


def version_of(dist: str) -> str | None:
    """Installed version of a distribution, without importing it."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


import importlib.util  # noqa: E402  (kept at the bottom: only find_spec is used)
