"""MTCNN cascade (P-Net, R-Net, O-Net): the trained 5-point face detector, one module per net.

Parity is compared on the raw outputs (``prob``, ``reg``, ``landmarks``);
the cascade that turns them into faces is ``ffexport.pipeline.mtcnn``.
"""

from __future__ import annotations

from .base import BATCH, ModuleSpec, Preprocess, TensorSpec
from ._common import FP16_BLOCK_DEFAULT, RAW_FALLBACK
from . import register

MTCNN_PRE = Preprocess("RGB", (127.5, 127.5, 127.5), (128.0, 128.0, 128.0))
PNET_EXAMPLE = {"height": 240, "width": 320}


def _pnet_out_size(n: int) -> int:
    """P-Net output size for an input side ``n``: conv3 -> ceil-pool2 -> conv3 -> conv3."""
    return -(-(n - 2) // 2) - 4


_PNET_OUT = {"out_height": _pnet_out_size(PNET_EXAMPLE["height"]), "out_width": _pnet_out_size(PNET_EXAMPLE["width"])}
_PROB_DOC = "softmax over 2 classes: channel 0 = background, channel 1 = face"
_REG_DOC = "box regression (dx1, dy1, dx2, dy2) in units of the window's width/height"
_NOTES = ("the one module whose default weights are TRAINED: the builder loads facenet-pytorch's "
          "data/{pnet,rnet,onet}.pt (the original MTCNN weights converted to PyTorch; "
          "pip install --no-deps facenet-pytorch==2.6.0); parameter names follow facenet-pytorch. "
          "Images are fed in the normal B x 3 x H x W orientation (the conversion already folded "
          "Caffe's transposed layout into the weights); dense layers flatten in (W, H, C) order.")

_COMMON = dict(
    builder="ffexport.models.mtcnn:build",
    preprocess=MTCNN_PRE,
    template=None,
    task="raw",
        pretrained=True,
    gates=RAW_FALLBACK,
    fallback_gates=RAW_FALLBACK,
    fp16_block_ops=FP16_BLOCK_DEFAULT,
    in_default_pipeline=True,
    notes=_NOTES,
)

PNET = register(ModuleSpec(
    module="mtcnn_pnet",
    variant="facenet-pytorch",
    feed="pnet",
    full_frame=True,
    ci=True,
    summary="MTCNN P-Net: fully convolutional proposal net, one 12x12 window per 2 input pixels",
    inputs=(TensorSpec("input", (BATCH, 3, "height", "width"), value_range=(-1.0, 1.0),
                       doc="one pyramid level of the RGB frame, (x - 127.5) / 128", example=PNET_EXAMPLE),),
    outputs=(
        TensorSpec("prob", (BATCH, 2, "out_height", "out_width"), value_range=(0.0, 1.0),
                   doc=_PROB_DOC + ", per window", example=_PNET_OUT),
        TensorSpec("reg", (BATCH, 4, "out_height", "out_width"), doc=_REG_DOC + ", per window",
                   example=_PNET_OUT),
    ),
    builder_kwargs={"net": "pnet"},
    input_size=(PNET_EXAMPLE["height"], PNET_EXAMPLE["width"]),
    output_semantics=("output cell (i, j) is the 12x12 input window with top-left corner (2j, 2i); "
                      "out = ceil((in - 2) / 2) - 4 per axis"),
    **_COMMON,
), default=True)

RNET = register(ModuleSpec(
    module="mtcnn_rnet",
    variant="facenet-pytorch",
    feed="box_crop",
    ci=True,
    summary="MTCNN R-Net: refines and rescores P-Net candidates on 24x24 crops",
    inputs=(TensorSpec("input", (BATCH, 3, 24, 24), value_range=(-1.0, 1.0),
                       doc="24x24 RGB crop of a square candidate box, (x - 127.5) / 128"),),
    outputs=(
        TensorSpec("prob", (BATCH, 2), value_range=(0.0, 1.0), doc=_PROB_DOC),
        TensorSpec("reg", (BATCH, 4), doc=_REG_DOC),
    ),
    builder_kwargs={"net": "rnet"},
    input_size=(24, 24),
    output_semantics="per crop: face probability and box refinement relative to the crop's box",
    **_COMMON,
), default=True)

ONET = register(ModuleSpec(
    module="mtcnn_onet",
    variant="facenet-pytorch",
    feed="box_crop",
    ci=True,
    summary="MTCNN O-Net: final score, box refinement and 5 landmarks on 48x48 crops",
    inputs=(TensorSpec("input", (BATCH, 3, 48, 48), value_range=(-1.0, 1.0),
                       doc="48x48 RGB crop of a square candidate box, (x - 127.5) / 128"),),
    outputs=(
        TensorSpec("prob", (BATCH, 2), value_range=(0.0, 1.0), doc=_PROB_DOC),
        TensorSpec("reg", (BATCH, 4), doc=_REG_DOC),
        TensorSpec("landmarks", (BATCH, 10),
                   doc="5 points (left eye, right eye, nose, left and right mouth corner): "
                       "x0..x4 then y0..y4, as fractions of the crop's box"),
    ),
    builder_kwargs={"net": "onet"},
    input_size=(48, 48),
    output_semantics="point k = (x1 + landmarks[k] * w, y1 + landmarks[5 + k] * h) for the crop's box",
    **_COMMON,
), default=True)
