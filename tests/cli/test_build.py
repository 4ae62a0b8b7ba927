"""``ffexport build``: a second build changes nothing and says so, ``--check`` names what is stale, a failing gate
does not stop the other modules, and two builds from the same inputs give the same ONNX bytes and manifests.

Two small but real modules (the blender and MTCNN's O-net with its trained weights), every precision, and
TensorRT-for-RTX engines where it is installed (the README's install has it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from ffexport._lazy import available
from ffexport.fsutil import sha256_file

MODULES = "blender,mtcnn_onet"
ENGINES = available("tensorrt") or available("tensorrt_rtx")
STEPS = 2 * 3 * (2 if ENGINES else 1)


def _build(root: Path, *args: str, out: str = "A") -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("FFEXPORT_CONFIGS", None)
    cmd = [sys.executable, "-m", "ffexport", "build", "--config", "cfg/pipeline.yaml", "--module", MODULES,
           "--out", out, "--calib", str(REPO / "calibration"), *args]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1200)


def _files(out: Path) -> dict:
    return {str(p.relative_to(out)): sha256_file(p) for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "index.json" and ".trt-cache" not in p.parts}


def _states(res: subprocess.CompletedProcess) -> dict[str, str]:
    """step label -> state, from the one line per finished step that a build piped to a log prints."""
    states = {}
    for line in res.stdout.splitlines():
        label, sep, rest = line.partition(": ")
        state = next((s for s in ("built", "up to date", "failed", "stale") if rest.startswith(s)), None)
        if sep and "/" in label and state:
            states[label] = state
    return states


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("build")
    shutil.copytree(REPO / "configs", root / "cfg")
    res = _build(root)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    assert set(_states(res).values()) == {"built"} and len(_states(res)) == STEPS, res.stdout
    return root


def test_a_second_build_changes_nothing_and_says_so(built):
    before = _files(built / "A")
    res = _build(built)
    assert res.returncode == 0, res.stderr[-3000:]
    assert set(_states(res).values()) == {"up to date"} and len(_states(res)) == STEPS, res.stdout
    assert f"{STEPS} up to date" in res.stdout
    assert _files(built / "A") == before
    index = json.loads((built / "A" / "index.json").read_text())
    listed = {(a["folder"], a["file"]): a for a in index["artifacts"]}
    for name, sha in before.items():
        folder, file = name.split("/")
        if file != "manifest.json":
            assert listed[(folder, file)]["sha256"] == sha  # every artifact, with its hash
    sim = listed[("mtcnn_onet", "fp32.sim.onnx")]
    assert sim["parent"] == {"file": "fp32.onnx", "sha256": before["mtcnn_onet/fp32.onnx"]}  # and its lineage
    assert sim["parity"]["passed"] and sim["parity"]["gates"]


_TIMES = {"created_utc", "duration_s", "build_time_s", "seconds", "elapsed_s"}


def _normal(obj, roots: tuple[str, ...]):
    """A manifest without its times, with the artifact root's path replaced by a placeholder."""
    if isinstance(obj, dict):
        return {k: _normal(v, roots) for k, v in obj.items() if k not in _TIMES}
    if isinstance(obj, list):
        return [_normal(v, roots) for v in obj]
    if isinstance(obj, str):
        for r in roots:
            obj = obj.replace(r, "<out>")
        return obj
    return obj


def test_two_builds_from_the_same_inputs_are_identical(built):
    """Byte-identical ONNX files, manifests identical apart from times.  Engines are compared by what they were
    built from (their keys): TensorRT-for-RTX builds are not byte-reproducible.  The second build runs its modules
    in two processes at once (--jobs 2)."""
    res = _build(built, "--jobs", "2", out="B")
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = built / "A", built / "B"
    onnx_a = {k: v for k, v in _files(a).items() if k.endswith(".onnx")}
    assert onnx_a and onnx_a == {k: v for k, v in _files(b).items() if k.endswith(".onnx")}
    for folder in ("blender", "mtcnn_onet"):
        ma = json.loads((a / folder / "manifest.json").read_text())
        mb = json.loads((b / folder / "manifest.json").read_text())
        for m in (ma, mb):
            for name in [n for n in m["artifacts"] if n.endswith(".engine")]:
                m["artifacts"][name] = {"key": m["artifacts"][name]["key"]}
        assert _normal(ma, (str(a.resolve()), "A/")) == _normal(mb, (str(b.resolve()), "B/")), folder


def test_check_names_what_changed_and_changes_nothing(built):
    res = _build(built, "--check")
    assert res.returncode == 0 and f"{STEPS} up to date" in res.stdout, res.stdout + res.stderr
    cfg = built / "cfg" / "blender.yaml"
    text = cfg.read_text()
    before = _files(built / "A")
    try:
        cfg.write_text(text.replace("psnr_db: 60.0", "psnr_db: 59.0"))
        res = _build(built, "--check")
        states = _states(res)
        assert res.returncode == 1, res.stdout
        assert all(s == "stale" for k, s in states.items() if k.startswith("blender")), states
        assert all(s == "up to date" for k, s in states.items() if k.startswith("mtcnn_onet")), states
        assert "inputs changed: config" in res.stdout
        err = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("error: ") and "ffexport build" in err[0], res.stderr
        assert _files(built / "A") == before
    finally:
        cfg.write_text(text)


def test_a_failing_gate_does_not_stop_the_others(built):
    gates = built / "cfg" / "mtcnn_onet.yaml"
    gates.write_text("gates:\n  int8: {rel_err: 1.0e-9}\n")  # no INT8 of a real net gets there
    try:
        res = _build(built)
        states = _states(res)
        assert res.returncode == 1, res.stdout
        assert states["mtcnn_onet/facenet-pytorch int8"] == "failed"
        if ENGINES:
            assert states["mtcnn_onet/facenet-pytorch int8 engine"] == "failed"
        assert {s for k, s in states.items() if "int8" not in k or k.startswith("blender")} <= {"built", "up to date"}
        err = [line for line in res.stderr.splitlines() if line.strip()]
        assert err[-1].startswith("error: ") and "mtcnn_onet/facenet-pytorch int8" in err[-1], res.stderr
        res = _build(built, "--check")
        assert res.returncode == 1 and "failed last time" in res.stdout, res.stdout
    finally:
        gates.unlink()
    res = _build(built)
    assert res.returncode == 0, res.stdout + res.stderr
