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
