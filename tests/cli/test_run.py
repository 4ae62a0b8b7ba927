"""`ffexport run`, the README's main job: one module's failure does not stop the others."""

from __future__ import annotations

import pytest

from ffexport.cli.main import main
from helpers.passes import CALIB


def test_run_finishes_every_other_module_and_names_the_failure(tmp_path, capsys, monkeypatch):
    from ffexport._lazy import available

    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "mtcnn_onet.yaml").write_text("gates:\n  int8: {rel_err: 1.0e-6}\n")  # no INT8 can meet this
    monkeypatch.setenv("FFEXPORT_CONFIGS", str(cfg))
    out = tmp_path / "arts"
    trt = available("tensorrt_rtx") or available("tensorrt")
    code = main(["run", "--module", "mtcnn_onet,mtcnn_rnet", "--precisions", "fp32,int8", "--calib", str(CALIB),
                 "--out", str(out), "--trt" if trt else "--no-trt"])
    captured = capsys.readouterr()
    assert code == 1
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("error:")]
    failed, steps = (2, 8) if trt else (1, 4)  # an engine whose ONNX failed is failed with it
    assert len(errors) == 1 and errors[0].startswith(
        f"error: {failed} of {steps} steps failed (the others finished); mtcnn_onet/facenet-pytorch int8: INT8 of "
        "fp32.sim.onnx still fails"), captured.err
    # output to a log: one line per finished step, then the report and the failures' table
    lines = captured.out.splitlines()
    for label, state in (("mtcnn_onet/facenet-pytorch fp32", "built"), ("mtcnn_onet/facenet-pytorch int8", "failed"),
                         ("mtcnn_rnet/facenet-pytorch fp32", "built"), ("mtcnn_rnet/facenet-pytorch int8", "built")):
        for what in (label, *([f"{label} engine"] if trt else [])):
            assert any(ln.startswith(f"{what}: {state}") for ln in lines), (what, captured.out)
    assert f"{failed} of {steps} steps failed" in captured.out
    assert (out / "mtcnn_rnet" / "int8.onnx").is_file() and (out / "mtcnn_onet" / "fp32.sim.onnx").is_file()
    assert not (out / "mtcnn_onet" / "int8.onnx").exists()
    if trt:
        assert list((out / "mtcnn_rnet").glob("int8*.engine")) and list((out / "mtcnn_onet").glob("fp32*.engine"))


def test_run_single_step_failure_is_its_own_line(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "mtcnn_onet.yaml").write_text("gates:\n  int8: {rel_err: 1.0e-6}\n")
    monkeypatch.setenv("FFEXPORT_CONFIGS", str(cfg))
    code = main(["run", "--module", "mtcnn_onet", "--precisions", "int8", "--calib", str(CALIB),
                 "--out", str(tmp_path / "arts"), "--no-trt"])
    err = capsys.readouterr().err
    assert code == 1
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: INT8 of fp32.sim.onnx still fails"), err


@pytest.mark.parametrize("bad", ["fp64", "int4"])
def test_run_unknown_precision(capsys, bad):
    assert main(["run", "--precisions", f"fp32,{bad}"]) == 1
    assert f"unknown precision {bad!r}" in capsys.readouterr().err
