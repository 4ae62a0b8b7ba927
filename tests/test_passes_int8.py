"""`ffexport int8`: calibrated Q/DQ models in TensorRT's form, streamed calibration, honest records."""

from __future__ import annotations

import json
import shutil

import pytest

from ffexport.cli.main import main
from passes_util import CALIB, FAST, check_tensorrt_qdq


@pytest.fixture(scope="module")
def arts(tmp_path_factory, exported_small):
    out = tmp_path_factory.mktemp("int8")
    for module in ("encoder", "blender", "mtcnn_rnet"):
        _, path = exported_small(module)
        shutil.copytree(path.parent, out / path.parent.name)
    return out


def _record(folder, name="int8.onnx"):
    return json.loads((folder / "manifest.json").read_text())["artifacts"][name]


def test_int8_real_module_tensorrt_form(arts, capsys):
    code = main(["int8", "--module", "encoder", "--variant", "iresnet18", "--out", str(arts), "--calib", str(CALIB),
                 *FAST])
    assert code == 0, capsys.readouterr().err
    folder = arts / "encoder.iresnet18"
    counts = check_tensorrt_qdq(folder / "int8.onnx")
    assert counts["per_channel_weights"] >= 15 and counts["float_biases"] >= 15
    rec = _record(folder)
    assert rec["pass"] == "int8" and rec["parent"]["file"] == "fp32.sim.onnx" and rec["quantized"]
    assert rec["parity"]["passed"]
    assert rec["parity"]["vs_parent"]["metrics"]["cosine_min"]["embedding"] >= 0.99
    assert rec["parity"]["vs_torch"]["metrics"]["cosine_min"]["embedding"] >= 0.99
    cal = rec["inputs"]["calibration"]
    assert cal["count"] == 4 and len(cal["set_sha256"]) == 64 and rec["calibration_samples"] == 4
    assert rec["inputs"]["held_out"] is True  # parity faces are not the calibration faces
    assert not set(cal["files"]) & set(rec["inputs"]["parity_faces"]["files"])
    q = rec["quantization"]
    assert q["method"] == "minmax" and q["extra_options"]["ActivationSymmetric"] and not q["extra_options"]["QuantizeBias"]
    assert rec["qdq"]["tensorrt_form"] and rec["qdq"]["nonzero_zero_points"] == []
    assert (folder / "int8.onnx").stat().st_size < 0.35 * (folder / "fp32.sim.onnx").stat().st_size


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_int8_methods(arts, capsys, method):
    """The histogram methods on a trained module (MTCNN R-Net)."""
    code = main(["int8", "--module", "mtcnn_rnet", "--out", str(arts), "--calib", str(CALIB), "--method", method,
                 "--force", *FAST])
    assert code == 0, capsys.readouterr().err
    rec = _record(arts / "mtcnn_rnet")
    assert rec["options"]["method"] == method and rec["parity"]["passed"]
    check_tensorrt_qdq(arts / "mtcnn_rnet" / "int8.onnx")


def test_exclude_keeps_node_in_float(arts, capsys):
    import onnx

    sim = onnx.load(str(arts / "mtcnn_rnet" / "fp32.sim.onnx"), load_external_data=False)
    first_conv = next(n.name for n in sim.graph.node if n.op_type == "Conv")
    code = main(["int8", "--module", "mtcnn_rnet", "--out", str(arts), "--calib", str(CALIB), "--force",
                 "--exclude", first_conv, *FAST])
    assert code == 0, capsys.readouterr().err
    q = onnx.load(str(arts / "mtcnn_rnet" / "int8.onnx"))
    producer = {o: n.op_type for n in q.graph.node for o in n.output}
    node = next(n for n in q.graph.node if n.name == first_conv)
    assert all(producer.get(i) != "DequantizeLinear" for i in node.input), "excluded node reads quantized tensors"
    rec = _record(arts / "mtcnn_rnet")
    assert {"node": first_conv, "op": "Conv", "reason": "requested", "detail": "--exclude"} in rec["excluded"]


def test_blender_has_nothing_to_quantize(arts, capsys):
    import onnx

    code = main(["int8", "--module", "blender", "--out", str(arts), "--calib", str(CALIB), *FAST])
    assert code == 0, capsys.readouterr().err
    rec = _record(arts / "blender")
    assert rec["quantized"] is False and "no quantizable ops" in rec["note"] and "FP32 graph" in rec["note"]
    q = onnx.load(str(arts / "blender" / "int8.onnx"))
    assert not [n for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert rec["parity"]["passed"]


def test_calibration_streams(tmp_path, exported_small, monkeypatch):
    """Faces are loaded while the calibrator consumes them, never all up front."""
    from onnxruntime.quantization import calibrate as ort_cal

    from ffexport import faces, specs
    from ffexport.passes.optimize import Run
    from ffexport.passes.target import module_target

    _, path = exported_small("mtcnn_rnet")
    shutil.copytree(path.parent, tmp_path / path.parent.name)
    run = Run(module_target(specs.get("mtcnn_rnet"), tmp_path), calib=CALIB, samples=12, parity_samples=2,
              precision="int8")
    sim = run.chain("fp32", force=set())
    events: list[str] = []
    load = faces.load_face

    def counting_load(*a, **k):
        events.append("load")
        return load(*a, **k)

    collect = ort_cal.MinMaxCalibrater.collect_data

    def counting_collect(self, reader):
        events.append("collect")
        return collect(self, reader)

    monkeypatch.setattr(faces, "load_face", counting_load)
    monkeypatch.setattr(ort_cal.MinMaxCalibrater, "collect_data", counting_collect)
    run.int8(sim, force=True)
    first = events.index("collect")
    assert events.count("load") >= 12 and events.count("collect") >= 2
    assert events[:first].count("load") <= 9, "calibration loaded every face before calibrating"


def test_shape_inference_leaves_the_working_directory_clean(tmp_path, exported_small, monkeypatch):
    """onnxruntime's symbolic shape inference gives up on the detector and dumps its partial model
    (plus a uuid-named .data file) into the working directory; the pass runs it elsewhere."""
    from ffexport.passes.int8 import _pre_process

    _, path = exported_small("detector")
    cwd = tmp_path / "user-project"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    label = _pre_process(path, tmp_path / "pre.onnx")
    assert "shape inference" in label and (tmp_path / "pre.onnx").is_file()
    assert sorted(p.name for p in cwd.iterdir()) == []
