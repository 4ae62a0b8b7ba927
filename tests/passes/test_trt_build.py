"""Real TensorRT builds on a machine without a GPU: TensorRT for RTX builds ahead of time.

`ffexport trt` takes the module's ONNX artifact for the precision (made through
the passes: fp32.sim.onnx, fp16.onnx, Q/DQ int8.onnx calibrated on the
repository's calibration/ faces), builds a strongly typed engine, and records
it; a second run with the same key is a cache hit that builds nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ffexport.cli.main import main
from ffexport.manifest import Manifest
from helpers.trt import digest, needs_rtx

pytestmark = needs_rtx
from conftest import REPO

CALIB = REPO / "calibration"
from ffexport.vocab import PRECISION_ONNX as ONNX_FOR  # noqa: E402


ENCODER = ["--module", "encoder", "--variant", "iresnet18"]  # the real iResNet-18: 96 MB of FP32 weights


@pytest.fixture(scope="module")
def art(session_artifacts) -> Path:
    return session_artifacts  # the upstream ONNX artifacts are shared with the other tests


@pytest.fixture(autouse=True)
def _outside_the_repo(tmp_path, monkeypatch):
    """Run from a scratch folder: onnxruntime's INT8 shape inference writes temporary files into the CWD."""
    monkeypatch.chdir(tmp_path)


def _trt(art: Path, *args: str) -> int:
    return main(["trt", "--calib", str(CALIB), "--out", str(art), *args])


def _record(folder: Path, name: str) -> dict:
    return Manifest.load(folder).get(name)


def _onnx_ops(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_each_precision(art, precision, capsys):
    import onnx
    import tensorrt_rtx

    assert _trt(art, *ENCODER, "--precision", precision, "--force") == 0
    folder = art / "encoder.iresnet18"
    engine = folder / f"{precision}.tensorrt_rtx.engine"
    data = engine.read_bytes()
    assert data[:4] == b"vtrt", "not a TensorRT-RTX plan"
    rec = _record(folder, engine.name)
    onnx_path = folder / ONNX_FOR[precision]
    # built from the precision's own ONNX artifact, as it is now
    assert rec["pass"] == "trt" and rec["parent"]["file"] == onnx_path.name
    assert rec["parent"]["sha256"] == digest(onnx_path) == rec["key"]["onnx_sha256"]
    assert rec["sha256"] == digest(engine) and rec["engine_size"] == len(data) == rec["size_bytes"]
    assert rec["flavor"] == "tensorrt_rtx" and rec["trt_version"] == tensorrt_rtx.__version__
    assert rec["target_cc"] == ["default"] and rec["build_time_s"] > 0
    assert rec["options"]["strongly_typed"] is True and "none" in rec["options"]["precision_flags"]
    # the precision lives in the graph the engine was parsed from
    ops = _onnx_ops(onnx_path)
    if precision == "int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    else:
        assert "QuantizeLinear" not in ops
    if precision == "fp16":
        m = onnx.load(str(onnx_path), load_external_data=False)
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    # profile: configs/encoder.yaml's batch {min 1, opt 1, max 8}; the 112x112 crop is fixed
    assert rec["profile"] == {"input": {"min": [1, 3, 112, 112], "opt": [1, 3, 112, 112], "max": [8, 3, 112, 112]}}
    ins = {t["name"]: t for t in rec["io"]["inputs"]}
    assert ins["input"]["shape"] == [-1, 3, 112, 112] and ins["input"]["profile"] == rec["profile"]["input"]
    assert rec["io"]["outputs"] == [{"name": "embedding", "dtype": "float", "shape": [-1, 512]}]
    # TensorRT for RTX has no timing cache to persist: the record says so and no file pretends otherwise
    assert rec["timing_cache_hit"] is None and rec["timing_cache"]["used"] is False
    assert "ignores timing caches" in rec["timing_cache"]["reason"]
    assert not (art / ".trt-cache").exists()


def test_second_run_is_a_cache_hit(art, capsys):
    engine = art / "encoder.iresnet18" / "int8.tensorrt_rtx.engine"
    assert _trt(art, *ENCODER, "--precision", "int8") == 0
    before = (digest(engine), engine.stat().st_mtime_ns)
    capsys.readouterr()
    assert _trt(art, *ENCODER, "--precision", "int8") == 0
    assert (digest(engine), engine.stat().st_mtime_ns) == before, "the second run rebuilt the engine"
    from ffexport import specs
    from ffexport.artifacts.engines import build_module_engine

    rec = build_module_engine(specs.get("encoder", "iresnet18"), "int8", out=art, calib=CALIB)
    assert rec["engine_cache_hit"] is True and rec["sha256"] == before[0]


def test_changed_key_rebuilds_and_force_rebuilds(art, capsys):
    engine = art / "encoder.iresnet18" / "fp32.tensorrt_rtx.engine"
    assert _trt(art, *ENCODER, "--precision", "fp32") == 0
    first = _record(engine.parent, engine.name)
    assert _trt(art, *ENCODER, "--precision", "fp32", "--batch-profile", "2:3:6") == 0
    rec = _record(engine.parent, engine.name)
    assert rec["profile"]["input"] == {"min": [2, 3, 112, 112], "opt": [3, 3, 112, 112], "max": [6, 3, 112, 112]}
    assert rec["key"] != first["key"] and rec["sha256"] != first["sha256"]
    assert _trt(art, *ENCODER, "--precision", "fp32", "--batch-profile", "2:3:6", "--target-cc", "8.6,12.0") == 0
    rec2 = _record(engine.parent, engine.name)
    assert rec2["target_cc"] == ["8.6", "12.0"] and rec2["key"]["target_cc"] == ["8.6", "12.0"]
    mtime = engine.stat().st_mtime_ns
    assert _trt(art, *ENCODER, "--precision", "fp32", "--batch-profile", "2:3:6", "--target-cc", "8.6,12.0", "--force") == 0
    assert engine.stat().st_mtime_ns > mtime, "--force did not rebuild"


def test_blender_profile_comes_from_configs(art):
    from ffexport import specs
    from ffexport.artifacts.engines import build_module_engine

    rec = build_module_engine(specs.get("blender"), "fp32", out=art, calib=CALIB)
    # configs/blender.yaml: batch {1, 1, 8}; trt.dims height [64, 720, 2160], width [64, 1280, 3840], crop 64..512
    assert rec["profile"]["frame"] == {"min": [1, 3, 64, 64], "opt": [1, 3, 720, 1280], "max": [8, 3, 2160, 3840]}
    assert rec["profile"]["crop"] == {"min": [1, 3, 64, 64], "opt": [1, 3, 128, 128], "max": [8, 3, 512, 512]}
    assert rec["profile"]["affine"] == {"min": [1, 2, 3], "opt": [1, 2, 3], "max": [8, 2, 3]}
    assert rec["notes"] == []
    again = build_module_engine(specs.get("blender"), "fp32", out=art, calib=CALIB)
    assert again["engine_cache_hit"] is True and again["sha256"] == rec["sha256"]


def test_inspect_without_gpu_reads_the_record(art, capsys):
    engine = art / "encoder.iresnet18" / "fp16.tensorrt_rtx.engine"
    assert _trt(art, *ENCODER, "--precision", "fp16") == 0
    capsys.readouterr()
    assert main(["inspect", str(engine)]) == 0
    cap = capsys.readouterr()
    assert "IO tensors" in cap.out and "build record" in cap.out and "embedding" in cap.out  # a table: may wrap
    assert "no CUDA GPU here" in cap.err and "cannot deserialise an engine without one" in cap.err
    assert main(["inspect", str(engine), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["deserialized"] is False and info["flavor"] == "tensorrt_rtx"
    assert info["sha256"] == digest(engine) and info["record"]["profile"]["input"]["max"] == [8, 3, 112, 112]


def test_bring_your_own_onnx(art, tmp_path):
    """`--onnx PATH`: an ffexport artifact keeps its module's folder and profile; any other file needs only its
    dynamic axes' ranges."""
    src = art / "encoder.iresnet18" / "fp16.onnx"
    if not src.is_file():
        assert _trt(art, *ENCODER, "--precision", "fp16") == 0
    assert main(["trt", "--onnx", str(src), "--precision", "fp16", "--out", str(tmp_path), "--batch-profile", "1:2:4"]) == 0
    engine = tmp_path / "encoder.iresnet18" / "fp16.tensorrt_rtx.engine"
    rec = _record(engine.parent, engine.name)
    assert rec["parent"]["sha256"] == digest(src) and rec["sha256"] == digest(engine)
    assert rec["profile"]["input"] == {"min": [1, 3, 112, 112], "opt": [2, 3, 112, 112], "max": [4, 3, 112, 112]}
