"""The words ffexport uses for the same things everywhere, defined once: precisions, backends, and the
file names of the artifacts in a module's folder."""

from __future__ import annotations

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
BACKENDS: tuple[str, ...] = ("torch", "compile", "ort", "trt")
# the backends that run the torch module itself (eager, or through torch.compile): no ONNX artifact, fp32/fp16 only
TORCH_BACKENDS: tuple[str, ...] = ("torch", "compile")

# the artifacts of a module's folder (``artifacts/<module>[.<variant>]/``)
FP32_ONNX = "fp32.onnx"          # the export: the root of the lineage
SIM_ONNX = "fp32.sim.onnx"       # simplified FP32
FP16_ONNX = "fp16.onnx"          # FP16 ONNX
INT8_ONNX = "int8.onnx"          # Q/DQ INT8 ONNX
MANIFEST = "manifest.json"
# the ONNX file each precision's optimisation ends in (and each precision's engine is built from)
PRECISION_ONNX = {"fp32": SIM_ONNX, "fp16": FP16_ONNX, "int8": INT8_ONNX}
# what a runner of each precision can run, best first
RUNNABLE_ONNX = {"fp32": (SIM_ONNX, FP32_ONNX), "fp16": (FP16_ONNX,), "int8": (INT8_ONNX,)}


def engine_name(precision: str, flavor: str) -> str:
    """``<precision>.<flavor>.engine``: a TensorRT engine built by ``flavor`` (tensorrt, tensorrt_rtx)."""
    return f"{precision}.{flavor}.engine"
