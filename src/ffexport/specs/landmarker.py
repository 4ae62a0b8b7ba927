"""68-point 2DFAN (stacked hourglass) landmarker on 256x256 crops."""

from __future__ import annotations

from dataclasses import replace

from .base import BATCH, ModuleSpec, TensorSpec, gates
from ._common import FP16_BLOCK_DEFAULT, RAW_FALLBACK, RGB_01
from .templates import LANDMARK_256
from . import register

FAN4 = register(ModuleSpec(
    module="landmarker",
    variant="2dfan4",
    summary="2DFAN-4: 4 stacked hourglasses, 68 heatmaps at 64x64, points decoded in the graph",
    inputs=(TensorSpec("input", (BATCH, 3, 256, 256), value_range=(0.0, 1.0),
                       doc="256x256 RGB face crop (template landmark_256), x / 255"),),
    outputs=(
        TensorSpec("heatmaps", (BATCH, 68, 64, 64), doc="last hourglass heatmaps"),
        TensorSpec("points", (BATCH, 68, 2), doc="(x, y) in pixels of the 256 input: 4 * (argmax cell + 0.5 + 0.25 * sign of the neighbour difference)"),
        TensorSpec("scores", (BATCH, 68), doc="heatmap peak value per point"),
    ),
    builder="ffexport.models.landmarker:build",
    builder_kwargs={"num_modules": 4},
    input_size=(256, 256),
    preprocess=RGB_01,
    template=LANDMARK_256,
    output_semantics="68 iBUG points in input pixels; heatmap cell (i, j) covers input pixels 4i..4i+3",
    task="landmarks",
    gates={
        "fp32": gates(("point_err_px", "<=", 0.1),),
        "fp16": gates(("point_err_px", "<=", 1.0),),
        "int8": gates(("point_err_px", "<=", 1.0),),
    },
    fallback_gates=RAW_FALLBACK,
    fp16_block_ops=FP16_BLOCK_DEFAULT,
    notes="parameter names follow the public face-alignment FAN (conv1, m0.b1_1, top_m_0, l0, bl0, al0, ...)",
), default=True)

register(replace(FAN4, variant="2dfan2", summary="2DFAN-2: 2 stacked hourglasses", builder_kwargs={"num_modules": 2}))
register(replace(FAN4, variant="2dfan1", ci=True, summary="2DFAN-1: 1 hourglass (small, for CI and mobile)",
                 builder_kwargs={"num_modules": 1}))
