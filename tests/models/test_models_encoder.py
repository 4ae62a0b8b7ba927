"""ArcFace iResNet builder (insightface arcface_torch layout)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

from ffexport import specs  # noqa: E402
from ffexport.errors import CheckpointError  # noqa: E402
from ffexport.models import build_model, load_checkpoint  # noqa: E402
from ffexport.models.encoder import IResNet  # noqa: E402

SPEC = specs.get("encoder", "iresnet18")  # same block, stem and head as r50/r100, fewer blocks


@pytest.fixture(scope="module")
def model():
    return build_model(SPEC)


def _crop(y0: int, x0: int, size: int) -> torch.Tensor:
    rgb = cv2.resize(skdata.astronaut()[y0:y0 + size, x0:x0 + size], (112, 112), interpolation=cv2.INTER_AREA)
    return torch.from_numpy((rgb.astype(np.float32) - 127.5) / 127.5).permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    """Two 112x112 crops of the astronaut's face (slightly different framing), spec-normalised RGB."""
    return torch.cat([_crop(50, 150, 160), _crop(40, 140, 180)])


def _run(model, x):
    with torch.no_grad():
        return model(x)


# --- the model ---------------------------------------------------------------------------------------

def test_forward_on_a_photo_matches_the_spec(model, faces):
    emb = _run(model, faces)
    assert tuple(emb.shape) == SPEC.outputs[0].concrete(batch=2)
    assert torch.isfinite(emb).all()
    assert 0.1 < emb.std() < 100  # a trained-like scale, not collapsed, not blown up
    cos = torch.nn.functional.cosine_similarity(emb[0], emb[1], dim=0)
    assert 0.0 < cos < 0.9999  # related crops, different embeddings
    # eval mode: each item is independent of the rest of the batch
    assert torch.allclose(_run(model, faces[1:]), emb[1:], atol=1e-4)


def test_seeded_build_is_deterministic(model):
    again = build_model(SPEC).state_dict()
    ref = model.state_dict()
    assert ref.keys() == again.keys()
    assert all(torch.equal(ref[k], again[k]) for k in ref)
    assert torch.equal(ref["features.weight"], torch.ones(512))  # frozen at 1, as in arcface_torch


def test_checkpoint_roundtrip(model, faces, tmp_path):
    path = tmp_path / "backbone.pth"
    torch.save(model.state_dict(), path)
    loaded = build_model(SPEC, checkpoint=path, seed=1)
    assert torch.equal(_run(model, faces), _run(loaded, faces))
    # an r18 checkpoint is not an r50 one: a one-line error naming the gap
    r50 = specs.get("encoder", "iresnet50")
    with pytest.raises(CheckpointError, match=r"missing \d+: layer1\.2\."):
        load_checkpoint(IResNet(r50.builder_kwargs["layers"]), path, r50.key)


# (name, shape) as in arcface_torch's backbone.pth (iresnet18 here; r50 below)
REFERENCE_KEYS = {
    "conv1.weight": (64, 3, 3, 3),
    "bn1.running_mean": (64,),
    "prelu.weight": (64,),
    "layer1.0.bn1.weight": (64,),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer1.0.bn2.bias": (64,),
    "layer1.0.prelu.weight": (64,),
    "layer1.0.conv2.weight": (64, 64, 3, 3),
    "layer1.0.bn3.running_var": (64,),
    "layer1.0.downsample.0.weight": (64, 64, 1, 1),
    "layer1.0.downsample.1.num_batches_tracked": (),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer4.1.prelu.weight": (512,),
    "bn2.weight": (512,),
    "fc.weight": (512, 512 * 7 * 7),
    "fc.bias": (512,),
    "features.weight": (512,),
    "features.running_var": (512,),
}


def test_parameter_names_and_shapes_match_arcface_torch(model):
    sd = model.state_dict()
    for name, shape in REFERENCE_KEYS.items():
        assert tuple(sd[name].shape) == shape, name
    assert "layer1.1.downsample.0.weight" not in sd and "dropout.weight" not in sd
    r50 = IResNet(specs.get("encoder", "iresnet50").builder_kwargs["layers"])
    sd50 = r50.state_dict()
    assert tuple(sd50["fc.weight"].shape) == (512, 25088)
    assert tuple(sd50["layer3.13.conv2.weight"].shape) == (256, 256, 3, 3) and "layer3.14.bn1.weight" not in sd50
    assert sum(p.numel() for p in r50.parameters()) == 43_590_848


# --- export ----------------------------------------------------------------------------------------------

def test_exports_to_onnx_and_matches_in_onnxruntime(model, faces):
    ort = pytest.importorskip("onnxruntime")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (faces[:1],), buf, input_names=SPEC.input_names, output_names=SPEC.output_names,
                          dynamic_axes=SPEC.dynamic_axes, opset_version=SPEC.opset, dynamo=False)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"input": faces.numpy()})
    ref = _run(model, faces).numpy()
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.99999
