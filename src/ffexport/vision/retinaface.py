"""Detector post-processing for the insightface output layout (torch only, any device).

The detector emits, per stride ``s``, ``score_s`` (B*N, 1), ``bbox_s``
(B*N, 4) and ``kps_s`` (B*N, 10) -- images one after another, as insightface's
files do; a (B, N, k) output is read too -- for N = (size / s)^2 * A anchors,
row-major over (y, x) with A anchors per location centred at ``(x * s, y * s)``:

    box      = (cx - l*s, cy - t*s, cx + r*s, cy + b*s)       (xyxy, input pixels)
    keypoint = (cx + dx*s, cy + dy*s)

Everything here is vectorised tensor code, so it runs where the outputs are
(CPU or CUDA) with no copies to the host, and needs no torchvision.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..errors import InputSpecError

Detections = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # boxes (..., 4), kps (..., 5, 2), scores (...)

STRIDES = (8, 16, 32)
MAX_CANDIDATES = 2000  # highest-scoring boxes that enter NMS (bounds the N x N IoU matrix)


def anchor_centers(size: int | tuple[int, int], stride: int, num_anchors: int = 2,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """(H/s * W/s * num_anchors, 2) anchor centres ``(x * s, y * s)``, row-major, each repeated per anchor."""
    h, w = (size, size) if isinstance(size, int) else size
    ys, xs = torch.meshgrid(torch.arange(h // stride, device=device), torch.arange(w // stride, device=device),
                            indexing="ij")
    centres = torch.stack([xs, ys], dim=-1).reshape(-1, 2).float() * stride
    return centres.repeat_interleave(num_anchors, dim=0)


def _get(outputs: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in outputs:
        raise InputSpecError(f"detector output {name!r} missing; got {sorted(outputs)}")
    return torch.as_tensor(outputs[name])


def _batched(t: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """(B*N, k) or (B, N, k) -> (B, N, k); a row count that is no multiple of ``n`` is left for the caller's check."""
    if t.ndim == 2 and t.shape[0] % n == 0 and t.shape[-1] == width:
        return t.reshape(-1, n, width)
    return t if t.ndim == 3 else t.reshape(1, -1, width)


def decode_all(outputs: Mapping[str, torch.Tensor], input_size: int | tuple[int, int] = 640,
               strides: Sequence[int] = STRIDES, num_anchors: int = 2) -> Detections:
    """Every anchor's box (B, N, 4), keypoints (B, N, 5, 2) and score (B, N), all strides concatenated."""
    boxes, kps, scores = [], [], []
    for s in strides:
        c = anchor_centers(input_size, s, num_anchors, device=outputs[f"bbox_{s}"].device
                           if f"bbox_{s}" in outputs else None)  # float32
        n = c.shape[0]
        score, dist, off = (_batched(_get(outputs, f"{k}_{s}"), n, w) for k, w in (("score", 1), ("bbox", 4), ("kps", 10)))
        if dist.shape[1] != c.shape[0]:
            raise InputSpecError(f"bbox_{s} has {dist.shape[1]} anchors; input size {input_size} "
                                 f"with {num_anchors} anchors per location needs {c.shape[0]}")
        d = dist.float() * s
        boxes.append(torch.cat([c - d[..., :2], c + d[..., 2:]], dim=-1))
        kps.append(c[:, None, :] + off.float().reshape(*off.shape[:2], 5, 2) * s)
        scores.append(score.float().reshape(score.shape[0], -1))
    return torch.cat(boxes, 1), torch.cat(kps, 1), torch.cat(scores, 1)


def decode(outputs: Mapping[str, torch.Tensor], input_size: int | tuple[int, int] = 640,
           strides: Sequence[int] = STRIDES, score_threshold: float = 0.5, num_anchors: int = 2) -> list[Detections]:
    """Per batch item: boxes (N, 4) xyxy pixels, kps (N, 5, 2) pixels, scores (N,) of the anchors whose
    score is at least ``score_threshold`` (insightface's rule).

    Kept anchors stay in output order (stride, then row-major location, then anchor).
    """
    boxes, kps, scores = decode_all(outputs, input_size, strides, num_anchors)
    result = []
    for b in range(scores.shape[0]):
        keep = scores[b] >= score_threshold
        result.append((boxes[b][keep], kps[b][keep], scores[b][keep]))
    return result


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4); 0 where both boxes are empty."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS; indices of the kept boxes, highest score first.

    A box is suppressed when its IoU with a kept, higher-scoring box is
    ``> iou_threshold`` (insightface's rule).  Instead of a Python loop over
    boxes, the greedy result is computed as the fixed point of

        keep[j] = not any(keep[i] and iou[i, j] > t for i ranked before j)

    iterated from all-true: each round settles at least one more rank, and in
    practice it settles after a handful of rounds (the longest suppression
    chain), each one a vectorised op on the N x N matrix.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    ranked = boxes[order].float()
    over = box_iou(ranked, ranked) > iou_threshold
    over = torch.triu(over, diagonal=1)  # over[i, j]: i ranks before j and overlaps it
    keep = torch.ones(order.shape[0], dtype=torch.bool, device=boxes.device)
    for _ in range(order.shape[0]):
        new = ~(over & keep[:, None]).any(dim=0)
        if torch.equal(new, keep):
            break
        keep = new
    return order[keep]


def detect_postprocess(outputs: Mapping[str, torch.Tensor], score_threshold: float = 0.5,
                       iou_threshold: float = 0.4, max_faces: int | None = None,
                       input_size: int | tuple[int, int] = 640, strides: Sequence[int] = STRIDES,
                       num_anchors: int = 2, max_candidates: int = MAX_CANDIDATES) -> list[Detections]:
    """Decode, threshold, NMS; per batch item the faces sorted by score, at most ``max_faces``."""
    result = []
    for boxes, kps, scores in decode(outputs, input_size, strides, score_threshold, num_anchors):
        if scores.numel() > max_candidates:
            top = torch.topk(scores, max_candidates).indices
            boxes, kps, scores = boxes[top], kps[top], scores[top]
        keep = nms(boxes, scores, iou_threshold)
        if max_faces is not None:
            keep = keep[:max_faces]
        result.append((boxes[keep], kps[keep], scores[keep]))
    return result
