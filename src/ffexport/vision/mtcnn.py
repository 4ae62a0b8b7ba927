"""MTCNN box geometry on tensors: normalisation, squaring, regression, crops of boxes and NMS, for any
device (the cascade that uses them is :mod:`ffexport.pipeline.mtcnn`).

Coordinates: boxes are ``x1, y1, x2, y2`` with pixel ``j`` spanning ``[j, j + 1)`` (so ``x2 - x1`` is the
width).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .align import warp_affine
from .retinaface import nms as iou_nms

MAX_SUPERSAMPLE = 4  # a box is sampled on a grid at most this many times finer than its crop, then pooled


def normalise(images: torch.Tensor) -> torch.Tensor:
    """RGB [0, 255] -> MTCNN input, ``(x - 127.5) / 128``."""
    return (images - 127.5) / 128.0


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square of its longer side, same centre."""
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    side = wh.max(1, keepdim=True).values
    centre = boxes[:, 0:2] + wh / 2
    return torch.cat([centre - side / 2, centre + side / 2], 1)


def regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Apply ``(dx1, dy1, dx2, dy2)`` in units of the box's width/height."""
    wh = (boxes[:, 2:4] - boxes[:, 0:2]).repeat(1, 2)
    return boxes + reg.to(boxes.dtype) * wh


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, size: int,
               image_index: torch.Tensor | None = None) -> torch.Tensor:
    """``size`` x ``size`` crops of ``boxes`` (zeros outside the frame), area-like resampling.

    Each box is sampled on a ``size*k`` grid and average-pooled by ``k``
    (k = box side / size, at most 4), so large boxes are not aliased.
    """
    n = boxes.shape[0]
    if n == 0:
        return images.new_zeros(0, images.shape[1], size, size)
    wh = (boxes[:, 2:4] - boxes[:, 0:2]).clamp(min=1e-3)
    k = int(min(MAX_SUPERSAMPLE, max(1, math.ceil(float(wh.max()) / size))))
    out = size * k
    sx, sy = out / wh[:, 0], out / wh[:, 1]
    zeros = torch.zeros_like(sx)
    # source pixel centre x_s -> destination pixel centre: (x_s + 0.5 - x1) * s - 0.5
    M = torch.stack([torch.stack([sx, zeros, (0.5 - boxes[:, 0]) * sx - 0.5], 1),
                     torch.stack([zeros, sy, (0.5 - boxes[:, 1]) * sy - 0.5], 1)], 1)
    idx = image_index if image_index is not None else torch.arange(n, device=images.device)
    crops = warp_affine(images, M.float(), (out, out), image_index=idx)
    return F.avg_pool2d(crops, k) if k > 1 else crops


def _offset_per_image(boxes: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
    """Shift each image's boxes far apart so one NMS call never mixes images."""
    if boxes.numel() == 0:
        return boxes
    span = boxes.abs().max() + 1
    return boxes + (image_index.to(boxes.dtype) * span * 2)[:, None]


def _min_overlap(a: torch.Tensor) -> torch.Tensor:
    """(N, N) intersection over the smaller area."""
    area = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], a[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], a[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    smaller = torch.minimum(area[:, None], area[None, :]).clamp(min=1e-12)
    return inter / smaller


def _min_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS with intersection-over-minimum overlap (MTCNN's last stage), as a fixed point."""
    order = torch.sort(scores, descending=True, stable=True).indices
    over = torch.triu(_min_overlap(boxes[order].float()) > threshold, diagonal=1)
    keep = torch.ones(order.shape[0], dtype=torch.bool, device=boxes.device)
    for _ in range(order.shape[0]):
        new = ~(over & keep[:, None]).any(0)
        if torch.equal(new, keep):
            break
        keep = new
    return order[keep]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, image_index: torch.Tensor,
                threshold: float, mode: str = "union") -> torch.Tensor:
    """NMS within each image; kept indices, highest score first."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    shifted = _offset_per_image(boxes.float(), image_index)
    if mode == "min":
        return _min_nms(shifted, scores, threshold)
    return iou_nms(shifted, scores, threshold)


def bucket(n: int, cap: int | None = None, smallest: int = 16) -> int:
    """The batch ``n`` rounds up to: the next power of two, at least ``smallest``, at most ``cap``."""
    size = max(smallest, 1 << max(0, n - 1).bit_length())
    return max(n, min(size, cap)) if cap else size
