"""Shared pieces of the TensorRT tests: skip markers that state their reason, and small real ONNX models.

The ONNX models come from ffexport's own exporter on registered modules (the
blender has no weights and exports in a second; the detector is 1.7 MB), so
the TensorRT parser sees exactly what users' artifacts hold.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ffexport._lazy import available

RTX_MISSING = "tensorrt_rtx is not installed: pip install 'ffexport[trt]' (CI installs it)"
needs_rtx = pytest.mark.skipif(not available("tensorrt_rtx"), reason=RTX_MISSING)

# the blender's frame and crop axes: the profile configs/blender.yaml gives them
BLENDER_DIMS = ["--dim", "height=64:720:2160", "--dim", "width=64:1280:3840", "--dim", "crop_size=64:128:512"]


def export_spec_onnx(spec, path: Path) -> Path:
    """``spec``'s seeded torch model exported to ``path`` with its dynamic axes (no parity run: fixtures only)."""
    import torch

    from ffexport.export.onnx import export_onnx
    from ffexport.models import build_model

    model = build_model(spec)
    example = []
    for t in spec.inputs:
        x = torch.rand(*t.concrete(1))
        if t.name == "affine":  # crop -> frame: a 2x scale placed inside the frame
            x = torch.tensor([[[2.0, 0.0, 100.0], [0.0, 2.0, 50.0]]])
        elif t.name == "mask":
            x = torch.tensor([[0.3, 0.0, 0.0, 0.0, 0.0]])
        example.append(x)
    meta = {"ffexport.spec": spec.key}
    return export_onnx(model, tuple(example), path, input_names=spec.input_names, output_names=spec.output_names,
                       dynamic_axes=spec.dynamic_axes, opset=spec.opset, metadata=meta)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    return lines[0]
