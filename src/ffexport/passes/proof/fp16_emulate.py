"""FP16 as a GPU stores it, evaluated on the CPU.

onnxruntime's CPU kernels compute most FP16 ops in FP32: the session upcasts a
whole FP16 region and drops the casts inside it, so an FP16 model run on the CPU
only sees its weights rounded; activations keep FP32 precision and never
overflow.  TensorRT and CUDA store every FP16 tensor in FP16.  To judge an FP16
artifact honestly here, the FP16 pass also runs an *emulation*: the FP32 parent
with the weights of every FP16 node rounded to FP16 and a lossy
``Cast(FLOAT16) -> Cast(FLOAT)`` pair on every float tensor an FP16 node reads
or writes (values beyond 65504 become inf, as on the GPU).  Arithmetic inside a
node stays FP32, as in TensorRT's FP16 kernels, which accumulate in FP32.
"""

from __future__ import annotations

from typing import Callable

from ..._lazy import require

SUFFIX_IN, SUFFIX_RAW = "__fp16in", "__fp32raw"


def emulate(parent, fp16_nodes: set[str], is_float: Callable[[str], bool]):
    """A copy of ``parent`` (FP32) whose ``fp16_nodes`` read and write FP16-rounded tensors."""
    onnx = require("onnx")
    numpy_helper = require("onnx.numpy_helper")
    import numpy as np

    m = onnx.ModelProto()
    m.CopyFrom(parent)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    fp16_made = {n.output[k] for n in g.node if n.name in fp16_nodes for k in range(len(n.output))}
    rounded: dict[str, str] = {}
    nodes = []

    def pair(src: str, dst: str, tag: str) -> list:
        half = f"{dst}__half"
        return [onnx.helper.make_node("Cast", [src], [half], to=onnx.TensorProto.FLOAT16, name=f"{tag}/to_fp16"),
                onnx.helper.make_node("Cast", [half], [dst], to=onnx.TensorProto.FLOAT, name=f"{tag}/to_fp32")]

    for n in list(g.node):
        if n.name not in fp16_nodes:
            nodes.append(n)
            continue
        for k, t in enumerate(n.input):
            if not t or t in fp16_made or not is_float(t):
                continue
            if t not in rounded:
                name = t + SUFFIX_IN
                if t in inits:
                    arr = numpy_helper.to_array(inits[t])
                    # the converter clamps weights to the FP16 range, then stores them in FP16
                    arr16 = np.clip(arr, -65504.0, 65504.0).astype(np.float16).astype(np.float32)
                    g.initializer.append(numpy_helper.from_array(arr16, name))
                else:
                    nodes.extend(pair(t, name, f"emulate/{t}"))
                rounded[t] = name
            n.input[k] = rounded[t]
        nodes.append(n)
        for k, o in enumerate(n.output):
            if o and is_float(o):
                n.output[k] = o + SUFFIX_RAW
                nodes.extend(pair(o + SUFFIX_RAW, o, f"emulate/{o}"))
    del g.node[:]
    g.node.extend(nodes)
    g.ClearField("value_info")
    return m
