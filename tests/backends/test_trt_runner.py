"""The TensorRT runner: honest availability everywhere, real inference wherever a runtime and a GPU allow.

The inference tests build an engine with whichever TensorRT can run here
(TensorRT 10/11 on a data-centre GPU, TensorRT for RTX on a GeForce/RTX card),
run it on torch CUDA tensors and compare it with onnxruntime on the same real
face inputs.  Elsewhere they are skipped with the reason ``trt_availability``
gives (no GPU; TensorRT for RTX on compute capability 9.0; no runtime).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ffexport._lazy import available
from ffexport.backends.trt import trt_availability
from helpers.trt import needs_rtx
from conftest import REPO

CALIB = REPO / "calibration"
OK, WHY = trt_availability()
needs_runtime = pytest.mark.skipif(not OK, reason=f"TensorRT cannot run engines here: {WHY}")


# --- availability: answered everywhere -------------------------------------------------------

def test_availability_states_a_reason():
    ok, reason = trt_availability()
    assert isinstance(ok, bool) and reason and "\n" not in reason
    ok2, reason2 = trt_availability("no-such-flavor")
    assert not ok2 and "unknown TensorRT flavor" in reason2


def test_no_tensorrt_installed_is_one_line(tmp_path):
    import subprocess
    import sys

    code = ("import sys\nsys.modules['tensorrt'] = None\nsys.modules['tensorrt_rtx'] = None\n"
            "from ffexport.cli.main import main\n"
            f"raise SystemExit(main(['trt', '--onnx', {str(tmp_path / 'm.onnx')!r}, '--out', {str(tmp_path)!r}]))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: no TensorRT is installed: pip install 'ffexport[trt]'"), lines[0]


@needs_rtx
def test_rtx_refuses_compute_capability_9_from_its_own_list():
    """TensorRT for RTX lists the compute capabilities it supports (its ComputeCapability enum); 9.0, the
    H100/H200, is not among them, so the runner and the benchmark say so instead of running."""
    from ffexport.backends.trt_flavors import GpuInfo, load

    rtx = load("tensorrt_rtx")
    assert "9.0" not in rtx.target_ccs() and "8.6" in rtx.target_ccs()
    ok, why = rtx.runs_on(GpuInfo(0, "NVIDIA H100 80GB HBM3", (9, 0)))
    assert not ok
    assert why.startswith(f"TensorRT-RTX {rtx.version} does not support compute capability 9.0 (NVIDIA H100 80GB HBM3)")
    assert rtx.runs_on(GpuInfo(0, "NVIDIA GeForce RTX 4090", (8, 9)))[0]


@needs_rtx
def test_runner_on_unsupported_gpu_says_why(tmp_path, monkeypatch):
    """Where the GPU is one the engine's runtime refuses, activation fails with that one line."""
    from ffexport.backends import trt as backend
    from ffexport.errors import RuntimeUnavailableError
    from ffexport.backends import trt_flavors as F
    from helpers.trt import export_spec_onnx
    from ffexport import specs
    from ffexport.passes.trt import build_engine

    onnx_path = export_spec_onnx(specs.get("blender"), tmp_path / "blender.onnx")
    engine = tmp_path / "a" / "fp32.tensorrt_rtx.engine"
    build_engine(onnx_path, specs.get("blender"), precision="fp32", out_path=engine, flavor="tensorrt_rtx")
    h100 = F.GpuInfo(0, "NVIDIA H100 80GB HBM3", (9, 0))
    monkeypatch.setattr(F, "local_gpu", lambda index=0: h100)
    with pytest.raises(RuntimeUnavailableError) as exc:
        backend.TrtRunner(engine, device="cuda").activate()
    assert "does not support compute capability 9.0 (NVIDIA H100 80GB HBM3)" in str(exc.value)
    ok, why = backend.trt_availability("tensorrt_rtx")
    assert not ok and "compute capability 9.0" in why


# --- inference: where a runtime and a GPU exist ------------------------------------------------

@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """The encoder (iResNet-18) at each precision, built by `ffexport trt` with the flavour that runs here."""
    from ffexport import specs
    from ffexport.artifacts.engines import build_module_engine
    from ffexport.backends.trt_flavors import FLAVORS, load, local_gpu

    gpu = local_gpu()
    flavor = next(n for n in FLAVORS if available(n) and load(n).runs_on(gpu)[0])
    out = tmp_path_factory.mktemp("trt_run")
    spec = specs.get("encoder", "iresnet18")
    recs = {p: build_module_engine(spec, p, out=out, calib=CALIB, flavor=flavor, batch=(1, 2, 4))
            for p in ("fp32", "fp16", "int8")}
    return spec, out / "encoder.iresnet18", recs


def _feeds(spec, batch: int):
    from ffexport.export.onnx import parity_feeds

    feeds, _ = parity_feeds(spec, samples=2, batch=batch)
    return feeds


@needs_runtime
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_matches_onnxruntime(engines, precision):
    import torch

    from ffexport.backends.ort import OrtRunner
    from ffexport.backends.trt import TrtRunner
    from ffexport.export.parity import check_parity

    spec, folder, recs = engines
    rec = recs[precision]
    onnx_path = folder / rec["parent"]["file"]
    with OrtRunner(onnx_path, spec=spec) as ref, TrtRunner(folder / rec["file"], spec=spec, device="cuda") as trt:
        assert trt.input_names == ["input"] and trt.output_names == ["embedding"]
        for batch in (1, 3):  # inside the 1..4 profile, away from opt
            feeds = [{k: v.cuda() for k, v in f.items()} for f in _feeds(spec, batch)]
            out = trt.infer(feeds[0])
            assert out["embedding"].is_cuda and out["embedding"].shape == (batch, 512)
            parity = check_parity(spec, lambda f: ref.infer({k: v.cpu() for k, v in f.items()}), trt.infer, feeds,
                                  precision=precision, raise_on_fail=False)
            assert parity["passed"], parity["gates"]
        mem = trt.memory_report()
        assert mem["engine_device_memory_mb"] >= 0 and mem["torch_allocated_mb"] > 0
    torch.cuda.synchronize()


@needs_runtime
def test_callers_stream_cuda_graph_and_profile_bounds(engines):
    import torch

    from ffexport.backends.trt import TrtRunner
    from ffexport.errors import InputSpecError

    spec, folder, recs = engines
    engine = folder / recs["fp16"]["file"]
    feeds = {k: v.cuda() for k, v in _feeds(spec, 2)[0].items()}
    with TrtRunner(engine, spec=spec) as plain, TrtRunner(engine, spec=spec, cuda_graph=True) as graphed:
        want = plain.infer(feeds)["embedding"]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            got_side = plain.infer(feeds)["embedding"]
        side.synchronize()
        assert torch.equal(got_side, want)
        first = graphed.infer(feeds)["embedding"]  # captures
        again = graphed.infer({k: v.flip(0) for k, v in feeds.items()})["embedding"]  # replays on new data
        assert torch.allclose(first, want, atol=1e-3) and torch.allclose(again, want.flip(0), atol=1e-3)
        with pytest.raises(InputSpecError, match="outside the engine's profile"):
            plain.infer({"input": torch.zeros(8, 3, 112, 112, device="cuda")})


@needs_runtime
def test_tensorrt_timing_cache_is_persisted_and_reused(tmp_path):
    """TensorRT 10/11 (not RTX, where timing caches are no-ops): the second build loads the first's cache."""
    from ffexport import specs
    from ffexport.passes.trt import build_engine
    from ffexport.backends.trt_flavors import local_gpu, load
    from helpers.trt import export_spec_onnx

    if not available("tensorrt") or not load("tensorrt").runs_on(local_gpu())[0]:
        pytest.skip("timing caches are a TensorRT 10/11 feature and tensorrt cannot run here")
    onnx_path = export_spec_onnx(specs.get("blender"), tmp_path / "blender.onnx")
    dims = {"height": (64, 360, 720), "width": (64, 640, 1280), "crop_size": (64, 128, 256)}
    kw = dict(precision="fp32", flavor="tensorrt", dims=dims, cache_dir=tmp_path / "cache")
    first = build_engine(onnx_path, None, out_path=tmp_path / "a" / "e.engine", **kw)
    assert first["timing_cache"]["used"] and not first["timing_cache_hit"]
    assert Path(first["timing_cache"]["file"]).is_file() and first["timing_cache"]["saved_bytes"] > 0
    second = build_engine(onnx_path, None, out_path=tmp_path / "b" / "e.engine", **kw)
    assert second["timing_cache_hit"] is True and second["timing_cache"]["loaded_bytes"] > 0
