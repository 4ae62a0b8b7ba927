"""ArcFace iResNet identity encoder."""

from __future__ import annotations

from dataclasses import replace

from .base import BATCH, ModuleSpec, TensorSpec, gates
from ._common import FP16_BLOCK_DEFAULT, RGB_PM1
from .templates import ARCFACE_112_V2
from . import register

IRESNET50 = register(ModuleSpec(
    module="encoder",
    variant="iresnet50",
    summary="ArcFace iResNet-50, 512-d identity embedding",
    inputs=(TensorSpec("input", (BATCH, 3, 112, 112), value_range=(-1.0, 1.0),
                       doc="112x112 RGB crop aligned to arcface_112_v2, (x - 127.5) / 127.5"),),
    outputs=(TensorSpec("embedding", (BATCH, 512), doc="raw 512-d embedding (not normalised; the pipeline L2-normalises)"),),
    builder="ffexport.models.encoder:build",
    builder_kwargs={"layers": (3, 4, 14, 3)},
    input_size=(112, 112),
    preprocess=RGB_PM1,
    template=ARCFACE_112_V2,
    output_semantics="identity embedding; compare L2-normalised vectors by cosine",
    task="embedding",
    gates={
        "fp32": gates(("cosine_min", ">=", 0.9999),),
        "fp16": gates(("cosine_min", ">=", 0.999),),
        "int8": gates(("cosine_min", ">=", 0.99),),
    },
    fp16_block_ops=FP16_BLOCK_DEFAULT,
    notes="parameter names follow insightface arcface_torch iresnet (conv1, bn1, prelu, layer1-4, bn2, fc, features)",
), default=True)

register(replace(IRESNET50, variant="iresnet18", ci=True, summary="ArcFace iResNet-18", builder_kwargs={"layers": (2, 2, 2, 2)}))
register(replace(IRESNET50, variant="iresnet34", summary="ArcFace iResNet-34", builder_kwargs={"layers": (3, 4, 6, 3)}))
register(replace(IRESNET50, variant="iresnet100", summary="ArcFace iResNet-100", builder_kwargs={"layers": (3, 13, 30, 3)}))
