"""`ffexport fp16`: FP16 artifacts with fragile nodes kept FP32, chosen by range checks and parity."""

from __future__ import annotations

import json
import shutil

import pytest

from ffexport.cli.main import main
from helpers.passes import cancel_net, export_foreign, overflow_net


@pytest.fixture(scope="module")
def arts(tmp_path_factory, exported_small):
    out = tmp_path_factory.mktemp("fp16")
    for module in ("encoder", "blender"):
        _, path = exported_small(module)
        shutil.copytree(path.parent, out / path.parent.name)
    return out


def _record(folder, name="fp16.onnx"):
    return json.loads((folder / "manifest.json").read_text())["artifacts"][name]


def test_fp16_real_module(arts, capsys):
    import onnx

    code = main(["fp16", "--module", "encoder", "--variant", "iresnet18", "--out", str(arts), "--parity-samples", "2"])
    assert code == 0, capsys.readouterr().err
    folder = arts / "encoder.iresnet18"
    rec = _record(folder)
    assert rec["pass"] == "fp16" and rec["parent"]["file"] == "fp32.sim.onnx"
    assert rec["parity"]["passed"]
    assert rec["parity"]["vs_parent"]["metrics"]["cosine_min"]["embedding"] >= 0.999
    assert rec["parity"]["vs_torch"]["metrics"]["cosine_min"]["embedding"] >= 0.999
    assert rec["keep_io_types"] is True and "onnxconverter-common" in rec["converter"]
    m = onnx.load(str(folder / "fp16.onnx"))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # IO kept float32
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    conv_w = {n.input[1] for n in m.graph.node if n.op_type == "Conv"}
    assert all(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer if i.name in conv_w)
    assert (folder / "fp16.onnx").stat().st_size < 0.6 * (folder / "fp32.sim.onnx").stat().st_size


def test_fp16_without_io_types(arts, capsys):
    import onnx
    import torch

    from ffexport.backends.ort import OrtRunner
    from ffexport import specs

    code = main(["fp16", "--module", "encoder", "--variant", "iresnet18", "--out", str(arts), "--parity-samples", "1",
                 "--no-keep-io-types"])
    assert code == 0, capsys.readouterr().err
    folder = arts / "encoder.iresnet18"
    m = onnx.load(str(folder / "fp16.onnx"), load_external_data=False)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert _record(folder)["options"]["keep_io_types"] is False
    with OrtRunner(folder / "fp16.onnx", spec=specs.get("encoder", "iresnet18")) as r:
        assert r.infer({"input": torch.zeros(2, 3, 112, 112)})["embedding"].dtype == torch.float16


def test_block_list_nodes_are_listed(arts, capsys):
    """The blender's arithmetic is on its block list (pixel coordinates, a blend of float32 frames): every node
    stays FP32, the manifest says why with the spec's reason, and the converter's casts between kept nodes are
    undone, so the FP16 artifact computes what its parent computes, with the parent's Casts only."""
    import collections

    import onnx

    from ffexport import specs

    code = main(["fp16", "--module", "blender", "--out", str(arts), "--parity-samples", "2"])
    assert code == 0, capsys.readouterr().err
    rec = _record(arts / "blender")
    kept = {k["op"]: k for k in rec["kept_fp32"]}
    reason = specs.get("blender").fp16_block_reason
    assert kept["GridSample"]["reason"] == "block list" and reason in kept["GridSample"]["detail"]
    assert rec["kept_fp32_counts"]["block list"] >= 1 and rec["parity"]["passed"] and rec["fp16_nodes"] == 0
    assert rec["casts_undone"]["round_trips"] > 0
    casts = [collections.Counter(n.op_type for n in onnx.load(str(arts / "blender" / f)).graph.node)["Cast"]
             for f in ("fp32.sim.onnx", "fp16.onnx")]
    assert casts[0] == casts[1]
    assert rec["parity"]["vs_parent"]["metrics"]["max_abs"]["output"] == 0.0


def test_overflow_nodes_kept_fp32(tmp_path, capsys):
    """A model built to overflow FP16 mid-graph: the pass succeeds, the culprits stay FP32, listed as overflow."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from ffexport.passes.proof.fp16_emulate import emulate

    src = export_foreign(overflow_net(), tmp_path / "overflow.onnx")
    # stored in FP16 as a GPU stores it, the whole model really overflows
    fp32 = onnx.load(str(src))
    naive = emulate(fp32, {n.name for n in fp32.graph.node}, lambda t: True)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    assert not np.isfinite(ort.InferenceSession(naive.SerializeToString()).run(None, {"x": x})[0]).all()

    code = main(["fp16", "--onnx", str(src), "--input", "x:1x3x32x32", "--parity-samples", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "spec is unknown" in captured.err  # a foreign ONNX works, with a warning
    rec = _record(tmp_path, "overflow.fp16.onnx")
    overflow = {k["node"]: k for k in rec["kept_fp32"] if k["reason"] == "overflow"}
    assert overflow, rec["kept_fp32"]
    assert any("65504" in k["detail"] for k in overflow.values())
    assert rec["parity"]["passed"] and not any(rec["parity"]["vs_parent"]["nonfinite"].values())
    y = ort.InferenceSession(str(tmp_path / "overflow.fp16.onnx")).run(None, {"x": x})[0]
    assert np.isfinite(y).all()


def test_overflow_caught_by_parity_alone(tmp_path, monkeypatch):
    """Without the range check, the inf/NaN outputs fail the gate and the fallback finds the culprits."""
    from ffexport.passes import fp16 as F
    from ffexport.artifacts.optimize import Chain
    from ffexport.artifacts.targets import onnx_target

    monkeypatch.setattr(F, "OVERFLOW_LIMIT", float("inf"))
    src = export_foreign(overflow_net(), tmp_path / "overflow.onnx")
    with pytest.warns(UserWarning, match="spec is unknown"):
        target = onnx_target(src, ["x:1x3x32x32"])
    rec = Chain(target, parity_samples=2).fp16(src).record
    first = rec["rounds"][0]
    assert not first["passed"]
    parity_kept = [k for k in rec["kept_fp32"] if k["reason"] == "parity"]
    assert parity_kept and any("inf/NaN" in k["detail"] for k in parity_kept)
    assert rec["parity"]["passed"] and rec["rounds"][-1]["passed"]


def test_precision_loss_found_by_parity(tmp_path):
    """No overflow, but (y + 3000) - 3000 rounds y to steps of 2 in FP16: parity finds the Add."""
    from ffexport.artifacts.optimize import Chain
    from ffexport.artifacts.targets import onnx_target

    src = export_foreign(cancel_net(), tmp_path / "cancel.onnx")
    with pytest.warns(UserWarning):
        target = onnx_target(src, ["x:1x3x32x32"])
    rec = Chain(target, parity_samples=2).fp16(src).record
    assert not rec["rounds"][0]["passed"] and rec["parity"]["passed"]
    kept = {k["op"] for k in rec["kept_fp32"] if k["reason"] == "parity"}
    assert "Add" in kept, rec["kept_fp32"]
    assert rec["kept_fp32_counts"].get("overflow") is None


def test_fp16_keeps_the_output_contract_and_no_idle_casts(tmp_path, exported_small, capsys):
    """MTCNN's R-Net ends in a Softmax kept in FP32 and reads a shape mid-graph: the converter casts the Softmax's
    float32 result back to float16 as the output, and casts a tensor only a Shape node reads.  The FP16 artifact's
    outputs are float32 like its parent's (onnxruntime returns float32), no Cast is read only by Shape nodes, and
    the record counts what was undone."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    _, path = exported_small("mtcnn_rnet")
    shutil.copytree(path.parent, tmp_path / path.parent.name)
    code = main(["fp16", "--module", "mtcnn_rnet", "--out", str(tmp_path), "--parity-samples", "2"])
    assert code == 0, capsys.readouterr().err
    folder = tmp_path / path.parent.name
    parent = onnx.load(str(folder / "fp32.sim.onnx"))
    m = onnx.load(str(folder / "fp16.onnx"))
    want = {o.name: o.type.tensor_type.elem_type for o in parent.graph.output}
    assert {o.name: o.type.tensor_type.elem_type for o in m.graph.output} == want
    assert set(want.values()) == {onnx.TensorProto.FLOAT}
    readers = {}
    for n in m.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    idle = [n.name for n in m.graph.node if n.op_type == "Cast" and set(readers.get(n.output[0], [])) == {"Shape"}]
    assert idle == []
    rec = _record(folder)
    assert rec["casts_undone"]["shape_casts"] >= 1 and rec["casts_undone"]["output_casts"] == 1
    assert rec["parity"]["passed"]
    x = np.random.default_rng(0).random((3, 3, 24, 24), dtype=np.float32)
    got, ref = (ort.InferenceSession(str(folder / f), providers=["CPUExecutionProvider"]).run(None, {"input": x})
                for f in ("fp16.onnx", "fp32.sim.onnx"))
    for g, r in zip(got, ref):
        assert g.dtype == np.float32 and np.abs(g - r).max() < 5e-3
