"""Paste-back as a graph: inverse warp of the generated crop, feathered box mask, composite."""

from __future__ import annotations

from .base import BATCH, ModuleSpec, TensorSpec, gates
from ._common import RAW_FALLBACK
from . import register

BLENDER = register(ModuleSpec(
    module="blender",
    variant="box-feather",
    feed="blender",
    ci=True,
    quantizable=False,
    summary="inverse affine warp (grid_sample) of the crop into the frame, feathered box mask, alpha composite",
    inputs=(
        TensorSpec("frame", (BATCH, 3, "height", "width"), value_range=(0.0, 1.0),
                   doc="full frame (or a region of it), RGB in [0, 1]", example={"height": 360, "width": 640}),
        TensorSpec("crop", (BATCH, 3, "crop_size", "crop_size"), value_range=(0.0, 1.0),
                   doc="generated face crop, RGB in [0, 1]", example={"crop_size": 128}),
        TensorSpec("affine", (BATCH, 2, 3), doc="crop -> frame affine matrix in pixels: [x_f, y_f] = A @ [x_c, y_c, 1]"),
        TensorSpec("mask", (BATCH, 5), doc="mask parameters: blur, pad_top, pad_right, pad_bottom, pad_left, "
                                           "as fractions of the crop size (e.g. 0.3, 0, 0, 0, 0)"),
    ),
    outputs=(TensorSpec("output", (BATCH, 3, "height", "width"), value_range=(0.0, 1.0),
                        doc="composited frame, RGB in [0, 1]", example={"height": 360, "width": 640}),),
    builder="ffexport.models.blender:build",
    opset=17,
    output_semantics="frame outside the warped mask is returned unchanged",
    task="image",
    gates={
        "fp32": gates(("psnr_db", ">=", 60.0), ("ssim", ">=", 0.999)),
        "fp16": gates(("psnr_db", ">=", 40.0), ("ssim", ">=", 0.99)),
        "int8": gates(("psnr_db", ">=", 30.0), ("ssim", ">=", 0.95)),
    },
    fallback_gates=RAW_FALLBACK,
    batch_profile=(1, 1, 8),
    # all of its arithmetic: frame coordinates (FP16 steps 1 px from 1024 px on, 2 px from 2048) and a blend that
    # reads and writes float32 frames (the IO contract), where FP16 costs a Cast each way and saves nothing.
    # Measured on an H200 (onnxruntime-CUDA, benchmarks/NOTES.md, issue #12 session 17): with the geometry in FP16
    # the artifact had 30 Casts, ran 0.05 ms slower at batch 1 and 8, and kept 47-51 dB PSNR against 155 dB
    fp16_block_ops=("GridSample", "Add", "Sub", "Mul", "Div", "Neg", "Min", "Max", "Clip", "Gather", "Unsqueeze",
                    "Concat", "Reshape", "Expand", "Where"),
    fp16_block_reason="the blender's arithmetic is pixel coordinates and a blend of float32 frames: FP16 loses "
                      "sub-pixel accuracy in 1080p coordinates and adds a Cast around each input and output, so "
                      "the blender keeps FP32 in an FP16 build",
    notes="no weights: its checkpoint is empty; mask defaults follow the common tools (blur 0.3, no padding)",
), default=True)
