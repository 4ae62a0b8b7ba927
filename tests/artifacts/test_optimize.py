"""`ffexport optimize` / `optimize()`: export -> simplify -> precision, skipping unchanged steps."""

from __future__ import annotations

import json
import shutil

import pytest

from ffexport.cli.main import main
from helpers.passes import CALIB, FAST, check_tensorrt_qdq, export_byo_net, sha


@pytest.fixture(scope="module")
def arts(tmp_path_factory, exported_small):
    out = tmp_path_factory.mktemp("optimize")
    for module in ("mtcnn_onet",):
        _, path = exported_small(module)
        shutil.copytree(path.parent, out / path.parent.name)
    return out


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())["artifacts"]


def test_optimize_api_and_skip_if_unchanged(arts):
    from ffexport import specs
    from ffexport.artifacts.optimize import optimize

    spec = specs.get("mtcnn_onet")
    messages: list[str] = []
    first: list = []
    path = optimize(spec, "fp16", out=arts, parity_samples=2, results=first, progress=messages.append)
    assert path == arts / "mtcnn_onet" / "fp16.onnx" and path.is_file()
    assert [r.step for r in first] == ["export", "simplify", "fp16"]
    assert [r.skipped for r in first] == [True, False, False]  # the export was already there
    before = _manifest(arts / "mtcnn_onet")

    second: list = []
    messages.clear()
    assert optimize(spec, "fp16", out=arts, parity_samples=2, results=second, progress=messages.append) == path
    assert all(r.skipped for r in second)
    assert any("fp16.onnx: up to date" in m for m in messages)
    after = _manifest(arts / "mtcnn_onet")
    for name in ("fp32.sim.onnx", "fp16.onnx"):  # nothing was redone
        assert after[name]["created_utc"] == before[name]["created_utc"]
        assert after[name]["sha256"] == before[name]["sha256"]

    third: list = []  # a changed option redoes only the step it belongs to
    optimize(spec, "fp16", out=arts, parity_samples=2, results=third, keep_io_types=False)
    assert [r.skipped for r in third] == [True, True, False]
    assert _manifest(arts / "mtcnn_onet")["fp16.onnx"]["options"]["keep_io_types"] is False

    fourth: list = []  # different parity faces are a different key too
    optimize(spec, "fp32", out=arts, parity_samples=3, results=fourth)
    assert [r.skipped for r in fourth] == [True, False]


def test_optimize_int8_cli_and_rerun(arts, capsys):
    code = main(["optimize", "--module", "mtcnn_onet", "--precision", "int8", "--calib", str(CALIB),
                 "--out", str(arts), *FAST])
    out = capsys.readouterr()
    assert code == 0, out.err
    folder = arts / "mtcnn_onet"
    check_tensorrt_qdq(folder / "int8.onnx")
    digest = sha(folder / "int8.onnx")
    code = main(["optimize", "--module", "mtcnn_onet", "--precision", "int8", "--calib", str(CALIB),
                 "--out", str(arts), *FAST])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.count("skipped") == 3, out.out
    assert sha(folder / "int8.onnx") == digest


def test_optimize_bring_your_own(tmp_path, capsys, monkeypatch):
    """A model exported with `ffexport onnx --model` optimizes with --onnx; outputs go beside it."""
    src = export_byo_net(tmp_path, monkeypatch)
    code = main(["optimize", "--onnx", str(src), "--precision", "int8", "--calib", str(CALIB), *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "spec is unknown" not in captured.err  # ffexport wrote its contract into the file
    folder = src.parent
    arts = _manifest(folder)
    assert arts["fp32.sim.onnx"]["parent"]["file"] == "fp32.onnx"
    assert arts["int8.onnx"]["parent"]["file"] == "fp32.sim.onnx"
    gates = arts["int8.onnx"]["parity"]["vs_parent"]["gates"]
    assert [g["metric"] for g in gates] == ["rel_err"] and gates[0]["threshold"] == 0.1  # BYO raw gates
    assert arts["int8.onnx"]["parity"]["vs_torch"] is None  # no torch reference for a bring-your-own model
    check_tensorrt_qdq(folder / "int8.onnx")


def test_unknown_precision(capsys, arts):
    assert main(["optimize", "--module", "mtcnn_onet", "--precision", "int4", "--out", str(arts)]) == 1
    err = capsys.readouterr().err
    assert "unknown precision 'int4'" in err and "fp16" in err


def test_seeded_landmarker_points_are_recorded_not_gated():
    """The argmax points of a seeded landmarker move anywhere under any perturbation: recorded, not gated
    (as the task metric is not); the heatmaps still are, so a real error still fails."""
    from ffexport import specs
    from ffexport.passes.proof.judge import _ungate_discrete

    spec = specs.get("landmarker", "2dfan1")
    rec = {"gated_on": "fallback", "note": "seeded weights", "passed": False,
           "metrics": {"rel_err": {"heatmaps": 0.05, "points": 0.4, "scores": 0.02}},
           "gates": [{"metric": "rel_err", "op": "<=", "threshold": 0.1, "output": "points", "value": 0.4,
                      "passed": False}]}
    out = _ungate_discrete(spec, rec)
    assert out["passed"] and out["gates"][0]["output"] == "heatmaps" and "points" in out["note"]
    assert out["metrics"]["rel_err"]["points"] == 0.4  # still recorded
    rec["metrics"]["rel_err"]["heatmaps"] = 0.2
    assert not _ungate_discrete(spec, rec)["passed"]
    trained = dict(rec, gated_on="task")
    assert _ungate_discrete(spec, trained) is trained


def test_precisions_share_their_upstream_steps_whichever_faces_proved_them(tmp_path, exported_small):
    """FP16 judged on the built-in faces and INT8 calibrated on calibration/ share fp32.sim.onnx: neither
    redoes it for the other (which made `ffexport run` re-simplify every module on every run)."""
    from ffexport import specs
    from ffexport.artifacts.optimize import optimize

    _, path = exported_small("mtcnn_rnet")
    shutil.copytree(path.parent, tmp_path / path.parent.name)
    spec = specs.get("mtcnn_rnet")

    def run(precision, calib=None, reprove=True):
        res: list = []
        optimize(spec, precision, out=tmp_path, calib=calib, samples=4, parity_samples=2, results=res,
                 reprove=reprove)
        return [(r.step if not r.skipped else "skip") for r in res]

    assert run("fp16") == ["skip", "simplify", "fp16"]
    sim = _manifest(tmp_path / "mtcnn_rnet")["fp32.sim.onnx"]
    assert run("int8", CALIB) == ["skip", "skip", "int8"]
    assert run("fp16") == ["skip", "skip", "skip"]
    assert run("fp32", CALIB, reprove=False) == ["skip", "skip"]  # what an engine build asks for
    assert _manifest(tmp_path / "mtcnn_rnet")["fp32.sim.onnx"] == sim  # untouched all along
    assert run("int8", CALIB) == ["skip", "skip", "skip"]
    # asked for directly on other faces, the step is proven again on them
    assert run("fp32", CALIB) == ["skip", "simplify"]
    again = _manifest(tmp_path / "mtcnn_rnet")["fp32.sim.onnx"]
    assert again["sha256"] == sim["sha256"] and again["key"]["faces"] != sim["key"]["faces"]
