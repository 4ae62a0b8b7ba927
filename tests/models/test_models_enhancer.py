"""Enhancer builder: GFPGANv1Clean layout (v1.4), modulated-conv equivalence, real-image forward, ONNX parity."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ffexport import specs
from ffexport.errors import CheckpointError
from ffexport.models import build_model
from ffexport.models import enhancer as enh


def _face(batch: int = 1) -> torch.Tensor:
    """The astronaut's face at 512, RGB in [-1, 1]."""
    from skimage import data
    from skimage.transform import resize

    img = resize(data.astronaut()[10:290, 110:390], (512, 512), anti_aliasing=True).astype(np.float32)
    t = torch.from_numpy(img).permute(2, 0, 1)[None] * 2.0 - 1.0
    return torch.cat([t, t.flip(-1), t.flip(-2)][:batch], dim=0)


@pytest.fixture(scope="module")
def lite():
    return build_model(specs.get("enhancer", "gfpgan-lite"))


def _meta_full():
    spec = specs.get("enhancer", "gfpgan-1.4")
    with torch.device("meta"):
        return enh.build(spec, **spec.builder_kwargs)


def test_gfpgan_v14_layout():
    """Names and shapes of GFPGANv1.4.pth ``params_ema``, as GFPGANer builds GFPGANv1Clean
    (TencentARC/GFPGAN gfpgan/utils.py + archs/gfpganv1_clean_arch.py, stylegan2_clean_arch.py)."""
    model = _meta_full()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {
        "conv_body_first.weight": (32, 3, 1, 1),
        "conv_body_down.0.conv1.weight": (32, 32, 3, 3),
        "conv_body_down.0.conv2.weight": (64, 32, 3, 3),
        "conv_body_down.0.skip.weight": (64, 32, 1, 1),
        "conv_body_down.6.skip.weight": (256, 256, 1, 1),
        "final_conv.weight": (256, 256, 3, 3),
        "final_linear.weight": (16 * 512, 256 * 4 * 4),
        "conv_body_up.0.conv2.weight": (256, 256, 3, 3),
        "conv_body_up.6.conv2.weight": (32, 64, 3, 3),
        "toRGB.0.weight": (3, 256, 1, 1),
        "toRGB.6.weight": (3, 32, 1, 1),
        "condition_scale.0.0.weight": (256, 256, 3, 3),
        "condition_shift.6.2.weight": (32, 32, 3, 3),
        "stylegan_decoder.style_mlp.1.weight": (512, 512),
        "stylegan_decoder.style_mlp.15.bias": (512,),
        "stylegan_decoder.constant_input.weight": (1, 512, 4, 4),
        "stylegan_decoder.style_conv1.modulated_conv.weight": (1, 512, 512, 3, 3),
        "stylegan_decoder.style_conv1.modulated_conv.modulation.weight": (512, 512),
        "stylegan_decoder.style_conv1.weight": (1,),
        "stylegan_decoder.style_conv1.bias": (1, 512, 1, 1),
        "stylegan_decoder.to_rgb1.modulated_conv.weight": (1, 3, 512, 1, 1),
        "stylegan_decoder.to_rgb1.bias": (1, 3, 1, 1),
        "stylegan_decoder.style_convs.0.modulated_conv.weight": (1, 512, 512, 3, 3),
        "stylegan_decoder.style_convs.13.modulated_conv.weight": (1, 64, 64, 3, 3),
        "stylegan_decoder.style_convs.12.modulated_conv.modulation.weight": (128, 512),
        "stylegan_decoder.to_rgbs.6.modulated_conv.weight": (1, 3, 64, 1, 1),
        "stylegan_decoder.noises.noise0": (1, 1, 4, 4),
        "stylegan_decoder.noises.noise14": (1, 1, 512, 512),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    # 146 U-Net/SFT tensors + 139 decoder tensors (8 MLP layers, 15 StyleConvs, 8 ToRGBs, 15 noise maps)
    assert len(shapes) == 285
    assert not any(k.startswith("stylegan_decoder.style_mlp.0") for k in shapes)  # NormStyleCode has no weights
    assert sum(p.numel() for p in model.parameters()) == 86_444_252


def test_lite_channels_are_integers_at_least_four(lite):
    convs = [m for m in lite.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.in_channels >= 3 and m.out_channels >= 3 for m in convs)
    assert min(m.out_channels for m in convs if m.out_channels != 3) >= 4
    dec = enh.decoder_channels(0.5, 0.25)
    assert all(isinstance(c, int) and c >= 8 for c in dec.values())
    assert enh.decoder_channels(2, 1) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64,
                                          1024: 32}
    assert sum(p.numel() for p in lite.parameters()) < 15_000_000


def test_modulated_conv_equals_per_sample_weight_form():
    """Modulating activations == StyleGAN2's per-sample modulated + demodulated weights (grouped conv)."""
    torch.manual_seed(0)
    for demodulate, upsample, k in ((True, False, 3), (True, True, 3), (False, False, 1)):
        mc = enh.ModulatedConv2d(6, 5, k, num_style_feat=16, demodulate=demodulate, upsample=upsample)
        x, style = torch.randn(3, 6, 8, 8), torch.randn(3, 16)
        b = x.shape[0]
        w = mc.weight * mc.modulation(style).view(b, 1, 6, 1, 1)
        if demodulate:
            w = w * torch.rsqrt(w.pow(2).sum([2, 3, 4]) + 1e-8).view(b, 5, 1, 1, 1)
        xin = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False) if upsample else x
        ref = F.conv2d(xin.reshape(1, b * 6, *xin.shape[2:]), w.reshape(b * 5, 6, k, k), padding=k // 2, groups=b)
        ref = ref.view(b, 5, *ref.shape[2:])
        assert torch.allclose(mc(x, style), ref, atol=1e-5, rtol=1e-4)


def test_seeded_build_is_deterministic(lite):
    again = build_model(specs.get("enhancer", "gfpgan-lite"))
    other = build_model(specs.get("enhancer", "gfpgan-lite"), seed=1)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in lite.state_dict().items())
    assert not torch.equal(lite.final_linear.weight, other.final_linear.weight)
    assert not torch.equal(lite.stylegan_decoder.noises.noise3, other.stylegan_decoder.noises.noise3)


def test_forward_on_a_real_face(lite):
    x = _face()
    with torch.no_grad():
        out = lite(x)
        again = lite(x)
    assert tuple(out.shape) == (1, 3, 512, 512)
    assert torch.equal(out, again)                       # stored noise: deterministic
    assert torch.isfinite(out).all()
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert (out.abs() > 0.99).float().mean() < 0.01      # not saturated by the clamp
    assert out.std() > 0.05 and out.amax(dim=(2, 3)).min() - out.amin(dim=(2, 3)).max() > 0.2


def test_checkpoint_round_trip(lite, tmp_path):
    path = tmp_path / "gfpgan_lite.pth"
    torch.save({"params_ema": lite.state_dict()}, path)  # GFPGAN's own container key
    loaded = build_model(specs.get("enhancer", "gfpgan-lite"), checkpoint=path, seed=3)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in lite.state_dict().items())
    with pytest.raises(CheckpointError, match="mis-shaped"):
        spec = specs.get("enhancer", "gfpgan-lite")
        build_model(replace(spec, builder_kwargs={**spec.builder_kwargs, "narrow": 0.5}), checkpoint=path)


def test_onnx_export_matches_onnxruntime(lite, tmp_path):
    import onnxruntime as ort

    spec = specs.get("enhancer", "gfpgan-lite")
    path = tmp_path / "gfpgan_lite.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(lite, (_face(),), str(path), input_names=spec.input_names, output_names=spec.output_names,
                          dynamic_axes=spec.dynamic_axes, opset_version=spec.opset, dynamo=False)
    x = _face(2)
    with torch.no_grad():
        ref = lite(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert got.shape == ref.shape == (2, 3, 512, 512)
    assert np.abs(got - ref).max() < 1e-4


def test_sizes_must_be_powers_of_two():
    with pytest.raises(ValueError, match="power of two"):
        enh.build(specs.get("enhancer", "gfpgan-lite"), channel_multiplier=0.5, size=500, narrow=0.25)
