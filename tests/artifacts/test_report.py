"""`ffexport report`: each artifact's lineage from the manifests, as a table and as JSON."""

from __future__ import annotations

import json
import shutil

import pytest

from ffexport.cli.main import main


@pytest.fixture(scope="module")
def arts(tmp_path_factory, exported_small):
    from ffexport import specs
    from ffexport.artifacts.optimize import optimize

    out = tmp_path_factory.mktemp("report")
    _, path = exported_small("mtcnn_rnet")
    shutil.copytree(path.parent, out / path.parent.name)
    optimize(specs.get("mtcnn_rnet"), "fp16", out=out, parity_samples=2)
    return out


def test_report_json_lineage(arts, capsys):
    assert main(["report", "--module", "mtcnn_rnet", "--out", str(arts), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 1 and data[0]["module"] == "mtcnn_rnet"
    rows = {a["file"]: a for a in data[0]["artifacts"]}
    assert [a["file"] for a in data[0]["artifacts"]] == ["fp32.onnx", "fp32.sim.onnx", "fp16.onnx"]  # parent first
    assert rows["fp32.onnx"]["pass"] == "export" and rows["fp32.onnx"]["parent"] is None
    assert rows["fp32.sim.onnx"]["parent"] == "fp32.onnx" and rows["fp16.onnx"]["parent"] == "fp32.sim.onnx"
    fp16 = rows["fp16.onnx"]
    assert fp16["pass"] == "fp16" and fp16["options"]["keep_io_types"] is True
    assert fp16["parity"]["passed"] and fp16["parity"]["vs_parent"]["gates"][0]["metric"] == "rel_err"
    assert fp16["parity"]["vs_torch"]["gates"], "compared with the torch model too"
    assert fp16["size_bytes"] < rows["fp32.sim.onnx"]["size_bytes"] and fp16["status"] == "ok"
    assert "kept_fp32_counts" in fp16


def test_report_table_and_all(arts, capsys, monkeypatch):
    from ffexport.cli import common

    monkeypatch.setattr(common.console, "width", 220)  # a wide terminal: no folded names
    assert main(["report", "--module", "all", "--out", str(arts)]) == 0
    out = capsys.readouterr().out
    for word in ("fp32.onnx", "fp32.sim.onnx", "fp16.onnx", "export", "simplify", "PASS", "vs parent", "vs torch"):
        assert word in out, word


def test_report_flags_modified_artifact(arts, capsys, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(arts, copy)
    (copy / "mtcnn_rnet" / "fp16.onnx").write_bytes(b"tampered")
    assert main(["report", "--module", "mtcnn_rnet", "--out", str(copy), "--json"]) == 0
    rows = {a["file"]: a for a in json.loads(capsys.readouterr().out)[0]["artifacts"]}
    assert rows["fp16.onnx"]["status"] == "modified since recorded"


def test_report_without_artifacts(capsys, tmp_path):
    assert main(["report", "--module", "encoder", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no artifacts for encoder" in err and "ffexport optimize" in err
