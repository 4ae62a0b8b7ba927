"""`ffexport simplify`: onnxsim (onnxslim fallback), dynamic batch kept, op table printed, parity recorded."""

from __future__ import annotations

import json
import shutil

import pytest

from ffexport.cli.main import main
from helpers.passes import CALIB


@pytest.fixture(scope="module")
def encoder_out(tmp_path_factory, exported_small):
    """An artifact folder holding the exported small encoder (copied from the session export)."""
    spec, path = exported_small("encoder")
    out = tmp_path_factory.mktemp("simplify")
    shutil.copytree(path.parent, out / path.parent.name)
    return spec, out


def test_simplify_real_module(encoder_out, capsys):
    import onnx
    import torch

    from ffexport.backends.ort import OrtRunner

    spec, out = encoder_out
    code = main(["simplify", "--module", "encoder", "--variant", "iresnet18", "--out", str(out),
                 "--calib", str(CALIB), "--parity-samples", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "before" in captured.out and "after" in captured.out and "total" in captured.out  # the op table
    folder = out / "encoder.iresnet18"
    rec = json.loads((folder / "manifest.json").read_text())["artifacts"]["fp32.sim.onnx"]
    assert rec["pass"] == "simplify" and rec["tool"] in ("onnxsim", "onnxslim")
    assert rec["parent"]["file"] == "fp32.onnx"
    assert rec["ops_before"] and rec["ops_after"] and rec["nodes_after"] <= rec["nodes_before"]
    par = rec["parity"]
    assert par["passed"] and par["vs_parent"]["passed"] and par["vs_torch"]["passed"]
    assert par["vs_parent"]["metrics"]["cosine_min"]["embedding"] >= 0.9999
    assert "calibration" in par["inputs"] and par["samples"] == 2  # real faces, not noise
    model = onnx.load(str(folder / "fp32.sim.onnx"), load_external_data=False)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert {p.key: p.value for p in model.metadata_props}["ffexport.spec"] == spec.key
    with OrtRunner(folder / "fp32.sim.onnx", spec=spec) as r:  # the dynamic batch axis still works
        assert r.infer({"input": torch.rand(3, 3, 112, 112) * 2 - 1})["embedding"].shape == (3, 512)


def test_onnxslim_fallback_when_onnxsim_fails(tmp_path, exported_small, monkeypatch):
    """Where onnxsim fails, onnxslim is used and the record says which and why."""
    from ffexport import specs
    from ffexport.passes import simplify as S
    from ffexport.artifacts.optimize import optimize

    spec, path = exported_small("blender")
    shutil.copytree(path.parent, tmp_path / path.parent.name)

    def broken(model):
        raise RuntimeError("simulated onnxsim crash")

    monkeypatch.setitem(S._RUN, "onnxsim", broken)
    results = []
    out = optimize(specs.get("blender"), "fp32", out=tmp_path, parity_samples=2, results=results)
    assert out.name == "fp32.sim.onnx" and out.is_file()
    rec = results[-1].record
    assert rec["tool"] == "onnxslim"
    assert rec["fallback_from"] == [{"tool": "onnxsim", "failed": "RuntimeError: simulated onnxsim crash"}]
    assert rec["parity"]["passed"]


def test_parity_failure_falls_back_then_fails_cleanly(tmp_path, exported_small, monkeypatch, capsys):
    """A tool whose output breaks parity is not used; if every tool does, nothing is written."""
    import onnx

    from ffexport.passes import simplify as S

    spec, path = exported_small("blender")
    shutil.copytree(path.parent, tmp_path / path.parent.name)

    def corrupt(model):  # a "simplification" that changes the numbers: scale the output by 2
        from onnx import helper

        m = S._onnxslim(model)
        out = m.graph.output[0].name
        for n in m.graph.node:
            for k, o in enumerate(n.output):
                if o == out:
                    n.output[k] = out + "_pre"
        m.graph.initializer.append(onnx.numpy_helper.from_array(__import__("numpy").array(2.0, "float32"), "two"))
        m.graph.node.append(helper.make_node("Mul", [out + "_pre", "two"], [out], name="double"))
        return m

    monkeypatch.setitem(S._RUN, "onnxsim", corrupt)
    monkeypatch.setitem(S._RUN, "onnxslim", corrupt)
    code = main(["simplify", "--module", "blender", "--out", str(tmp_path), "--parity-samples", "1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "failed its gates with every tool" in err and "psnr_db" in err
    assert not (tmp_path / "blender" / "fp32.sim.onnx").exists()
    assert not list(tmp_path.rglob("*.part"))
