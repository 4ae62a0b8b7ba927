"""Generator builders: seeded weights, SimSwap checkpoint layout, real-image forward, ONNX parity."""

from __future__ import annotations

from dataclasses import replace
import warnings

import numpy as np
import pytest
import torch

from ffexport import specs
from ffexport.errors import CheckpointError
from ffexport.models import build_model
from ffexport.models import generator as gen


def _spec(variant: str, **kw):
    spec = specs.get("generator", variant)
    return replace(spec, builder_kwargs={**spec.builder_kwargs, **kw}) if kw else spec


def _face(size: int, batch: int = 1) -> torch.Tensor:
    """The astronaut's face, resized to ``size``, RGB in [0, 1], (batch, 3, size, size)."""
    from skimage import data
    from skimage.transform import resize

    img = resize(data.astronaut()[10:290, 110:390], (size, size), anti_aliasing=True).astype(np.float32)
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    return torch.cat([t, t.flip(-1), t.flip(-2), t.flip(-2, -1)][:batch], dim=0)


def _latent(batch: int, seed: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(batch, 512, generator=g), dim=1)


def simswap_reference_shapes(ngf: int = 64, n_blocks: int = 9) -> dict[str, tuple[int, ...]]:
    """State-dict layout of SimSwap's Generator_Adain_Upsample(3, 3, 512, n_blocks=9, deep=False),
    written out from neuralchen/SimSwap models/fs_networks.py (Sequential indices included)."""
    out: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k):
        out[f"{name}.weight"] = (cout, cin, k, k)
        out[f"{name}.bias"] = (cout,)

    def bn(name, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            out[f"{name}.{p}"] = (c,)
        out[f"{name}.num_batches_tracked"] = ()

    c = [ngf, ngf * 2, ngf * 4, ngf * 8]
    conv("first_layer.1", 3, c[0], 7), bn("first_layer.2", c[0])          # ReflectionPad, Conv, BN, ReLU
    for i in range(3):
        conv(f"down{i + 1}.0", c[i], c[i + 1], 3), bn(f"down{i + 1}.1", c[i + 1])  # Conv s2, BN, ReLU
    for b in range(n_blocks):                                               # ResnetBlock_Adain
        for j in (1, 2):
            conv(f"BottleNeck.{b}.conv{j}.1", c[3], c[3], 3)                # ReflectionPad, Conv, InstanceNorm
            out[f"BottleNeck.{b}.style{j}.linear.weight"] = (2 * c[3], 512)  # ApplyStyle
            out[f"BottleNeck.{b}.style{j}.linear.bias"] = (2 * c[3],)
    for name, i in (("up3", 3), ("up2", 2), ("up1", 1)):
        conv(f"{name}.1", c[i], c[i - 1], 3), bn(f"{name}.2", c[i - 1])     # Upsample, Conv, BN, ReLU
    conv("last_layer.1", c[0], 3, 7)                                        # ReflectionPad, Conv, Tanh
    return out


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_simswap_state_dict_is_the_reference_layout():
    with torch.device("meta"):
        model = gen.build(specs.get("generator", "simswap-256"), arch="simswap", size=256)
    assert _shapes(model) == simswap_reference_shapes()
    assert _shapes(model)["BottleNeck.0.style1.linear.weight"] == (1024, 512)
    assert sum(p.numel() for p in model.parameters()) == 55_051_779


def test_simswap_lite_keeps_encoder_and_bottleneck_names():
    with torch.device("meta"):
        lite = gen.build(specs.get("generator", "simswap-256-lite"), arch="simswap", size=256, lite=True)
    ref = simswap_reference_shapes()
    shared = {k: v for k, v in ref.items() if not k.startswith(("up1", "up2", "up3"))}
    assert shared.items() <= _shapes(lite).items()
    assert any(".depthwise." in k for k in _shapes(lite)) and any("channel_att" in k for k in _shapes(lite))
    assert sum(p.numel() for p in lite.parameters()) < 54_000_000


def test_inswapper_layout_and_size():
    with torch.device("meta"):
        model = gen.build(specs.get("generator"), arch="inswapper", size=128)
    shapes = _shapes(model)
    assert shapes["stem.1.weight"] == (128, 3, 7, 7)
    assert shapes["blocks.5.conv2.weight"] == (1024, 1024, 3, 3)
    assert shapes["blocks.0.norm1.style.weight"] == (2048, 512)
    assert shapes["to_rgb.1.weight"] == (3, 128, 7, 7)
    assert len([k for k in shapes if k.startswith("blocks.") and k.endswith("conv1.weight")]) == 6
    # the released inswapper_128.onnx holds ~138M parameters; so does this layout
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 145e6


def test_reference_simswap_checkpoint_loads_strict(tmp_path):
    g = torch.Generator().manual_seed(3)
    sd = {k: (torch.zeros(s, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g) * 0.05)
          for k, s in simswap_reference_shapes(ngf=16, n_blocks=2).items()}
    for k in sd:
        if k.endswith("running_var"):
            sd[k] = sd[k].abs() + 1.0
    path = tmp_path / "G_reference_layout.pth"
    torch.save(sd, path)
    model = build_model(_spec("simswap-256", width=16, n_blocks=2), checkpoint=path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    with pytest.raises(CheckpointError, match="does not match"):
        build_model(_spec("simswap-256", width=16, n_blocks=3), checkpoint=path)


def test_seeded_build_is_deterministic():
    spec = _spec("inswapper-128", width=8, n_blocks=2)
    a, b, c = build_model(spec), build_model(spec), build_model(spec, seed=1)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert not torch.equal(a.state_dict()["stem.1.weight"], c.state_dict()["stem.1.weight"])
    x, s = _face(128), _latent(1)
    with torch.no_grad():
        assert torch.equal(a(x, s), a(x, s))


@pytest.mark.parametrize("variant,kw", [
    ("simswap-256", {}),
    ("simswap-256-lite", {"width": 32}),  # same structure at 1/4 of the channels (CPU time)
    ("inswapper-128", {"width": 32}),     # same structure, 1/16 of the compute of width 128
])
def test_forward_on_a_real_face(variant, kw):
    spec = _spec(variant, **kw)
    model = build_model(spec)
    size = spec.input_size[0]
    target = _face(size).expand(2, -1, -1, -1)  # one face, two identities
    with torch.no_grad():
        out = model(target, _latent(2))
    assert tuple(out.shape) == spec.outputs[0].concrete(batch=2)
    assert torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert 0.2 < out.mean() < 0.8 and out.std() > 0.03                 # mid-range, real variation
    assert (out > 0.98).float().mean() < 0.01 and (out < 0.02).float().mean() < 0.01  # not saturated
    assert (out[0] - out[1]).abs().mean() > 1e-3                          # the source latent matters


def test_checkpoint_round_trip(tmp_path):
    spec = _spec("simswap-256-lite", width=16, n_blocks=2)
    model = build_model(spec, seed=5)
    path = tmp_path / "lite.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = build_model(spec, checkpoint=path, seed=0)
    x, s = _face(64), _latent(1)  # fully convolutional: a small input is enough here
    with torch.no_grad():
        assert torch.equal(model(x, s), loaded(x, s))


def _export_and_compare(spec, model, tmp_path, batch_for_check=2):
    import onnxruntime as ort

    size = spec.input_size[0]
    path = tmp_path / f"{spec.variant}.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (_face(size), _latent(1)), str(path), input_names=spec.input_names,
                          output_names=spec.output_names, dynamic_axes=spec.dynamic_axes,
                          opset_version=spec.opset, dynamo=False)
    target, source = _face(size, batch_for_check), _latent(batch_for_check, seed=11)
    with torch.no_grad():
        ref = model(target, source).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"target": target.numpy(), "source": source.numpy()})[0]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4


def test_onnx_simswap_lite_matches_onnxruntime(tmp_path):
    spec = _spec("simswap-256-lite", width=16)
    _export_and_compare(spec, build_model(spec), tmp_path)


def test_onnx_inswapper_matches_onnxruntime(tmp_path):
    spec = _spec("inswapper-128", width=16)
    _export_and_compare(spec, build_model(spec), tmp_path)


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="valid: inswapper, simswap"):
        gen.build(specs.get("generator"), arch="faceshifter", size=256)
