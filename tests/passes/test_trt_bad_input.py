"""Each bad input of `ffexport trt` / `ffexport inspect` / the TensorRT runner: one line, exit 1, engines untouched.

Builds are real (TensorRT for RTX builds on this CPU-only machine); the engine
under attack is the blender's, which exports in a second.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ffexport.cli.main import main
from helpers.trt import BLENDER_DIMS, digest, export_spec_onnx, needs_rtx, one_error_line

pytestmark = needs_rtx


@pytest.fixture(scope="module")
def blender_onnx(tmp_path_factory) -> Path:
    from ffexport import specs

    return export_spec_onnx(specs.get("blender"), tmp_path_factory.mktemp("onnx") / "blender.onnx")


@pytest.fixture()
def built(blender_onnx, tmp_path, capsys):
    """An fp32 blender engine built through the CLI, its folder and the digests of what must not change."""
    out = tmp_path / "artifacts"
    assert main(["trt", "--onnx", str(blender_onnx), "--name", "blender", "--precision", "fp32", "--out", str(out),
                 *BLENDER_DIMS]) == 0
    capsys.readouterr()
    engine = out / "blender" / "fp32.tensorrt_rtx.engine"
    assert engine.is_file()
    return engine, {p.name: digest(p) for p in engine.parent.iterdir() if p.is_file()}


def _untouched(engine: Path, before: dict) -> None:
    now = {p.name: digest(p) for p in engine.parent.iterdir() if p.is_file()}
    assert now == before, "a failed command changed the artifact folder"
    assert not list(engine.parent.parent.rglob("*.part"))


# --- engines that cannot be read -------------------------------------------------------------

def test_corrupt_engine_file(tmp_path, capsys):
    bad = tmp_path / "garbage.engine"
    bad.write_bytes(b"this is not a TensorRT engine at all" * 100)
    assert main(["inspect", str(bad)]) == 1
    assert "is not a TensorRT or TensorRT-RTX engine" in one_error_line(capsys)
    truncated = tmp_path / "short.engine"
    truncated.write_bytes(b"vtrt")
    assert main(["inspect", str(truncated)]) == 1
    assert "shorter than an engine header" in one_error_line(capsys)


def test_truncated_engine_is_one_line_before_any_gpu_or_runtime_check(built, tmp_path, capsys):
    """The plan header gives the plan's length: a short file is named truncated by inspect and by the runner,
    lone or beside its record, on a host with or without a GPU (the check needs neither)."""
    from ffexport.backends.trt import TrtRunner
    from ffexport.errors import ArtifactError

    engine, _ = built
    data = engine.read_bytes()
    lone = tmp_path / "copy.engine"
    lone.write_bytes(data[:len(data) // 2])
    engine.write_bytes(data[:-1])
    for path, size in ((lone, len(data) // 2), (engine, len(data) - 1)):
        assert main(["inspect", str(path)]) == 1
        line = one_error_line(capsys)
        assert f"is truncated: its header gives {len(data)} bytes, the file has {size}" in line, line
        with pytest.raises(ArtifactError, match="is truncated"):
            TrtRunner(path, device="cuda").activate()


def test_corrupted_engine_body_is_caught_by_its_record(built, capsys):
    engine, _ = built
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0xFF
    engine.write_bytes(bytes(data))
    assert main(["inspect", str(engine)]) == 1
    assert "changed since it was built" in one_error_line(capsys)


def test_engine_from_another_version_by_record(built, capsys):
    engine, _ = built
    manifest = engine.parent / "manifest.json"
    data = json.loads(manifest.read_text())
    data["artifacts"][engine.name]["trt_version"] = "1.6.0.0"
    manifest.write_text(json.dumps(data))
    assert main(["inspect", str(engine)]) == 1
    line = one_error_line(capsys)
    assert "was built with TensorRT-RTX 1.6.0.0 but" in line and "rebuild" in line


def test_engine_from_another_version_by_header(built, tmp_path, capsys):
    """The plan header carries the version that built it (bytes 24..26: major, minor, patch); the runtime
    compares it with its own and says so, which must reach the user as one line."""
    engine, _ = built
    lone = tmp_path / "lone" / "old.engine"
    lone.parent.mkdir()
    data = bytearray(engine.read_bytes())
    data[25] = (data[25] + 1) % 256  # another minor version
    lone.write_bytes(bytes(data))
    assert main(["inspect", str(lone)]) == 1
    line = one_error_line(capsys)
    assert "built by another TensorRT-RTX version" in line


def test_runner_refuses_corrupt_engine_in_one_line(built, tmp_path):
    from ffexport.backends.trt import TrtRunner
    from ffexport.errors import ArtifactError

    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"\x00" * 4096)
    with pytest.raises(ArtifactError) as exc:
        TrtRunner(bad, device="cuda").activate()
    assert "\n" not in str(exc.value) and "is not a TensorRT or TensorRT-RTX engine" in str(exc.value)
    engine, _ = built
    data = bytearray(engine.read_bytes())
    data[-100] ^= 0x55
    engine.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="changed since it was built"):
        TrtRunner(engine, device="cuda").activate()


# --- builds that must fail -------------------------------------------------------------------

def _custom_op_onnx(path: Path) -> Path:
    """A model with an operator TensorRT has no importer or plugin for (a user's custom op)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu_0"),
             helper.make_node("FaceWarp", ["y"], ["z"], name="warp_0", domain="com.example")]
    graph = helper.make_graph(nodes, "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]),
              path)
    return path


def _mixed_type_onnx(path: Path) -> Path:
    """A half-converted FP16 graph: an Add of a float16 and a float32 tensor, which strong typing forbids."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["x"], ["xh"], name="to_half", to=TensorProto.FLOAT16),
             helper.make_node("Add", ["xh", "x"], ["y"], name="mixed_add")]
    graph = helper.make_graph(nodes, "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_parser_rejects_onnx_names_node_and_operator(built, tmp_path, capsys):
    engine, before = built
    out = engine.parent.parent
    for make, node, op, why in ((_custom_op_onnx, "warp_0", "FaceWarp", "Plugin not found"),
                                (_mixed_type_onnx, "mixed_add", "Add", "same input types")):
        model = make(tmp_path / f"{node}.onnx")
        assert main(["trt", "--onnx", str(model), "--name", "blender", "--precision", "fp32", "--force",
                     "--out", str(out)]) == 1
        line = one_error_line(capsys)
        assert f"cannot parse {model.name}: node '{node}' ({op})" in line and why in line, line
    _untouched(engine, before)


def test_unreadable_onnx(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    assert main(["trt", "--onnx", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "is not a readable ONNX model" in one_error_line(capsys)
    assert main(["trt", "--onnx", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in one_error_line(capsys)


@pytest.mark.parametrize("args, expected", [
    (["--batch-profile", "1:9:8"], "--batch-profile 1:9:8: opt 9 is outside min..max (1..8)"),
    (["--batch-profile", "4:2:1"], "max 1 is below min 4"),
    (["--batch-profile", "0:1:8"], "min must be at least 1"),
    (["--batch-profile", "1:x:8"], "expected integers min:opt:max"),
    (["--dim", "height=64:4000:2160"], "--dim height 64:4000:2160: opt 4000 is outside min..max (64..2160)"),
    (["--dim", "height"], "expected NAME=min:opt:max"),
])
def test_bad_profile(built, blender_onnx, args, expected, capsys):
    engine, before = built
    dims = BLENDER_DIMS[2:] if "--dim" in args else BLENDER_DIMS  # a bad height replaces the good one
    assert main(["trt", "--onnx", str(blender_onnx), "--name", "blender", "--precision", "fp32", "--force",
                 "--out", str(engine.parent.parent), *dims, *args]) == 1
    assert expected in one_error_line(capsys)
    _untouched(engine, before)


def test_dynamic_axis_without_range(blender_onnx, tmp_path, capsys):
    """A bring-your-own model whose frame axes nobody gave a range for: said so, with the flag to use."""
    from ffexport.errors import InputSpecError
    from ffexport.passes.trt import onnx_input_dims, resolve_profile

    with pytest.raises(InputSpecError, match=r"axis 2 \('height'\) is dynamic and has no range: give --dim height="):
        resolve_profile(onnx_input_dims(blender_onnx), batch=(1, 1, 8), dims={}, spec=None)


def test_bad_trt_config(tmp_path, capsys):
    cfg = tmp_path / "configs"
    cfg.mkdir()
    (cfg / "blender.yaml").write_text("trt:\n  dims:\n    height: [64, 9000, 2160]\n")
    assert main(["trt", "--module", "blender", "--precision", "fp32", "--config-dir", str(cfg),
                 "--out", str(tmp_path / "o")]) == 1
    assert "configs/blender.yaml: trt.dims.height: opt 9000 is outside min..max" in one_error_line(capsys)


def test_int8_without_calibration_or_int8_onnx(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # away from the repository's calibration/ folder, which the passes default to
    assert main(["trt", "--module", "encoder", "--variant", "iresnet18", "--precision", "int8",
                 "--out", str(tmp_path / "fresh")]) == 1
    line = one_error_line(capsys)
    assert "--precision int8 needs calibration images (--calib DIR" in line and "int8.onnx" in line
    assert not list((tmp_path / "fresh").rglob("*.engine"))


def test_workspace_too_small(built, blender_onnx, capsys):
    engine, before = built
    assert main(["trt", "--onnx", str(blender_onnx), "--name", "blender", "--precision", "fp32", "--force",
                 "--workspace", "1", "--out", str(engine.parent.parent), *BLENDER_DIMS]) == 1
    line = one_error_line(capsys)
    assert "cannot build blender.onnx (fp32)" in line and "raise --workspace (now 1 MB)" in line
    _untouched(engine, before)


@pytest.mark.parametrize("args, expected", [
    (["--workspace", "0"], "--workspace must be a positive number of MB"),
    (["--opt-level", "9"], "--opt-level must be 0..5"),
    (["--target-cc", "9.0"], "--target-cc 9.0: TensorRT-RTX"),
    (["--flavor", "tensorrt-llm"], "unknown TensorRT flavor 'tensorrt-llm'"),
    (["--precision", "int4"], "unknown precision 'int4'"),
    (["--version-compatible"], "--version-compatible needs TensorRT's lean runtime"),
])
def test_bad_builder_options(built, blender_onnx, args, expected, capsys):
    engine, before = built
    argv = ["trt", "--onnx", str(blender_onnx), "--name", "blender", "--force", "--out", str(engine.parent.parent),
            *BLENDER_DIMS, *args]
    if "--precision" not in args:
        argv += ["--precision", "fp32"]
    assert main(argv) == 1
    assert expected in one_error_line(capsys)
    _untouched(engine, before)


def test_no_gpu_is_one_honest_line(built):
    """On a machine without a GPU the runner says so (after the checks that need none), never a number."""
    from ffexport.backends.trt import TrtRunner, trt_availability
    from ffexport.errors import RuntimeUnavailableError
    from ffexport.backends.trt_flavors import local_gpu

    if local_gpu() is not None:
        pytest.skip("a CUDA GPU is present: tests/test_trt_runner.py covers this machine")
    engine, _ = built
    ok, reason = trt_availability()
    assert not ok and reason.startswith("no CUDA GPU")
    with pytest.raises(RuntimeUnavailableError) as exc:
        TrtRunner(engine, device="cuda").activate()
    assert "no CUDA GPU here" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(RuntimeUnavailableError, match="run on a CUDA GPU; use device 'cuda'"):
        TrtRunner(engine, device="cpu").activate()
    shutil.rmtree(engine.parent)


def test_several_modules_report_every_failure_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["trt", "--module", "blender,encoder", "--precision", "int8", "--out", str(tmp_path / "o")]) == 1
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: 2 of 2 int8 engines failed; blender/box-feather: "), cap.err
    assert "(+1 more, see the table" in lines[0] and cap.out.count("FAILED") == 2
