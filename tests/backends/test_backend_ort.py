"""The onnxruntime runner's session-per-shape policy and its choice of policy (CPU here; the CUDA
ordering is in test_ort_cuda.py, which runs on GPU hosts)."""

from __future__ import annotations

import torch

from ffexport.backends.ort import SHAPE_SESSIONS, OrtRunner, _model_facts
from helpers.ort import scale_model


def test_cpu_keeps_one_session_by_default(tmp_path):
    r = OrtRunner(scale_model(tmp_path / "m.onnx"))
    with r:
        assert r.shape_sessions == 1
        for n in (3, 4, 3, 4):
            out = r.infer({"x": torch.ones(n, 5)})
            assert torch.equal(out["y"], torch.full((n, 5), 2.0))
        assert not r._sessions


def test_repeated_shapes_get_their_own_sessions_least_recently_used_dropped(tmp_path):
    r = OrtRunner(scale_model(tmp_path / "m.onnx"), shape_sessions=2)
    with r:
        def run(n):
            x = torch.arange(n * 5, dtype=torch.float32).reshape(n, 5)
            out = r.infer({"x": x})
            assert torch.equal(out["y"], 2 * x) and torch.equal(out["z"], x + 1)
            return set(r._sessions)

        assert run(1) == set()                    # first sighting: the shared session
        assert run(1) == {((1, 5),)}              # it came back: a session of its own
        assert run(2) == {((1, 5),)}
        assert run(2) == {((1, 5),), ((2, 5),)}
        own = r._sessions[((1, 5),)]
        assert run(1) == {((1, 5),), ((2, 5),)} and r._sessions[((1, 5),)] is own  # reused, now most recent
        assert run(3) == {((1, 5),), ((2, 5),)}
        assert run(3) == {((1, 5),), ((3, 5),)}   # (2, 5) was least recently used
        assert all(s is not r.sess for s in r._sessions.values())
        assert "shape_sessions" in r.describe()
    assert r.sess is None and not r._sessions     # closed: every session released


def test_model_facts_size_and_convolutions(tmp_path, exported_small):
    p = scale_model(tmp_path / "m.onnx")
    assert _model_facts(p) == (p.stat().st_size, False)  # no convolution: one session even on CUDA
    _, pnet = exported_small("mtcnn_pnet")
    size, convs = _model_facts(pnet)
    assert convs and size >= pnet.stat().st_size
    assert SHAPE_SESSIONS >= 11  # an image pyramid's levels fit (MTCNN at 1280x720: 11 levels)


def test_user_cuda_options_go_over_ffexports_own_and_bad_ones_get_one_line(tmp_path, monkeypatch):
    import pytest

    from ffexport.backends.ort import CUDA_OPTIONS_ENV, cuda_options
    from ffexport.errors import ConfigError

    path = scale_model(tmp_path / "m.onnx")
    monkeypatch.delenv(CUDA_OPTIONS_ENV, raising=False)
    own = cuda_options(path, "cuda:1", stream=123, dynamic_spatial=True, cuda_graph=True)
    assert own["device_id"] == "1" and own["use_tf32"] == "0" and own["cudnn_conv_algo_search"] == "HEURISTIC"
    assert own["user_compute_stream"] == "123" and own["enable_cuda_graph"] == "1"
    monkeypatch.setenv(CUDA_OPTIONS_ENV, " prefer_nhwc=1 , cudnn_conv_algo_search=DEFAULT,")
    opts = cuda_options(path, "cuda", dynamic_spatial=False)
    assert opts["prefer_nhwc"] == "1" and opts["cudnn_conv_algo_search"] == "DEFAULT" and opts["device_id"] == "0"
    for bad, said in (("prefer_nhwc", "not key=value"), ("=1", "not key=value"),
                      ("user_compute_stream=5", "set by ffexport itself"), ("device_id=2", "set by ffexport itself")):
        monkeypatch.setenv(CUDA_OPTIONS_ENV, bad)
        with pytest.raises(ConfigError, match=said) as info:
            cuda_options(path, "cuda")
        assert len(str(info.value).splitlines()) == 1 and CUDA_OPTIONS_ENV in str(info.value)


def _conv_model(path, weight_dtype: str, qdq: bool = False):
    """One 3x3 convolution, its weights stored as ``weight_dtype`` (float16: input and output cast around it, as
    the FP16 pass leaves a model with FP32 IO), or as INT8 behind a DequantizeLinear (``qdq``)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes, inits = [], []
    x, y = "x", "y"
    if qdq:
        inits += [numpy_helper.from_array(np.round(w * 20).astype(np.int8), "wq"),
                  numpy_helper.from_array(np.array(0.05, np.float32), "ws")]
        nodes.append(helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"]))
        nodes.append(helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]))
    elif weight_dtype == "float16":
        inits.append(numpy_helper.from_array(w.astype(np.float16), "w"))
        nodes += [helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
                  helper.make_node("Conv", ["xh", "w"], ["yh"], pads=[1, 1, 1, 1]),
                  helper.make_node("Cast", ["yh"], ["y"], to=TensorProto.FLOAT)]
    else:
        inits.append(numpy_helper.from_array(w, "w"))
        nodes.append(helper.make_node("Conv", [x, "w"], [y], pads=[1, 1, 1, 1]))
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime here reads (a newer onnx writes an IR an older runtime refuses)
    onnx.save(model, str(path))
    return path


def test_tf32_is_on_for_fp16_models_only(tmp_path, monkeypatch):
    """onnxruntime's use_tf32=0 also keeps its FP16 convolutions off the tensor cores: FP16 artifacts get 1, FP32
    and Q/DQ ones keep 0 (their parity records are FP32 arithmetic); the user's setting goes over both."""
    from ffexport.backends.ort import CUDA_OPTIONS_ENV, _graph_facts, cuda_options

    monkeypatch.delenv(CUDA_OPTIONS_ENV, raising=False)
    half, full, qdq = (_conv_model(tmp_path / f"{n}.onnx", d, q) for n, d, q in
                       (("h", "float16", False), ("f", "float32", False), ("q", "float32", True)))
    assert _graph_facts(half)["fp16_math"] and not _graph_facts(full)["fp16_math"]
    assert not _graph_facts(qdq)["fp16_math"] and _graph_facts(qdq)["qdq"]
    assert [cuda_options(p)["use_tf32"] for p in (half, full, qdq)] == ["1", "0", "0"]
    monkeypatch.setenv(CUDA_OPTIONS_ENV, "use_tf32=0")
    assert cuda_options(half)["use_tf32"] == "0"
    # the models themselves run (CPU here): the FP16 one within FP16 rounding of the FP32 one
    x = torch.randn(2, 3, 8, 8)
    with OrtRunner(half) as h, OrtRunner(full) as f:
        a, b = h.infer({"x": x})["y"], f.infer({"x": x})["y"]
    assert a.shape == (2, 4, 8, 8) and torch.allclose(a, b, atol=0.05, rtol=0.01)


def test_cuda_runs_leave_the_host_free_unless_the_user_asks(tmp_path, monkeypatch):
    """The runner's CUDA runs carry onnxruntime's run option that skips its host synchronisation at the end of a run
    (ordering is by CUDA events; a caller's CUDA graph can then capture the run); $FFEXPORT_ORT_HOST_SYNC=1 restores
    it.  The option is a run option onnxruntime reads, so a run with it works (here on the CPU provider)."""
    import pytest

    ort = pytest.importorskip("onnxruntime")
    from ffexport.backends.ort import HOST_SYNC_ENV, cuda_run_options

    key = "disable_synchronize_execution_providers"
    monkeypatch.delenv(HOST_SYNC_ENV, raising=False)
    opts = cuda_run_options(ort)
    assert opts.get_run_config_entry(key) == "1"
    import numpy as np

    sess = ort.InferenceSession(str(scale_model(tmp_path / "m.onnx")), providers=["CPUExecutionProvider"])
    y = sess.run(["y"], {"x": np.ones((2, 5), np.float32)}, opts)[0]
    assert np.array_equal(y, np.full((2, 5), 2.0, np.float32))
    monkeypatch.setenv(HOST_SYNC_ENV, "1")
    with pytest.raises(RuntimeError):
        cuda_run_options(ort).get_run_config_entry(key)
