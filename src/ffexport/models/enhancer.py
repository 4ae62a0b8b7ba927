"""GFPGAN v1 "clean" face restorer: U-Net encoder + StyleGAN2 decoder with spatial feature transforms.

Parameter names and shapes follow GFPGANv1Clean and its StyleGAN2GeneratorCSFT
(TencentARC/GFPGAN ``gfpgan/archs/gfpganv1_clean_arch.py``,
``stylegan2_clean_arch.py``) as GFPGANer builds them for v1.3/v1.4
(out_size 512, num_style_feat 512, channel_multiplier 2, num_mlp 8,
input_is_latent, different_w, narrow 1, sft_half), so ``params_ema`` of
GFPGANv1.4.pth loads with ``strict=True``.

Two deliberate differences from the reference forward, both for export:

* the noise injected by each StyleConv is the registered ``noises.noise{i}``
  buffer (the reference's ``randomize_noise=False``), so the graph is
  deterministic;
* modulated convolutions modulate the activations instead of the weights:
  ``conv(x * s, W) * demod`` with ``demod = rsqrt((s**2) @ sum_k(W**2).T + eps)``.
  That equals the per-sample weight ``W * s * demod`` of the reference but
  needs no grouped convolution over the batch, so the batch axis stays dynamic.

The output is clamped to [-1, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class NormStyleCode(nn.Module):
    """Part of ``style_mlp`` (kept for checkpoint names); not used on the forward path."""

    def forward(self, x):
        return x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv without bias; ``weight`` is (1, out, in, k, k)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, upsample: bool = False, eps: float = 1e-8):
        super().__init__()
        self.demodulate, self.upsample, self.eps = demodulate, upsample, eps
        self.padding = kernel_size // 2
        self.modulation = nn.Linear(num_style_feat, cin)
        nn.init.kaiming_normal_(self.modulation.weight, a=0, mode="fan_in", nonlinearity="linear")
        nn.init.ones_(self.modulation.bias)
        self.weight = nn.Parameter(torch.randn(1, cout, cin, kernel_size, kernel_size) / math.sqrt(cin * kernel_size**2))

    def forward(self, x, style):
        s = self.modulation(style)  # (b, in)
        if self.upsample:
            x = _resize(x, 2.0)
        w = self.weight[0]
        out = F.conv2d(x * s[:, :, None, None], w, padding=self.padding)
        if self.demodulate:
            # sum_k W^2 as a squared L2 norm: exports as ReduceL2, which the exporter folds to a constant
            w2 = torch.linalg.vector_norm(w, ord=2, dim=(2, 3)).square()  # (out, in)
            demod = torch.rsqrt(s.square() @ w2.t() + self.eps)  # (b, out)
            out = out * demod[:, :, None, None]
        return out


class StyleConv(nn.Module):
    """Modulated conv * sqrt(2) + noise * weight + bias, leaky ReLU."""

    def __init__(self, cin: int, cout: int, num_style_feat: int, upsample: bool = False):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(cin, cout, 3, num_style_feat, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x, style, noise):
        out = self.modulated_conv(x, style) * math.sqrt(2.0)
        return _lrelu(out + self.weight * noise + self.bias)


class ToRGB(nn.Module):
    def __init__(self, cin: int, num_style_feat: int, upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(cin, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            out = out + (_resize(skip, 2.0) if self.upsample else skip)
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch_like: torch.Tensor):
        return self.weight.expand(batch_like.shape[0], -1, -1, -1)


class StyleGAN2Decoder(nn.Module):
    """StyleGAN2GeneratorCSFT: SFT (scale, shift) on half the channels after each up-sampling conv."""

    def __init__(self, channels: dict[int, int], size: int, num_style_feat: int, num_mlp: int, sft_half: bool):
        super().__init__()
        self.sft_half = sft_half
        self.log_size = int(math.log2(size))
        self.num_latent = self.log_size * 2 - 2
        self.style_mlp = nn.Sequential(NormStyleCode(), *[
            m for _ in range(num_mlp) for m in (nn.Linear(num_style_feat, num_style_feat), nn.LeakyReLU(0.2))])
        for m in self.style_mlp:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
        self.constant_input = ConstantInput(channels[4])
        self.style_conv1 = StyleConv(channels[4], channels[4], num_style_feat)
        self.to_rgb1 = ToRGB(channels[4], num_style_feat, upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range((self.log_size - 2) * 2 + 1):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, res, res))
        cin = channels[4]
        for i in range(3, self.log_size + 1):
            cout = channels[2**i]
            self.style_convs.append(StyleConv(cin, cout, num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(cout, cout, num_style_feat))
            self.to_rgbs.append(ToRGB(cout, num_style_feat))
            cin = cout

    def forward(self, latent: torch.Tensor, conditions: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``latent`` (b, num_latent, num_style_feat); ``conditions`` one (scale, shift) per resolution 8..size."""
        noise = [getattr(self.noises, f"noise{i}") for i in range(len(self.style_convs) + 1)]
        out = self.style_conv1(self.constant_input(latent), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for j, to_rgb in enumerate(self.to_rgbs):
            i = 2 * j + 1
            out = self.style_convs[2 * j](out, latent[:, i], noise[i])
            if j < len(conditions):
                scale, shift = conditions[j]
                if self.sft_half:
                    same, sft = out.chunk(2, dim=1)
                    out = torch.cat([same, sft * scale + shift], dim=1)
                else:
                    out = out * scale + shift
            out = self.style_convs[2 * j + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip


class ResBlock(nn.Module):
    """conv3x3 -> lrelu -> resize x2 or x0.5 -> conv3x3 -> lrelu, plus a resized 1x1 skip."""

    def __init__(self, cin: int, cout: int, factor: float):
        super().__init__()
        self.factor = factor
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1)
        self.conv2 = nn.Conv2d(cin, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        out = _lrelu(self.conv2(_resize(_lrelu(self.conv1(x)), self.factor)))
        return out + self.skip(_resize(x, self.factor))


def _sft_branch(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_in, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(c_in, c_out, 3, padding=1))


def decoder_channels(channel_multiplier: float, narrow: float) -> dict[int, int]:
    """StyleGAN2 channels per resolution, ``int(base * narrow)``, at least 8 so the U-Net half stays >= 4."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    return {r: max(8, int(c * (channel_multiplier if r >= 64 else 1) * narrow)) for r, c in base.items()}


class GFPGANv1Clean(nn.Module):
    def __init__(self, size: int = 512, num_style_feat: int = 512, channel_multiplier: float = 2,
                 narrow: float = 1, num_mlp: int = 8, different_w: bool = True, sft_half: bool = True):
        super().__init__()
        self.log_size = int(math.log2(size))
        if 2**self.log_size != size or size < 16:
            raise ValueError(f"enhancer size must be a power of two >= 16, got {size}")
        self.num_style_feat, self.different_w = num_style_feat, different_w
        dec = decoder_channels(channel_multiplier, narrow)
        # The reference U-Net uses int(base * narrow / 2): for the published
        # settings that is exactly half the decoder width, which SFT-on-half needs.
        unet = {r: c // 2 for r, c in dec.items()}
        levels = [2**i for i in range(3, self.log_size + 1)]  # 8 .. size

        self.conv_body_first = nn.Conv2d(3, unet[size], 1)
        self.conv_body_down = nn.ModuleList(ResBlock(unet[r], unet[r // 2], 0.5) for r in reversed(levels))
        self.final_conv = nn.Conv2d(unet[4], unet[4], 3, padding=1)
        self.conv_body_up = nn.ModuleList(ResBlock(unet[r // 2], unet[r], 2.0) for r in levels)
        self.toRGB = nn.ModuleList(nn.Conv2d(unet[r], 3, 1) for r in levels)
        n_latent = (self.log_size * 2 - 2) if different_w else 1
        self.final_linear = nn.Linear(unet[4] * 16, n_latent * num_style_feat)
        self.stylegan_decoder = StyleGAN2Decoder(dec, size, num_style_feat, num_mlp, sft_half)
        sft_out = (lambda c: c) if sft_half else (lambda c: 2 * c)
        self.condition_scale = nn.ModuleList(_sft_branch(unet[r], sft_out(unet[r])) for r in levels)
        self.condition_shift = nn.ModuleList(_sft_branch(unet[r], sft_out(unet[r])) for r in levels)

    def forward(self, x):
        feat = _lrelu(self.conv_body_first(x))
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.insert(0, feat)
        feat = _lrelu(self.final_conv(feat))
        style = self.final_linear(feat.flatten(1))
        nl = self.stylegan_decoder.num_latent
        if self.different_w:
            latent = style.unflatten(1, (nl, self.num_style_feat))
        else:
            latent = style[:, None, :].expand(-1, nl, -1)
        conditions = []
        for skip, up, scale, shift in zip(skips, self.conv_body_up, self.condition_scale, self.condition_shift):
            feat = up(feat + skip)
            conditions.append((scale(feat), shift(feat)))
        image = self.stylegan_decoder(latent, conditions)
        return image.clamp(-1.0, 1.0)


def _seed_init(model: GFPGANv1Clean) -> None:
    """Seeded weights with sane activations: SFT scales near 1, visible noise, RGB heads that do not saturate."""
    with torch.no_grad():
        for branch in model.condition_scale:
            branch[2].weight.mul_(0.1)
            branch[2].bias.fill_(1.0)
        for branch in model.condition_shift:
            branch[2].weight.mul_(0.1)
        dec = model.stylegan_decoder
        for conv in [dec.style_conv1, *dec.style_convs]:
            conv.weight.uniform_(0.05, 0.2)
        for rgb in [dec.to_rgb1, *dec.to_rgbs]:
            rgb.modulated_conv.weight.mul_(0.15)


def build(spec, channel_multiplier: float = 2, size: int = 512, narrow: float = 1, num_style_feat: int = 512,
          **options) -> nn.Module:
    """GFPGANv1Clean as GFPGANer builds it; ``options`` may set num_mlp, different_w, sft_half.

    As in GFPGANer (``input_is_latent=True``) the encoder's code feeds the
    decoder directly; ``stylegan_decoder.style_mlp`` is kept for checkpoint
    compatibility but is not on the forward path.
    """
    model = GFPGANv1Clean(size=size, num_style_feat=num_style_feat, channel_multiplier=channel_multiplier,
                          narrow=narrow, **options)
    _seed_init(model)
    return model
