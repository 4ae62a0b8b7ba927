"""Helpers shared by the pass tests: tiny models built to break FP16, CLI plumbing, graph checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

from conftest import REPO

CALIB = REPO / "calibration"
# few faces keep the suite fast; every pass still sees real photographs
FAST = ["--samples", "4", "--parity-samples", "2"]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def one_line_error(capsys) -> str:
    """The single 'error:' line, which must end stderr (warnings, which rich may wrap, can come before)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def no_partials(folder: Path) -> None:
    assert not list(Path(folder).rglob("*.part")), list(Path(folder).rglob("*.part"))


def overflow_net():
    """A conv whose output is squared after a x300 gain: mid-graph values reach ~1e6 (FP16 max is
    65504) before being scaled back down, so a naive FP16 model returns inf."""
    import torch
    from torch import nn

    class Overflow(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.head = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            big = y * 300.0
            sq = big * big  # up to ~1e6
            return self.head(sq * 1e-4 + y)

    torch.manual_seed(0)
    return Overflow().eval()


def cancel_net():
    """Catastrophic cancellation: (y + 3000) - 3000 keeps FP16 values in range but rounds y to steps
    of 2, so one Add node ruins the output without any overflow."""
    import torch
    from torch import nn

    class Cancel(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.head = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            shifted = y + 3000.0
            return self.head(shifted - 3000.0)

    torch.manual_seed(0)
    return Cancel().eval()


def export_foreign(model, path: Path, shape=(1, 3, 32, 32)) -> Path:
    """Export ``model`` like any other tool would: no ffexport metadata."""
    import torch

    from ffexport.export.onnx import export_onnx

    export_onnx(model, (torch.rand(*shape),), path, input_names=["x"], output_names=["y"],
                dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return path


def check_tensorrt_qdq(path: Path) -> dict:
    """Independent check of the TensorRT Q/DQ form; returns counts."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    qdq = [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "no Q/DQ nodes"
    for n in qdq:
        assert len(n.input) == 3 and n.input[2] in inits, f"{n.name}: zero point must be an explicit initializer"
        zp = numpy_helper.to_array(inits[n.input[2]])
        assert zp.dtype.name == "int8" and not zp.any(), f"{n.name}: zero point {zp} (want int8 zeros)"
    per_channel = biases = 0
    for n in m.graph.node:
        if n.op_type not in ("Conv", "Gemm", "ConvTranspose", "MatMul"):
            continue
        w = producer.get(n.input[1])
        if w is None or w.op_type != "DequantizeLinear":
            continue  # left in float
        q = inits.get(w.input[0])
        assert q is not None and q.data_type == onnx.TensorProto.INT8, f"{n.name}: weight not stored as int8"
        scale = numpy_helper.to_array(inits[w.input[1]])
        axis = [a.i for a in w.attribute if a.name == "axis"]
        assert scale.ndim == 1 and axis, f"{n.name}: weight scale {scale.shape} axis {axis} is not per-channel"
        out_axis = 0 if n.op_type == "Conv" else None
        if out_axis is not None:
            assert axis[0] == out_axis and scale.shape[0] == q.dims[0], f"{n.name}: per-channel axis {axis}"
        per_channel += 1
        if n.op_type in ("Conv", "Gemm", "ConvTranspose") and len(n.input) > 2 and n.input[2]:
            b = inits.get(n.input[2])
            assert b is not None and b.data_type == onnx.TensorProto.FLOAT, f"{n.name}: bias is not a float initializer"
            biases += 1
    return {"qdq": len(qdq), "per_channel_weights": per_channel, "float_biases": biases}


def export_byo_net(tmp_path: Path, monkeypatch) -> Path:
    """A seeded Conv-ReLU-Conv net exported by `ffexport onnx --model byo_net:make` (bring your own) into
    tmp_path/arts/make/fp32.onnx, with the working directory set to tmp_path; returns that file."""
    from ffexport.cli.main import main

    (tmp_path / "byo_net.py").write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),\n"
        "                               torch.nn.Conv2d(8, 4, 3, padding=1))\n")
    monkeypatch.chdir(tmp_path)
    assert main(["onnx", "--model", "byo_net:make", "--input", "image:1x3x48x48", "--out", "arts"]) == 0
    return tmp_path / "arts" / "make" / "fp32.onnx"
