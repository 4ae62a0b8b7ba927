"""The ``compile`` backend (torch.compile / inductor): same outputs as eager torch, a few compiled shapes, its
compile time kept apart, inductor's cache beside the artifacts."""

from __future__ import annotations

import shutil

import pytest
import torch

from ffexport import specs
from ffexport.models import build_model
from ffexport.pipeline.stages import make_stage

pytestmark = pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                                reason="inductor compiles C++ on the CPU: no C++ compiler here")


def test_compiled_stage_matches_eager_and_compiles_once_per_padded_batch(tmp_path):
    spec = specs.get("mtcnn_rnet")  # trained facenet-pytorch weights, small
    stage = make_stage(spec, "compile", "fp32", "cpu", out=tmp_path)
    try:
        x = torch.rand(3, 3, 24, 24) * 2 - 1
        got = stage({"input": x})
        again = stage({"input": x[:2] * 0.5})  # 3 faces run as a batch of 4, 2 as 2: few shapes, one compilation
        with torch.inference_mode():
            want = build_model(spec)(x)
        assert stage.backend == "compile" and stage.runner.backend == "compile"
        assert got["prob"].shape == (3, 2) and got["reg"].shape == (3, 4)
        assert torch.allclose(got["prob"], want[0], atol=1e-5) and torch.allclose(got["reg"], want[1], atol=1e-5)
        assert again["prob"].shape == (2, 2)
        assert sorted(stage.runner.compile_s) == ["2x3x24x24", "4x3x24x24"]
        assert all(s > 0 for s in stage.runner.compile_s.values())
        one = stage({"input": x[:1]})  # padded to 2 (a batch of 1 would be specialised)
        assert one["prob"].shape == (1, 2) and torch.allclose(one["prob"], want[0][:1], atol=1e-5)
        stage({"input": x})  # a shape seen before: nothing compiles
        assert len(stage.runner.compile_s) == 2
    finally:
        stage.close()
    assert (tmp_path / ".inductor").is_dir()


def test_compile_backend_refuses_int8_in_one_line(tmp_path):
    from ffexport.errors import RuntimeUnavailableError

    with pytest.raises(RuntimeUnavailableError, match="compile backend runs fp32 or fp16"):
        make_stage(specs.get("mtcnn_rnet"), "compile", "int8", "cpu", out=tmp_path)


def test_single_item_graph_is_a_gpu_choice(tmp_path):
    """On a CPU (no CUDA graphs) a call of one item stays padded to the dynamic graph's 2."""
    stage = make_stage(specs.get("mtcnn_rnet"), "compile", "fp32", "cpu", out=tmp_path)
    try:
        stage.warm_single_item()
        assert not stage.single_item_graph and stage.runner.compile_s == {}
    finally:
        stage.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_single_item_graph_on_the_gpu_compiles_both_shapes_before_any_call(tmp_path):
    """warm_single_item (a pipeline fed one frame a call): the dynamic graph (2) and a static one for one item
    are compiled in the warm-up; calls of 1, 2 and 3 items then compile nothing and match eager."""
    spec = specs.get("mtcnn_rnet")
    stage = make_stage(spec, "compile", "fp32", "cuda", out=tmp_path)
    try:
        stage.warm_single_item()
        assert stage.single_item_graph and sorted(stage.runner.compile_s) == ["1x3x24x24", "2x3x24x24"]
        x = (torch.rand(3, 3, 24, 24) * 2 - 1).cuda()
        with torch.inference_mode():
            want = build_model(spec).cuda()(x)
        for n in (1, 2, 3):
            got = stage({"input": x[:n]})
            assert torch.allclose(got["prob"], want[0][:n], atol=1e-4)
        assert sorted(stage.runner.compile_s) == ["1x3x24x24", "2x3x24x24", "4x3x24x24"]  # 3 runs as 4
    finally:
        stage.close()
