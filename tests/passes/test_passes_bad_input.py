"""Bad inputs to the passes: one clear line, exit != 0 where the job cannot be done, nothing half-written."""

from __future__ import annotations

import json
import shutil

import pytest

from ffexport.cli.main import main
from helpers.passes import CALIB, FAST, export_foreign, no_partials, one_line_error, overflow_net, sha


@pytest.fixture(scope="module")
def arts(tmp_path_factory, exported_small):
    out = tmp_path_factory.mktemp("bad")
    for module in ("mtcnn_rnet", "blender"):
        _, path = exported_small(module)
        shutil.copytree(path.parent, out / path.parent.name)
    return out


def _faces(folder, n, start=0):
    """Copy ``n`` calibration photos (with their landmark JSONs) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pics = sorted(p for p in CALIB.glob("*.jpg") if p.with_suffix(".json").is_file())[start:start + n]
    for p in pics:
        shutil.copy(p, folder / p.name)
        shutil.copy(p.with_suffix(".json"), folder / p.with_suffix(".json").name)
    return folder


def _int8(arts, calib, *extra):
    return main(["int8", "--module", "mtcnn_rnet", "--out", str(arts), "--calib", str(calib), "--force",
                 "--parity-samples", "2", *extra])


def test_empty_calibration_folder(arts, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _int8(arts, tmp_path / "empty") == 1
    assert "holds no images" in one_line_error(capsys)
    no_partials(arts)


def test_missing_calibration_folder(arts, tmp_path, capsys):
    assert _int8(arts, tmp_path / "nope") == 1
    assert "does not exist" in one_line_error(capsys)


def test_no_readable_images(arts, tmp_path, capsys):
    bad = tmp_path / "corrupt"
    bad.mkdir()
    for i in range(3):
        (bad / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert _int8(arts, bad) == 1
    assert "no readable face images" in one_line_error(capsys)


def test_corrupt_images_are_skipped_with_a_warning(arts, tmp_path, capsys):
    folder = _faces(tmp_path / "mixed", 7)
    (folder / "zz_broken.jpg").write_bytes(b"garbage")
    assert _int8(arts, folder, "--samples", "4") == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "zz_broken.jpg" in err
    rec = json.loads((arts / "mtcnn_rnet" / "manifest.json").read_text())["artifacts"]["int8.onnx"]
    assert rec["inputs"]["skipped_images"] == ["zz_broken.jpg"]


def test_too_few_images_remain(arts, tmp_path, capsys):
    folder = _faces(tmp_path / "few", 2)
    for i in range(3):
        (folder / f"broken{i}.png").write_bytes(b"nope")
    before = sha(arts / "mtcnn_rnet" / "fp32.sim.onnx") if (arts / "mtcnn_rnet" / "fp32.sim.onnx").exists() else None
    assert _int8(arts, folder) == 1
    line = one_line_error(capsys)
    assert "only 2 usable face image(s)" in line and "need at least 4" in line
    if before:
        assert sha(arts / "mtcnn_rnet" / "fp32.sim.onnx") == before


def test_image_without_landmarks_is_skipped(arts, tmp_path, capsys):
    folder = _faces(tmp_path / "nolm", 6)
    shutil.copy(CALIB / "obama.jpg", folder / "aaa_no_landmarks.jpg")  # no JSON beside it
    assert _int8(arts, folder, "--samples", "4") == 0
    err = capsys.readouterr().err
    assert "aaa_no_landmarks.jpg" in err and "landmarks" in err
    rec = json.loads((arts / "mtcnn_rnet" / "manifest.json").read_text())["artifacts"]["int8.onnx"]
    assert "aaa_no_landmarks.jpg" in rec["inputs"]["skipped_images"]
    assert "aaa_no_landmarks.jpg" not in rec["inputs"]["calibration"]["files"]


def test_samples_larger_than_the_set(arts, tmp_path, capsys):
    folder = _faces(tmp_path / "six", 6)
    assert _int8(arts, folder, "--samples", "50") == 1
    line = one_line_error(capsys)
    assert "--samples 50 is larger than the 6 usable images" in line


def test_int8_needs_calibration(arts, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./calibration here
    assert main(["int8", "--module", "mtcnn_rnet", "--out", str(arts)]) == 1
    assert "INT8 needs calibration faces: pass --calib DIR" in one_line_error(capsys)


def test_unknown_method_and_exclude(arts, capsys):
    assert _int8(arts, CALIB, "--method", "kl", *FAST) == 1
    line = one_line_error(capsys)
    assert "unknown calibration method 'kl'" in line and "entropy" in line
    assert _int8(arts, CALIB, "--exclude", "no_such_node", *FAST) == 1
    assert "--exclude no_such_node: no node of that name" in one_line_error(capsys)


def test_foreign_onnx_needs_inputs(tmp_path, capsys):
    src = export_foreign(overflow_net(), tmp_path / "theirs.onnx")
    assert main(["simplify", "--onnx", str(src)]) == 1
    captured = capsys.readouterr()
    assert "spec is unknown" in captured.err  # said once as a warning ...
    lines = [l for l in captured.err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "give each input as --input" in lines[0] and "x" in lines[0]
    assert main(["simplify", "--onnx", str(src), "--input", "image:1x3x32x32"]) == 1
    assert "do not match the inputs of theirs.onnx" in one_line_error(capsys)
    assert main(["simplify", "--onnx", str(src), "--input", "x:1x3x32x32"]) == 0  # ... and then it works
    assert (tmp_path / "theirs.sim.onnx").is_file()


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all", b"\x08\x07\x12\x03abc\x3a\x02zz"])
def test_unloadable_onnx(tmp_path, capsys, content):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(content)
    assert main(["simplify", "--onnx", str(bad), "--input", "x:1x3x8x8"]) == 1
    line = one_line_error(capsys)
    assert "broken.onnx" in line and ("not a readable ONNX model" in line or "no graph nodes" in line)
    assert [p.name for p in tmp_path.iterdir()] == ["broken.onnx"]


def test_missing_onnx(tmp_path, capsys):
    assert main(["fp16", "--onnx", str(tmp_path / "gone.onnx")]) == 1
    assert "does not exist" in one_line_error(capsys)


def test_module_and_onnx_together(tmp_path, capsys):
    assert main(["fp16", "--module", "blender", "--onnx", str(tmp_path / "x.onnx")]) == 1
    assert "either --module or --onnx" in one_line_error(capsys)


def test_failed_gate_keeps_previous_artifact(arts, tmp_path, capsys, monkeypatch):
    from ffexport.passes import fp16

    monkeypatch.setattr(fp16, "MAX_ROUNDS", 1)  # the outcome is the same after any number of rounds
    folder = arts / "blender"
    assert main(["fp16", "--module", "blender", "--out", str(arts), "--parity-samples", "1"]) == 0
    capsys.readouterr()
    good, record = sha(folder / "fp16.onnx"), json.loads((folder / "manifest.json").read_text())["artifacts"]["fp16.onnx"]
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "blender.yaml").write_text("gates:\n  fp16: {ssim: 1.5}\n")  # no model can pass this
    code = main(["fp16", "--module", "blender", "--out", str(arts), "--parity-samples", "1", "--force",
                 "--config-dir", str(cfg)])
    assert code == 1
    line = one_line_error(capsys)
    assert "FP16 of fp32.sim.onnx still fails ssim >= 1.5" in line and "fp16.onnx left as it was" in line
    assert "after 1 round with" in line  # the blender keeps all of its nodes in FP32: no node left to rank
    assert sha(folder / "fp16.onnx") == good
    assert json.loads((folder / "manifest.json").read_text())["artifacts"]["fp16.onnx"] == record
    no_partials(arts)


def test_unrecorded_export_is_not_overwritten(tmp_path, exported_small, capsys):
    """An fp32.onnx nobody recorded is not silently replaced."""
    _, path = exported_small("blender")
    (tmp_path / "blender").mkdir()
    shutil.copy(path, tmp_path / "blender" / "fp32.onnx")
    before = sha(tmp_path / "blender" / "fp32.onnx")
    assert main(["fp16", "--module", "blender", "--out", str(tmp_path)]) == 1
    line = one_line_error(capsys)
    assert "has no export record" in line and "--force" in line
    assert sha(tmp_path / "blender" / "fp32.onnx") == before
