"""Every registered module at every precision becomes a real TensorRT-RTX engine, built on this CPU machine.

This is the CI check of the whole build path (the passes' ONNX -> parser ->
profile -> builder): an unsupported operator, a mistyped FP16 graph, a Q/DQ
layout TensorRT rejects or a profile mistake in any module fails here.  Modules
are tested at their smallest registered variant (the specs marked ci=True); the
upstream artifacts are shared with the other tests through ``session_artifacts``.
"""

from __future__ import annotations


import pytest

from conftest import small_spec
from ffexport import specs
from ffexport.vocab import PRECISIONS
from helpers.trt import digest, needs_rtx

pytestmark = needs_rtx

from conftest import REPO

CALIB = REPO / "calibration"


@pytest.fixture(autouse=True)
def _outside_the_repo(tmp_path, monkeypatch):
    """Run from a scratch folder: onnxruntime's INT8 shape inference writes temporary files into the CWD."""
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("module", specs.modules())
def test_module_builds_an_engine(module, precision, session_artifacts):
    from ffexport.config import resolve_spec
    from ffexport.artifacts.engines import build_module_engine

    spec = resolve_spec(module, small_spec(module).variant)
    rec = build_module_engine(spec, precision, out=session_artifacts, calib=CALIB)
    folder = session_artifacts / (module if spec.variant == specs.default_variant(module) else spec.key.replace("/", "."))
    engine = folder / rec["file"]
    assert rec["file"] == f"{precision}.tensorrt_rtx.engine" and engine.read_bytes()[:4] == b"vtrt"
    assert rec["sha256"] == digest(engine) and rec["parent"]["sha256"] == digest(folder / rec["parent"]["file"])
    assert [t["name"] for t in rec["io"]["inputs"]] == spec.input_names
    assert [t["name"] for t in rec["io"]["outputs"]] == spec.output_names
    lo, opt, hi = spec.batch_profile
    for t in spec.inputs:
        p = rec["profile"][t.name]
        assert (p["min"][0], p["opt"][0], p["max"][0]) == (lo, opt, hi)
        for axis, dim in enumerate(t.shape):
            if isinstance(dim, int):
                assert p["min"][axis] == p["max"][axis] == dim
            elif axis > 0:  # a named spatial axis: its range holds the spec's example size
                assert p["min"][axis] <= t.example[dim] <= p["max"][axis]
    again = build_module_engine(spec, precision, out=session_artifacts, calib=CALIB)
    assert again["engine_cache_hit"] is True
