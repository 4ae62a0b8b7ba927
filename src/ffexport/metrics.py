"""Task metrics for parity records.  Inputs are torch tensors (any device); results are floats."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _f64(x: "torch.Tensor") -> "torch.Tensor":
    return x.detach().to("cpu", dtype=__import__("torch").float64)


def max_abs(a, b) -> float:
    return float((_f64(a) - _f64(b)).abs().max()) if a.numel() else 0.0


def rel_err(a, b) -> float:
    """||a - b|| / ||b|| (b is the reference); 0 when both are zero."""
    a, b = _f64(a), _f64(b)
    den = float(b.norm())
    num = float((a - b).norm())
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def cosine(a, b) -> "torch.Tensor":
    """Per-row cosine similarity of [N, D] tensors."""
    torch = __import__("torch")
    a, b = _f64(a).flatten(1), _f64(b).flatten(1)
    return torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)


def to_unit_range(x, value_range: tuple[float, float] | None):
    x = _f64(x)
    if value_range is None:
        return x
    lo, hi = value_range
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


def psnr(a, b) -> "torch.Tensor":
    """Per-sample PSNR in dB of [N, C, H, W] images in [0, 1]; +inf for identical images."""
    torch = __import__("torch")
    mse = ((_f64(a) - _f64(b)) ** 2).flatten(1).mean(1)
    return torch.where(mse > 0, 10.0 * torch.log10(1.0 / mse.clamp_min(1e-300)), torch.full_like(mse, math.inf))


def _gaussian(size: int = 11, sigma: float = 1.5):
    torch = __import__("torch")
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a, b) -> "torch.Tensor":
    """Per-sample mean SSIM (Gaussian 11x11, sigma 1.5, data range 1) of [N, C, H, W] images in [0, 1]."""
    torch = __import__("torch")
    F = torch.nn.functional
    a, b = _f64(a), _f64(b)
    n, c, h, w = a.shape
    size = min(11, h, w)
    g = _gaussian(size)
    kx = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(x):
        return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a ** 2
    sbb = blur(b * b) - mu_b ** 2
    sab = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * sab + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2)
    return (num / den).flatten(1).mean(1)
