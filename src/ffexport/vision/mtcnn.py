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


class AreaPyramid:
    """Area-resized copies of ``images`` (``F.interpolate(mode="area")``, i.e. ``adaptive_avg_pool2d``'s bins:
    output ``i`` averages inputs ``floor(i * n / m)`` .. ``ceil((i + 1) * n / m)``), MTCNN's image pyramid.

    On a GPU every level is read from one integral image (float64 prefix sums, built once per batch) with four
    gathers: the same averages, without the adaptive-pooling kernel (~0.7 ms per 1280-px level on an H200) and
    without host synchronisation, so it can be captured in a CUDA graph.  On a CPU it is ``F.interpolate``.
    """

    def __init__(self, images: torch.Tensor, integral: bool | None = None):
        self.images = images
        self._sums = None
        if images.is_cuda if integral is None else integral:
            s = images.double().cumsum(-1).cumsum(-2)
            self._sums = F.pad(s, (1, 0, 1, 0))  # _sums[..., y, x]: the sum of images[..., :y, :x]

    @staticmethod
    def _bins(n_in: int, n_out: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.arange(n_out, device=device)
        return (torch.div(i * n_in, n_out, rounding_mode="floor"),
                torch.div((i + 1) * n_in + n_out - 1, n_out, rounding_mode="floor"))

    def level(self, size: tuple[int, int]) -> torch.Tensor:
        if self._sums is None:
            return F.interpolate(self.images, size=size, mode="area")
        (h, w), (sh, sw) = self.images.shape[-2:], size
        y0, y1 = self._bins(h, sh, self.images.device)
        x0, x1 = self._bins(w, sw, self.images.device)
        s = self._sums
        top, bottom = s.index_select(-2, y0), s.index_select(-2, y1)
        total = (bottom.index_select(-1, x1) - bottom.index_select(-1, x0)
                 - top.index_select(-1, x1) + top.index_select(-1, x0))
        area = ((y1 - y0)[:, None] * (x1 - x0)[None, :]).double()
        return (total / area).to(self.images.dtype)


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
               image_index: torch.Tensor | None = None, supersample: int | None = None,
               boxes_per_image: int | None = None) -> torch.Tensor:
    """``size`` x ``size`` crops of ``boxes`` (zeros outside the frame), area-like resampling.

    Each box is sampled on a ``size*k`` grid and average-pooled by ``k``, so large boxes are not aliased:
    ``k = supersample`` when given (no read-back: the device never waits for the host), else the largest box's
    side / size, at most 4.  ``boxes_per_image`` (``k``): box ``n`` is in image ``n // k`` (instead of
    ``image_index``), cropped by one ``grid_sample`` for the batch.
    """
    n = boxes.shape[0]
    if n == 0:
        return images.new_zeros(0, images.shape[1], size, size)
    wh = (boxes[:, 2:4] - boxes[:, 0:2]).clamp(min=1e-3)
    if supersample is not None:
        k = int(supersample)
    else:
        k = int(min(MAX_SUPERSAMPLE, max(1, math.ceil(float(wh.max()) / size))))
    out = size * k
    sx, sy = out / wh[:, 0], out / wh[:, 1]
    zeros = torch.zeros_like(sx)
    # source pixel centre x_s -> destination pixel centre: (x_s + 0.5 - x1) * s - 0.5
    M = torch.stack([torch.stack([sx, zeros, (0.5 - boxes[:, 0]) * sx - 0.5], 1),
                     torch.stack([zeros, sy, (0.5 - boxes[:, 1]) * sy - 0.5], 1)], 1)
    if boxes_per_image is not None:  # image b's boxes are rows b*k .. b*k+k-1
        crops = warp_affine(images, M.float(), (out, out), faces_per_image=boxes_per_image)
    else:
        idx = image_index if image_index is not None else torch.arange(n, device=images.device)
        crops = warp_affine(images, M.float(), (out, out), image_index=idx)
    return F.avg_pool2d(crops, k) if k > 1 else crops


def _offset_per_image(boxes: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
    """Shift each image's boxes far apart so one NMS call never mixes images."""
    if boxes.numel() == 0:
        return boxes
    span = boxes.abs().max() + 1
    return boxes + (image_index.to(boxes.dtype) * span * 2)[:, None]


def _min_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS with intersection-over-minimum overlap (MTCNN's last stage), as a fixed point."""
    order = torch.sort(scores, descending=True, stable=True).indices
    over = torch.triu(pair_overlap(boxes[order].float()[None], "min")[0] > threshold, diagonal=1)
    keep = torch.ones(order.shape[0], dtype=torch.bool, device=boxes.device)
    for _ in range(order.shape[0]):
        new = ~(over & keep[:, None]).any(0)
        if torch.equal(new, keep):
            break
        keep = new
    return order[keep]


def pair_overlap(boxes: torch.Tensor, mode: str = "union") -> torch.Tensor:
    """``(B, K, K)`` overlap of each image's boxes ``(B, K, 4)``: IoU (``union``) or intersection over the
    smaller area (``min``); 0 where the divisor is empty."""
    area = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    lt = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    if mode == "min":
        div = torch.minimum(area[:, :, None], area[:, None, :])
    else:
        div = area[:, :, None] + area[:, None, :] - inter
    return torch.where(div > 0, inter / div.clamp(min=1e-12), torch.zeros_like(inter))


def masked_nms(boxes: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor, threshold: float,
               mode: str = "union", rounds: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy NMS per image on fixed-size candidate sets, without reading anything back to the host.

    ``boxes (B, K, 4)``, ``scores (B, K)``, ``valid (B, K)`` (candidates that take part).  Returns ``order``
    ``(B, K)`` (each image's candidates by score, highest first, stable), ``keep`` ``(B, K)`` in that order, and
    ``settled`` ``(B,)``: whether ``rounds`` rounds of the fixed point (see
    :func:`ffexport.vision.retinaface.nms`) reached greedy NMS's result.  Where it did not (a suppression chain
    longer than ``rounds``), the caller must not use ``keep``.
    """
    s = scores.float().masked_fill(~valid, float("-inf"))
    order = torch.sort(s, dim=1, descending=True, stable=True).indices
    ranked = torch.gather(boxes.float(), 1, order[..., None].expand(-1, -1, 4))
    live = torch.gather(valid, 1, order)
    over = torch.triu(pair_overlap(ranked, mode) > threshold, diagonal=1) & live[:, :, None]
    keep = live
    for _ in range(int(rounds)):
        keep = live & ~(over & keep[:, :, None]).any(1)
    settled = ((live & ~(over & keep[:, :, None]).any(1)) == keep).all(1)
    return order, keep, settled


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
