"""MTCNN: trained nets (facenet-pytorch weights), their specs, the cascade on real photos, and the pipeline's
MTCNN detector on stages."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from ffexport import specs
from ffexport.errors import MissingDependencyError
from ffexport.models import build_model
from ffexport.vision.align import to_tensor_image
from ffexport.pipeline.mtcnn import MTCNNDetector, TorchNet
from ffexport.vision.mtcnn import batched_nms, crop_boxes, square
from helpers.ort import cuda_ort

pytestmark = pytest.mark.skipif(importlib.util.find_spec("facenet_pytorch") is None,
                                reason="facenet-pytorch (MTCNN's trained weights) is not installed")

MODULES = ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")

# facenet-pytorch 2.6.0's own detect_face() on skimage.data.astronaut() with the same weights
# (min face 20, factor 0.709, thresholds 0.6/0.7/0.7): box and the 5 points.  Our cascade samples
# crops differently (zero-padded bilinear with area-like supersampling instead of clipped
# slices + area resize), so agreement is within a few pixels, not exact.
FACENET_ASTRONAUT_BOX = (181.1, 62.2, 267.7, 172.1)
FACENET_ASTRONAUT_POINTS = ((205.0, 101.7), (246.8, 103.7), (224.7, 129.0), (201.7, 139.2), (245.3, 141.9))


@pytest.fixture(scope="module")
def detector() -> MTCNNDetector:
    return MTCNNDetector.from_torch("cpu")


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    from skimage import data

    return to_tensor_image(data.astronaut())


def test_specs_registered_with_raw_gates_and_trained_builder():
    for module in MODULES:
        spec = specs.get(module)
        assert spec.task == "raw" and spec.gates["fp32"][0].metric == "rel_err"
        assert spec.builder == "ffexport.models.mtcnn:build" and spec.preprocess.describe() == "RGB, (x - 127.5) / 128"
        assert "TRAINED" in spec.notes
    assert specs.get("mtcnn_onet").output_names == ["prob", "reg", "landmarks"]
    assert specs.get("mtcnn_pnet").input("input").shape == ("batch", 3, "height", "width")


def test_nets_load_the_wheel_weights_strictly_with_facenet_names():
    from ffexport.models.mtcnn import facenet_weights_path

    for module in MODULES:
        spec = specs.get(module)
        trained = build_model(spec)
        ref = torch.load(facenet_weights_path(spec.builder_kwargs["net"]), weights_only=True)
        own = trained.state_dict()
        assert list(own) == list(ref)
        assert all(torch.equal(own[k], ref[k]) for k in ref)


@pytest.mark.parametrize("module", MODULES)
def test_outputs_match_the_spec_shapes(module):
    spec = specs.get(module)
    model = build_model(spec)
    x = torch.rand(spec.input("input").concrete(2)) * 2 - 1
    with torch.inference_mode():
        out = model(x)
    assert [tuple(o.shape) for o in out] == [t.concrete(2) for t in spec.outputs]
    prob = out[0]
    assert torch.allclose(prob.sum(1), torch.ones_like(prob.sum(1)), atol=1e-5)


def test_pnet_exports_with_dynamic_spatial_axes(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    spec = specs.get("mtcnn_pnet")
    model = build_model(spec)
    path = tmp_path / "pnet.onnx"
    torch.onnx.export(model, (torch.rand(1, 3, 240, 320),), str(path), input_names=spec.input_names,
                      output_names=spec.output_names, dynamic_axes=spec.dynamic_axes, opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 240, 320), (3, 3, 97, 131)]:
        x = torch.rand(shape) * 2 - 1
        with torch.inference_mode():
            ref = model(x)
        got = sess.run(None, {"input": x.numpy()})
        for r, g in zip(ref, got):
            assert r.shape == g.shape
            assert np.abs(r.numpy() - g).max() < 1e-4


def test_missing_facenet_pytorch_is_one_line_with_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "facenet_pytorch" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps facenet-pytorch==2\.6\.0") as err:
        build_model(specs.get("mtcnn_rnet"))
    assert "\n" not in str(err.value)
    from ffexport.models.mtcnn import build

    seeded = build(specs.get("mtcnn_rnet"), net="rnet", weights="seeded")  # needs no wheel
    assert sum(p.numel() for p in seeded.parameters()) > 0


def test_astronaut_one_face_matching_facenet_pytorch(detector, astronaut):
    (boxes, points, scores), = detector.detect(astronaut)
    assert boxes.shape == (1, 4) and points.shape == (1, 5, 2) and scores.shape == (1,)
    assert scores[0] > 0.99
    box, pts = boxes[0], points[0]
    assert (box - torch.tensor(FACENET_ASTRONAUT_BOX)).abs().max() < 4.0
    assert (pts - torch.tensor(FACENET_ASTRONAUT_POINTS)).norm(dim=-1).max() < 3.0
    le, re, nose, lm, rm = pts
    assert le[0] < re[0] and lm[0] < rm[0]                     # left (image) before right
    assert max(le[1], re[1]) < nose[1] < min(lm[1], rm[1])     # eyes above nose above mouth
    assert ((pts >= box[:2]) & (pts <= box[2:])).all()         # points inside the face box


def test_batch_of_frames_and_mirror_symmetry(detector, astronaut):
    flipped = astronaut.flip(-1)
    blank = torch.full_like(astronaut, 128.0)
    res = detector.detect(torch.cat([astronaut, flipped, blank]))
    assert [r[0].shape[0] for r in res] == [1, 1, 0]
    assert res[2][1].shape == (0, 5, 2) and res[2][2].shape == (0,)
    w = astronaut.shape[-1]
    b0, b1 = res[0][0][0], res[1][0][0]
    mirrored = torch.stack([w - b1[2], b1[1], w - b1[0], b1[3]])
    assert (b0 - mirrored).abs().max() < 6.0


def test_bounded_batch_runner_gives_the_same_faces(detector, astronaut):
    small = MTCNNDetector(detector.pnet, detector.rnet, detector.onet, max_batch=3)
    a, b = detector.detect(astronaut)[0], small.detect(astronaut)[0]
    assert torch.allclose(a[0], b[0], atol=1e-3) and torch.allclose(a[1], b[1], atol=1e-3)


def test_padded_batches_give_the_same_faces_and_only_bucket_sizes(detector, astronaut):
    """R-/O-Net batches padded to powers of two (for runners that re-plan per shape): same faces."""
    seen = {"rnet": set(), "onet": set()}

    def spy(net, name):
        def call(feeds):
            seen[name].add(feeds["input"].shape[0])
            return net(feeds)
        return call

    padded = MTCNNDetector(detector.pnet, spy(detector.rnet, "rnet"), spy(detector.onet, "onet"), pad_batches=True)
    frames = torch.cat([astronaut, astronaut.flip(-1)])
    for (a_box, a_pts, a_s), (b_box, b_pts, b_s) in zip(detector.detect(frames), padded.detect(frames)):
        assert a_box.shape == b_box.shape == (1, 4)
        assert torch.allclose(a_box, b_box, atol=1e-4) and torch.allclose(a_pts, b_pts, atol=1e-4)
        assert torch.allclose(a_s, b_s, atol=1e-6)
    sizes = seen["rnet"] | seen["onet"]
    assert sizes and all(n >= 16 and n & (n - 1) == 0 for n in sizes), sizes
    capped = MTCNNDetector(detector.pnet, detector.rnet, detector.onet, pad_batches=True, max_batch=12)
    c = capped.detect(astronaut)[0]
    assert torch.allclose(c[0], detector.detect(astronaut)[0][0], atol=1e-4)


def test_bucket_sizes():
    from ffexport.vision.mtcnn import bucket

    assert [bucket(n) for n in (1, 16, 17, 100, 4096)] == [16, 16, 32, 128, 4096]
    assert bucket(5, cap=8) == 8 and bucket(8, cap=8) == 8 and bucket(3, cap=32) == 16


def test_crop_boxes_pixel_convention():
    img = torch.arange(2 * 3 * 60 * 80, dtype=torch.float32).reshape(2, 3, 60, 80)
    boxes = torch.tensor([[10.0, 5.0, 34.0, 29.0], [0.0, 0.0, 24.0, 24.0]])
    crops = crop_boxes(img, boxes, 24, torch.tensor([0, 1]))
    assert torch.allclose(crops[0], img[0, :, 5:29, 10:34], atol=1e-2)   # a box of the output's size is a slice
    assert torch.allclose(crops[1], img[1, :, 0:24, 0:24], atol=1e-2)
    big = crop_boxes(img, torch.tensor([[-10.0, -10.0, 38.0, 38.0]]), 24)  # half-outside: zeros, pooled 2x2
    assert big[0, :, :5, :5].abs().max() == 0 and big[0, :, 10:, 10:].min() > 0
    assert torch.allclose(square(torch.tensor([[0.0, 0.0, 10.0, 20.0]])), torch.tensor([[-5.0, 0.0, 15.0, 20.0]]))


def test_batched_nms_keeps_images_apart_and_supports_min_overlap():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [2, 2, 6, 6]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    keep = batched_nms(boxes, scores, torch.tensor([0, 0, 1, 1]), 0.5)
    assert keep.tolist() == [0, 2, 3]  # box 1 overlaps box 0 in image 0; image 1's boxes stay
    keep_min = batched_nms(boxes, scores, torch.tensor([0, 0, 1, 1]), 0.7, mode="min")
    assert keep_min.tolist() == [0, 2]  # box 3 lies inside box 2: intersection / smaller area = 1


def test_torchnet_adapter_names_outputs():
    spec = specs.get("mtcnn_onet")
    net = TorchNet(build_model(spec))  # names from the module itself
    out = net({"input": torch.zeros(2, 3, 48, 48)})
    assert list(out) == ["prob", "reg", "landmarks"] and out["landmarks"].shape == (2, 10)
    assert TorchNet(build_model(spec), spec.output_names).output_names == spec.output_names
    with pytest.raises(ValueError, match="output_names"):
        TorchNet(torch.nn.Identity())


def test_scales_pyramid():
    d = MTCNNDetector(None, None, None, min_face=20, factor=0.709)
    s = d.scales(480, 640)
    assert s[0] == pytest.approx(0.6) and all(b / a == pytest.approx(0.709) for a, b in zip(s, s[1:]))
    assert 480 * s[-1] >= 12 > 480 * s[-1] * 0.709
    with pytest.raises(ValueError):
        MTCNNDetector(None, None, None, factor=1.2)


def test_pipeline_detector_reports_pixel_centres_and_detects_large_frames_on_a_scaled_copy(detector, astronaut):
    """The pipeline's MTCNN (the Detector protocol) on stages: the cascade's faces with pixel centres at integers,
    and a frame over ``max_side`` detected on a scaled copy, mapped back to the frame."""
    import torch.nn.functional as F

    from ffexport.pipeline.detectors import MTCNN_MODULES, make_detector
    from ffexport.pipeline.stages import make_stage

    stages = {m: make_stage(specs.get(m), "torch") for m in MTCNN_MODULES}
    try:
        det = make_detector("mtcnn", stages, max_side=512)
        (boxes, points, scores), = det.detect(astronaut)  # 512 x 512: detected as it is
        (c_boxes, c_points, c_scores), = detector.detect(astronaut)
        assert torch.allclose(boxes, c_boxes - 0.5, atol=1e-4) and torch.allclose(points, c_points - 0.5, atol=1e-4)
        assert torch.allclose(scores, c_scores)
        big = F.interpolate(astronaut, scale_factor=2, mode="bilinear", align_corners=False)  # detected at 512
        (b_boxes, b_points, _), = det.detect(big)
        assert b_boxes.shape == (1, 4)
        assert (b_points[0] - (2 * points[0] + 0.5)).norm(dim=-1).max() < 3.0  # frame pixel x -> 2 x + 0.5
    finally:
        for s in stages.values():
            s.close()


def _clip_frames(tmp_path, n: int = 8) -> torch.Tensor:
    """The frames of the pipeline tests' clip (pans and zooms over the astronaut), as decoded from the file (as
    drawn where PyAV is missing, e.g. on the GPU host)."""
    from helpers.media import _view, astronaut, make_video, read_video

    if importlib.util.find_spec("av") is None:
        frames = [_view(astronaut(), i / n, (240, 320)) for i in range(n)]
    else:
        frames, _ = read_video(make_video(tmp_path / "clip.mp4", frames=n))
    return torch.cat([to_tensor_image(f) for f in frames])


def _same_faces(a, b, atol=1e-3, score_atol=1e-5):
    assert len(a) == len(b)
    for (ab, ap, as_), (bb, bp, bs) in zip(a, b):
        assert ab.shape == bb.shape and ap.shape == bp.shape
        assert torch.allclose(ab, bb, atol=atol) and torch.allclose(ap, bp, atol=atol)
        assert torch.allclose(as_, bs, atol=score_atol)


def test_fixed_shape_cascade_finds_the_same_faces_as_the_variable_one(detector, astronaut, tmp_path):
    """The GPU form of the cascade (fixed candidate buffers, masks, one read-back) against the variable-size
    cascade run on each frame alone, on the test clip, the astronaut, its mirror and a blank frame."""
    from ffexport.pipeline.mtcnn import Capacity

    clip = _clip_frames(tmp_path)
    fixed = MTCNNDetector(detector.pnet, detector.rnet, detector.onet, capacity=Capacity())
    frames = torch.cat([clip, astronaut[:, :, :240, :320], torch.full_like(clip[:1], 128.0)])
    got = fixed.detect(frames)
    assert fixed.fallbacks == 0
    alone = [detector.detect(frames[i:i + 1])[0] for i in range(frames.shape[0])]
    _same_faces(got, alone)
    assert [r[0].shape[0] for r in got[:-1]] == [1] * (frames.shape[0] - 1) and got[-1][0].shape == (0, 4)
    # whole photographs too (several pyramid levels more)
    _same_faces(fixed.detect(torch.cat([astronaut, astronaut.flip(-1)])),
                [detector.detect(astronaut)[0], detector.detect(astronaut.flip(-1))[0]])


def test_fixed_shape_cascade_gives_the_same_faces_whatever_levels_share_an_nms_call(detector, astronaut,
                                                                                   monkeypatch):
    """The pyramid levels' NMS run together, a few levels a call (``NMS_ROWS``): level by level, all at once and
    a mixed split must keep the same candidates, so the same faces, to the bit (padding is never valid)."""
    from ffexport.pipeline import mtcnn
    from ffexport.pipeline.mtcnn import Capacity

    frames = torch.cat([astronaut, astronaut.flip(-1), torch.full_like(astronaut, 128.0)])
    assert len(detector.scales(*frames.shape[-2:])) > 4  # several levels, some smaller than the buffer
    results = []
    for rows in (1, 6, 64):  # 3 images: one level a call, two, all
        monkeypatch.setattr(mtcnn, "NMS_ROWS", rows)
        fixed = MTCNNDetector(detector.pnet, detector.rnet, detector.onet, capacity=Capacity())
        results.append(fixed.detect(frames))
        assert fixed.fallbacks == 0
    for other in results[1:]:
        _same_faces(other, results[0], atol=0.0)
    assert [r[0].shape[0] for r in results[0]] == [1, 1, 0]


def _two_windows_pnet(feeds):
    """A P-Net whose every level has two live windows, cells (0, 0) and (0, 2): 12-px windows 4 px apart."""
    n, _, h, w = feeds["input"].shape
    gh, gw = (h - 12) // 2 + 1, (w - 12) // 2 + 1
    prob = torch.zeros(n, 2, gh, gw)
    prob[:, 1, 0, 0], prob[:, 1, 0, 2] = 0.9, 0.8
    return {"prob": prob, "reg": torch.zeros(n, 4, gh, gw)}


@pytest.mark.parametrize("width", [60, 61, 67, 73, 97, 101])
def test_level_nms_keeps_windows_that_overlap_by_exactly_its_threshold(width):
    """Two windows 4 px apart overlap by exactly 0.5, the level NMS's threshold, so neither suppresses the other
    (overlap above the threshold suppresses), at every pyramid scale and in both cascades: the NMS sees the
    level's whole-number pixels, where no division's rounding (eager torch's or inductor's) decides."""
    from ffexport.pipeline.mtcnn import Capacity

    images = torch.zeros(1, 3, 24, width)  # min face 20: one pyramid level, scale 0.6 (15 x ceil(0.6 * width))
    variable = MTCNNDetector(_two_windows_pnet, None, None)
    assert len(variable.scales(24, width)) == 1
    boxes, scores, _index = variable._propose(images)
    assert scores.tolist() == pytest.approx([0.9, 0.8])
    sx = math.ceil(0.6 * width) / width  # the level's width over the image's
    centres = (boxes[:, 0] + boxes[:, 2]) / 2
    assert centres.tolist() == pytest.approx([6 / sx, 10 / sx])  # cells 0 and 2, in image pixels
    fixed = MTCNNDetector(_two_windows_pnet, None, None, capacity=Capacity())
    got, got_scores, valid, bad = fixed._propose_fixed(images, fixed.capacity)
    assert not bad.any() and valid.sum().item() == 2
    assert torch.equal(got[valid], boxes) and torch.equal(got_scores[valid], scores)


@pytest.mark.parametrize("capacity", [dict(level=4), dict(pool=8), dict(refine=2), dict(output=1), dict(rounds=0)])
def test_fixed_shape_cascade_hands_an_overflowing_batch_to_the_variable_one(detector, astronaut, capacity):
    from ffexport.pipeline.mtcnn import Capacity

    small = MTCNNDetector(detector.pnet, detector.rnet, detector.onet, capacity=Capacity(**capacity))
    got = small.detect(astronaut)
    assert small.fallbacks == 1
    _same_faces(got, detector.detect(astronaut))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fixed_shape_cascade_never_waits_for_the_host_before_its_read_back(astronaut):
    from ffexport.pipeline.mtcnn import Capacity

    gpu = MTCNNDetector.from_torch("cuda", capacity=Capacity())
    images = torch.cat([astronaut, astronaut.flip(-1)]).cuda()
    gpu.detect(images)  # warm-up (cuDNN picks its algorithms)
    torch.cuda.set_sync_debug_mode("error")
    try:
        boxes, scores, valid, _ = gpu._propose_fixed(images, gpu.capacity)
        boxes, valid, _ = gpu._refine_fixed(images, boxes, valid, gpu.capacity)
        gpu._output_fixed(images, boxes, valid, gpu.capacity)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert [r[0].shape[0] for r in gpu.detect(images)] == [1, 1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cascade_as_a_cuda_graph_finds_the_same_faces(astronaut, tmp_path):
    """The fixed-shape cascade captured as a CUDA graph (one per input shape) and replayed: the same faces as the
    variable-size cascade, and faces returned from one replay survive the next."""
    from ffexport.pipeline.mtcnn import Capacity

    graphed = MTCNNDetector.from_torch("cuda", capacity=Capacity(), cuda_graphs=True)
    plain = MTCNNDetector.from_torch("cuda")
    clip = _clip_frames(tmp_path).cuda()
    first = graphed.detect(clip[:4])
    second = graphed.detect(clip[4:])
    assert len(graphed._graphs) == 1 and graphed.fallbacks == 0
    # four frames a call against one: cuDNN picks other algorithms for another batch size, and the box regression
    # carries the rounding into the coordinates (0.011 px measured on the decoded clip, H200, commit eb01e9c);
    # a twentieth of a pixel is still the same face, a wrong one is pixels off
    _same_faces(first + second, [plain.detect(clip[i:i + 1])[0] for i in range(clip.shape[0])], atol=5e-2)


def _ort_mtcnn_stages(paths):
    """Each net's ONNX file of ``paths`` (module -> path) as an onnxruntime-CUDA stage with a runner of its own."""
    from ffexport.backends.ort import OrtRunner
    from ffexport.pipeline.stages import Stage

    stages = {}
    for module in MODULES:
        spec = specs.get(module)
        runner = OrtRunner(paths[module], spec=spec, device="cuda")
        runner.activate()
        stages[module] = Stage(spec, runner, "ort", "fp32")
    return stages


@cuda_ort
def test_cascade_with_onnxruntime_nets_as_a_cuda_graph_finds_the_same_faces(tmp_path, monkeypatch):
    """onnxruntime's runs queue on its stream without host synchronisation, so the pipeline's cascade captures them
    with its own arithmetic in one CUDA graph: the same faces as the cascade run without a graph on the same
    sessions' arithmetic, and faces returned from one replay survive the next."""
    from ffexport.export.onnx import export_module
    from ffexport.pipeline.mtcnn import GRAPH_ENV, MTCNN

    clip = _clip_frames(tmp_path).cuda()
    paths = {m: export_module(specs.get(m), tmp_path / "artifacts").path for m in MODULES}  # FP32, dynamic axes
    monkeypatch.setenv(GRAPH_ENV, "0")
    plain = MTCNN(_ort_mtcnn_stages(paths), device="cuda")
    monkeypatch.delenv(GRAPH_ENV)
    graphed = MTCNN(_ort_mtcnn_stages(paths), device="cuda")
    assert graphed.cascade.cuda_graphs and not plain.cascade.cuda_graphs
    first = graphed.detect(clip[:4])
    second = graphed.detect(clip[4:])
    assert graphed.cascade.graph_off == "" and len(graphed.cascade._graphs) == 1
    assert graphed.cascade.fallbacks == 0
    want = plain.detect(clip[:4]) + plain.detect(clip[4:])
    assert [f[0].shape[0] for f in want] == [f[0].shape[0] for f in first + second]
    _same_faces(first + second, want, atol=1e-2, score_atol=1e-4)


def test_the_cascades_pyramid_with_bins_made_once_gives_the_same_levels(astronaut):
    """The cascade's Pyramid (bins kept per frame and level size, column sums along the transpose) against
    AreaPyramid, from the integral image: bit for bit on whole pixel values (the test image), twice (the second
    time from its kept bins); within float rounding on a scaled copy's fractional values."""
    from ffexport.pipeline.mtcnn import Pyramid
    from ffexport.vision.mtcnn import AreaPyramid

    sizes = ((307, 307), (218, 218), (15, 15), (512, 300))
    for _ in range(2):
        ours, theirs = Pyramid(astronaut, integral=True), AreaPyramid(astronaut, integral=True)
        for size in sizes:
            assert torch.equal(ours.level(size), theirs.level(size))
    scaled = torch.nn.functional.interpolate(astronaut, scale_factor=0.77, mode="bilinear", antialias=True)
    ours, theirs = Pyramid(scaled, integral=True), AreaPyramid(scaled, integral=True)
    for size in ((300, 300), (40, 60)):
        assert torch.allclose(ours.level(size), theirs.level(size), rtol=0, atol=1e-4)


def test_area_pyramid_from_the_integral_image_matches_area_interpolation(astronaut):
    """The GPU form of MTCNN's pyramid (prefix sums, four gathers) gives F.interpolate(mode="area")'s numbers."""
    import torch.nn.functional as F

    from ffexport.vision.mtcnn import AreaPyramid

    images = torch.cat([astronaut, astronaut.flip(-1)])[:, :, :300, :451] + torch.rand(2, 3, 300, 451)
    pyramid = AreaPyramid(images, integral=True)
    for size in ((180, 271), (127, 191), (12, 18), (300, 451), (13, 12)):
        want = F.interpolate(images, size=size, mode="area")
        assert torch.allclose(pyramid.level(size), want, atol=1e-4), size


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cascade_with_compiled_steps_finds_the_same_faces(tmp_path):
    """The compile backend's cascade: its arithmetic between the nets through torch.compile, captured in the
    cascade's CUDA graph with the nets, finds the same faces as with eager steps, four frames a call and one, and
    the pipeline's MTCNN on compile stages turns it on (on torch stages, off)."""
    from ffexport.pipeline.detectors import MTCNN_MODULES, make_detector
    from ffexport.pipeline.mtcnn import Capacity
    from ffexport.pipeline.stages import make_stage

    eager = MTCNNDetector.from_torch("cuda", capacity=Capacity(), cuda_graphs=True)
    steps = MTCNNDetector(eager.pnet, eager.rnet, eager.onet, device="cuda", capacity=Capacity(), cuda_graphs=True,
                          compile_steps=True)
    clip = _clip_frames(tmp_path).cuda()
    for size in (4, 1):
        got = [f for i in range(0, 8, size) for f in steps.detect(clip[i:i + size])]
        want = [f for i in range(0, 8, size) for f in eager.detect(clip[i:i + size])]
        # inductor's crops and box arithmetic round differently from the eager kernels (a fused multiply-add, a
        # reordered sum): the same faces to a twentieth of a pixel
        _same_faces(got, want, atol=5e-2, score_atol=1e-3)
        assert [f[0].shape[0] for f in got] == [1] * 8
    assert steps.fallbacks == 0 and len(steps._graphs) == 2
    assert sorted(steps.capture_s) == ["1x3x240x320", "4x3x240x320"] and min(steps.capture_s.values()) > 0
    assert {"_level_input", "_level_windows", "_nms", "_pool", "_crops", "_refined", "_outputs"} <= set(steps._compiled)
    for backend, on in (("compile", True), ("torch", False)):
        stages = {m: make_stage(specs.get(m), backend, "fp16", "cuda", out=tmp_path) for m in MTCNN_MODULES}
        try:
            assert make_detector("mtcnn", stages, "cuda").cascade.compile_steps is on
        finally:
            for s in stages.values():
                s.close()
