"""Blender: geometry against OpenCV, identity paste-back, exact frame outside the mask, dynamic-size ONNX."""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest
import torch

from ffexport import specs
from ffexport.models import build_model
from ffexport.models import blender as bl


def _astronaut(height: int = 360, width: int = 480) -> torch.Tensor:
    from skimage import data
    from skimage.transform import resize

    img = resize(data.astronaut(), (height, width), anti_aliasing=True).astype(np.float32)
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def _gradient(height: int, width: int) -> torch.Tensor:
    """A frame that is linear in x and y per channel: bilinear resampling reproduces it exactly."""
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    chans = [0.1 + 0.6 * x / width + 0.2 * y / height, 0.8 - 0.5 * y / height, 0.3 + 0.3 * x / width - 0.2 * y / height]
    return torch.stack(chans)[None]


def _similarity(scale: float, degrees: float, tx: float, ty: float) -> torch.Tensor:
    c, s = scale * math.cos(math.radians(degrees)), scale * math.sin(math.radians(degrees))
    return torch.tensor([[[c, -s, tx], [s, c, ty]]], dtype=torch.float32)


def _mask(*values) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float32)


@pytest.fixture(scope="module")
def blender():
    return build_model(specs.get("blender"))


def test_no_parameters(blender):
    assert len(blender.state_dict()) == 0


def test_cut_crop_matches_opencv_warp_affine_inverse_map():
    frame = _astronaut()
    a = _similarity(1.6, 25.0, 200.0, 50.0)
    crop = bl.cut_crop(frame, a, 112)[0].permute(1, 2, 0).numpy()
    ref = cv2.warpAffine(frame[0].permute(1, 2, 0).numpy(), a[0].numpy(), (112, 112),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(crop - ref).mean() < 2e-3 and np.abs(crop - ref).max() < 0.05


def test_invert_affine_matches_opencv():
    a = _similarity(1.7, 23.0, 151.25, 40.5)
    a[0, 0, 1] += 0.2  # a general (sheared) affine, not only similarities
    ours = bl.invert_affine(a)[0].numpy()
    assert np.allclose(ours, cv2.invertAffineTransform(a[0].numpy().astype(np.float64)), atol=1e-5)


def test_warp_matches_opencv_warp_affine():
    """Pixel-centre convention: the warped crop is cv2.warpAffine(crop, A, (W, H), INTER_LINEAR, BORDER_REPLICATE)."""
    crop = _astronaut(128, 128)
    a = _similarity(1.9, -17.0, 212.3, 63.7)
    warped, xc, yc = bl.warp_crop(crop, a, 360, 480)
    inside = ((xc > 0) & (xc < 127) & (yc > 0) & (yc < 127))[0].numpy()   # where the crop really lands
    ours = warped[0].permute(1, 2, 0).numpy()[inside]

    def opencv(matrix):
        return cv2.warpAffine(crop[0].permute(1, 2, 0).numpy(), matrix, (480, 360), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)[inside]

    err = np.abs(ours - opencv(a[0].numpy()))
    assert inside.sum() > 50_000
    # OpenCV 4 quantises the sub-pixel position to 1/32 px (OpenCV 5 agrees to ~1e-5 here)
    assert err.mean() < 2e-3 and err.max() < 0.05
    half_pixel_off = np.abs(ours - opencv(a[0].numpy() + np.float32([[0, 0, 0.5], [0, 0, 0.5]])))
    assert half_pixel_off.mean() > 0.01


def test_crop_mask_shape_range_and_edges():
    m = bl.crop_mask(128, _mask(0.3, 0.1, 0.0, 0.0, 0.0))[0, 0]
    assert m.shape == (128, 128) and m.min() >= 0.0 and m.max() <= 1.0
    assert m[64, 64] == 1.0
    assert (m[:13] == 0).all()                                  # pad_top 0.1 of 128 rows cut (12.8 px)
    assert (m[:, 0] < 0.01).all() and (m[-1] < 0.01).all()     # feathered to ~0 at the crop border
    # the ramp is blur * size / 2 = 19.2 px wide from the crop edge (x = -0.5): pixel centre 18.5 px in
    # is still on it, 19.5 px in is at full strength
    assert m[64, 18] < 1.0 and m[64, 19] == 1.0 and (torch.diff(m[64, :19]) > 0).all()
    hard = bl.crop_mask(64, _mask(0.0, 0.0, 0.25, 0.0, 0.0))[0, 0]
    assert set(hard.unique().tolist()) == {0.0, 1.0} and (hard[:, 48:] == 0).all() and (hard[:, :48] == 1).all()


@pytest.mark.parametrize("affine", [
    _similarity(1.0, 0.0, 150.0, 70.0),     # integer translation
    _similarity(1.0, 90.0, 300.0, 40.0),    # quarter turn: lands on pixel centres too
])
def test_identity_paste_back_on_a_photo(blender, affine):
    frame = _astronaut()
    crop = bl.cut_crop(frame, affine, 128)
    mask = _mask(0.3, 0.0, 0.0, 0.0, 0.0)
    with torch.no_grad():
        out = blender(frame, crop, affine, mask)
    _, xc, yc = bl.warp_crop(crop, affine, 360, 480)
    m = bl.box_mask(xc, yc, 128, 128, mask)[:, None].expand_as(frame)
    assert (m > 0.5).sum() > 3 * 64 * 64
    assert (out - frame).abs().max() < 1e-3
    assert torch.equal(out[m == 0], frame[m == 0])


def test_identity_paste_back_any_similarity(blender):
    frame = _gradient(300, 400)
    affine = _similarity(1.37, 31.0, 230.0, 40.0)   # crop -> frame, rotated and scaled, inside the frame
    crop = bl.cut_crop(frame, affine, 112)
    mask = _mask(0.2, 0.05, 0.0, 0.1, 0.0)
    with torch.no_grad():
        out = blender(frame, crop, affine, mask)
    _, xc, yc = bl.warp_crop(crop, affine, 300, 400)
    m = bl.box_mask(xc, yc, 112, 112, mask)[:, None].expand_as(frame)
    assert (m > 0).sum() > 3 * 100 * 100
    assert (out - frame).abs().max() < 1e-3
    assert torch.equal(out[m == 0], frame[m == 0])


def test_outside_the_mask_is_the_input_frame_bit_for_bit(blender):
    frame = _astronaut()
    crop = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))  # a different face
    affine = _similarity(1.3, 12.0, 180.0, 30.0)
    mask = _mask(0.3, 0.0, 0.0, 0.0, 0.0)
    with torch.no_grad():
        out = blender(frame, crop, affine, mask)
    _, xc, yc = bl.warp_crop(crop, affine, 360, 480)
    m = bl.box_mask(xc, yc, 128, 128, mask)[:, None].expand_as(frame)
    assert m.min() == 0.0 and m.max() == 1.0
    assert torch.equal(out[m == 0], frame[m == 0])
    assert (out[m == 1] - frame[m == 1]).abs().mean() > 0.1      # the crop did land inside
    inside = (xc > -0.5) & (xc < 127.5) & (yc > -0.5) & (yc < 127.5)
    assert not (m[:, 0] > 0)[~inside].any()                      # never any weight outside the warped crop


def test_onnx_export_works_for_other_frame_and_crop_sizes(blender, tmp_path):
    import onnxruntime as ort

    spec = specs.get("blender")
    frame0, crop0 = (torch.rand(*spec.input(n).concrete(batch=1)) for n in ("frame", "crop"))  # 360x640, 128
    example = (frame0, crop0, _similarity(1.5, 10.0, 300.0, 60.0), _mask(0.3, 0.0, 0.0, 0.0, 0.0))
    path = tmp_path / "blender.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(blender, example, str(path), input_names=spec.input_names, output_names=spec.output_names,
                          dynamic_axes=spec.dynamic_axes, opset_version=spec.opset, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frame = torch.cat([_astronaut(300, 420), _astronaut(300, 420).flip(-1)])         # not the 360x640 example
    crop = torch.cat([_astronaut(96, 96), _astronaut(96, 96).flip(-2)])               # nor its 128 crop
    affine = torch.cat([_similarity(1.2, -20.0, 150.0, 80.0), _similarity(0.8, 45.0, 250.0, 20.0)])
    mask = torch.cat([_mask(0.3, 0.0, 0.0, 0.0, 0.0), _mask(0.1, 0.1, 0.05, 0.0, 0.2)])
    with torch.no_grad():
        ref = blender(frame, crop, affine, mask).numpy()
    got = sess.run(None, {"frame": frame.numpy(), "crop": crop.numpy(), "affine": affine.numpy(),
                          "mask": mask.numpy()})[0]
    assert got.shape == (2, 3, 300, 420)
    assert np.abs(got - ref).max() < 1e-5
    untouched = ref == frame.numpy()
    assert 0.5 < untouched.mean() < 0.99
    assert np.array_equal(got[untouched], frame.numpy()[untouched])
