"""The config directory reaches every caller that makes artifacts: the passes' commands, `trt`, `run` and the
pipeline's build-on-demand all read the FP16 options from the `--config-dir` they are given, not ./configs."""

from __future__ import annotations

import json

import pytest

from ffexport.cli.main import main


def _fp16_options(out):
    rec = json.loads((out / "mtcnn_onet" / "manifest.json").read_text())["artifacts"]["fp16.onnx"]
    return rec["options"]


@pytest.fixture()
def config_dir(tmp_path):
    d = tmp_path / "my-configs"
    d.mkdir()
    # the repository's configs/ (FFEXPORT_CONFIGS in the tests) keep the FP16 inputs float32; this one does not
    (d / "mtcnn_onet.yaml").write_text("fp16: {keep_io_types: false, keep_fp32: []}\n")
    return d


def test_optimize_command(tmp_path, config_dir, capsys):
    out = tmp_path / "a"
    assert main(["optimize", "--module", "mtcnn_onet", "--precision", "fp16", "--out", str(out),
                 "--parity-samples", "2", "--config-dir", str(config_dir)]) == 0, capsys.readouterr().err
    assert _fp16_options(out)["keep_io_types"] is False


def test_trt_command(tmp_path, config_dir, capsys):
    pytest.importorskip("tensorrt_rtx")
    out = tmp_path / "b"
    assert main(["trt", "--module", "mtcnn_onet", "--precision", "fp16", "--out", str(out),
                 "--config-dir", str(config_dir)]) == 0, capsys.readouterr().err
    assert _fp16_options(out)["keep_io_types"] is False


def test_run_command(tmp_path, config_dir, capsys):
    out = tmp_path / "c"
    assert main(["run", "--module", "mtcnn_onet", "--precisions", "fp16", "--no-trt", "--out", str(out),
                 "--config-dir", str(config_dir)]) == 0, capsys.readouterr().err
    assert _fp16_options(out)["keep_io_types"] is False


def test_bench_command(tmp_path, config_dir, capsys):
    out = tmp_path / "e"
    assert main(["bench", "--modules", "mtcnn_onet", "--backends", "ort", "--precisions", "fp16", "--iters", "2",
                 "--warmup", "1", "--rotate", "2", "--out", str(out), "--report", str(tmp_path / "report"),
                 "--config-dir", str(config_dir), "--isolation", "subprocess"]) == 0, capsys.readouterr().err
    assert _fp16_options(out)["keep_io_types"] is False


def test_pipeline_build_on_demand(tmp_path, config_dir):
    from ffexport import specs
    from ffexport.pipeline.stages import make_stage

    out = tmp_path / "d"
    stage = make_stage(specs.get("mtcnn_onet"), "ort", "fp16", out=out, config_dir=config_dir)
    stage.close()
    assert _fp16_options(out)["keep_io_types"] is False


def test_a_config_dir_that_does_not_exist_is_one_line(tmp_path, capsys):
    assert main(["run", "--module", "mtcnn_onet", "--precisions", "fp16", "--no-trt", "--out", str(tmp_path),
                 "--config-dir", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config folder" in err[0] and "does not exist" in err[0]
