"""onnxruntime's CUDA path against torch work in flight (GPU hosts only; CI has no GPU and skips these).

torch queues its kernels without waiting; a runner that starts onnxruntime before the kernels
writing its inputs have finished reads stale memory.  These tests queue a long chain of torch work
that produces the input, call the runner at once, and compare with the value torch computes.
"""

from __future__ import annotations

import pytest
import torch

from helpers.ort import cuda_ort, scale_model



def _busy_input(n: int = 512) -> torch.Tensor:
    """A tensor whose value is only ready after ~100 ms of queued GPU work."""
    a = torch.randn(4096, 4096, device="cuda") / 64
    for _ in range(40):
        a = torch.tanh(a @ a)
    return a[:n, :n].contiguous()


@cuda_ort
@pytest.mark.parametrize("stream", ["default", "side"])
def test_ort_cuda_reads_inputs_after_torch_wrote_them(tmp_path, stream):
    from ffexport.backends.ort import OrtRunner

    path = scale_model(tmp_path / "m.onnx")
    s = torch.cuda.current_stream() if stream == "default" else torch.cuda.Stream()
    with torch.cuda.stream(s):
        runner = OrtRunner(path, device="cuda")
        runner.activate()
        for _ in range(3):
            x = _busy_input()
            out = runner.infer({"x": x})  # no synchronisation here: the runner must order itself after torch
            want_y, want_z = x * 2, x + 1
            torch.cuda.synchronize()
            assert torch.equal(out["y"], want_y)
            assert torch.equal(out["z"], want_z)


@cuda_ort
def test_ort_cuda_output_memory_is_not_reused_under_torch(tmp_path):
    """Outputs written by onnxruntime land in torch memory that earlier queued kernels no longer touch."""
    from ffexport.backends.ort import OrtRunner

    path = scale_model(tmp_path / "m.onnx")
    runner = OrtRunner(path, device="cuda")
    runner.activate()
    results = []
    for i in range(4):
        x = _busy_input() + i
        results.append((runner.infer({"x": x}), x * 2))
        del x
    torch.cuda.synchronize()
    for out, want in results:
        assert torch.equal(out["y"], want)
