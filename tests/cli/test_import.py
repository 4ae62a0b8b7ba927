"""`import ffexport` and `ffexport --help` work with no torch, onnx, onnxruntime or TensorRT."""

from __future__ import annotations

import subprocess
import sys

BLOCK = ("import sys\n"
         "for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt', 'tensorrt_rtx', 'onnxsim', 'onnxslim', "
         "'onnxconverter_common', 'av', 'cv2', 'matplotlib'):\n"
         "    sys.modules[m] = None\n")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=120)


def test_import_without_heavy_dependencies():
    r = _run("import ffexport, ffexport.specs as s, ffexport.config, ffexport.manifest, ffexport.cli.main\n"
             "assert s.modules(), 'registry empty'\n"
             "heavy = [m for m in ('torch', 'onnx', 'onnxruntime') if sys.modules.get(m) is not None]\n"
             "assert not heavy, heavy\n")
    assert r.returncode == 0, r.stderr


def test_cli_help_without_heavy_dependencies():
    r = _run("from ffexport.cli.main import main\n"
             "code = main(['--help'])\n"
             "assert code == 0, code\n")
    assert r.returncode == 0, r.stderr
    assert "onnx" in r.stdout


def test_every_command_help_runs():
    from ffexport.cli.main import app, main
    import typer.main

    names = [c.name for c in typer.main.get_command(app).commands.values()]
    assert "onnx" in names and "modules" in names
    for n in names:
        r = subprocess.run([sys.executable, "-m", "ffexport", n, "--help"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (n, r.stderr)


def test_missing_dependency_is_one_line():
    r = _run("from ffexport.cli.main import main\n"
             "code = main(['onnx', '--module', 'encoder', '--variant', 'iresnet18', '--out', '/tmp/ffx-nodeps'])\n"
             "raise SystemExit(code)\n")
    assert r.returncode == 1
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "is not installed" in lines[0] and "pip install" in lines[0], r.stderr
