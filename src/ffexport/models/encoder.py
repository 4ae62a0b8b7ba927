"""ArcFace iResNet identity encoder (insightface arcface_torch layout).

Parameter names and shapes follow arcface_torch's ``IResNet`` (the
``backbone.pth`` of the glint360k / ms1mv3 / webface releases): stem
``conv1``/``bn1``/``prelu``; ``layer1``..``layer4`` of ``IBasicBlock``
(``bn1``, ``conv1``, ``bn2``, ``prelu``, ``conv2`` (strided), ``bn3``,
``downsample.0`` 1x1 conv / ``downsample.1`` BN); ``bn2``; ``fc``
(512*7*7 -> 512); ``features`` (BatchNorm1d).  A real checkpoint loads with
``strict=True``.  The fp16 autocast of the training code is not part of the
graph (off): export precision is decided by ffexport's passes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .bn_statistics import measure_batchnorm_statistics, randomize_bn_affine, synthetic_images

EMBEDDING = 512
WIDTHS = (64, 128, 256, 512)
BN_EPS = 1e-5
FC_SPATIAL = 7 * 7  # 112 / 2^4


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride) -> BN, plus the (projected) input."""

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.conv1 = _conv3x3(cin, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    def __init__(self, layers: Sequence[int], num_features: int = EMBEDDING, dropout: float = 0.0) -> None:
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"iResNet needs 4 positive stage depths, got {tuple(layers)}")
        self.conv1 = nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0], eps=BN_EPS)
        self.prelu = nn.PReLU(WIDTHS[0])
        cin = WIDTHS[0]
        for i, (planes, blocks) in enumerate(zip(WIDTHS, layers), start=1):
            self.add_module(f"layer{i}", self._stage(cin, planes, blocks))
            cin = planes
        self.bn2 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(cin * FC_SPATIAL, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=BN_EPS)
        nn.init.constant_(self.features.weight, 1.0)  # frozen at 1 in the public training code
        self.features.weight.requires_grad = False

    @staticmethod
    def _stage(cin: int, planes: int, blocks: int) -> nn.Sequential:
        # every stage halves the resolution in its first block, so that block always projects its input
        down = nn.Sequential(nn.Conv2d(cin, planes, 1, 2, bias=False), nn.BatchNorm2d(planes, eps=BN_EPS))
        rest = [IBasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(IBasicBlock(cin, planes, 2, down), *rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def _init_seeded(model: IResNet, size: tuple[int, int]) -> None:
    """Seeded weights with trained-like activations (see ``bn_statistics``).

    PReLU slopes get seeded values around the trained range (0.1-0.3) so the
    nonlinearity is exercised, and each residual branch's last BN is scaled
    down (as zero-init-residual training leaves it) so deep variants do not
    accumulate variance block after block.
    """
    randomize_bn_affine(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(0.1, 0.3)
            if isinstance(m, IBasicBlock):
                m.bn3.weight.mul_(0.3)
        nn.init.normal_(model.fc.weight, 0.0, (1.0 / model.fc.in_features) ** 0.5)
    # BatchNorm1d needs more than one sample per channel in training mode: batch of 2
    measure_batchnorm_statistics(model, synthetic_images(2, size, (-1.0, 1.0)))


def build(spec, layers: Sequence[int] = (3, 4, 14, 3), **kwargs) -> IResNet:
    """iResNet with stage depths ``layers`` for ``spec`` (``specs.encoder``); seeded weights."""
    size = tuple(spec.input_size or (112, 112))
    if size != (112, 112):
        raise ValueError(f"{spec.key}: iResNet's fc expects 112x112 inputs (7x7 after 4 stages), spec says {size}")
    model = IResNet(tuple(layers), **kwargs)
    _init_seeded(model, size)
    return model
