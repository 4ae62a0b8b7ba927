"""Alignment on the device: similarity fits, warps (against cv2), letterbox."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ffexport.vision.align import (align_crop, estimate_crop_matrix, invert_affine, letterbox, normalize,
                                     template_points, to_tensor_image, to_uint8_hwc, transform_points,
                                     umeyama, unletterbox_points, warp_affine)
from ffexport.specs.base import Preprocess
from ffexport.specs.templates import ARCFACE_112_V2, FFHQ_512, TEMPLATES


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


def test_umeyama_matches_skimage_similarity_estimate():
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(0)
    src = rng.uniform(50, 450, (6, 5, 2))
    dst = np.asarray(ARCFACE_112_V2.points)
    M = umeyama(torch.from_numpy(src), torch.from_numpy(dst)).numpy()
    for i in range(len(src)):
        if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
            ref = SimilarityTransform.from_estimate(src[i], dst)
        else:
            ref = SimilarityTransform()
            assert ref.estimate(src[i], dst)
        np.testing.assert_allclose(M[i], ref.params[:2], atol=1e-9)


def test_umeyama_recovers_a_known_similarity_and_never_reflects():
    src = torch.tensor(ARCFACE_112_V2.points, dtype=torch.float64)[None].repeat(3, 1, 1) * 3 + 40
    truths = [_similarity(30, 0.5, 10, -4), _similarity(-120, 2.0, 300, 7), _similarity(0, 1.0, 0, 0)]
    dst = torch.stack([transform_points(src[i:i + 1], torch.from_numpy(t)[None])[0] for i, t in enumerate(truths)])
    M = umeyama(src, dst)
    np.testing.assert_allclose(M.numpy(), np.stack(truths), atol=1e-9)
    # a mirrored destination has no exact similarity: the fit must stay a rotation (positive determinant)
    mirrored = src.clone()
    mirrored[..., 0] *= -1
    R = umeyama(src, mirrored)[:, :, :2]
    assert (torch.linalg.det(R) > 0).all()


def test_invert_affine_round_trips():
    M = torch.tensor(np.stack([_similarity(17, 0.7, 30.3, -40.7), _similarity(-5, 3.0, 1, 2)])).float()
    pts = torch.rand(2, 7, 2) * 500
    back = transform_points(transform_points(pts, M), invert_affine(M))
    assert torch.allclose(back, pts, atol=1e-3)


def test_warp_affine_matches_cv2_warpaffine(astronaut):
    cv2 = pytest.importorskip("cv2")
    A = _similarity(17, 0.7, 30.3, -40.7)
    ref = cv2.warpAffine(astronaut, A, (300, 260), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    out = to_uint8_hwc(warp_affine(to_tensor_image(astronaut), torch.tensor(A[None]).float(), (260, 300)))[0]
    inside = cv2.warpAffine(np.full(astronaut.shape[:2], 255, np.uint8), A, (300, 260)) == 255
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # leave the border out
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))[inside]
    assert inside.mean() > 0.5
    assert diff.mean() < 0.05 and diff.max() <= 1.0  # cv2 rounds its bilinear weights to 1/32 px


def test_warp_affine_identity_and_image_index(astronaut):
    img = to_tensor_image(astronaut)
    same = warp_affine(img, torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]), img.shape[-2:])
    assert (same - img).abs().max() < 1e-2  # float32 grid arithmetic on a 512 px image
    frames = torch.cat([img, img.flip(-1)])
    M = torch.tensor(np.stack([_similarity(10, 0.5, 20, 30), _similarity(-20, 0.8, 5, 0)] * 2)).float()
    many = warp_affine(frames, M, (96, 128), image_index=torch.tensor([0, 1, 1, 0]))
    direct = warp_affine(frames, M[:2], (96, 128))
    assert torch.allclose(many[0], direct[0]) and torch.allclose(many[3], warp_affine(img, M[3:], (96, 128))[0])
    assert torch.allclose(many[1], direct[1])


def test_aligned_crop_puts_landmarks_on_the_template():
    rng = np.random.default_rng(1)
    template = torch.tensor(FFHQ_512.points)
    true = torch.tensor(_similarity(12, 0.4, 100, 60)).float()[None]
    frame_pts = transform_points(template[None], invert_affine(true))  # where the template's face sits in the frame
    frame_pts = frame_pts + torch.from_numpy(rng.normal(0, 0.3, (1, 5, 2))).float()
    M = estimate_crop_matrix(frame_pts, FFHQ_512, 256)
    mapped = transform_points(frame_pts, M)
    assert (mapped - template_points(FFHQ_512, 256)).norm(dim=-1).max() < 2.0
    crops, M2 = align_crop(torch.rand(1, 3, 400, 400) * 255, frame_pts, FFHQ_512, 256)
    assert crops.shape == (1, 3, 256, 256) and torch.allclose(M, M2)
    assert set(TEMPLATES) >= {"arcface_112_v2", "arcface_128", "ffhq_512", "landmark_256", "simswap_256"}


@pytest.mark.parametrize("center", [False, True])
def test_letterbox_keeps_aspect_and_maps_points_back(astronaut, center):
    img = to_tensor_image(astronaut[:300])  # 300 x 512
    canvas, scale, (px, py) = letterbox(img, 640, center=center)
    assert canvas.shape == (1, 3, 640, 640)
    assert scale == pytest.approx(640 / 512)
    nh = round(300 * scale)
    assert (px, py) == ((0, (640 - nh) // 2) if center else (0, 0))
    rows = canvas[0].abs().sum((0, 2))
    assert (rows[py:py + nh] > 0).all() and rows[:py].sum() == 0 and rows[py + nh:].sum() == 0
    pts = torch.tensor([[10.0, 20.0], [500.0, 299.0]])
    assert torch.allclose(unletterbox_points(pts * scale + torch.tensor([px, py]), scale, (px, py)), pts, atol=1e-4)
    small = letterbox(img[..., :100, :160], 640)  # upscaling works too
    assert small[0].shape[-1] == 640 and small[1] == pytest.approx(4.0)


def test_normalize_applies_channel_order_and_mean_std():
    x = torch.tensor([0.0, 127.5, 255.0]).view(1, 3, 1, 1)
    bgr = normalize(x, Preprocess("BGR", (127.5,) * 3, (128.0,) * 3))
    assert torch.allclose(bgr.flatten(), torch.tensor([255.0, 127.5, 0.0]).sub(127.5).div(128.0))
    rgb = normalize(x, Preprocess("RGB", (0.0,) * 3, (255.0,) * 3))
    assert torch.allclose(rgb.flatten(), torch.tensor([0.0, 0.5, 1.0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_warp_on_cuda_matches_cpu(astronaut):
    img = to_tensor_image(astronaut)
    M = torch.tensor(_similarity(17, 0.7, 30.3, -40.7)[None]).float()
    cpu = warp_affine(img, M, (128, 128))
    gpu = warp_affine(img.cuda(), M.cuda(), (128, 128)).cpu()
    assert (cpu - gpu).abs().max() < 1e-2
