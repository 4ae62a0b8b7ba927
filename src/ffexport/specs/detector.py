"""RetinaFace-style detector (MobileNet-0.25 + FPN + SSH), insightface output layout."""

from __future__ import annotations

from .base import BATCH, ModuleSpec, Preprocess, TensorSpec, gates
from ._common import FP16_BLOCK_DEFAULT, RAW_FALLBACK
from . import register

STRIDES = (8, 16, 32)
ANCHORS_PER_LOCATION = 2
INPUT = 640


def _count(stride: int, size: int = INPUT) -> int:
    return (size // stride) ** 2 * ANCHORS_PER_LOCATION


def _anchors(s: int) -> str:
    """The output rows of stride ``s``: batch x its anchors, batch-major (insightface's 2-D layout)."""
    return f"anchors_{s}"


_outputs = tuple(
    [TensorSpec(f"score_{s}", (_anchors(s), 1), value_range=(0.0, 1.0),
                doc=f"face probability per anchor, stride {s}; {_count(s)} rows per image", example={_anchors(s): _count(s)})
     for s in STRIDES]
    + [TensorSpec(f"bbox_{s}", (_anchors(s), 4), example={_anchors(s): _count(s)},
                  doc=f"box distances (left, top, right, bottom) from the anchor centre, in units of stride {s}")
       for s in STRIDES]
    + [TensorSpec(f"kps_{s}", (_anchors(s), 10), example={_anchors(s): _count(s)},
                  doc=f"5 keypoints (x, y) as offsets from the anchor centre, in units of stride {s}")
       for s in STRIDES]
)

RETINAFACE = register(ModuleSpec(
    module="detector",
    variant="retinaface-mnet025",
    feed="letterbox",
    full_frame=True,
    ci=True,
    summary="RetinaFace, MobileNet-0.25 backbone, FPN, SSH context heads; 2 anchors per location, strides 8/16/32",
    inputs=(TensorSpec("input", (BATCH, 3, INPUT, INPUT), value_range=(-1.0, 1.0),
                       doc="letterboxed 640x640 BGR frame, (x - 127.5) / 128"),),
    outputs=_outputs,
    builder="ffexport.models.detector:build",
    builder_kwargs={},
    input_size=(INPUT, INPUT),
    preprocess=Preprocess("BGR", (127.5, 127.5, 127.5), (128.0, 128.0, 128.0)),
    template=None,
    output_semantics=("per stride s in (8, 16, 32): 2-D (batch x anchors, k), images one after another; anchors "
                      "in row-major (y, x) order, 2 per location, centre (x*s, y*s); box = centre -/+ distance*s; "
                      "keypoint = centre + offset*s (insightface retinaface/scrfd layout: its RetinaFace and SCRFD "
                      "classes and FaceFusion read these files)"),
    task="detection",
    gates={
        "fp32": gates(("box_iou_min", ">=", 0.99), ("kps_err_px", "<=", 0.1)),
        "fp16": gates(("box_iou_min", ">=", 0.95), ("kps_err_px", "<=", 1.0)),
        "int8": gates(("box_iou_min", ">=", 0.95), ("kps_err_px", "<=", 1.0)),
    },
    fallback_gates=RAW_FALLBACK,
    fp16_block_ops=FP16_BLOCK_DEFAULT,
    notes="parameter names follow the public mobilenet0.25 RetinaFace (body/fpn/ssh1-3/ClassHead/BboxHead/LandmarkHead); "
          "the graph converts its (x - 127.5) / 128 input back to BGR minus (104, 117, 123), what those checkpoints were "
          "trained on, and decodes their prior-box encoding into the insightface distance layout",
), default=True)
