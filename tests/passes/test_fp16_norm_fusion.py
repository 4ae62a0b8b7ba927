"""The FP16 pass fuses instance norms written out as reductions into InstanceNormalization (issue #12).

Kept in FP32 (the default block list), a fused norm costs one Cast in and one Cast out; left off the block list
(the generators' specs), it runs in FP16 with no Cast at all.  Either way the FP16 gate decides."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from helpers.passes import export_foreign


def norm_net():
    """conv -> AdaIN-style norm (eps 1e-6) -> relu -> conv -> norm (eps 1e-8) -> conv: the generators' pattern."""
    import torch
    from torch import nn

    from ffexport.models.generator import instance_norm

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.head = nn.Conv2d(8, 4, 1)
            self.gamma = nn.Parameter(torch.rand(1, 8, 1, 1) + 0.5)
            self.beta = nn.Parameter(torch.randn(1, 8, 1, 1) * 0.1)

        def forward(self, x):
            y = torch.relu(self.gamma * instance_norm(self.conv1(x) * 40.0, 1e-6) + self.beta)
            return self.head(instance_norm(self.conv2(y), 1e-8))

    torch.manual_seed(0)
    return Net().eval()


def _ops(model) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def _run(model, x):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_foreign(norm_net(), tmp_path_factory.mktemp("norm") / "norm.onnx")


def test_fusion_is_the_same_arithmetic(exported):
    import onnx

    from ffexport.passes import graph

    model = onnx.load(str(exported))
    fused_model, fused = graph.fuse_instance_norms(model)
    assert len(fused) == 2 and sorted(f["epsilon"] for f in fused) == pytest.approx([1e-8, 1e-6])
    ops = _ops(fused_model)
    assert ops["InstanceNormalization"] == 2 and not ops["ReduceMean"] and not ops["Sqrt"], ops
    assert all(len(f["replaces"]) >= 7 and f["channels"] == 8 for f in fused)
    onnx.checker.check_model(fused_model)
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(_run(fused_model, x), _run(model, x), rtol=1e-4, atol=1e-4)
    assert _ops(model)["ReduceMean"] == 4  # the input is left as it was


def _hand_norm(square: str = "mul", inv: str = "div_one", axes=(2, 3), opset: int = 17, leak: bool = False):
    """y = norm(x) built node by node in one of the forms the fusion accepts (or, with ``axes`` or ``leak``,
    one it must refuse)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    nodes, inits = [], [onnx.numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
                        onnx.numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                        onnx.numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    if opset >= 18:
        inits.append(onnx.numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        mean = lambda i, o, n: h.make_node("ReduceMean", [i, "axes"], [o], name=n, keepdims=1)  # noqa: E731
    else:
        mean = lambda i, o, n: h.make_node("ReduceMean", [i], [o], name=n, axes=list(axes), keepdims=1)  # noqa: E731
    nodes += [mean("x", "m", "mean"), h.make_node("Sub", ["x", "m"], ["d"], name="sub")]
    nodes.append(h.make_node("Mul", ["d", "d"], ["sq"], name="sq") if square == "mul"
                 else h.make_node("Pow", ["d", "two"], ["sq"], name="sq"))
    nodes += [mean("sq", "v", "var"), h.make_node("Add", ["v", "eps"], ["ve"], name="add"),
              h.make_node("Sqrt", ["ve"], ["s"], name="sqrt")]
    if inv == "div":
        nodes.append(h.make_node("Div", ["d", "s"], ["y"], name="div"))
    else:
        nodes.append(h.make_node("Div", ["one", "s"], ["r"], name="inv") if inv == "div_one"
                     else h.make_node("Reciprocal", ["s"], ["r"], name="inv"))
        nodes.append(h.make_node("Mul", ["r", "d"], ["y"], name="scale"))
    outputs = [h.make_tensor_value_info("y", T.FLOAT, None)]
    if leak:
        outputs.append(h.make_tensor_value_info("v", T.FLOAT, None))
    g = h.make_graph(nodes, "norm", [h.make_tensor_value_info("x", T.FLOAT, ["batch", 4, 6, 5])], outputs, inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


@pytest.mark.parametrize("square,inv,opset", [("mul", "div_one", 17), ("pow", "div", 17),
                                              ("mul", "reciprocal", 18)])
def test_fusion_forms(square, inv, opset):
    from ffexport.passes import graph

    model = _hand_norm(square, inv, opset=opset)
    fused_model, fused = graph.fuse_instance_norms(model)
    assert [f["channels"] for f in fused] == [4] and [n.op_type for n in fused_model.graph.node] == [
        "InstanceNormalization"]
    assert "eps" not in {i.name for i in fused_model.graph.initializer}  # read by nothing now
    x = np.random.default_rng(1).normal(3.0, 2.0, (3, 4, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(_run(fused_model, x), _run(model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", ["channels_too", "statistic_read_elsewhere", "kept_by_name"])
def test_fusion_leaves_other_patterns(case):
    from ffexport.passes import graph

    model = _hand_norm(axes=(1, 2, 3)) if case == "channels_too" else _hand_norm(leak=case != "kept_by_name")
    fused_model, fused = graph.fuse_instance_norms(model, keep=["sqrt"] if case == "kept_by_name" else ())
    assert fused == [] and fused_model is model


def _chain_fp16(src, **overrides):
    from ffexport.artifacts.optimize import Chain
    from ffexport.artifacts.targets import onnx_target

    with pytest.warns(UserWarning, match="spec is unknown"):
        target = onnx_target(src, ["x:1x3x32x32"])
    return Chain(target, parity_samples=2).fp16(src, force=True, **overrides)


def test_fp16_kept_norm_costs_one_cast_pair(exported):
    """InstanceNormalization on the block list: each fused norm is one FP32 node between two Casts."""
    import onnx

    res = _chain_fp16(exported, block_ops=("InstanceNormalization", "ReduceMean", "Sqrt", "Pow"))
    rec = res.record
    assert rec["parity"]["passed"] and rec["fused"]["count"] == 2
    kept = {k["node"]: k for k in rec["kept_fp32"]}
    fused = {f["node"]: f for f in rec["fused"]["nodes"]}
    assert all(kept[n]["reason"] == "block list" and f["precision"] == "fp32" for n, f in fused.items())
    assert not any(k["op"] in ("ReduceMean", "Sqrt") for k in rec["kept_fp32"])
    m = onnx.load(str(res.path))
    producer = {o: n for n in m.graph.node for o in n.output}
    norms = [n for n in m.graph.node if n.op_type == "InstanceNormalization"]
    assert len(norms) == 2 and all(producer[n.input[0]].op_type == "Cast" for n in norms)
    around = [n for n in m.graph.node if n.op_type == "Cast" and (
        producer.get(n.input[0]) in norms or any(n.output[0] == nn.input[0] for nn in norms))]
    assert len(around) == 4, [n.name for n in around]


def test_fp16_norm_in_fp16_without_casts(exported):
    """Off the block list (as the generators' specs have it): the norms run in FP16 and pass the gate."""
    import onnx

    res = _chain_fp16(exported, block_ops=("ReduceMean", "Sqrt", "Pow"))
    rec = res.record
    assert rec["parity"]["passed"] and rec["fused"]["count"] == 2
    assert all(f["precision"] == "fp16" for f in rec["fused"]["nodes"])
    assert not any(k["op"] == "InstanceNormalization" for k in rec["kept_fp32"])
    m = onnx.load(str(res.path))
    inits = {i.name: i for i in m.graph.initializer}
    norms = [n for n in m.graph.node if n.op_type == "InstanceNormalization"]
    assert len(norms) == 2 and all(inits[n.input[1]].data_type == onnx.TensorProto.FLOAT16 for n in norms)
    producer = {o: n for n in m.graph.node for o in n.output}
    casts = [n for n in m.graph.node if n.op_type == "Cast" and getattr(producer.get(n.input[0]), "op_type", "")
             != "Constant"]  # a Cast of a Constant is folded when onnxruntime loads the model
    assert len(casts) == 2, [n.name for n in casts]  # the float32 input and output only


def test_generator_specs_leave_instance_norm_to_fp16():
    from ffexport import specs
    from ffexport.specs._common import FP16_BLOCK_DEFAULT

    for v in specs.variants("generator"):
        ops = specs.get("generator", v).fp16_block_ops
        assert "InstanceNormalization" not in ops
        assert set(ops) == set(FP16_BLOCK_DEFAULT) - {"InstanceNormalization"}
