"""Face-swap generators: inswapper-style 128 and SimSwap 256 (plus a lite decoder).

Both take a target face crop in [0, 1] and a 512-d source identity latent and
return the swapped crop in [0, 1].  The identity enters through AdaIN: the
features are instance-normalised, then scaled and shifted per channel by a
linear map of the latent.

``simswap`` uses the parameter names and shapes of SimSwap's
``Generator_Adain_Upsample`` (``models/fs_networks.py``: first_layer, down1-3,
BottleNeck.{i}.conv1/style1/conv2/style2, up3-1, last_layer; n_blocks=9,
deep=False), so SimSwap's released checkpoints of that class (the 224
"people" generator; the network is fully convolutional and runs at 256) load
with ``strict=True``.
Its output is ``(tanh(x) + 1) / 2`` as in that file.  (``fs_networks_fix.py``,
used by SimSwap's later projected-discriminator training, has the same names
and shapes but returns the last conv raw: such checkpoints load, but their
output convention is not this spec's.)

``inswapper`` has no public PyTorch checkpoint; it follows the layer layout
of the released ONNX graph as public re-implementations describe it (7x7
reflect stem at width 128, 32x32 bottleneck at 1024 channels, 6 AdaIN residual
blocks, bilinear decoder, tanh; ~138M parameters like inswapper_128.onnx),
with plain names of our own.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LATENT = 512


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def _up2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def instance_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-sample, per-channel normalisation written as reductions (exports as ReduceMean)."""
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return x * torch.rsqrt(x.square().mean(dim=(2, 3), keepdim=True) + eps)


class InstanceNorm(nn.Module):
    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        return instance_norm(x, self.eps)


def _init_style(linear: nn.Linear, std: float = 0.2) -> None:
    # The latent is L2-normalised (entries ~ 1/sqrt(512)); std 0.2 gives the
    # per-channel scales a +-20 % spread, so the source visibly matters.
    nn.init.normal_(linear.weight, 0.0, std)
    nn.init.zeros_(linear.bias)


class ApplyStyle(nn.Module):
    """SimSwap's AdaIN modulation: ``x * (1 + scale) + shift``; ``linear`` gives [scale | shift]."""

    def __init__(self, latent_size: int, channels: int):
        super().__init__()
        self.linear = nn.Linear(latent_size, channels * 2)
        _init_style(self.linear)

    def forward(self, x, latent):
        scale, shift = self.linear(latent)[:, :, None, None].chunk(2, dim=1)
        return x * (scale + 1.0) + shift


class AdaINResBlock(nn.Module):
    """SimSwap's ResnetBlock_Adain: (pad, conv3x3, IN) -> style -> ReLU -> (pad, conv3x3, IN) -> style, + x."""

    def __init__(self, dim: int, latent_size: int = LATENT):
        super().__init__()
        self.conv1 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), InstanceNorm())
        self.style1 = ApplyStyle(latent_size, dim)
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), InstanceNorm())
        self.style2 = ApplyStyle(latent_size, dim)

    def forward(self, x, latent):
        y = F.relu(self.style1(self.conv1(x), latent))
        y = self.style2(self.conv2(y), latent)
        return x + y


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, up: bool = False) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
    layers = [conv, nn.BatchNorm2d(cout), nn.ReLU()]
    if up:
        layers.insert(0, nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
    return nn.Sequential(*layers)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average -> bottleneck MLP (1x1 convs) -> sigmoid gate per channel."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        g = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(g)


class SpatialAttention(nn.Module):
    """CBAM's spatial gate: channel mean and max -> 7x7 conv -> sigmoid gate per pixel."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x):
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class LiteUp(nn.Module):
    """Bilinear x2 -> depthwise 3x3 -> pointwise 1x1 -> BN -> ReLU -> channel attention -> spatial attention."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin)
        self.pointwise = nn.Conv2d(cin, cout, 1)
        self.bn = nn.BatchNorm2d(cout)
        self.channel_att = ChannelAttention(cout)
        self.spatial_att = SpatialAttention()

    def forward(self, x):
        x = F.relu(self.bn(self.pointwise(self.depthwise(_up2x(x)))))
        return self.spatial_att(self.channel_att(x))


class SimSwapGenerator(nn.Module):
    """SimSwap's Generator_Adain_Upsample (deep=False); ``lite`` swaps in a depthwise-separable decoder."""

    def __init__(self, ngf: int = 64, n_blocks: int = 9, lite: bool = False, latent_size: int = LATENT):
        super().__init__()
        c1, c2, c3, c4 = ngf, ngf * 2, ngf * 4, ngf * 8
        self.first_layer = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, c1, 7), nn.BatchNorm2d(c1), nn.ReLU())
        self.down1 = _conv_bn_relu(c1, c2, stride=2)
        self.down2 = _conv_bn_relu(c2, c3, stride=2)
        self.down3 = _conv_bn_relu(c3, c4, stride=2)
        self.BottleNeck = nn.ModuleList(AdaINResBlock(c4, latent_size) for _ in range(n_blocks))
        up = LiteUp if lite else (lambda i, o: _conv_bn_relu(i, o, up=True))
        self.up3 = up(c4, c3)
        self.up2 = up(c3, c2)
        self.up1 = up(c2, c1)
        self.last_layer = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(c1, 3, 7), nn.Tanh())

    def forward(self, target, source):
        x = self.down3(self.down2(self.down1(self.first_layer(target))))
        for block in self.BottleNeck:
            x = block(x, source)
        x = self.last_layer(self.up1(self.up2(self.up3(x))))
        return (x + 1.0) / 2.0


class AdaIN(nn.Module):
    """inswapper-style AdaIN: ``gamma * IN(x) + beta``; ``style`` gives [gamma | beta]."""

    def __init__(self, channels: int, latent_size: int = LATENT, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.style = nn.Linear(latent_size, channels * 2)
        _init_style(self.style)
        with torch.no_grad():
            self.style.bias[:channels].fill_(1.0)  # gamma starts around 1

    def forward(self, x, latent):
        gamma, beta = self.style(latent)[:, :, None, None].chunk(2, dim=1)
        return gamma * instance_norm(x, self.eps) + beta


class StyleBlock(nn.Module):
    """conv3x3 -> AdaIN -> ReLU -> conv3x3 -> AdaIN, with a residual connection."""

    def __init__(self, channels: int, latent_size: int = LATENT):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm1 = AdaIN(channels, latent_size)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = AdaIN(channels, latent_size)

    def forward(self, x, latent):
        y = F.relu(self.norm1(self.conv1(x), latent))
        return x + self.norm2(self.conv2(y), latent)


class InswapperGenerator(nn.Module):
    """128 -> 32x32 bottleneck (8 * width channels) -> 6 StyleBlocks -> 128, output in [0, 1]."""

    def __init__(self, width: int = 128, n_blocks: int = 6, latent_size: int = LATENT):
        super().__init__()
        c1, c2, c3, c4 = width, width * 2, width * 4, width * 8
        self.stem = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, c1, 7))
        self.enc = nn.Conv2d(c1, c2, 3, padding=1)
        self.down1 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(c3, c4, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList(StyleBlock(c4, latent_size) for _ in range(n_blocks))
        self.up1 = nn.Conv2d(c4, c3, 3, padding=1)
        self.up2 = nn.Conv2d(c3, c2, 3, padding=1)
        self.dec = nn.Conv2d(c2, c1, 3, padding=1)
        self.to_rgb = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(c1, 3, 7))
        # the source transform of the public inswapper_128: the graph takes normalize(normalize(emb) @ emap);
        # emap is not used by forward(), the export stores it as the graph's last initializer (see EMAP_SEED)
        self.register_buffer("emap", emap_matrix(latent_size), persistent=False)

    def forward(self, target, source):
        x = _lrelu(self.stem(target))
        x = _lrelu(self.down2(_lrelu(self.down1(_lrelu(self.enc(x))))))
        for block in self.blocks:
            x = block(x, source)
        x = _lrelu(self.up1(_up2x(x)))
        x = _lrelu(self.up2(_up2x(x)))
        x = self.to_rgb(_lrelu(self.dec(x)))
        return (torch.tanh(x) + 1.0) / 2.0


EMAP_SEED = 128


def emap_matrix(n: int = LATENT, seed: int = EMAP_SEED) -> torch.Tensor:
    """A fixed orthogonal ``n x n`` source transform (its own generator: the weights' seed does not move it)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float().contiguous()


def _seed_init(model: nn.Module, out_conv: nn.Conv2d, out_gain: float) -> None:
    """Variance-preserving seeded weights, non-trivial BatchNorm statistics, a small output layer."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
                nn.init.normal_(m.bias, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.8, 1.2)
                m.bias.normal_(0.0, 0.05)
                m.running_mean.normal_(0.0, 0.05)
                m.running_var.uniform_(0.8, 1.2)
        for m in model.modules():
            if isinstance(m, (ChannelAttention, SpatialAttention)):  # gates start mostly open
                gate = m.fc2 if isinstance(m, ChannelAttention) else m.conv
                gate.weight.mul_(0.05)
                gate.bias.fill_(1.5)
        out_conv.weight.mul_(out_gain)
        out_conv.bias.zero_()


def build(spec, arch: str, size: int, lite: bool = False, width: int | None = None,
          n_blocks: int | None = None) -> nn.Module:
    """Build ``spec``'s generator.

    ``width`` is the stem width (SimSwap's ``ngf``: 64; inswapper: 128) and
    ``n_blocks`` the number of AdaIN blocks (9 and 6); smaller values give
    cheap models of the same structure (tests, smoke runs).
    """
    if size % 8:
        raise ValueError(f"generator size must be a multiple of 8, got {size}")
    if arch == "simswap":
        model = SimSwapGenerator(ngf=width or 64, n_blocks=n_blocks or 9, lite=lite)
        out_conv = model.last_layer[1]
    elif arch == "inswapper":
        if lite:
            raise ValueError("inswapper has no lite variant")
        model = InswapperGenerator(width=width or 128, n_blocks=n_blocks or 6)
        out_conv = model.to_rgb[1]
    else:
        raise ValueError(f"unknown generator arch {arch!r}; valid: inswapper, simswap")
    _seed_init(model, out_conv, out_gain=0.1)
    return model
