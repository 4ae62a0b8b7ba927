"""`ffexport int8`: calibrated Q/DQ models in TensorRT's form, streamed calibration, honest records."""

from __future__ import annotations

import json
import shutil

import pytest

from ffexport.cli.main import main
from helpers.passes import CALIB, FAST, check_tensorrt_qdq, export_byo_net


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
    from ffexport.artifacts.optimize import Chain
    from ffexport.artifacts.targets import module_target

    _, path = exported_small("mtcnn_rnet")
    shutil.copytree(path.parent, tmp_path / path.parent.name)
    run = Chain(module_target(specs.get("mtcnn_rnet"), tmp_path), calib=CALIB, samples=12, parity_samples=2,
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
    from ffexport.passes.int8 import pre_process

    _, path = exported_small("detector")
    cwd = tmp_path / "user-project"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    label = pre_process(path, tmp_path / "pre.onnx")
    assert "shape inference" in label and (tmp_path / "pre.onnx").is_file()
    assert sorted(p.name for p in cwd.iterdir()) == []


# --- an INT8 pass that quantises or fails; a gate that does not depend on the CPU ---------------------------

def _qdq_count(path) -> int:
    import onnx

    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in onnx.load(str(path)).graph.node)


def test_gate_judges_the_qdq_arithmetic_not_the_cpu_kernels(tmp_path, capsys, monkeypatch):
    """The parity the gate sees is the Q/DQ graph computed as its operators define it, which an independent
    fake-quant computation in torch reproduces; onnxruntime's fused integer kernels (CPU-dependent) are
    recorded beside it, not gated."""
    import onnx
    import torch
    from onnx import numpy_helper

    from ffexport.backends.ort import OrtRunner

    src = export_byo_net(tmp_path, monkeypatch)
    assert main(["int8", "--onnx", str(src), "--calib", str(CALIB), *FAST]) == 0, capsys.readouterr().err
    folder = src.parent
    rec = _record(folder)
    assert rec["quantized"] and rec["excluded"] == [] and rec["quantized_nodes"] == 2
    check_tensorrt_qdq(folder / "int8.onnx")
    kernels = rec["onnxruntime_cpu_kernels"]
    assert kernels["gated"] is False and set(kernels["cpu"]) >= {"avx2", "avx512f", "vnni"}
    assert "rel_err" in kernels["metrics"]

    # independent: the graph's own operators interpreted in torch (float32 math, round half to even)
    q = onnx.load(str(folder / "int8.onnx"))
    env = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in q.graph.initializer}

    def per_axis(scale, like, axis):
        return scale.reshape([-1 if d == axis else 1 for d in range(like.dim())]) if scale.dim() else scale

    x = torch.rand(1, 3, 48, 48) * 2 - 1
    env["image"] = x
    for n in q.graph.node:
        a = [env[i] if i else None for i in n.input]
        axis = next((at.i for at in n.attribute if at.name == "axis"), 1)
        if n.op_type == "QuantizeLinear":
            env[n.output[0]] = torch.clamp(torch.round(a[0] / per_axis(a[1], a[0], axis)), -128, 127)
        elif n.op_type == "DequantizeLinear":
            env[n.output[0]] = a[0].float() * per_axis(a[1], a[0], axis)
        elif n.op_type == "Conv":
            pads = next(at.ints for at in n.attribute if at.name == "pads")
            env[n.output[0]] = torch.nn.functional.conv2d(a[0], a[1], a[2], padding=pads[0])
        elif n.op_type == "Relu":
            env[n.output[0]] = torch.relu(a[0])
        else:
            raise AssertionError(f"unexpected op {n.op_type}")
    out_name = q.graph.output[0].name
    with OrtRunner(folder / "int8.onnx", qdq_reference=True) as r:
        got = r.infer({"image": x})[out_name]
    step = float(env[next(n for n in q.graph.node if n.output[0] == out_name).input[1]])
    diff = (got - env[out_name]).abs()
    # equal but for rare one-step rounding ties from float summation order
    assert float(diff.max()) <= step * 1.001 and float((diff > 0).float().mean()) < 0.01, float(diff.max())


def test_explicit_exclude_of_every_node_is_recorded_as_not_quantized(tmp_path, capsys, monkeypatch):
    src = export_byo_net(tmp_path, monkeypatch)
    import onnx

    convs = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Conv"]
    code = main(["int8", "--onnx", str(src), "--calib", str(CALIB), "--exclude", ",".join(convs), *FAST])
    out = capsys.readouterr()
    assert code == 0, out.err
    rec = _record(src.parent)
    assert rec["quantized"] is False and "names every one of the 2 quantizable nodes" in rec["note"]
    assert _qdq_count(src.parent / "int8.onnx") == 0
    assert "nothing is quantized" in out.out


def test_quantizer_that_drops_nodes_is_a_failure_not_a_success(tmp_path, capsys, monkeypatch):
    """If the quantizer leaves asked-for nodes in float, the pass fails in one line and writes nothing."""
    from ffexport.passes import int8 as int8_pass
    from helpers.passes import no_partials, one_line_error

    src = export_byo_net(tmp_path, monkeypatch)
    monkeypatch.setattr(int8_pass, "_quantize", lambda pre, out, *a, **k: shutil.copyfile(pre, out))
    code = main(["int8", "--onnx", str(src), "--calib", str(CALIB), *FAST])
    assert code == 1
    line = one_line_error(capsys)
    assert "left 2 of the 2 quantizable nodes" in line and "in float without being asked" in line
    assert not (src.parent / "int8.onnx").exists()
    no_partials(src.parent)


def _config_dir(tmp_path, module: str, body: str):
    d = tmp_path / "cfg"
    d.mkdir(exist_ok=True)
    (d / f"{module}.yaml").write_text(body)
    return d


def test_a_gate_no_search_can_meet_fails_naming_the_nodes(tmp_path, capsys, exported_small):
    """A seeded MTCNN O-Net asked for an INT8 rel_err of 1e-6: the search excludes nodes until one is left
    quantized, then fails in one line naming the nodes that hold the error; nothing is written."""
    from helpers.passes import no_partials, one_line_error

    _, path = exported_small("mtcnn_onet")
    out = tmp_path / "arts"
    shutil.copytree(path.parent, out / path.parent.name)
    cfg = _config_dir(tmp_path, "mtcnn_onet", "gates:\n  int8: {rel_err: 1.0e-6}\n")
    code = main(["int8", "--module", "mtcnn_onet", "--out", str(out), "--calib", str(CALIB), "--config-dir", str(cfg),
                 *FAST])
    assert code == 1
    line = one_line_error(capsys)
    assert "INT8 of fp32.sim.onnx still fails" in line and "the error is held by /" in line, line
    assert "quantizable ones); the error" in line and "int8.onnx left as it was" in line
    assert not (out / "mtcnn_onet" / "int8.onnx").exists()
    no_partials(out)


def test_module_all_keeps_going_after_a_failed_gate(tmp_path, capsys, exported_small):
    """One module's failed INT8 gate does not stop the others: they finish, the summary names the failure,
    and the command exits 1 with one error line."""
    out = tmp_path / "arts"
    for module in ("mtcnn_onet", "mtcnn_rnet"):
        _, path = exported_small(module)
        shutil.copytree(path.parent, out / path.parent.name)
    cfg = _config_dir(tmp_path, "mtcnn_onet", "gates:\n  int8: {rel_err: 1.0e-6}\n")
    code = main(["optimize", "--module", "mtcnn_onet,mtcnn_rnet", "--precision", "int8", "--out", str(out),
                 "--calib", str(CALIB), "--config-dir", str(cfg), *FAST])
    assert code == 1
    captured = capsys.readouterr()
    assert (out / "mtcnn_rnet" / "int8.onnx").is_file() and not (out / "mtcnn_onet" / "int8.onnx").exists()
    assert "1 of 2 optimize jobs failed" in captured.out and "mtcnn_rnet" in captured.out
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: 1 of 2 optimize jobs failed (the others finished); "
                                                     "mtcnn_onet"), captured.err
