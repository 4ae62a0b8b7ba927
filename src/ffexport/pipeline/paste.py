"""Paste-back: composite face crops into their frames with the blender stage, on each face's region only."""

from __future__ import annotations

from typing import Sequence

import torch

from ..vision import align
from .stages import Stage

MIN_ROI = 64  # smallest blender region: the minimum of the blender engines' height/width profile


def mask_rois(affine: torch.Tensor, crop_size: int, mask: Sequence[float], height: int,
              width: int) -> list[tuple[int, int, int, int]]:
    """Per face, the frame region ``(x0, y0, x1, y1)`` outside which its blend mask is zero.

    The mask is zero outside the padded box of the crop (``models/blender.py``);
    its corners go through ``affine`` (crop -> frame), plus a pixel of margin;
    regions are at least ``MIN_ROI`` pixels a side where the frame allows.
    One host sync for all faces.
    """
    _blur, top, right, bottom, left = (float(v) for v in mask)
    lo_x, hi_x = left * crop_size - 0.5, (1.0 - right) * crop_size - 0.5
    lo_y, hi_y = top * crop_size - 0.5, (1.0 - bottom) * crop_size - 0.5
    corners = affine.new_tensor([[lo_x, lo_y], [hi_x, lo_y], [lo_x, hi_y], [hi_x, hi_y]])
    pts = align.transform_points(corners.expand(affine.shape[0], 4, 2), affine)
    box = torch.cat([torch.floor(pts.amin(1)) - 1, torch.ceil(pts.amax(1)) + 2], 1).tolist()
    rois = []
    for x0, y0, x1, y1 in box:
        (ax, bx), (ay, by) = _span(x0, x1, width), _span(y0, y1, height)
        rois.append((ax, ay, bx, by))
    return rois


def _span(lo: float, hi: float, size: int, min_side: int = MIN_ROI) -> tuple[int, int]:
    """``[lo, hi)`` clipped to ``[0, size)``, grown to ``min_side`` where the frame allows (engines built for a
    minimum blender size accept it; the mask is zero on the extra pixels, so the result is the same)."""
    lo, hi = int(max(0, lo)), int(min(size, hi))
    if hi <= lo:
        return lo, hi  # nothing of the face is inside the frame
    grow = min(min_side, size) - (hi - lo)
    if grow > 0:
        lo = max(0, lo - grow // 2)
        hi = min(size, lo + min_side)
        lo = max(0, hi - min_side)
    return lo, hi


def paste(work: torch.Tensor, crops01: torch.Tensor, affine: torch.Tensor, index: torch.Tensor, blender: Stage,
          mask: torch.Tensor, mask_values: Sequence[float] | None = None) -> None:
    """Composite each crop into ``work`` in place, one face after another, with the blender stage.

    ``work`` is ``B x 3 x H x W`` float holding integer values in [0, 255];
    ``crops01`` ``F x 3 x S x S`` in [0, 1]; ``affine`` ``F x 2 x 3`` crop -> frame
    pixels; ``index`` the frame of each face.  The blender runs on each face's
    region of interest only (its affine shifted by the region's offset), which
    gives the full-frame result at a fraction of the cost; values are rounded
    back to integers, so pixels the mask does not reach stay bit-exact.
    """
    h, w = work.shape[-2:]
    rois = mask_rois(affine, crops01.shape[-1], mask_values if mask_values is not None else mask.tolist(), h, w)
    frames = index.tolist()
    for f, (x0, y0, x1, y1) in enumerate(rois):
        if x1 <= x0 or y1 <= y0:
            continue  # the face lies outside the frame
        b = frames[f]
        roi = work[b:b + 1, :, y0:y1, x0:x1] / 255.0
        A = affine[f:f + 1].clone()
        A[:, 0, 2] -= x0
        A[:, 1, 2] -= y0
        out = blender.run({"frame": roi, "crop": crops01[f:f + 1].contiguous(), "affine": A,
                           "mask": mask[None]})["output"]
        work[b, :, y0:y1, x0:x1] = (out[0].to(work.device) * 255.0).round_().clamp_(0, 255)
