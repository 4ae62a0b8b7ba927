"""Adding a module touches only its spec and its torch builder: a module registered from outside ffexport
(FFEXPORT_SPECS names the module that registers it) is exported, optimised to FP16 and INT8, built into a
TensorRT engine and benchmarked without editing anything else."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from ffexport.cli.main import main
from helpers.passes import CALIB, FAST, check_tensorrt_qdq

PLUGIN = textwrap.dedent('''
    """A tiny identity encoder registered from outside ffexport."""
    import torch

    from ffexport import specs
    from ffexport.specs.base import BATCH, ModuleSpec, Preprocess, TensorSpec, gates
    from ffexport.specs.templates import ARCFACE_112_V2


    def build(spec, width=8):
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, width, 3, stride=2, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU(),
            torch.nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(2 * width, 32))


    if "tinyid" not in specs.modules():
        specs.register(ModuleSpec(
            module="tinyid", variant="tiny", summary="a tiny identity encoder (test plugin)",
            inputs=(TensorSpec("input", (BATCH, 3, 48, 48), value_range=(-1.0, 1.0)),),
            outputs=(TensorSpec("embedding", (BATCH, 32)),),
            builder="tinyid_plugin:build", builder_kwargs={"width": 8},
            input_size=(48, 48), preprocess=Preprocess("RGB", (127.5,) * 3, (127.5,) * 3),
            template=ARCFACE_112_V2, task="embedding",
            gates={"fp32": gates(("cosine_min", ">=", 0.9999),), "fp16": gates(("cosine_min", ">=", 0.999),),
                   "int8": gates(("cosine_min", ">=", 0.98),)},
            batch_profile=(1, 1, 4), ci=True, in_default_pipeline=False,
        ), default=True)
''')


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    import importlib

    from ffexport import specs

    (tmp_path / "tinyid_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("FFEXPORT_SPECS", "tinyid_plugin")
    importlib.import_module("tinyid_plugin")
    yield tmp_path
    specs.unregister("tinyid")


def test_a_registered_module_goes_through_export_passes_engine_and_benchmark(plugin, capsys):
    from ffexport import specs

    out = plugin / "arts"
    assert "tinyid" in specs.modules() and specs.ci_variant("tinyid") == "tiny"
    assert main(["onnx", "--module", "tinyid", "--out", str(out)]) == 0, capsys.readouterr().err
    assert main(["optimize", "--module", "tinyid", "--precision", "fp16", "--out", str(out),
                 "--parity-samples", "2"]) == 0, capsys.readouterr().err
    assert main(["int8", "--module", "tinyid", "--out", str(out), "--calib", str(CALIB), *FAST]) == 0, \
        capsys.readouterr().err
    folder = out / "tinyid"
    check_tensorrt_qdq(folder / "int8.onnx")
    records = json.loads((folder / "manifest.json").read_text())["artifacts"]
    assert {"fp32.onnx", "fp32.sim.onnx", "fp16.onnx", "int8.onnx"} <= set(records)
    assert records["int8.onnx"]["parity"]["vs_torch"]["metrics"]["cosine_min"]["embedding"] >= 0.98
    # a benchmark row, measured in a fresh interpreter that finds the module through FFEXPORT_SPECS
    report = plugin / "report"
    assert main(["bench", "--modules", "tinyid", "--backends", "torch,ort", "--precisions", "fp32", "--iters", "3",
                 "--warmup", "1", "--rotate", "2", "--calib", str(CALIB), "--out", str(out), "--report", str(report),
                 "--isolation", "subprocess"]) == 0, capsys.readouterr().err
    rows = [r for r in json.loads((report / "results.json").read_text())["rows"] if r.get("module") == "tinyid"]
    measured = [r for r in rows if r.get("status") == "ok"]
    assert {r["backend"] for r in measured} == {"torch", "ort"}, rows
    pytest.importorskip("tensorrt_rtx")
    assert main(["trt", "--module", "tinyid", "--precision", "int8", "--out", str(out), "--calib", str(CALIB)]) == 0, \
        capsys.readouterr().err
    assert list(folder.glob("int8.*.engine"))
