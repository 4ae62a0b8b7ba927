"""User mistakes are one line and change nothing: each case runs the real command in a subprocess and checks its
stdout, its stderr and the folders it was pointed at."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def _ffexport(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "FFEXPORT_CONFIGS": str(REPO / "configs")}
    return subprocess.run([sys.executable, "-m", "ffexport", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _one_line(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode not in (0, None), res
    assert res.stdout == "", res.stdout[:2000]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr[:2000]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def work(tmp_path) -> Path:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "checkpoint.txt").write_text("these are not weights\n")
    return tmp_path


def _unchanged(work: Path, before: list[str]) -> None:
    assert _tree(work) == before  # nothing written: no artifact folder, no temporary file


@pytest.mark.parametrize("args, needles", [
    (["onnx", "-m", "blender", "--opset", "99"], ["opset 99", "--opset"]),
    (["onnx", "-m", "blender", "--parity-samples", "0"], ["--parity-samples 0", "at least 1"]),
    (["int8", "-m", "blender", "--samples", "0"], ["--samples 0", "at least 1"]),
    (["onnx", "-m", "blender", "--checkpoint", "checkpoint.txt"], ["checkpoint.txt is not a PyTorch checkpoint"]),
    (["onnx", "-m", "blender", "--config-dir", "missing"], ["config folder missing does not exist"]),
])
def test_bad_option_is_one_line_and_writes_nothing(work, args, needles):
    before = _tree(work)
    _one_line(_ffexport([*args, "--out", "arts"], work), *needles)
    _unchanged(work, before)


def test_a_pickle_with_more_than_weights_is_refused_saying_only_state_dicts_load(work):
    import torch

    torch.save({"model": torch.nn.Linear(2, 2)}, work / "pickled.pt")
    before = _tree(work)
    line = _one_line(_ffexport(["onnx", "-m", "blender", "--checkpoint", "pickled.pt", "--out", "arts"], work),
                     "pickled.pt", "only state dicts")
    assert "weights_only" not in line  # never tells the user to turn the safety off
    _unchanged(work, before)


@pytest.mark.parametrize("text, needles", [
    ('opset: "seventeen"\n', ["cfg/blender.yaml: opset must be a whole number", "'seventeen'"]),
    ("gates:\n  fp32:\n    psnr_db: high\n", ["cfg/blender.yaml: gates.fp32.psnr_db must be a number"]),
])
def test_a_config_value_of_the_wrong_type_names_file_key_and_value(work, text, needles):
    (work / "cfg" / "blender.yaml").write_text(text)
    before = _tree(work)
    _one_line(_ffexport(["onnx", "-m", "blender", "--config-dir", "cfg", "--out", "arts"], work), *needles)
    _unchanged(work, before)


def test_an_artifact_path_that_is_a_folder_is_one_line_even_with_force(work):
    (work / "arts" / "blender" / "fp32.onnx").mkdir(parents=True)
    before = _tree(work)
    for extra in ([], ["--force"]):
        _one_line(_ffexport(["onnx", "-m", "blender", "--out", "arts", *extra], work),
                  "arts/blender/fp32.onnx is a folder, not a file")
    _unchanged(work, before)


def test_inspect_of_a_folder_says_it_is_a_folder(work):
    (work / "arts").mkdir()
    _one_line(_ffexport(["inspect", "arts"], work), "arts is a folder: pass an engine file")


@pytest.mark.parametrize("source, needles", [
    ("def make():\n    raise RuntimeError('boom')\n", ["the factory raised RuntimeError: boom"]),
    ("def make(:\n", ["user_model has a syntax error", "line 1"]),
    ("import torch\nraise ValueError('bad import-time code')\n", ["importing user_model raised ValueError"]),
])
def test_a_model_factory_that_fails_is_one_line(work, source, needles):
    (work / "user_model.py").write_text(source)
    before = _tree(work)
    _one_line(_ffexport(["onnx", "--model", "user_model:make", "--input", "x:1x3x8x8", "--out", "arts"], work),
              "--model user_model:make", *needles)
    assert [p for p in _tree(work) if not p.startswith("__pycache__")] == before  # Python's bytecode cache only


@pytest.mark.parametrize("args, needles", [
    (["-s", "checkpoint.txt", "-t", "face.png", "-o", "out.png"], ["cannot read source image checkpoint.txt"]),
    (["-s", "face.png", "-t", "face.png", "-o", "face.png", "--force"], ["--output face.png is the target itself"]),
    (["-s", "face.png", "-t", "face.png", "-o", "nowhere/out.png"], ["--output nowhere/out.png", "does not exist"]),
    (["-s", "face.png", "-t", "face.png", "-o", "taken.png"], ["--output taken.png already exists", "--force"]),
    (["-s", "face.png", "-t", "face.png", "-o", "out.mp4"], ["--output out.mp4 must be an image file"]),
])
def test_swap_checks_its_paths_first_in_one_line(work, args, needles):
    from helpers.media import astronaut
    from PIL import Image

    Image.fromarray(astronaut()).save(work / "face.png")
    (work / "taken.png").write_bytes(b"keep me")
    before = _tree(work)
    _one_line(_ffexport(["swap", *args, "--out", "arts"], work), *needles)
    _unchanged(work, before)
    assert (work / "taken.png").read_bytes() == b"keep me"


def test_a_bug_is_an_internal_error_with_its_traceback_in_a_log(monkeypatch, capsys, tmp_path):
    """Not a user mistake: another exit code, the words "internal error", the traceback in a log file."""
    from ffexport import specs
    from ffexport.cli.main import INTERNAL_ERROR, main

    def broken():
        raise ZeroDivisionError("the registry divided by zero")

    monkeypatch.setattr(specs, "all_specs", broken)
    monkeypatch.setenv("FFEXPORT_LOG_DIR", str(tmp_path / "logs"))
    assert main(["modules", "--json"]) == INTERNAL_ERROR != 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("internal error") and "ZeroDivisionError" in err[0], err
    logs = list((tmp_path / "logs").glob("ffexport-internal-error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err[0]
    text = logs[0].read_text()
    assert "Traceback" in text and "def broken" not in err[0] and "in broken" in text
