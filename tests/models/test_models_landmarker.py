"""2DFAN builder (face-alignment FAN layout) and its in-graph heatmap decoding."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

from ffexport import specs  # noqa: E402
from ffexport.models import build_model  # noqa: E402
from ffexport.models.landmarker import FAN, decode_heatmaps  # noqa: E402

SPEC = specs.get("landmarker", "2dfan1")  # the 1-stack variant keeps CI fast; stacks share every layer type


@pytest.fixture(scope="module")
def model():
    return build_model(SPEC)


@pytest.fixture(scope="module")
def crop() -> torch.Tensor:
    """The astronaut's head as the spec's input: 256x256 RGB in [0, 1]."""
    rgb = cv2.resize(skdata.astronaut()[10:290, 90:370], (256, 256), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def _run(model, x):
    with torch.no_grad():
        return model(x)


def _face_alignment_points(hm: np.ndarray) -> np.ndarray:
    """face-alignment's get_preds_fromhm rule, one heatmap at a time in plain numpy, scaled to 256 pixels."""
    b, k, h, w = hm.shape
    out = np.zeros((b, k, 2), np.float64)
    for i in range(b):
        for j in range(k):
            m = hm[i, j]
            y, x = np.unravel_index(np.argmax(m), m.shape)
            px, py = float(x), float(y)
            if 0 < x < w - 1 and 0 < y < h - 1:
                px += 0.25 * np.sign(m[y, x + 1] - m[y, x - 1])
                py += 0.25 * np.sign(m[y + 1, x] - m[y - 1, x])
            out[i, j] = ((px + 0.5) * 4.0, (py + 0.5) * 4.0)
    return out


# --- the model ---------------------------------------------------------------------------------------

def test_forward_on_a_photo_matches_the_spec(model, crop):
    heatmaps, points, scores = _run(model, crop)
    for t, y in zip(SPEC.outputs, (heatmaps, points, scores)):
        assert tuple(y.shape) == t.concrete(batch=1), t.name
        assert torch.isfinite(y).all(), t.name
    assert heatmaps.std() > 1e-2 and heatmaps.abs().max() < 1e3  # varied, not blown up
    assert points.min() >= 0.0 and points.max() <= 256.0
    assert len({tuple(p) for p in points[0].tolist()}) > 10  # the points are not one spot
    assert torch.equal(scores, heatmaps.flatten(2).amax(-1))
    # points are the decode of the heatmaps the model returns
    assert np.allclose(points.numpy(), _face_alignment_points(heatmaps.numpy()), atol=1e-4)


def test_seeded_build_is_deterministic(model):
    again = build_model(SPEC).state_dict()
    ref = model.state_dict()
    assert ref.keys() == again.keys()
    assert all(torch.equal(ref[k], again[k]) for k in ref)


def test_checkpoint_roundtrip(model, crop, tmp_path):
    path = tmp_path / "2DFAN-1.pth"
    torch.save({"state_dict": model.state_dict()}, path)  # the layout face-alignment's .pth.tar used
    loaded = build_model(SPEC, checkpoint=path, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(_run(model, crop), _run(loaded, crop)))


# (name, shape) as in face-alignment's FAN (2DFAN-4 and siblings)
REFERENCE_KEYS = {
    "conv1.weight": (64, 3, 7, 7),
    "conv1.bias": (64,),
    "bn1.running_var": (64,),
    "conv2.bn1.weight": (64,),
    "conv2.conv1.weight": (64, 64, 3, 3),
    "conv2.conv2.weight": (32, 64, 3, 3),
    "conv2.conv3.weight": (32, 32, 3, 3),
    "conv2.downsample.0.weight": (64,),
    "conv2.downsample.2.weight": (128, 64, 1, 1),
    "conv4.downsample.2.weight": (256, 128, 1, 1),
    "m0.b1_4.conv1.weight": (128, 256, 3, 3),
    "m0.b2_1.bn3.running_mean": (64,),
    "m0.b2_plus_1.conv3.weight": (64, 64, 3, 3),
    "m0.b3_4.bn1.bias": (256,),
    "top_m_0.conv2.weight": (64, 128, 3, 3),
    "conv_last0.weight": (256, 256, 1, 1),
    "conv_last0.bias": (256,),
    "bn_end0.num_batches_tracked": (),
    "l0.weight": (68, 256, 1, 1),
    "l0.bias": (68,),
}


def test_parameter_names_and_shapes_match_face_alignment(model):
    sd = model.state_dict()
    for name, shape in REFERENCE_KEYS.items():
        assert tuple(sd[name].shape) == shape, name
    assert not any(k.startswith(("bl", "al", "conv3.downsample", "m0.b4_")) for k in sd)
    assert not any(".downsample." in k for k in sd if k.startswith("m0."))  # 256 -> 256 blocks are plain
    # the stacked variants: inter-stack 1x1 convs between stacks only
    fan4 = FAN(num_modules=4).state_dict()
    assert tuple(fan4["bl2.weight"].shape) == (256, 256, 1, 1)
    assert tuple(fan4["al2.weight"].shape) == (256, 68, 1, 1)
    assert "bl3.weight" not in fan4 and "m3.b2_plus_1.conv1.weight" in fan4
    assert sum(v.numel() for k, v in fan4.items() if not k.endswith(("running_mean", "running_var", "tracked"))) \
        == 23_820_176


# --- decoding ------------------------------------------------------------------------------------------

def test_decode_nudges_a_quarter_cell_toward_the_higher_neighbour():
    hm = torch.zeros(1, 3, 64, 64)
    hm[0, 0, 41, 20] = 1.0           # peak at row 41, column 20
    hm[0, 0, 41, 21] = 0.5           # right neighbour higher than left  -> x + 0.25 cell
    hm[0, 0, 41, 19] = 0.2
    hm[0, 0, 40, 20] = 0.6           # upper neighbour higher than lower -> y - 0.25 cell
    hm[0, 0, 42, 20] = 0.1
    hm[0, 1, 0, 10] = 2.0            # on the border: no nudge even with an unequal neighbour
    hm[0, 1, 0, 11] = 1.0
    hm[0, 2, 30, 30] = 3.0           # equal neighbours: no nudge
    points, scores = decode_heatmaps(hm)
    assert points[0].tolist() == [[4 * (20 + 0.5 + 0.25), 4 * (41 + 0.5 - 0.25)],
                                  [4 * (10 + 0.5), 4 * (0 + 0.5)],
                                  [4 * 30.5, 4 * 30.5]]
    assert scores[0].tolist() == [1.0, 2.0, 3.0]


def test_decode_matches_a_manual_argmax_on_synthetic_heatmaps():
    g = torch.Generator().manual_seed(0)
    # Gaussian blobs at random sub-cell positions plus noise, some near the border
    centres = torch.rand(2, 68, 2, generator=g) * 66 - 1
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    d2 = (xx - centres[..., 0, None, None]) ** 2 + (yy - centres[..., 1, None, None]) ** 2
    hm = torch.exp(-d2 / 4.0) + 0.05 * torch.rand(2, 68, 64, 64, generator=g)
    points, scores = decode_heatmaps(hm)
    assert np.allclose(points.numpy(), _face_alignment_points(hm.numpy()), atol=1e-5)
    assert torch.equal(scores, hm.flatten(2).amax(-1))


# --- export ----------------------------------------------------------------------------------------------

def test_exports_to_onnx_and_matches_in_onnxruntime(model, crop):
    ort = pytest.importorskip("onnxruntime")
    x = torch.cat([crop, crop.flip(-1)])
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (crop,), buf, input_names=SPEC.input_names, output_names=SPEC.output_names,
                          dynamic_axes=SPEC.dynamic_axes, opset_version=SPEC.opset, dynamo=False)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    heatmaps, points, scores = sess.run(None, {"input": x.numpy()})
    ref = [t.numpy() for t in _run(model, x)]
    scale = np.abs(ref[0]).max()
    assert np.abs(heatmaps - ref[0]).max() <= 1e-4 * scale
    assert np.abs(scores - ref[2]).max() <= 1e-4 * scale
    # same peaks -> identical points; allow a rare near-tie to flip to another cell
    assert np.mean(np.abs(points - ref[1]).max(-1) < 1e-4) >= 0.97
    assert np.allclose(points, _face_alignment_points(heatmaps), atol=1e-4)
