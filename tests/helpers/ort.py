"""Tiny ONNX models built in code for the backend tests."""

from __future__ import annotations

import pytest
import torch

from ffexport._lazy import available

# tests that need onnxruntime's CUDA provider on a GPU (the GPU host; CI has neither)
cuda_ort = pytest.mark.skipif(
    not (torch.cuda.is_available() and available("onnxruntime")
         and "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers()),
    reason="needs a CUDA GPU and onnxruntime-gpu (the GPU host; CI has neither)")


def scale_model(path, dynamic: bool = True):
    """y = 2 * x and z = x + 1 (two float32 outputs; dynamic axes unless ``dynamic`` is False)."""
    import onnx
    from onnx import TensorProto, helper

    dims = ["n", "k"] if dynamic else [512, 512]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, dims)
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"]), helper.make_node("Add", ["x", "one"], ["z"])],
                          "scale", [x], [y, z], [two, one])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path
