"""SIGTERM and Ctrl-C (SIGINT) during an export: the command stops with one line, exits 128 + the signal, leaves no
temporary file and the artifacts finished before it intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from ffexport.fsutil import sha256_file


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "200", "FFEXPORT_CONFIGS": str(REPO / "configs")}
    return subprocess.Popen([sys.executable, "-m", "ffexport", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(pattern: str, folder: Path, proc: subprocess.Popen, seconds: float = 240.0) -> Path:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        hits = list(folder.glob(pattern)) if folder.is_dir() else []
        if hits:
            return hits[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"no {pattern} in {folder} after {seconds} s")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """An artifact root with a finished export (the blender) that the interrupted commands must not touch."""
    root = tmp_path_factory.mktemp("interrupt")
    proc = _start(["onnx", "-m", "blender", "--out", "arts"], root)
    assert proc.wait(timeout=300) == 0, proc.communicate()
    return root


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_an_export_stops_cleanly(finished, sig):
    blender = finished / "arts" / "blender"
    before = {p.name: sha256_file(p) for p in blender.iterdir()}
    proc = _start(["onnx", "-m", "generator", "--variant", "inswapper-128", "--out", "arts", "--force"], finished)
    _wait_for(".stage-*/.fp32.onnx.*.part", finished / "arts" / "generator", proc)  # the export is writing its file
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, (proc.returncode, err[-2000:])
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith(f"stopped by {sig.name}") and "Traceback" not in err, err[-2000:]
    assert not list((finished / "arts").rglob("*.part"))  # no temporary file left behind
    assert not [p for p in (finished / "arts").rglob(".*") if p.name != ".trt-cache"]  # no staging folder, no lock
    assert not (finished / "arts" / "generator" / "fp32.onnx").exists()
    assert {p.name: sha256_file(p) for p in blender.iterdir()} == before  # the finished artifact is intact
