"""Paste-back: composite face crops into their frames with the blender stage, on each face's region only."""

from __future__ import annotations

from typing import Sequence

import torch

from ..vision import align
from .device import from_host
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


def _rounds(rois: list[tuple[int, int, int, int]], frames: list[int]) -> list[list[int]]:
    """The faces in pasting rounds: a face whose region overlaps an earlier face's of the same frame goes in a
    later round than that face (pasting in order), every other face in the first round it may join."""
    when: list[int] = []
    for f, (x0, y0, x1, y1) in enumerate(rois):
        after = [when[g] for g in range(f) if frames[g] == frames[f]
                 and min(x1, rois[g][2]) > max(x0, rois[g][0]) and min(y1, rois[g][3]) > max(y0, rois[g][1])]
        when.append(1 + max(after) if after else 0)
    return [[f for f in range(len(rois)) if when[f] == r] for r in range(max(when, default=-1) + 1)]


MAX_WINDOW_WASTE = 4.0  # a round pasted as one batch may blend at most this many times its faces' own pixels


def paste(work: torch.Tensor, crops01: torch.Tensor, affine: torch.Tensor, index: torch.Tensor | Sequence[int],
          blender: Stage, mask: torch.Tensor, mask_values: Sequence[float] | None = None,
          rois: list[tuple[int, int, int, int]] | None = None) -> None:
    """Composite each crop into ``work`` in place with the blender stage, on each face's region only.

    ``work`` is ``B x 3 x H x W`` float holding integer values in [0, 255];
    ``crops01`` ``F x 3 x S x S`` in [0, 1]; ``affine`` ``F x 2 x 3`` crop -> frame
    pixels; ``index`` the frame of each face (a tensor, or a host list, which saves reading it back).  The blender runs on each face's
    region of interest only (its affine shifted by the region's offset), which
    gives the full-frame result at a fraction of the cost; values are rounded
    back to integers, so pixels the mask does not reach stay bit-exact.  The faces of a batch whose regions do
    not overlap go through the blender in one call (each on a window of the largest region's size that holds its
    own); overlapping faces of a frame are pasted in order, in later calls.  ``rois`` (:func:`mask_rois` of
    ``affine`` for crops of ``crops01``'s size), when the caller has them, save reading them back here, where the
    device would first finish the work queued before; so does ``index`` as a list.
    """
    h, w = work.shape[-2:]
    if rois is None:
        rois = mask_rois(affine, crops01.shape[-1], mask_values if mask_values is not None else mask.tolist(), h, w)
    frames = index.tolist() if isinstance(index, torch.Tensor) else list(index)
    for group in _rounds(rois, frames):
        faces = [f for f in group if rois[f][2] > rois[f][0] and rois[f][3] > rois[f][1]]  # inside the frame
        if not faces:
            continue
        hm = max(rois[f][3] - rois[f][1] for f in faces)
        wm = max(rois[f][2] - rois[f][0] for f in faces)
        own = sum((rois[f][3] - rois[f][1]) * (rois[f][2] - rois[f][0]) for f in faces)
        if len(faces) == 1 or len(faces) * hm * wm > MAX_WINDOW_WASTE * own:
            for f in faces:
                _paste_windows(work, crops01, affine, blender, mask, [f], [rois[f]], frames)
        else:
            _paste_windows(work, crops01, affine, blender, mask, faces, [rois[f] for f in faces], frames, (hm, wm))


def _paste_windows(work, crops01, affine, blender: Stage, mask, faces: list[int], rois, frames: list[int],
                   size: tuple[int, int] | None = None) -> None:
    """One blender call for ``faces``, each on a window of ``size`` (default: its own region) holding its region."""
    h, w = work.shape[-2:]
    anchors, windows = [], []
    for f, (x0, y0, x1, y1) in zip(faces, rois):
        hm, wm = size or (y1 - y0, x1 - x0)
        ax, ay = min(x0, w - wm), min(y0, h - hm)  # the window inside the frame, holding the region
        anchors.append((ax, ay))
        windows.append(work[frames[f], :, ay:ay + hm, ax:ax + wm])
    sel = from_host(faces, affine.device)
    A = affine.index_select(0, sel)
    A[:, :, 2] -= from_host(anchors, A.device, A.dtype)
    out = blender.run({"frame": torch.stack(windows) / 255.0, "crop": crops01.index_select(0, sel).contiguous(),
                       "affine": A, "mask": mask[None].expand(len(faces), -1).contiguous()})["output"]
    out = (out.to(work.device) * 255.0).round_().clamp_(0, 255)
    for i, (f, (x0, y0, x1, y1), (ax, ay)) in enumerate(zip(faces, rois, anchors)):
        work[frames[f], :, y0:y1, x0:x1] = out[i, :, y0 - ay:y1 - ay, x0 - ax:x1 - ax]
