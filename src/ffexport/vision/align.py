"""Face alignment on the device: similarity fits, affine warps, letterboxing (torch only).

Conventions (the ones cv2 and skimage use, so crops match the public tools):

* points are ``(x, y)`` pixel coordinates with the centre of pixel ``(i, j)``
  at ``x = j, y = i``;
* an affine matrix ``M`` (``B x 2 x 3``) maps *source* pixels to
  *destination* pixels: ``[x_d, y_d] = M @ [x_s, y_s, 1]`` (``cv2.warpAffine``
  without ``WARP_INVERSE_MAP``);
* images are float tensors ``B x C x H x W`` on any device.

Everything is batched; nothing here loops over faces on the host.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..specs.base import Preprocess, Template


# --- image helpers ------------------------------------------------------------------------

def to_tensor_image(image, device: torch.device | str | None = None) -> torch.Tensor:
    """``H x W x 3`` (or ``B x H x W x 3``) uint8 array/tensor -> float32 ``B x 3 x H x W`` in [0, 255]."""
    if isinstance(image, np.ndarray):  # read-only arrays (PIL's) are copied: torch wants writable memory
        image = np.array(image, copy=True) if not image.flags.writeable else np.ascontiguousarray(image)
    t = torch.as_tensor(image)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected an HxWx3 or BxHxWx3 image, got shape {tuple(t.shape)}")
    return t.to(device=device).permute(0, 3, 1, 2).float().contiguous()


def to_uint8_hwc(images: torch.Tensor, scale: float = 1.0) -> np.ndarray:
    """``B x 3 x H x W`` (or ``3 x H x W``) float -> uint8 ``B x H x W x 3`` (or ``H x W x 3``); ``scale``
    maps the tensor's range to [0, 255] (1 for [0, 255] images, 255 for [0, 1])."""
    x = (images.detach().float() * scale).round().clamp(0, 255).to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


def normalize(images: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """RGB images in [0, 255] -> the model's input: channel order, then ``(x - mean) / std``."""
    x = images.flip(1) if preprocess.color == "BGR" else images
    mean = x.new_tensor(preprocess.mean).view(1, 3, 1, 1)
    std = x.new_tensor(preprocess.std).view(1, 3, 1, 1)
    return (x - mean) / std


# --- similarity fits ----------------------------------------------------------------------

def umeyama(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping ``src`` to ``dst``.

    ``src`` is ``B x K x 2``, ``dst`` ``K x 2`` or ``B x K x 2``; returns ``B x 2 x 3``.
    In 2-D the similarity ``[[a, -b], [b, a]]`` is linear in ``(a, b)``, so the
    least-squares optimum has a closed form; it equals Umeyama's SVD solution
    and can never be a reflection.  Computed in float64, returned in ``src``'s dtype.
    """
    if src.ndim != 3 or src.shape[-1] != 2:
        raise ValueError(f"src must be B x K x 2, got {tuple(src.shape)}")
    s = src.double()
    d = dst.to(device=src.device, dtype=torch.float64).expand_as(s)
    s_mean, d_mean = s.mean(1, keepdim=True), d.mean(1, keepdim=True)
    sc, dc = s - s_mean, d - d_mean
    var = (sc ** 2).sum((1, 2)).clamp(min=1e-12)
    a = (sc[..., 0] * dc[..., 0] + sc[..., 1] * dc[..., 1]).sum(1) / var
    b = (sc[..., 0] * dc[..., 1] - sc[..., 1] * dc[..., 0]).sum(1) / var
    rot = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # B x 2 x 2
    t = d_mean.squeeze(1) - (rot @ s_mean.transpose(1, 2)).squeeze(-1)
    return torch.cat([rot, t.unsqueeze(-1)], -1).to(src.dtype if src.is_floating_point() else torch.float32)


def template_points(template: Template, size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The template's 5 points scaled to a ``size`` x ``size`` crop, ``5 x 2``."""
    return torch.tensor(template.scaled(size), device=device, dtype=dtype)


def estimate_crop_matrix(landmarks5: torch.Tensor, template: Template, size: int) -> torch.Tensor:
    """Frame -> crop matrices (``B x 2 x 3``) aligning 5 landmarks to ``template`` at ``size``."""
    lm = landmarks5.float()
    return umeyama(lm, template_points(template, size, device=lm.device))


def invert_affine(M: torch.Tensor) -> torch.Tensor:
    """Inverse of ``B x 2 x 3`` affine matrices (exact 2x2 inverse, batched)."""
    a, b, c = M[:, 0, 0], M[:, 0, 1], M[:, 0, 2]
    d, e, f = M[:, 1, 0], M[:, 1, 1], M[:, 1, 2]
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    ic = -(ia * c + ib * f)
    if_ = -(id_ * c + ie * f)
    return torch.stack([torch.stack([ia, ib, ic], -1), torch.stack([id_, ie, if_], -1)], -2)


def transform_points(points: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Apply ``B x 2 x 3`` matrices to ``B x K x 2`` points."""
    return points @ M[:, :, :2].transpose(1, 2) + M[:, :, 2].unsqueeze(1)


def sampling_theta(M: torch.Tensor, src_size: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
    """``affine_grid`` theta (``B x 2 x 3``) that samples the warp ``M`` (src -> dst pixels).

    With ``m`` the inverse warp (dst -> src pixels) and grid_sample's normalised coordinates
    (``align_corners=False``: ``u = (2 x + 1) / w - 1``), theta is ``N_src @ m @ N_dst^-1``, written out
    element by element (no host-built matrices: nothing is copied to the device, nothing waits for it).
    """
    (hs, ws), (hd, wd) = src_size, out_size
    m = invert_affine(M.double())  # dst pixel -> src pixel
    rows = []
    for r, size in ((0, ws), (1, hs)):
        a, b, c = m[:, r, 0], m[:, r, 1], m[:, r, 2]
        k = 2.0 / size
        rows.append(torch.stack([k * a * (wd / 2.0), k * b * (hd / 2.0),
                                 k * (a * (wd / 2.0 - 0.5) + b * (hd / 2.0 - 0.5) + c) + 1.0 / size - 1.0], -1))
    return torch.stack(rows, 1).float()


def warp_affine(images: torch.Tensor, M: torch.Tensor, out_size: Sequence[int], mode: str = "bilinear",
                padding: str = "zeros", image_index: torch.Tensor | None = None,
                faces_per_image: int | None = None) -> torch.Tensor:
    """Warp ``images`` (``B x C x H x W`` float) by ``M`` (src -> dst pixels), like ``cv2.warpAffine``.

    ``out_size`` is ``(h, w)``.  Pixels mapping outside the source read
    ``padding`` (``zeros``, ``border`` or ``reflection``).  With
    ``image_index`` (``N`` ints), ``M`` holds ``N`` matrices and output ``n``
    samples ``images[image_index[n]]``: many faces of few frames without
    copying a frame per face.  With ``faces_per_image`` (``k``) instead, matrix ``n`` samples image ``n // k``
    (fixed-size candidate buffers): one ``grid_sample`` for the batch.
    """
    h, w = int(out_size[0]), int(out_size[1])
    if not images.is_floating_point():
        raise TypeError("warp_affine needs float images")
    theta = sampling_theta(M.to(images.device), tuple(images.shape[-2:]), (h, w))
    if image_index is None and faces_per_image is None:
        if M.shape[0] != images.shape[0]:
            raise ValueError(f"{M.shape[0]} matrices for {images.shape[0]} images; pass image_index")
        grid = F.affine_grid(theta.to(images.dtype), [images.shape[0], images.shape[1], h, w], align_corners=False)
        return F.grid_sample(images, grid, mode=mode, padding_mode=padding, align_corners=False)
    n, c = M.shape[0], images.shape[1]
    if faces_per_image is not None:  # image b's matrices are rows b*k .. b*k+k-1: one call, no read-back
        k = int(faces_per_image)
        if n != k * images.shape[0]:
            raise ValueError(f"{n} matrices are not {k} per image for {images.shape[0]} images")
        grid = F.affine_grid(theta.to(images.dtype), [n, 1, h, w], align_corners=False)
        warped = F.grid_sample(images, grid.reshape(images.shape[0], k * h, w, 2), mode=mode, padding_mode=padding,
                               align_corners=False)
        return warped.reshape(images.shape[0], c, k, h, w).transpose(1, 2).reshape(n, c, h, w)
    out = images.new_zeros(n, c, h, w)
    image_index = image_index.to(images.device)
    for b in torch.unique(image_index).tolist():  # one grid_sample per frame, all its faces at once
        sel = (image_index == b).nonzero().squeeze(1)
        grid = F.affine_grid(theta[sel].to(images.dtype), [sel.numel(), 1, h, w], align_corners=False)
        grid = grid.reshape(1, sel.numel() * h, w, 2)
        warped = F.grid_sample(images[b:b + 1], grid, mode=mode, padding_mode=padding, align_corners=False)
        out[sel] = warped.reshape(images.shape[1], sel.numel(), h, w).transpose(0, 1)
    return out


def align_crop(images: torch.Tensor, landmarks5: torch.Tensor, template: Template, size: int,
               image_index: torch.Tensor | None = None, padding: str = "zeros") -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned ``size`` x ``size`` crops and their frame -> crop matrices."""
    M = estimate_crop_matrix(landmarks5.to(images.device), template, size)
    return warp_affine(images, M, (size, size), padding=padding, image_index=image_index), M


# --- letterbox ----------------------------------------------------------------------------

def letterbox(images: torch.Tensor, size: int = 640, center: bool = False,
              fill: float = 0.0) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """Resize ``B x C x H x W`` so the long side is ``size`` (aspect kept) and pad to ``size`` x ``size``.

    By default the image sits in the top-left corner with padding right and
    bottom (insightface's detector convention); ``center=True`` centres it.
    Returns ``(canvas, scale, (pad_x, pad_y))``: a point maps as
    ``p_letterbox = p * scale + pad`` (see :func:`unletterbox_points`).
    Downscaling is antialiased (bilinear with an area-weighted kernel).
    """
    h, w = images.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = images if (nh, nw) == (h, w) else F.interpolate(
        images, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1.0)
    px, py = ((size - nw) // 2, (size - nh) // 2) if center else (0, 0)
    canvas = images.new_full((images.shape[0], images.shape[1], size, size), fill)
    canvas[..., py:py + nh, px:px + nw] = resized
    return canvas, scale, (px, py)


def unletterbox_points(points: torch.Tensor, scale: float | torch.Tensor, pad: Sequence[float]) -> torch.Tensor:
    """Map ``(..., 2)`` points from the letterboxed canvas back to the original image."""
    return (points - points.new_tensor([float(pad[0]), float(pad[1])])) / scale
