"""Paste-back as a graph: inverse-warp the crop into the frame, feather a box mask, composite.

Pixel convention (the one OpenCV uses): pixel ``(i, j)`` of an image has its
centre at the continuous coordinate ``(x, y) = (j, i)`` and covers
``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``.  ``affine`` maps crop pixel
coordinates to frame pixel coordinates, ``[x_f, y_f] = A @ [x_c, y_c, 1]``,
the matrix ``cv2.estimateAffinePartial2D(crop_points, frame_points)`` returns
and the inverse of the frame -> crop matrix used to cut the crop.  For every
frame pixel centre the crop is sampled bilinearly at ``A^-1 @ [x_f, y_f, 1]``:
that is ``cv2.warpAffine(crop, A, (W, H), flags=INTER_LINEAR,
borderMode=BORDER_REPLICATE)``, equivalently ``cv2.warpAffine(crop,
cv2.invertAffineTransform(A), (W, H), flags=INTER_LINEAR | WARP_INVERSE_MAP,
borderMode=BORDER_REPLICATE)`` (OpenCV 4 rounds sub-pixel positions to
1/32 px; the tests compare).  ``cut_crop`` is the opposite direction, for
cutting the crop with the same matrix.  The matrix must be invertible.

The mask is analytic in crop space (no extra image to sample).  With
``u = (x_c + 0.5) / w`` and ``v = (y_c + 0.5) / h`` (0..1 across the crop) the
box is ``pad_left <= u <= 1 - pad_right``, ``pad_top <= v <= 1 - pad_bottom``;
``d`` is the distance to its nearest edge (inside: positive), and the mask is
``smoothstep(clamp(d / (blur / 2), 0, 1))``: 0 on and outside the box edge,
rising to 1 at ``blur * crop_size / 2`` pixels inside, close to FaceFusion's
box mask (a zeroed border of ``blur * size / 4`` blurred by a Gaussian of sigma
``blur * size / 8``, which also reaches ~1 about ``blur * size / 2`` in).  ``blur = 0`` gives a hard box.  Outside the box the
mask is exactly 0 and the output is the input frame, bit for bit.

The crop is sampled with border replication: the mask, not the sampler,
decides where the crop ends, so a hard-edged box does not pick up a dark
half-pixel fringe from zero padding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

MASK_FIELDS = ("blur", "pad_top", "pad_right", "pad_bottom", "pad_left")
DEFAULT_MASK = (0.3, 0.0, 0.0, 0.0, 0.0)


def invert_affine(affine: torch.Tensor) -> torch.Tensor:
    """Inverse of a batch of 2x3 affine matrices (B, 2, 3), like ``cv2.invertAffineTransform``."""
    a, b, c = affine[:, 0, 0], affine[:, 0, 1], affine[:, 0, 2]
    d, e, f = affine[:, 1, 0], affine[:, 1, 1], affine[:, 1, 2]
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    row0 = torch.stack([ia, ib, -(ia * c + ib * f)], dim=-1)
    row1 = torch.stack([id_, ie, -(id_ * c + ie * f)], dim=-1)
    return torch.stack([row0, row1], dim=1)


def pixel_coords(height: int, width: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``x`` (1, 1, W) and ``y`` (1, H, 1) in ``like``'s dtype and device."""
    xs = torch.arange(width, dtype=like.dtype, device=like.device)
    ys = torch.arange(height, dtype=like.dtype, device=like.device)
    return xs[None, None, :], ys[None, :, None]


def apply_affine(affine: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Map pixel coordinates through (B, 2, 3) matrices; ``x``/``y`` broadcast against (B, H, W)."""
    m = affine[:, :, :, None, None]
    return m[:, 0, 0] * x + m[:, 0, 1] * y + m[:, 0, 2], m[:, 1, 0] * x + m[:, 1, 1] * y + m[:, 1, 2]


def pixels_to_grid(x: torch.Tensor, y: torch.Tensor, width, height) -> torch.Tensor:
    """Pixel coordinates -> ``grid_sample`` grid (B, H, W, 2) for ``align_corners=False``."""
    return torch.stack([(2.0 * x + 1.0) / width - 1.0, (2.0 * y + 1.0) / height - 1.0], dim=-1)


def box_mask(x: torch.Tensor, y: torch.Tensor, width, height, params: torch.Tensor) -> torch.Tensor:
    """Feathered box mask at crop pixel coordinates ``x``, ``y`` (B, H, W); ``params`` (B, 5) as MASK_FIELDS."""
    p = params[:, :, None, None]
    blur, top, right, bottom, left = p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4]
    u = (x + 0.5) / width
    v = (y + 0.5) / height
    d = torch.minimum(torch.minimum(u - left, (1.0 - right) - u), torch.minimum(v - top, (1.0 - bottom) - v))
    t = (d / torch.clamp(blur * 0.5, min=1e-6)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def crop_mask(crop_size: int, params: torch.Tensor) -> torch.Tensor:
    """The mask on the crop's own pixel grid, (B, 1, crop_size, crop_size): what gets pasted, for previews and tests."""
    x, y = pixel_coords(crop_size, crop_size, params)
    return box_mask(x, y, crop_size, crop_size, params)[:, None]


def warp_crop(crop: torch.Tensor, affine: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """Sample ``crop`` at every frame pixel: (B, 3, H, W) image and the crop coordinates ``x_c``, ``y_c`` (B, H, W)."""
    h, w = crop.shape[2], crop.shape[3]
    x, y = pixel_coords(height, width, crop)
    xc, yc = apply_affine(invert_affine(affine), x, y)
    grid = pixels_to_grid(xc, yc, w, h)
    warped = F.grid_sample(crop, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return warped, xc, yc


def cut_crop(frame: torch.Tensor, affine: torch.Tensor, size: int) -> torch.Tensor:
    """The inverse operation: a ``size`` x ``size`` crop of ``frame`` sampled at ``affine @ [x_c, y_c, 1]``
    (crop -> frame matrix, same convention; bilinear, border replicated), (B, C, size, size)."""
    x, y = pixel_coords(size, size, frame)
    xf, yf = apply_affine(affine, x, y)
    grid = pixels_to_grid(xf, yf, frame.shape[3], frame.shape[2])
    return F.grid_sample(frame, grid, mode="bilinear", padding_mode="border", align_corners=False)


class BoxFeatherBlender(nn.Module):
    """forward(frame, crop, affine, mask) -> frame with the crop pasted in; no parameters."""

    def forward(self, frame, crop, affine, mask):
        warped, xc, yc = warp_crop(crop, affine, frame.shape[2], frame.shape[3])
        m = box_mask(xc, yc, crop.shape[3], crop.shape[2], mask)[:, None]
        return frame * (1.0 - m) + warped * m


def build(spec) -> nn.Module:
    return BoxFeatherBlender()
