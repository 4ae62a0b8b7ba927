"""GFPGAN/GPEN-style 512 face restorer."""

from __future__ import annotations

from dataclasses import replace

from .base import BATCH, ModuleSpec, TensorSpec
from ._common import FP16_BLOCK_DEFAULT, IMAGE_GATES, RGB_PM1
from .templates import FFHQ_512
from . import register

GFPGAN = register(ModuleSpec(
    module="enhancer",
    variant="gfpgan-1.4",
    summary="GFPGAN v1.4 (clean architecture): U-Net encoder, StyleGAN2 decoder with spatial feature transforms",
    inputs=(TensorSpec("input", (BATCH, 3, 512, 512), value_range=(-1.0, 1.0),
                       doc="512x512 RGB face aligned to ffhq_512, (x - 127.5) / 127.5"),),
    outputs=(TensorSpec("output", (BATCH, 3, 512, 512), value_range=(-1.0, 1.0),
                        doc="restored 512x512 RGB face in [-1, 1]"),),
    builder="ffexport.models.enhancer:build",
    builder_kwargs={"channel_multiplier": 2.0, "size": 512},
    input_size=(512, 512),
    preprocess=RGB_PM1,
    template=FFHQ_512,
    output_semantics="restored face, same alignment as the input crop",
    task="image",
    gates=IMAGE_GATES,
    fp16_block_ops=FP16_BLOCK_DEFAULT,
    notes="parameter names follow GFPGANv1Clean (conv_body_first, conv_body_down, final_linear, stylegan_decoder, condition_scale/shift)",
), default=True)

register(replace(GFPGAN, variant="gfpgan-lite", ci=True, summary="GFPGAN-style restorer at a quarter of the channels (small, for CI and mobile)",
                 builder_kwargs={"channel_multiplier": 0.5, "size": 512, "narrow": 0.25}))
