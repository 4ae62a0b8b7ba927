"""Which Q/DQ convolutions does onnxruntime's x86 CPU provider fuse into QLinearConv?

Four two- or three-conv graphs, quantized (weighted ops only, per-channel INT8 weights, float biases)
with symmetric INT8 activations (TensorRT's form, ffexport's int8.onnx) and with asymmetric UINT8
activations (onnxruntime's x86 recommendation); prints how many convolutions the session fused.

    python benchmarks/int8_fanout_probe.py

Result on onnxruntime 1.31 (x86-64): with INT8 activations a convolution whose quantized output
has more than one consumer (or is a graph output) stays DequantizeLinear -> Conv (float) ->
QuantizeLinear; with UINT8 activations every one is fused.
"""

from __future__ import annotations

import argparse
import collections
import logging
import tempfile
import warnings
from pathlib import Path

CASES = ("one consumer", "float op + concat", "two convs", "graph output + conv")


def build(case: str):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1, bias=False)
            self.c2 = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)
            self.c3 = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)

        def forward(self, x):
            a = self.c1(x)
            if case == "one consumer":
                return self.c2(torch.relu(a * 1.5))
            if case == "float op + concat":
                return torch.cat([a, self.c2(torch.relu(a * 1.5))], 1)
            if case == "two convs":
                return self.c2(a) + self.c3(a)
            return a, self.c2(a)

    torch.manual_seed(0)
    return Net().eval()


def main() -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime import quantization as qz

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    d = Path(tempfile.mkdtemp())
    print(f"onnxruntime {ort.__version__}")
    print(f"{'graph':24s} {'activations':12s} QLinearConv  float Conv")
    for case in CASES:
        src = d / "m.onnx"
        outs = ["y", "z"] if case.startswith("graph output") else ["y"]
        torch.onnx.export(build(case), (torch.rand(1, 3, 32, 32),), str(src), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=outs)
        for act, symmetric in (("QInt8", True), ("QUInt8", False)):
            data = iter([{"x": np.random.default_rng(i).random((1, 3, 32, 32), dtype=np.float32)} for i in range(4)])

            class Reader(qz.CalibrationDataReader):
                def get_next(self):
                    return next(data, None)

            q = d / "q.onnx"
            qz.quantize_static(str(src), str(q), Reader(), quant_format=qz.QuantFormat.QDQ, per_channel=True,
                               activation_type=getattr(qz.QuantType, act), weight_type=qz.QuantType.QInt8,
                               op_types_to_quantize=["Conv"],
                               extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                                              "QuantizeBias": False})
            so = ort.SessionOptions()
            so.optimized_model_filepath = str(d / "opt.onnx")
            so.log_severity_level = 3
            ort.InferenceSession(str(q), so, providers=["CPUExecutionProvider"])
            ops = collections.Counter(n.op_type for n in onnx.load(str(d / "opt.onnx")).graph.node)
            print(f"{case:24s} {act:12s} {ops['QLinearConv']:11d}  {ops['Conv']:10d}")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    main()
