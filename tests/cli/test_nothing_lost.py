"""Nothing lost, ever: a full disk, a corrupt manifest, SIGKILL and a second process on the same folder leave every
good artifact and its record as they were, no temporary file, and records that match their files.  Each case runs
the real command in a subprocess (the blender: a real module whose export takes seconds)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from ffexport.fsutil import sha256_file
from ffexport.manifest import JOURNAL, MANIFEST, Manifest, recover

# the command, with os.fsync failing as on a disk that fills up while the manifest is written (a write hook)
_FULL_AT_FSYNC = """
import errno, os, sys
def full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")
os.fsync = full
from ffexport.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict:
    return {**os.environ, "COLUMNS": "200", "FFEXPORT_CONFIGS": str(REPO / "configs")}


def _run(args: list[str], cwd: Path, *, code: str | None = None, fsize: int | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess:
    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "ffexport", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit)


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ffexport", *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _state(folder: Path) -> dict:
    """Every file under ``folder`` (hidden ones included) with its sha256."""
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _consistent(folder: Path) -> None:
    """Each record of the manifest names a file that hashes as recorded; nothing hidden is left in the folder."""
    m = Manifest.load(folder)
    for name, rec in m.data["artifacts"].items():
        assert sha256_file(folder / name) == rec["sha256"], name
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def _one_line(res: subprocess.CompletedProcess, *patterns: str) -> str:
    assert res.returncode == 1, (res.returncode, res.stderr[-3000:])
    assert res.stdout == "", res.stdout[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    for p in patterns:
        assert p in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def blender(tmp_path_factory) -> Path:
    """A working folder with a finished export of the blender (14 KB of ONNX, a manifest of about 7 KB)."""
    root = tmp_path_factory.mktemp("lost")
    res = _run(["onnx", "-m", "blender", "--out", "arts"], root)
    assert res.returncode == 0, res.stderr[-3000:]
    return root


def test_a_full_disk_while_the_artifact_is_written_changes_nothing(blender):
    folder = blender / "arts" / "blender"
    before = _state(folder)
    res = _run(["onnx", "-m", "blender", "--out", "arts", "--force", "--opset", "16"], blender,
               fsize=10_000)  # the ONNX (14 KB) cannot be written whole: the kernel says EFBIG
    _one_line(res, "File too large", "nothing was replaced")
    assert _state(folder) == before
    _consistent(folder)


def test_a_full_disk_while_the_record_is_written_changes_nothing(blender):
    """The issue's case: the artifact was complete, the manifest write failed; then the artifact must not be
    renamed into place without its record (the rerun would demand --force)."""
    folder = blender / "arts" / "blender"
    before = _state(folder)
    res = _run(["onnx", "-m", "blender", "--out", "arts", "--force", "--opset", "16"], blender, code=_FULL_AT_FSYNC)
    _one_line(res, "No space left on device", "nothing was replaced")
    assert _state(folder) == before
    _consistent(folder)
    res = _run(["onnx", "-m", "blender", "--out", "arts"], blender)  # and the rerun says what is really there
    _one_line(res, "already exists", "--force")


def test_force_over_a_corrupt_manifest_replaces_nothing(tmp_path):
    res = _run(["onnx", "-m", "blender", "--out", "arts"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    folder = tmp_path / "arts" / "blender"
    (folder / MANIFEST).write_text('{"artifacts": {"fp32.onnx": ')  # cut short
    before = _state(folder)
    res = _run(["onnx", "-m", "blender", "--out", "arts", "--force", "--opset", "18"], tmp_path)
    _one_line(res, "manifest.json", "not readable JSON")
    assert _state(folder) == before


def test_sigkill_mid_export_is_swept_by_the_next_command(tmp_path):
    """SIGKILL cannot be caught: the staging folder stays until the next command that locks the folder sweeps it;
    the artifacts finished before are intact all along."""
    res = _run(["onnx", "-m", "blender", "--out", "arts"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    folder = tmp_path / "arts" / "blender"
    good = _state(folder)
    proc = _start(["onnx", "-m", "blender", "--out", "arts", "--force", "--opset", "18"], tmp_path)
    end = time.monotonic() + 300
    while not list(folder.glob(".stage-*")):
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert {k: v for k, v in _state(folder).items() if not k.startswith(".")} == good  # nothing good damaged
    res = _run(["onnx", "-m", "blender", "--out", "arts", "--force"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    _consistent(folder)  # swept when the folder was locked again


def _journal_case(tmp_path: Path, renamed: bool) -> Path:
    """A folder as a commit leaves it when killed after writing its journal: before (renamed=False) or after the
    artifact's rename."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.onnx").write_bytes(b"old")
    Manifest(folder, {"artifacts": {"a.onnx": {"file": "a.onnx", "sha256": sha256_file(folder / "a.onnx")}}}).save()
    stage = folder / ".stage-x"
    stage.mkdir()
    (stage / "a.onnx").write_bytes(b"new")
    new_sha = sha256_file(stage / "a.onnx")
    (folder / ".manifest.json.y.part").write_text(json.dumps({"artifacts": {"a.onnx": {"file": "a.onnx",
                                                                                        "sha256": new_sha}}}))
    (folder / JOURNAL).write_text(json.dumps({"artifact": "a.onnx", "staged": ".stage-x/a.onnx",
                                              "manifest": ".manifest.json.y.part", "sha256": new_sha}))
    if renamed:
        os.replace(stage / "a.onnx", folder / "a.onnx")
    return folder


@pytest.mark.parametrize("renamed", [False, True], ids=["before-rename", "after-rename"])
def test_an_interrupted_commit_is_undone_or_finished(tmp_path, renamed):
    folder = _journal_case(tmp_path, renamed)
    recover(folder)
    assert (folder / "a.onnx").read_bytes() == (b"new" if renamed else b"old")
    _consistent(folder)


def test_a_second_process_waits_for_the_folder(blender):
    """The issue's race (`simplify` while `onnx --opset 18 --force` ran on the same folder) cannot happen: a command
    that writes a module's folder waits while another process holds it.  Here the test holds the folder's lock, as a
    running export would; the command says it waits, changes nothing meanwhile, and finishes once the lock is
    released, its record matching its file."""
    from ffexport.manifest import locked

    folder = blender / "arts" / "blender"
    before = _state(folder)
    log = blender / "waiting.err"
    with locked(folder), open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ffexport", "onnx", "-m", "blender", "--out", "arts",
                                 "--force", "--opset", "16"], cwd=blender, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=err, text=True)
        end = time.monotonic() + 300
        while "waiting for" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < end, log.read_text()
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None and {k: v for k, v in _state(folder).items() if k != ".lock"} == before
    assert proc.wait(timeout=300) == 0, log.read_text()
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    assert lines == [f"warning: waiting for {folder.relative_to(blender)}: another ffexport process is writing "
                     "there"] or (len(lines) == 1 and "waiting for" in lines[0]), lines
    rec = Manifest.load(folder).get("fp32.onnx")
    assert rec["key"]["opset"] == 16 and rec["sha256"] == sha256_file(folder / "fp32.onnx")
    _consistent(folder)
