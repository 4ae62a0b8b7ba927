"""Aligned face crops of a batch of frames in one ``grid_sample``, without the device waiting for the host.

Each frame gets ``k`` crop slots, ``k`` the most faces of one frame of the batch: face ``f`` of frame ``b`` fills
slot ``b * k + r`` (``r`` its rank among the faces of ``b``), every slot of the batch is sampled by one call
(:func:`~ffexport.vision.align.warp_affine`'s ``faces_per_image``), and the faces' slots are kept.  The slots are
laid out on the host from the faces' frames, which the pipeline has read back with the detections, so nothing
waits for the device (a per-frame loop would read back which faces belong to each frame, once per frame).  A
batch where one frame holds many more faces than the others would sample mostly empty slots: it is cropped
frame by frame instead (:data:`MAX_SLOT_WASTE`).  Either way, the same crops.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import torch

from ..specs.base import Template
from ..vision import align
from .device import from_host

MAX_SLOT_WASTE = 2.0  # slots sampled per face kept, at most, before cropping frame by frame


@lru_cache(maxsize=64)
def _template_points(template: Template, size: int, device: str) -> torch.Tensor:
    return align.template_points(template, size).to(device)


def template_points(template: Template, size: int, device: torch.device) -> torch.Tensor:
    """The template's points at ``size`` on ``device`` (:func:`~ffexport.vision.align.template_points`), copied
    there once: a copy per batch would wait for the work on the device."""
    return _template_points(template, int(size), str(device))


def slots(frames: list[int]) -> tuple[int, list[int]]:
    """``k``, the most faces of one frame, and each face's slot ``frame * k + rank within its frame``."""
    if not frames:
        return 0, []
    k = max(Counter(frames).values())
    seen: Counter = Counter()
    out = []
    for b in frames:
        out.append(b * k + seen[b])
        seen[b] += 1
    return k, out


def crop_faces(images: torch.Tensor, landmarks5: torch.Tensor, template: Template, size: int,
               frames: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` x ``size`` crops aligned to ``template`` of the faces ``landmarks5`` (``F x 5 x 2``) in
    ``images`` (``B x C x H x W`` float), face ``f`` in frame ``frames[f]``; and their frame -> crop matrices."""
    lm = landmarks5.to(images.device).float()
    M = align.umeyama(lm, template_points(template, size, images.device))  # align.estimate_crop_matrix's
    n, batch = len(frames), images.shape[0]
    if n == 0:
        return images.new_zeros(0, images.shape[1], size, size), M
    k, pos = slots(frames)
    if k == 1 and pos == list(range(batch)):  # a face a frame, in order
        return align.warp_affine(images, M, (size, size)), M
    if batch * k > MAX_SLOT_WASTE * n:
        return align.warp_affine(images, M, (size, size), image_index=from_host(frames, images.device)), M
    idx = from_host(pos, images.device)
    grid = torch.eye(2, 3, dtype=M.dtype, device=M.device).repeat(batch * k, 1, 1)  # empty slots: any matrix
    grid.index_copy_(0, idx, M)
    return align.warp_affine(images, grid, (size, size), faces_per_image=k).index_select(0, idx), M
