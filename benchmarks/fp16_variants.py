"""Issue #12, session 17: graphs edited from MTCNN's built R-Net and O-Net artifacts, to time on the GPU host with
benchmarks/gpu_fp16_tidy.py (which layer of an FP16 artifact's cost is which).

    PYTHONPATH=src python benchmarks/fp16_variants.py --arts ARTIFACTS --out FOLDER [--kinds tidy,flat,io,fp32flat]

Writes ``<module>.<kind>.onnx`` into FOLDER for mtcnn_rnet and mtcnn_onet (from ARTIFACTS/<module>/fp16.onnx and
fp32.sim.onnx), each checked against the artifact it came from on onnxruntime's CPU (largest difference printed):

* ``fp16tidy``: fp16.onnx without the Casts the FP16 pass now undoes (ffexport.passes.fp16._tidy_casts);
* ``fp16flat``: that, with the flatten written as one Flatten node instead of Shape, Gather, Unsqueeze, Concat and
  Reshape (the batch axis stays dynamic);
* ``fp16io``: that, with float16 inputs and outputs and no Cast at all (the Softmax in FP16): the least an FP16
  graph of this net can run, outside the IO contract (float32) that ffexport's artifacts keep;
* ``fp32flat``: fp32.sim.onnx with the same one-node flatten, the fair FP32 counterpart of ``fp16flat``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ffexport.passes.fp16 import _tidy_casts


def tidy(m16, parent):
    _tidy_casts(m16, parent, keep_io_types=True)
    return m16


def flatten(m):
    """Shape -> Gather(0) -> Unsqueeze -> Concat([b, -1]) -> Reshape as one Flatten(axis=1) (the nets' only Reshape)."""
    g = m.graph
    prod = {o: n for n in g.node for o in n.output}
    r = next(n for n in g.node if n.op_type == "Reshape")
    concat = prod[r.input[1]]
    unsq = prod[concat.input[0]]
    gat = prod[unsq.input[0]]
    shp = prod[gat.input[0]]
    for n in (r, concat, unsq, gat, shp):
        g.node.remove(n)
    at = list(g.node).index(prod[r.input[0]]) + 1
    g.node.insert(at, helper.make_node("Flatten", [r.input[0]], [r.output[0]], axis=1, name="/Flatten"))
    for n in [n for n in g.node if n.op_type == "Cast" and n.input[0] == shp.input[0]]:
        g.node.remove(n)
    del g.value_info[:]
    return m


def fp16_io(m):
    """Every Cast gone: the inputs and outputs float16, the Softmax in FP16."""
    g = m.graph
    prod = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    for n in [n for n in g.node if n.op_type == "Cast"]:
        src, dst = n.input[0], n.output[0]
        if dst in outputs:  # the producer writes the output's name; readers of src read it too
            p = prod[src]
            p.output[list(p.output).index(src)] = dst
            old, new = src, dst
        else:
            old, new = dst, src
        for c in g.node:
            for k, i in enumerate(c.input):
                if i == old:
                    c.input[k] = new
        g.node.remove(n)
    for v in (*g.input, *g.output):
        v.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    del g.value_info[:]
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arts", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--kinds", default="fp16tidy,fp16flat,fp16io,fp32flat")
    a = ap.parse_args()
    import onnxruntime as ort

    a.out.mkdir(parents=True, exist_ok=True)
    for module, size in (("mtcnn_rnet", 24), ("mtcnn_onet", 48)):
        f32, f16 = a.arts / module / "fp32.sim.onnx", a.arts / module / "fp16.onnx"
        makers = {"fp16tidy": lambda: tidy(onnx.load(f16), onnx.load(f32)),
                  "fp16flat": lambda: flatten(tidy(onnx.load(f16), onnx.load(f32))),
                  "fp16io": lambda: fp16_io(flatten(tidy(onnx.load(f16), onnx.load(f32)))),
                  "fp32flat": lambda: flatten(onnx.load(f32))}
        x = np.random.default_rng(0).random((3, 3, size, size), dtype=np.float32)
        ref = ort.InferenceSession(str(f32), providers=["CPUExecutionProvider"]).run(None, {"input": x})
        for kind in a.kinds.split(","):
            m = makers[kind]()
            onnx.checker.check_model(m)
            path = a.out / f"{module}.{kind}.onnx"
            onnx.save(m, path)
            feed = x.astype(np.float16) if kind == "fp16io" else x
            got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": feed})
            diff = max(float(np.abs(g.astype(np.float32) - r).max()) for g, r in zip(got, ref))
            print(f"{path.name}: {len(m.graph.node)} nodes, max |diff| vs fp32.sim.onnx {diff:.3g}")


if __name__ == "__main__":
    main()
