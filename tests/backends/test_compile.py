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
