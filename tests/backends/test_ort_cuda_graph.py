"""OrtRunner(cuda_graph=True): onnxruntime CUDA graphs, one session per input shape (issue #12).

The GPU tests run on GPU hosts only (CI has no GPU and skips them): the graph runner's outputs must equal the
ordinary runner's, call after call, with new inputs each call, and the outputs of one call must survive the next.
On the CPU the option changes nothing."""

from __future__ import annotations

import pytest
import torch

from helpers.ort import cuda_ort, scale_model



def conv_model(path, channels: int = 16):
    """conv3x3 -> relu -> conv3x3 -> InstanceNormalization -> conv1x1, dynamic batch, seeded weights."""
    import numpy as np
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    rng = np.random.default_rng(0)

    def w(name, *shape):
        return onnx.numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:])))
                                            .astype(np.float32), name)

    inits = [w("w1", channels, 3, 3, 3), w("w2", channels, channels, 3, 3), w("w3", 3, channels, 1, 1),
             onnx.numpy_helper.from_array(np.ones(channels, np.float32), "s"),
             onnx.numpy_helper.from_array(np.zeros(channels, np.float32), "b")]
    nodes = [h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             h.make_node("InstanceNormalization", ["c2", "s", "b"], ["n2"], epsilon=1e-5),
             h.make_node("Conv", ["n2", "w3"], ["y"])]
    g = h.make_graph(nodes, "conv", [h.make_tensor_value_info("x", T.FLOAT, ["batch", 3, 32, 32])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["batch", 3, 32, 32])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_cuda_graph_option_changes_nothing_on_cpu(tmp_path):
    from ffexport.backends.ort import OrtRunner

    with OrtRunner(scale_model(tmp_path / "m.onnx"), cuda_graph=True) as r:
        for n in (2, 2, 3):
            x = torch.arange(n * 4, dtype=torch.float32).reshape(n, 4)
            out = r.infer({"x": x})
            assert torch.equal(out["y"], 2 * x) and torch.equal(out["z"], x + 1)
        assert not r._graphs and r.describe()["cuda_graph"].startswith("off: CUDA only")


def _busy(x: torch.Tensor) -> torch.Tensor:
    """``x`` again, but only after ~20 ms of queued GPU work (a replay that started early reads stale input)."""
    a = torch.randn(2048, 2048, device="cuda") / 46
    for _ in range(20):
        a = torch.tanh(a @ a)
    return x + 0.0 * a[0, 0]


@cuda_ort
def test_cuda_graph_matches_ordinary_runs(tmp_path):
    from ffexport.backends.ort import OrtRunner

    path = conv_model(tmp_path / "conv.onnx")
    plain = OrtRunner(path, device="cuda")
    graph = OrtRunner(path, device="cuda", cuda_graph=True, graph_sessions=2)
    plain.activate()
    graph.activate()
    torch.manual_seed(0)
    kept = []
    for i, n in enumerate((2, 2, 4, 2, 4, 4, 8, 8, 2)):  # 8 evicts the least recently used of 2 and 4
        x = torch.rand(n, 3, 32, 32, device="cuda")
        got = graph.infer({"x": _busy(x)})["y"]  # no synchronisation: the runner orders itself after torch
        want = plain.infer({"x": x})["y"]
        kept.append((got, want))
    torch.cuda.synchronize()
    for got, want in kept:  # later calls did not overwrite earlier outputs
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    info = graph.describe()["cuda_graph"]
    assert info.startswith("on: 2 input shapes"), info
    assert set(graph._graphs) == {((8, 3, 32, 32),), ((2, 3, 32, 32),)}
    assert graph._graphs[((2, 3, 32, 32),)].runs >= 1
    graph.deactivate()
    plain.deactivate()
    assert not graph._graphs


@cuda_ort
def test_cuda_graph_on_the_generator(exported_small):
    """The CI generator's FP32 ONNX: graph and ordinary outputs agree on every call (or the runner says why it
    could not use graphs, and still agrees)."""
    from ffexport.backends.ort import OrtRunner

    spec, path = exported_small("generator")
    plain = OrtRunner(path, spec=spec, device="cuda")
    graph = OrtRunner(path, spec=spec, device="cuda", cuda_graph=True)
    plain.activate()
    graph.activate()
    torch.manual_seed(0)
    for n in (1, 1, 1, 2, 2, 2):
        feeds = {t.name: torch.rand(t.concrete(batch=n), device="cuda") for t in spec.inputs}
        got, want = graph.infer(feeds), plain.infer(feeds)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-3, atol=1e-4)
    info = graph.describe()["cuda_graph"]
    assert info.startswith("on: 2 input shapes") or info.startswith("off: "), info
    graph.deactivate()
    plain.deactivate()
