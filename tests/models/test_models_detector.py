"""RetinaFace builder (biubug6 mobilenet0.25 layout, insightface outputs) and detector post-processing."""

from __future__ import annotations

import copy
import io
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

from ffexport import specs  # noqa: E402
from ffexport.errors import CheckpointError  # noqa: E402
from ffexport.models import build_model, load_checkpoint  # noqa: E402
from ffexport.vision.retinaface import (  # noqa: E402
    anchor_centers, box_iou, decode, detect_postprocess, nms)

SPEC = specs.get("detector", "retinaface-mnet025")


@pytest.fixture(scope="module")
def model():
    return build_model(SPEC)


@pytest.fixture(scope="module")
def model_seed1():
    return build_model(SPEC, seed=1)


@pytest.fixture(scope="module")
def frame() -> torch.Tensor:
    """The astronaut photo as the spec's input: BGR, 640x640, (x - 127.5) / 128."""
    bgr = cv2.resize(skdata.astronaut()[:, :, ::-1], (640, 640), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy((bgr.astype(np.float32) - 127.5) / 128.0).permute(2, 0, 1)[None].contiguous()


def _outputs(model, x) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return dict(zip(SPEC.output_names, model(x)))


# --- the model ---------------------------------------------------------------------------------------

def test_forward_on_a_photo_matches_the_spec(model, frame):
    out = _outputs(model, frame)
    for t in SPEC.outputs:
        y = out[t.name]
        assert tuple(y.shape) == t.concrete(batch=1), t.name
        assert torch.isfinite(y).all(), t.name
        assert y.std() > 1e-3, f"{t.name} is constant"
    scores = torch.cat([out[f"score_{s}"] for s in (8, 16, 32)], 0)  # (batch x anchors, 1): insightface's 2-D layout
    assert 0.0 < scores.min() and scores.max() < 1.0  # probabilities, not saturated
    assert 0.05 < scores.std() < 0.45


def test_seeded_build_is_deterministic(model, model_seed1):
    again = build_model(SPEC).state_dict()
    ref = model.state_dict()
    assert ref.keys() == again.keys()
    assert all(torch.equal(ref[k], again[k]) for k in ref)
    other = model_seed1.state_dict()
    assert not torch.equal(ref["body.stage1.0.0.weight"], other["body.stage1.0.0.weight"])
    assert not torch.equal(ref["body.stage3.1.4.running_var"], other["body.stage3.1.4.running_var"])


# (name, shape) as in the public mobilenet0.25_Final.pth (biubug6/Pytorch_Retinaface, cfg_mnet)
REFERENCE_KEYS = {
    "body.stage1.0.0.weight": (8, 3, 3, 3),
    "body.stage1.0.1.running_mean": (8,),
    "body.stage1.1.0.weight": (8, 1, 3, 3),
    "body.stage1.1.3.weight": (16, 8, 1, 1),
    "body.stage1.5.4.num_batches_tracked": (),
    "body.stage2.0.3.weight": (128, 64, 1, 1),
    "body.stage2.5.4.running_var": (128,),
    "body.stage3.1.3.weight": (256, 256, 1, 1),
    "fpn.output1.0.weight": (64, 64, 1, 1),
    "fpn.output3.0.weight": (64, 256, 1, 1),
    "fpn.merge1.0.weight": (64, 64, 3, 3),
    "fpn.merge2.1.bias": (64,),
    "ssh1.conv3X3.0.weight": (32, 64, 3, 3),
    "ssh1.conv5X5_1.0.weight": (16, 64, 3, 3),
    "ssh2.conv5X5_2.1.weight": (16,),
    "ssh3.conv7X7_2.0.weight": (16, 16, 3, 3),
    "ssh1.conv7x7_3.0.weight": (16, 16, 3, 3),
    "ClassHead.0.conv1x1.weight": (4, 64, 1, 1),
    "ClassHead.2.conv1x1.bias": (4,),
    "BboxHead.1.conv1x1.weight": (8, 64, 1, 1),
    "LandmarkHead.2.conv1x1.weight": (20, 64, 1, 1),
}


def test_parameter_names_and_shapes_match_the_public_checkpoint(model):
    sd = model.state_dict()
    for name, shape in REFERENCE_KEYS.items():
        assert name in sd, name
        assert tuple(sd[name].shape) == shape, name
    # 162 backbone + 30 FPN + 90 SSH + 18 head entries, nothing else (the in-graph constants are not state)
    assert len(sd) == 300
    assert all(k.split(".")[0] in {"body", "fpn", "ssh1", "ssh2", "ssh3", "ClassHead", "BboxHead", "LandmarkHead"}
               for k in sd)
    assert sum(p.numel() for p in model.parameters()) == 426_608


def test_checkpoint_roundtrip_with_dataparallel_prefix(model, frame, tmp_path):
    path = tmp_path / "mobilenet0.25_Final.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    loaded = build_model(SPEC, checkpoint=path, seed=1)  # another seed: the checkpoint must win
    ref, got = _outputs(model, frame), _outputs(loaded, frame)
    assert all(torch.equal(ref[k], got[k]) for k in ref)

    partial = dict(model.state_dict())
    partial.pop("LandmarkHead.0.conv1x1.weight")
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="LandmarkHead.0.conv1x1.weight"):
        load_checkpoint(copy.deepcopy(model), tmp_path / "partial.pth")


# --- the in-graph conversion: prior-encoded regressions -> insightface distances ------------------------

def _encode(box, kps, prior_c, m):
    """biubug6's training targets for a ground-truth box/keypoints against a prior (centre, side m)."""
    (x1, y1, x2, y2), (pcx, pcy) = box, prior_c
    loc = [((x1 + x2) / 2 - pcx) / (0.1 * m), ((y1 + y2) / 2 - pcy) / (0.1 * m),
           math.log((x2 - x1) / m) / 0.2, math.log((y2 - y1) / m) / 0.2]
    landm = [(v - (pcx if i % 2 == 0 else pcy)) / (0.1 * m) for i, v in enumerate(kps)]
    return loc, landm


def test_prior_encoding_decodes_to_the_same_pixels(model, frame):
    """Head outputs set to the training encoding of a known face at one prior must decode, through the
    graph and ``decode``, to that face; every other location to the same face moved by its prior offset."""
    model = copy.deepcopy(model)
    stride, anchor, m = 8, 1, 32.0                      # stride 8, second anchor: prior side 32 px
    gy, gx = 30, 45                                      # the prior at row 30, column 45
    prior_c = ((gx + 0.5) * stride, (gy + 0.5) * stride)  # biubug6 prior centres sit mid-cell
    box = (352.0, 236.0, 390.0, 281.0)
    kps = (362.0, 252.0, 381.0, 251.5, 371.0, 262.0, 364.0, 271.0, 380.0, 270.5)
    loc, landm = _encode(box, kps, prior_c, m)
    with torch.no_grad():
        for level, s in enumerate((8, 16, 32)):
            for head in (model.ClassHead[level], model.BboxHead[level], model.LandmarkHead[level]):
                head.conv1x1.weight.zero_()
                head.conv1x1.bias.zero_()
            cls = model.ClassHead[level].conv1x1.bias.view(2, 2)   # (anchor, [background, face])
            cls[:, 0] = 6.0                                         # background everywhere ...
            if s == stride:
                cls[anchor] = torch.tensor([-6.0, 6.0])             # ... except this level's second anchor
                model.BboxHead[level].conv1x1.bias.view(2, 4)[anchor] = torch.tensor(loc)
                model.LandmarkHead[level].conv1x1.bias.view(2, 10)[anchor] = torch.tensor(landm)
    (boxes, points, scores), = decode(_outputs(model, frame), score_threshold=0.5)

    side = 640 // stride
    assert boxes.shape == (side * side, 4) and points.shape == (side * side, 5, 2)
    assert torch.allclose(scores, torch.full_like(scores, 1 / (1 + math.exp(-12.0))))
    # kept anchors are in row-major location order, so row gy * side + gx is our prior
    k = gy * side + gx
    assert torch.allclose(boxes[k], torch.tensor(box), atol=1e-3)
    assert torch.allclose(points[k].reshape(-1), torch.tensor(kps), atol=1e-3)
    # every location decodes to the same face shifted by its own prior offset
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    shift = torch.stack([xs - gx, ys - gy], -1).reshape(-1, 2).float() * stride
    assert torch.allclose(boxes, torch.tensor(box) + shift.repeat(1, 2), atol=2e-3)
    assert torch.allclose(points, torch.tensor(kps).view(5, 2) + shift[:, None], atol=2e-3)


# --- post-processing -----------------------------------------------------------------------------------

def test_anchor_centers_are_insightface_layout():
    c = anchor_centers(640, 32)
    assert c.shape == (20 * 20 * 2, 2)
    assert c[:4].tolist() == [[0, 0], [0, 0], [32, 0], [32, 0]]
    assert c[40].tolist() == [0, 32] and c[-1].tolist() == [608, 608]


def test_box_iou_known_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    iou = box_iou(a, b)
    assert torch.allclose(iou[0], torch.tensor([50 / 150, 1.0, 0.0]))
    assert torch.equal(iou[1], torch.zeros(3))  # an empty box overlaps nothing (and is not NaN)


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Plain one-box-at-a-time greedy NMS in numpy: the definition the vectorised version must reproduce."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if keep:
            k = np.array(keep)
            w = np.clip(np.minimum(boxes[k, 2], boxes[i, 2]) - np.maximum(boxes[k, 0], boxes[i, 0]), 0, None)
            h = np.clip(np.minimum(boxes[k, 3], boxes[i, 3]) - np.maximum(boxes[k, 1], boxes[i, 1]), 0, None)
            iou = w * h / (area[k] + area[i] - w * h)
            if (iou > thr).any():
                continue
        keep.append(int(i))
    return keep


def test_nms_known_boxes():
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],     # A: best
        [1.0, 1.0, 11.0, 11.0],     # overlaps A (IoU 0.68): suppressed
        [5.0, 0.0, 15.0, 10.0],     # B: IoU 1/3 with A: suppressed at 0.3
        [10.0, 0.0, 20.0, 10.0],    # C: overlaps only B (suppressed), so it survives
        [40.0, 40.0, 50.0, 50.0],   # far away
    ])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    assert nms(boxes, scores, 0.3).tolist() == [0, 3, 4]
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3, 4]  # at 0.5, IoU 1/3 suppresses nothing
    assert nms(boxes[:0], scores[:0], 0.3).numel() == 0


def test_nms_matches_greedy_definition_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 200
    wh = 10 + torch.rand(300, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(300, generator=g)
    for thr in (0.3, 0.5, 0.7):
        assert nms(boxes, scores, thr).tolist() == _greedy_nms(boxes.numpy(), scores.numpy(), thr)


def test_detect_postprocess_limits_and_sorts(model, frame):
    out = _outputs(model, frame)
    dets = detect_postprocess(out, score_threshold=0.5, iou_threshold=0.4, max_faces=3)
    assert len(dets) == 1
    boxes, points, scores = dets[0]
    assert 0 < scores.numel() <= 3
    assert boxes.shape == (scores.numel(), 4) and points.shape == (scores.numel(), 5, 2)
    assert torch.all(scores[:-1] >= scores[1:])
    assert float(box_iou(boxes, boxes).triu(1).max()) <= 0.4
    batch = {k: torch.cat([v, v]) for k, v in out.items()}
    assert len(detect_postprocess(batch, 0.5, 0.4, 3)) == 2


# --- export ----------------------------------------------------------------------------------------------

def test_exports_to_onnx_and_matches_in_onnxruntime(model, frame):
    ort = pytest.importorskip("onnxruntime")
    x = torch.cat([frame, frame.flip(-1)])  # batch 2 through the dynamic axis
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x[:1],), buf, input_names=SPEC.input_names, output_names=SPEC.output_names,
                          dynamic_axes=SPEC.dynamic_axes, opset_version=SPEC.opset, dynamo=False)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = dict(zip(SPEC.output_names, sess.run(None, {"input": x.numpy()})))
    ref = _outputs(model, x)
    for name in SPEC.output_names:
        r = ref[name].numpy()
        assert got[name].shape == r.shape
        assert np.abs(got[name] - r).max() <= 1e-4 * max(1.0, np.abs(r).max()), name
