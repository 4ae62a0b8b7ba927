"""2DFAN: stacked-hourglass 68-point landmarker with in-graph heatmap decoding.

Parameter names and shapes follow face-alignment's FAN (the 2DFAN-4
checkpoint and its 1- and 2-stack siblings): ``conv1``, ``bn1``, ``conv2``,
``conv3``, ``conv4`` (ConvBlocks), then per stack ``i``: ``m{i}`` (an
hourglass of depth 4 whose blocks are ``b1_{d}``, ``b2_{d}``, ``b3_{d}`` and
``b2_plus_1``), ``top_m_{i}``, ``conv_last{i}``, ``bn_end{i}``, ``l{i}`` and,
between stacks, ``bl{i}`` / ``al{i}``.  A real checkpoint loads with
``strict=True``.

Outputs: the last stack's heatmaps (B, 68, 64, 64), the decoded points
(B, 68, 2) and the heatmap peaks (B, 68).

Pixel convention of ``points`` (face-alignment's ``get_preds_fromhm``):
a peak at heatmap cell (row i, column j) becomes

    x = 4 * (j + 0.5 + 0.25 * sign(H[i, j+1] - H[i, j-1]))
    y = 4 * (i + 0.5 + 0.25 * sign(H[i+1, j] - H[i-1, j]))

i.e. the centre of the cell in continuous coordinates where heatmap cell j
spans input pixels [4j, 4j + 4), nudged a quarter cell (1 input pixel)
toward the higher neighbour.  The nudge is skipped for peaks on the heatmap
border (j or i equal to 0 or 63), as face-alignment does.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .bn_statistics import measure_batchnorm_statistics, randomize_bn_affine, synthetic_images

NUM_POINTS = 68
FEATURES = 256
HOURGLASS_DEPTH = 4


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=False)


class ConvBlock(nn.Module):
    """Pre-activation block: three 3x3 convs of out/2, out/4, out/4 channels, concatenated, plus a residual.

    The residual is projected (BN, ReLU, 1x1 conv) when the channel count changes.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        half, quarter = cout // 2, cout // 4
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = _conv3x3(half, quarter)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = _conv3x3(quarter, quarter)
        self.downsample = (nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(True), nn.Conv2d(cin, cout, 1, bias=False))
                           if cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = self.conv1(F.relu(self.bn1(x)))
        o2 = self.conv2(F.relu(self.bn2(o1)))
        o3 = self.conv3(F.relu(self.bn3(o2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat([o1, o2, o3], 1) + residual


class HourGlass(nn.Module):
    """Recursive hourglass: at each level d, ``b1_d`` keeps the resolution, ``b2_d`` works at half of it,
    level d-1 (or ``b2_plus_1`` at the bottom) goes deeper, ``b3_d`` follows, and the result is upsampled
    (nearest) and added to the full-resolution branch."""

    def __init__(self, depth: int, features: int) -> None:
        super().__init__()
        self.depth = depth
        for d in range(depth, 0, -1):
            self.add_module(f"b1_{d}", ConvBlock(features, features))
            self.add_module(f"b2_{d}", ConvBlock(features, features))
            self.add_module(f"b3_{d}", ConvBlock(features, features))
        self.add_module("b2_plus_1", ConvBlock(features, features))

    def _level(self, d: int, x: torch.Tensor) -> torch.Tensor:
        up = self._modules[f"b1_{d}"](x)
        low = self._modules[f"b2_{d}"](F.avg_pool2d(x, 2, stride=2))
        low = self._level(d - 1, low) if d > 1 else self._modules["b2_plus_1"](low)
        low = self._modules[f"b3_{d}"](low)
        return up + F.interpolate(low, scale_factor=2.0, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


def decode_heatmaps(hm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, H, W) heatmaps -> points (B, K, 2) in input pixels (4x the heatmap grid), peaks (B, K).

    Exports as ArgMax + GatherElements + Sign: no data-dependent shapes.
    """
    b, k, h, w = hm.shape
    flat = hm.reshape(b, k, h * w)
    idx = flat.argmax(dim=-1, keepdim=True)               # (B, K, 1), first maximum
    peak = flat.gather(-1, idx)
    row = torch.div(idx, w, rounding_mode="floor")
    col = idx - row * w
    # neighbours, clamped into the map; border peaks get no nudge anyway
    left = row * w + (col - 1).clamp(min=0)
    right = row * w + (col + 1).clamp(max=w - 1)
    up = (row - 1).clamp(min=0) * w + col
    down = (row + 1).clamp(max=h - 1) * w + col
    dx = torch.sign(flat.gather(-1, right) - flat.gather(-1, left))
    dy = torch.sign(flat.gather(-1, down) - flat.gather(-1, up))
    inside = ((col > 0) & (col < w - 1) & (row > 0) & (row < h - 1)).to(hm.dtype)
    x = col.to(hm.dtype) + 0.5 + 0.25 * dx * inside
    y = row.to(hm.dtype) + 0.5 + 0.25 * dy * inside
    points = torch.cat([x, y], dim=-1) * 4.0
    return points, peak.squeeze(-1)


class FAN(nn.Module):
    def __init__(self, num_modules: int = 4, num_points: int = NUM_POINTS) -> None:
        super().__init__()
        self.num_modules = num_modules
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, FEATURES)
        for i in range(num_modules):
            self.add_module(f"m{i}", HourGlass(HOURGLASS_DEPTH, FEATURES))
            self.add_module(f"top_m_{i}", ConvBlock(FEATURES, FEATURES))
            self.add_module(f"conv_last{i}", nn.Conv2d(FEATURES, FEATURES, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(FEATURES))
            self.add_module(f"l{i}", nn.Conv2d(FEATURES, num_points, 1))
            if i < num_modules - 1:
                self.add_module(f"bl{i}", nn.Conv2d(FEATURES, FEATURES, 1))
                self.add_module(f"al{i}", nn.Conv2d(num_points, FEATURES, 1))

    def heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        """Heatmaps of the last stack (the intermediate ones only feed the next stack)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv4(self.conv3(F.avg_pool2d(self.conv2(x), 2, stride=2)))
        previous, out = x, x
        for i in range(self.num_modules):
            ll = self._modules[f"top_m_{i}"](self._modules[f"m{i}"](previous))
            ll = F.relu(self._modules[f"bn_end{i}"](self._modules[f"conv_last{i}"](ll)))
            out = self._modules[f"l{i}"](ll)
            if i < self.num_modules - 1:
                previous = previous + self._modules[f"bl{i}"](ll) + self._modules[f"al{i}"](out)
        return out

    def forward(self, x: torch.Tensor):
        hm = self.heatmaps(x)
        points, scores = decode_heatmaps(hm)
        return hm, points, scores


class _HeatmapsOnly(nn.Module):
    """Calibration wrapper: the decode step has no parameters and needs no statistics."""

    def __init__(self, fan: FAN) -> None:
        super().__init__()
        self.fan = fan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fan.heatmaps(x)


def _init_seeded(model: FAN, size: tuple[int, int]) -> None:
    """Seeded weights with trained-like activations (see ``bn_statistics``).

    Statistics come from one synthetic crop at the input size: the hourglass
    bottoms out at 1/64 of it, so smaller crops would mostly measure border
    effects.  The heatmap convs are kept small so seeded heatmaps look like a
    trained FAN's: values around 0 with peaks well below saturation.
    """
    randomize_bn_affine(model)
    with torch.no_grad():
        for i in range(model.num_modules):
            nn.init.normal_(model._modules[f"l{i}"].weight, 0.0, 0.02)
            nn.init.zeros_(model._modules[f"l{i}"].bias)
    measure_batchnorm_statistics(_HeatmapsOnly(model), synthetic_images(1, size, (0.0, 1.0)))


def build(spec, num_modules: int = 4, **kwargs) -> FAN:
    """2DFAN-``num_modules`` for ``spec`` (``specs.landmarker``); seeded weights."""
    if num_modules < 1:
        raise ValueError(f"{spec.key}: num_modules must be >= 1, got {num_modules}")
    model = FAN(num_modules=num_modules, **kwargs)
    _init_seeded(model, tuple(spec.input_size or (256, 256)))
    return model
