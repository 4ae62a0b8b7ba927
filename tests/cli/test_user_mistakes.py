"""User mistakes are one line and change nothing: each case runs the real command in a subprocess and checks its
stdout, its stderr and the folders it was pointed at."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from helpers.cli import one_line


def _ffexport(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "FFEXPORT_CONFIGS": str(REPO / "configs")}
    return subprocess.run([sys.executable, "-m", "ffexport", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


_one_line = one_line


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


# --- engines that cannot be read (issue #14, part 6) ----------------------------------------------------------

@pytest.fixture(scope="module")
def real_engine(tmp_path_factory) -> Path:
    """The blender's fp32 TensorRT-RTX engine (TensorRT for RTX builds without a GPU), in its artifact folder."""
    from ffexport._lazy import available
    from helpers.trt import BLENDER_DIMS, RTX_MISSING, export_spec_onnx

    if not available("tensorrt_rtx"):
        pytest.skip(RTX_MISSING)
    from ffexport import specs
    from ffexport.cli.main import main

    root = tmp_path_factory.mktemp("engine")
    onnx = export_spec_onnx(specs.get("blender"), root / "blender.onnx")
    assert main(["trt", "--onnx", str(onnx), "--name", "blender", "--precision", "fp32", "--out", str(root / "arts"),
                 *BLENDER_DIMS]) == 0
    return root / "arts" / "blender" / "fp32.tensorrt_rtx.engine"


@pytest.mark.parametrize("content, needles", [
    (lambda _e: b"", ["BAD.engine is not a TensorRT engine (0 bytes, shorter than an engine header)", "rebuild"]),
    (lambda _e: bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8)),
     ["BAD.engine is not a TensorRT or TensorRT-RTX engine", "corrupt or another kind of file", "rebuild"]),
    (lambda e: e.read_bytes()[:e.stat().st_size // 3],
     ["BAD.engine is truncated: its header gives", "copy it again or rebuild it"]),
], ids=["empty", "random-bytes", "truncated-copy"])
def test_inspect_of_an_empty_random_or_truncated_engine_is_one_line(work, real_engine, content, needles):
    """Checked from the file alone: the same line with or without a GPU, whatever TensorRT runtime is here."""
    (work / "BAD.engine").write_bytes(content(real_engine))
    before = _tree(work)
    _one_line(_ffexport(["inspect", "BAD.engine"], work), *needles)
    _unchanged(work, before)


def test_a_truncated_engine_in_its_artifact_folder_is_named_truncated(work, real_engine):
    import shutil

    shutil.copytree(real_engine.parent, work / "arts" / "blender")
    engine = work / "arts" / "blender" / real_engine.name
    engine.write_bytes(real_engine.read_bytes()[:-4096])  # its manifest record is beside it
    before = _tree(work)
    line = _one_line(_ffexport(["inspect", str(engine.relative_to(work))], work), "is truncated",
                     f"the file has {real_engine.stat().st_size - 4096}")
    assert "changed since it was built" not in line  # the specific reason, not the generic one
    _unchanged(work, before)


# --- a user's ONNX whose tensors are not named as expected -----------------------------------------------------

def _renamed(src: Path, dst: Path, names: dict[str, str]) -> Path:
    import onnx

    m = onnx.load(str(src))
    for n in m.graph.node:
        n.input[:] = [names.get(x, x) for x in n.input]
        n.output[:] = [names.get(x, x) for x in n.output]
    for v in (*m.graph.input, *m.graph.output):
        v.name = names.get(v.name, v.name)
    onnx.save(m, str(dst))
    return dst


def test_an_ffexport_onnx_with_renamed_tensors_names_both_and_the_contract(work):
    """A file ffexport exported (its metadata says which spec) whose tensors a graph tool renamed since."""
    from helpers.trt import export_spec_onnx
    from ffexport import specs

    onnx = export_spec_onnx(specs.get("blender"), work / "exported.onnx")
    _renamed(onnx, work / "blender renamed.onnx", {"frame": "image", "output": "result"})
    onnx.unlink()
    before = _tree(work)
    for cmd in (["optimize", "--precision", "fp16"], ["trt"]):
        _one_line(_ffexport([*cmd, "--onnx", "blender=blender renamed.onnx", "--out", "arts"], work),
                  "--onnx blender=blender renamed.onnx", "ffexport's blender/box-feather export",
                  "named ['image', 'crop', 'affine', 'mask'] -> ['result']",
                  "not ['frame', 'crop', 'affine', 'mask'] -> ['output']",
                  "--contract blender=FILE (e.g. inputs: {frame: image, crop: crop, affine: affine, mask: mask}, "
                  "outputs: {output: result})")
    _unchanged(work, before)


def test_a_contract_naming_tensors_the_file_lacks_lists_the_files_names(work):
    from helpers import public_layouts as P

    P.arcface(work / "w600k_r50.onnx")
    (work / "arcface.yaml").write_text("inputs: {input: data}\noutputs: {embedding: fc1}\n")
    before = _tree(work)
    _one_line(_ffexport(["optimize", "--onnx", "encoder=w600k_r50.onnx", "--contract", "encoder=arcface.yaml",
                         "--out", "arts"], work),
              "--contract arcface.yaml: inputs ['data'] are not in w600k_r50.onnx (it has ['input.1'])",
              "map each of ['input'] to one of the file's inputs")
    _unchanged(work, before)


# --- calibration images too large to decode ---------------------------------------------------------------------

def test_a_calibration_image_over_the_pixel_limit_is_refused_from_its_header(work):
    """A 10000 x 6000 PNG (60 megapixels, 7 KB on disk at one bit per pixel): named with the limit, never decoded."""
    from PIL import Image

    (work / "calib").mkdir()
    Image.new("1", (10000, 6000)).save(work / "calib" / "huge scan.png")
    before = _tree(work)
    _one_line(_ffexport(["int8", "-m", "blender", "--calib", "calib", "--out", "arts"], work),
              "huge scan.png: 10000x6000 pixels (60.0 megapixels) is over the 50-megapixel limit", "downscale it")
    _unchanged(work, before)


def test_a_target_image_over_the_pixel_limit_is_refused_from_its_header(work):
    """swap's target: a 12000 x 7000 PNG (84 megapixels, a few KB at one bit per pixel), named with the limit and
    never decoded; nothing is built."""
    from helpers.media import astronaut
    from PIL import Image

    Image.fromarray(astronaut()).save(work / "face.png")
    Image.new("1", (12000, 7000)).save(work / "poster.png")
    before = _tree(work)
    _one_line(_ffexport(["swap", "-s", "face.png", "-t", "poster.png", "-o", "out.png", "--out", "arts"], work),
              "target image poster.png", "12000x7000 pixels (84.0 megapixels) is over the 80-megapixel limit",
              "downscale it")
    _unchanged(work, before)


# --- a video without frames -------------------------------------------------------------------------------------

def _frameless_video(path: Path, **options) -> Path:
    """A container with one video stream (64x48 MPEG-4) and not a single frame in it."""
    import av

    with av.open(str(path), "w", options=options) as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    with av.open(str(path)) as c:
        assert len(c.streams.video) == 1 and c.streams.video[0].frames == 0
    return path


@pytest.mark.parametrize("name, options", [("empty.mp4", {"movflags": "empty_moov"}), ("empty.avi", {})])
def test_swap_on_a_video_without_frames_is_one_line_before_any_model(work, name, options):
    from helpers.media import astronaut
    from PIL import Image

    Image.fromarray(astronaut()).save(work / "face.png")
    _frameless_video(work / name, **options)
    before = _tree(work)
    _one_line(_ffexport(["swap", "-s", "face.png", "-t", name, "-o", "out.mp4", "--out", "arts"], work),
              f"video {name} has no frames")
    _unchanged(work, before)


# --- paths with spaces and non-ASCII characters work --------------------------------------------------------------

def test_paths_with_spaces_and_accents_work_for_export_calibration_and_swap(work):
    import shutil

    from conftest import REPO

    from helpers.media import astronaut
    from PIL import Image

    folder = work / "dossier élève"
    calib = folder / "visages à calibrer"
    calib.mkdir(parents=True)
    for p in sorted((REPO / "calibration").glob("*.json"))[:5]:
        shutil.copy(p.with_suffix(".jpg"), calib / f"visage {p.stem}.jpg")
        shutil.copy(p, calib / f"visage {p.stem}.json")
    Image.fromarray(astronaut()).save(folder / "visage 1.png")
    arts = "dossier élève/modèles exportés"
    res = _ffexport(["onnx", "-m", "mtcnn_rnet", "--out", arts, "--parity-samples", "1"], work)
    assert res.returncode == 0, res.stderr
    assert (work / arts / "mtcnn_rnet" / "fp32.onnx").is_file()
    res = _ffexport(["int8", "-m", "mtcnn_rnet", "--out", arts, "--calib", str(calib.relative_to(work)),
                     "--samples", "4", "--parity-samples", "1"], work)
    assert res.returncode == 0, res.stderr
    import json

    rec = json.loads((work / arts / "mtcnn_rnet" / "manifest.json").read_text())["artifacts"]["int8.onnx"]
    assert all(f.startswith("visage ") for f in rec["inputs"]["calibration"]["files"]), rec["inputs"]
    res = _ffexport(["swap", "-s", "dossier élève/visage 1.png", "-t", "dossier élève/visage 1.png",
                     "-o", "dossier élève/résultat 1.png", "--variant", "encoder=iresnet18",
                     "--generator", "identity", "--quiet", "--out", arts], work)
    assert res.returncode == 0, res.stderr
    assert "résultat 1.png" in res.stdout and (folder / "résultat 1.png").stat().st_size > 0
