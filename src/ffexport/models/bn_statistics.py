"""Seeded BatchNorm statistics, so a model built without a checkpoint behaves like a trained one.

A freshly initialised network in eval mode normalises with running_mean=0 and
running_var=1, which in deep residual stacks lets activations grow without
bound (or collapse).  Instead, every BatchNorm gets a seeded affine
(weight around 1, small bias) and running statistics measured on one forward
pass over seeded synthetic images: BN is then exercised with non-trivial
values and every layer sees activations of order one, as in a trained model.

The measurement runs in float64 and the results are cast to float32, so
the last-bit differences between CPU kernels (thread counts, SIMD width) do
not reach the stored weights: the same seed gives the same state dict on
every machine (checked on two different x86 CPUs and torch versions).
"""

from __future__ import annotations

import torch
from torch import nn

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def synthetic_images(batch: int, size: tuple[int, int], value_range: tuple[float, float],
                     discs: int = 400) -> torch.Tensor:
    """Seeded image-like tensors spanning ``value_range``, float64.

    A "dead leaves" pattern: opaque discs of random colour whose radii follow
    a power law (many small, few large), painted over each other, plus mild
    pixel noise.  Such images share the statistics networks care about with
    photographs (full contrast, sharp edges, energy at every scale), which
    smooth noise does not.  Drawn from torch's global generator
    (``build_model`` seeds it).
    """
    h, w = size
    lo, hi = value_range
    base = min(h, w)
    images = []
    for _ in range(batch):
        # radius r with density ~ 1/r^3 between base/100 and base/4 (inverse-CDF sampling)
        r_min, r_max = base / 100.0, base / 4.0
        u = torch.rand(discs, dtype=torch.float64)
        radius = (r_min ** -2 - u * (r_min ** -2 - r_max ** -2)) ** -0.5
        centre = torch.rand(discs, 2, dtype=torch.float64) * torch.tensor([h, w], dtype=torch.float64)
        colour = torch.rand(discs, 3, dtype=torch.float64)
        img = torch.rand(3, 1, 1, dtype=torch.float64).expand(3, h, w).clone()
        for r, (cy, cx), c in zip(radius.tolist(), centre.tolist(), colour):  # painter's order: last on top
            y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, h)
            x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, w)
            if y0 >= y1 or x0 >= x1:
                continue
            yy = torch.arange(y0, y1, dtype=torch.float64).view(-1, 1) - cy
            xx = torch.arange(x0, x1, dtype=torch.float64).view(1, -1) - cx
            inside = yy ** 2 + xx ** 2 <= r * r
            region = img[:, y0:y1, x0:x1]
            region[:, inside] = c.view(3, 1)
        img = img + 0.03 * torch.randn(3, h, w, dtype=torch.float64)
        images.append(img.clamp(0.0, 1.0))
    return lo + (hi - lo) * torch.stack(images)


def randomize_bn_affine(model: nn.Module, weight_spread: float = 0.2, bias_std: float = 0.1) -> None:
    """Seeded BN affine parameters: weight in 1 +/- weight_spread, bias ~ N(0, bias_std).

    BN layers whose weight is frozen (``requires_grad=False``, e.g. iResNet's
    ``features``) keep it: the public models hold those at 1.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BN) and m.affine:
                if m.weight.requires_grad:
                    m.weight.uniform_(1.0 - weight_spread, 1.0 + weight_spread)
                m.bias.normal_(0.0, bias_std)


@torch.no_grad()
def measure_batchnorm_statistics(model: nn.Module, *inputs: torch.Tensor, jitter: float = 0.02) -> None:
    """Set every BatchNorm's running statistics from one forward pass, plus a small seeded jitter.

    BatchNorm2d statistics pool over batch and space, so one image is plenty.
    BatchNorm1d sees one value per sample: its per-channel variance over a
    couple of samples is noise, so it is pooled across channels (the mean
    stays per channel).

    The jitter (mean moved by ``jitter`` standard deviations, variance scaled
    by ``exp(jitter * N(0, 1))``) keeps the stored statistics machine
    independent: some measured values are, mathematically, exact sums of
    float32 numbers (the mean after adding two BN outputs is the sum of their
    biases), which lie on float32 rounding ties, so the CPU's float64
    summation order would pick their last bit.  Random float64 offsets move
    them off the ties.  Runs in float64; leaves the model in float32 eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, _BN)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly the batch statistics
    model.double().train()
    try:
        model(*(x.double() for x in inputs))
        for m in bns:
            if isinstance(m, nn.BatchNorm1d):
                m.running_var.fill_(float(m.running_var.mean()))
            m.running_mean += jitter * m.running_var.sqrt() * torch.randn_like(m.running_mean)
            m.running_var *= torch.exp(jitter * torch.randn_like(m.running_var))
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.float().eval()
