"""Face-swap generators: inswapper-128 and SimSwap-256 (and its lite form)."""

from __future__ import annotations

from dataclasses import replace

from .base import BATCH, ModuleSpec, TensorSpec
from ._common import FP16_BLOCK_DEFAULT, IMAGE_GATES, RGB_01
from .templates import ARCFACE_128, SIMSWAP_256
from . import register


def _io(size: int, emap: bool = False):
    return (
        (TensorSpec("target", (BATCH, 3, size, size), value_range=(0.0, 1.0),
                    doc=f"{size}x{size} RGB target face crop in [0, 1]"),
         TensorSpec("source", (BATCH, 512), doc=EMAP_SOURCE if emap else RAW_SOURCE)),
        (TensorSpec("output", (BATCH, 3, size, size), value_range=(0.0, 1.0),
                    doc=f"{size}x{size} RGB swapped face in [0, 1], same alignment as target"),),
    )


# The AdaIN statistics run in FP16 storage: the FP16 pass fuses each instance norm (exported as ReduceMean, Sub,
# Mul, Add, Sqrt, Div) into one InstanceNormalization, whose onnxruntime CUDA kernel takes the mean and variance
# in FP32; kept in FP32 instead, the 12 norms of inswapper-128 cost 24 Casts around FP32 islands (issue #12:
# with the norms unfused, 42 FP32 nodes and 96 Casts made the FP16 module slower than FP32).  The FP16 gate
# still decides: a norm that misses it is kept in FP32 by the pass's parity rounds and listed in the manifest.
GENERATOR_FP16_BLOCK = tuple(op for op in FP16_BLOCK_DEFAULT if op != "InstanceNormalization")

RAW_SOURCE = "source identity latent (L2-normalised ArcFace embedding)"
EMAP_SOURCE = ("source identity latent normalize(normalize(embedding) @ emap), emap the 512x512 last initializer "
               "of the FP32 ONNX (the public inswapper_128 layout)")

_in128, _out128 = _io(128, emap=True)
INSWAPPER = register(ModuleSpec(
    module="generator",
    variant="inswapper-128",
    feed="generator",
    summary="inswapper-style 128 swapper: conv encoder, 6 AdaIN style blocks driven by the source latent, upsampling decoder",
    inputs=_in128,
    outputs=_out128,
    builder="ffexport.models.generator:build",
    builder_kwargs={"arch": "inswapper", "size": 128},
    input_size=(128, 128),
    preprocess=RGB_01,
    template=ARCFACE_128,
    output_semantics="swapped face crop aligned like the target crop; paste back with the inverse of the target's warp",
    source_transform="emap",
    task="image",
    gates=IMAGE_GATES,
    fp16_block_ops=GENERATOR_FP16_BLOCK,
), default=True)

register(replace(INSWAPPER, variant="inswapper-128-small",
                 summary="inswapper-128 layout at width 16 with 2 style blocks (small, for CI)",
                 builder_kwargs={"arch": "inswapper", "size": 128, "width": 16, "n_blocks": 2}))

_in256, _out256 = _io(256)
SIMSWAP = register(replace(
    INSWAPPER,
    variant="simswap-256",
    summary="SimSwap 256: 7x7 conv, 3 stride-2 downsamples, 9 AdaIN residual blocks, bilinear upsampling decoder",
    inputs=_in256, outputs=_out256,
    builder_kwargs={"arch": "simswap", "size": 256, "lite": False},
    input_size=(256, 256), template=SIMSWAP_256, source_transform="",
    notes="parameter names follow SimSwap's Generator_Adain_Upsample (first_layer, down1-3, BottleNeck, up1-3, last_layer)",
))
register(replace(
    SIMSWAP,
    variant="simswap-256-lite",
    ci=True,
    summary="SimSwap 256 lite: depthwise-separable decoder blocks with channel + spatial attention",
    builder_kwargs={"arch": "simswap", "size": 256, "lite": True, "width": 32},
    notes="lightweight: half-width stem (32), depthwise-separable decoder with channel + spatial attention; "
          "parameter names as simswap-256, shapes narrower (SimSwap checkpoints do not fit it)",
))
