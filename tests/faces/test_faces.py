"""Face folders, built-in faces, augmentation, and per-module feeds from real images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ffexport import specs
from ffexport.errors import CalibrationError, InputSpecError
from ffexport.faces import (AUGMENT, FLIP_ORDER, FaceDataWarning, FaceImage, augment, builtin_face, builtin_faces,
                            iter_face_folder, load_face_folder, module_feeds, synthetic_landmarks)
from ffexport.vision.align import estimate_crop_matrix, template_points, transform_points
from conftest import REPO

CALIBRATION = REPO / "calibration"


def _cheap_embedder(face: FaceImage) -> torch.Tensor:
    """A deterministic 512-d vector from the image (stands in for an encoder in shape tests)."""
    return torch.from_numpy(face.rgb[::7, ::7].astype(np.float32)).flatten()[:512] + 1.0


@pytest.fixture(scope="module")
def faces() -> list[FaceImage]:
    return load_face_folder(CALIBRATION, limit=3)


@pytest.fixture
def face_dir(tmp_path) -> Path:
    for name in ("astronaut.jpg", "astronaut.json", "obama.jpg", "obama.json"):
        shutil.copy(CALIBRATION / name, tmp_path / name)
    return tmp_path


# --- the calibration folder and the package assets ---------------------------------------------

def test_calibration_folder_has_twenty_real_faces_with_landmarks():
    images = sorted(p for p in CALIBRATION.iterdir() if p.suffix == ".jpg")
    assert len(images) >= 20
    assert sum(p.stat().st_size for p in images) < 5e6
    for img in images:
        meta = json.loads(img.with_suffix(".json").read_text())
        assert meta["image"] == img.name and meta["licence"] and meta["source"]
        lm = np.asarray(meta["landmarks"])
        assert lm.shape == (5, 2) and lm[0, 0] < lm[1, 0]
    faces = load_face_folder(CALIBRATION, require_landmarks=True)
    assert len(faces) == len(images)
    for f in faces:
        h, w = f.size
        assert 200 <= max(h, w) <= 640
        assert ((f.landmarks >= 0) & (f.landmarks < [w, h])).all()


def test_builtin_faces_are_deterministic_and_inside_their_images():
    a, b = builtin_faces(n_augment=3, seed=5), builtin_faces(n_augment=3, seed=5)
    assert len(a) == 4 and a[0].path.endswith("astronaut.jpg")
    for x, y in zip(a, b):
        assert np.array_equal(x.rgb, y.rgb) and np.array_equal(x.landmarks, y.landmarks)
        h, w = x.size
        assert ((x.landmarks >= 0) & (x.landmarks < [w, h])).all()
    assert not np.array_equal(a[1].rgb, builtin_faces(n_augment=1, seed=6)[1].rgb)
    packaged = json.loads((REPO / "src/ffexport/assets/astronaut.json").read_text())
    assert np.allclose(builtin_face().landmarks, packaged["landmarks"])


def test_augment_carries_landmarks_through_the_transform():
    """Bright dots drawn at the landmarks must land where the augmented landmarks say."""
    rgb = np.full((300, 400, 3), 40, np.uint8)
    lm = np.array([[150, 120], [250, 118], [200, 170], [160, 215], [240, 214]], np.float32)
    for x, y in lm.astype(int):
        rgb[y - 2:y + 3, x - 2:x + 3] = 255
    out = augment(FaceImage("dots", rgb, lm, None), 6, seed=3)
    assert any(o.meta["augmentation"]["flip"] for o in out) and not all(o.meta["augmentation"]["flip"] for o in out)
    for o in out:
        grey = o.rgb.astype(np.float32).mean(-1)
        for x, y in o.landmarks:
            xi, yi = int(round(x)), int(round(y))
            patch = grey[max(yi - 1, 0):yi + 2, max(xi - 1, 0):xi + 2]
            assert patch.max() > 1.5 * np.median(grey), (o.meta, x, y)
        assert o.landmarks[0, 0] < o.landmarks[1, 0]  # left eye stays the one with smaller x, flipped or not
        assert max(o.size) <= AUGMENT["max_side"]
    assert FLIP_ORDER == (1, 0, 2, 4, 3)


# --- folders: good, bad, partly bad ------------------------------------------------------------

def test_load_face_folder_reads_images_and_landmarks(face_dir):
    faces = load_face_folder(face_dir)
    assert [Path(f.path).name for f in faces] == ["astronaut.jpg", "obama.jpg"]
    assert faces[0].landmarks.shape == (5, 2) and faces[0].box.shape == (4,)
    assert faces[0].rgb.dtype == np.uint8 and faces[0].rgb.shape == (512, 512, 3)
    assert len(load_face_folder(face_dir, limit=1)) == 1
    small = load_face_folder(face_dir, max_side=256)[1]
    assert max(small.size) == 256
    assert np.allclose(small.landmarks, faces[1].landmarks * 256 / max(faces[1].size), atol=0.5)


@pytest.mark.parametrize("case", ["missing", "file", "empty", "no_images"])
def test_bad_folders_raise_one_line_calibration_errors(tmp_path, case):
    target = tmp_path / "faces"
    if case == "file":
        target.write_text("x")
    elif case in ("empty", "no_images"):
        target.mkdir()
        if case == "no_images":
            (target / "notes.txt").write_text("no faces here")
            (target / "a.json").write_text("{}")
    with pytest.raises(CalibrationError) as err:
        load_face_folder(target)
    assert "\n" not in str(err.value) and str(target) in str(err.value)


def test_corrupt_images_are_skipped_with_a_warning(face_dir):
    (face_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (face_dir / "truncated.png").write_bytes((face_dir / "astronaut.jpg").read_bytes()[:2000])
    with pytest.warns(FaceDataWarning) as caught:
        faces = load_face_folder(face_dir)
    messages = sorted(str(w.message) for w in caught)
    assert messages[0].startswith("skipping broken.jpg: not a readable image")
    assert messages[1].startswith("skipping truncated.png: not a readable image")
    assert sorted(Path(f.path).name for f in faces) == ["astronaut.jpg", "obama.jpg"]
    with pytest.warns(FaceDataWarning), pytest.raises(CalibrationError, match="only 2 usable"):
        load_face_folder(face_dir, min_images=3)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` RGB and whose single IDAT holds almost nothing: what a
    decompression bomb looks like to a reader that trusts the header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("make, size", [
    (lambda p: __import__("PIL.Image", fromlist=["Image"]).new("1", (10000, 6000)).save(p), "10000x6000 pixels (60.0"),
    (lambda p: _png_header_only(p, 20000, 10000), "200.0 megapixels"),  # past PIL's own decompression-bomb limit
], ids=["60-megapixel-png", "200-megapixel-header"])
def test_an_image_over_the_pixel_limit_is_skipped_from_its_header_without_decoding(face_dir, monkeypatch, make, size):
    from PIL import ImageFile

    from ffexport.faces.load import MAX_MEGAPIXELS
    from ffexport.passes.proof.calib import scan_folder

    make(face_dir / "huge.png")
    real_load = ImageFile.ImageFile.load

    def load(im):
        assert im.size[0] * im.size[1] <= MAX_MEGAPIXELS * 1_000_000, f"decoded a {im.size} image"
        return real_load(im)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.warns(FaceDataWarning) as caught:
        faces = load_face_folder(face_dir)
    assert sorted(Path(f.path).name for f in faces) == ["astronaut.jpg", "obama.jpg"]
    (msg,) = [str(w.message) for w in caught]
    assert msg.startswith("skipping huge.png: ") and size in msg and f"the {MAX_MEGAPIXELS}-megapixel limit" in msg
    with pytest.warns(FaceDataWarning, match="huge.png"):
        fs = scan_folder(face_dir, require_landmarks=True)
    assert fs.skipped == ["huge.png"] and len(fs) == 2  # the manifest records the skipped file
    for name in ("astronaut.jpg", "astronaut.json", "obama.jpg", "obama.json"):
        (face_dir / name).unlink()
    import warnings

    with warnings.catch_warnings(record=True) as said, pytest.raises(CalibrationError) as err:
        warnings.simplefilter("always")
        scan_folder(face_dir, require_landmarks=True)
    assert not said  # nothing usable: the reason is in the one error line, not in a warning before it
    assert "(1 file, all skipped: huge.png: " in str(err.value) and size in str(err.value)


def test_only_corrupt_images_is_an_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"garbage")
    with pytest.warns(FaceDataWarning), pytest.raises(CalibrationError, match="only 0 usable"):
        load_face_folder(tmp_path)


def test_missing_or_bad_landmarks_fall_back_to_a_centred_crop(face_dir):
    (face_dir / "obama.json").unlink()
    (face_dir / "astronaut.json").write_text("{not json")
    with pytest.warns(FaceDataWarning) as caught:
        faces = load_face_folder(face_dir)
    messages = sorted(str(w.message) for w in caught)
    assert messages == ["bad landmarks JSON astronaut.json (JSONDecodeError) for astronaut.jpg: using a centred crop",
                        "no landmarks for obama.jpg: using a centred crop"]
    for f in faces:
        h, w = f.size
        lm, box = synthetic_landmarks(h, w)
        assert np.allclose(f.landmarks, lm) and np.allclose(f.box, box) and f.meta["landmarks"] == "synthetic"
    with pytest.warns(FaceDataWarning, match="landmarks required"), pytest.raises(CalibrationError):
        load_face_folder(face_dir, require_landmarks=True)


def test_iter_face_folder_streams_and_checks_the_folder_eagerly(face_dir, tmp_path):
    stream = iter_face_folder(face_dir)
    first = next(stream)
    assert isinstance(first, FaceImage) and len(list(stream)) == 1
    with pytest.raises(CalibrationError):
        iter_face_folder(tmp_path / "nope")  # raised at the call, not at the first next()


# --- feeds for every registered module ---------------------------------------------------------

def _check_feed(spec, feed: dict, batch: int) -> None:
    assert list(feed) == spec.input_names
    for t in spec.inputs:
        x = feed[t.name]
        assert x.dtype == torch.float32 and x.device.type == "cpu" and torch.isfinite(x).all()
        want = t.concrete(batch)
        assert x.shape[0] == batch and len(x.shape) == len(t.shape)
        for got, dim in zip(x.shape, t.shape):
            if isinstance(dim, int):
                assert got == dim, (spec.key, t.name, tuple(x.shape), t.shape)
        if t.value_range:
            lo, hi = t.value_range
            assert x.min() >= lo - 1e-5 and x.max() <= hi + 1e-5, (spec.key, t.name)
        if len(want) == 4:
            assert x.std() > 0.05, (spec.key, t.name)  # a real image, not a constant


@pytest.mark.parametrize("spec", specs.all_specs(), ids=lambda s: s.key)
def test_feeds_follow_each_spec(spec, faces):
    feeds = list(module_feeds(spec, faces, source_embedder=_cheap_embedder, batch=2))
    assert len(feeds) == 2
    _check_feed(spec, feeds[0], 2)
    _check_feed(spec, feeds[1], 1)
    assert len(list(module_feeds(spec, faces, source_embedder=_cheap_embedder, batch=2, drop_last=True))) == 1
    if spec.module == "generator":
        src = torch.cat([f["source"] for f in feeds])
        assert torch.allclose(src.norm(dim=1), torch.ones(3), atol=1e-5)
        first_target_source = _cheap_embedder(faces[-1])  # ring: the first face is paired with the last
        unit = first_target_source / first_target_source.norm()
        if spec.source_transform == "emap":  # the inswapper latent: normalize(unit @ emap)
            from ffexport.models.generator import emap_matrix

            unit = unit @ emap_matrix()
            unit = unit / unit.norm()
        assert torch.allclose(src[-1], unit, atol=1e-5)


def test_aligned_feeds_put_the_landmarks_on_the_template(faces):
    """The encoder crop is the arcface_112_v2 alignment of the face (checked through the matrix)."""
    spec = specs.get("encoder")
    lm = torch.from_numpy(faces[0].landmarks)[None]
    M = estimate_crop_matrix(lm, spec.template, 112)
    tpl = template_points(spec.template, 112)
    eye_gap = float((tpl[1] - tpl[0]).norm())  # a face is not the template: allow a quarter of the eye distance
    assert (transform_points(lm, M) - tpl).norm(dim=-1).max() < 0.25 * eye_gap
    feed = next(module_feeds(spec, faces[:1]))["input"]
    from ffexport.vision.align import align_crop, normalize, to_tensor_image

    crop, _ = align_crop(to_tensor_image(faces[0].rgb), lm, spec.template, 112)
    assert torch.allclose(feed, normalize(crop, spec.preprocess))


def test_detector_feed_is_a_letterboxed_bgr_frame(faces):
    spec = specs.get("detector")
    obama = next(f for f in load_face_folder(CALIBRATION) if Path(f.path).name == "obama.jpg")
    x = next(module_feeds(spec, [obama]))["input"]
    h, w = obama.size
    nw = round(w * 640 / max(h, w))
    pad = x[0, :, :, nw + 1:]
    assert torch.allclose(pad, torch.full_like(pad, -127.5 / 128))  # zero pixels to the right
    rgb_pixel = torch.from_numpy(obama.rgb[h // 2, w // 2].astype(np.float32))
    got = x[0, :, 320, round((w // 2) * 640 / h)] * 128 + 127.5
    assert (got.flip(0) - rgb_pixel).abs().max() < 30  # BGR order


def test_blender_feed_affine_maps_crop_to_frame(faces):
    spec = specs.get("blender")
    feed = next(module_feeds(spec, faces[:1]))
    A = feed["affine"]
    frame_lm = transform_points(template_points(specs.TEMPLATES["arcface_128"], 128)[None], A)[0]
    h, w = faces[0].size
    lm = torch.from_numpy(faces[0].landmarks) * (feed["frame"].shape[-1] / w)
    eye_gap = float((lm[1] - lm[0]).norm())  # crop -> frame: the template lands on the face's landmarks
    assert (frame_lm - lm).norm(dim=-1).max() < 0.25 * eye_gap
    assert torch.allclose(feed["mask"], torch.tensor([[0.3, 0.0, 0.0, 0.0, 0.0]]))


def test_generator_default_source_is_another_faces_seeded_encoder_embedding(faces):
    spec = specs.get("generator", "inswapper-128")
    feeds = list(module_feeds(spec, faces[:2]))
    src = torch.cat([f["source"] for f in feeds])
    assert src.shape == (2, 512) and torch.allclose(src.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(src[0], src[1])


def test_a_spec_names_its_feed(faces):
    """The feed is the spec's: an unknown feed name is one line listing the valid ones; a
    ``package.module:function`` feed is imported (how a module registered elsewhere brings its own)."""
    from dataclasses import replace

    spec = replace(specs.get("blender"), module="mystery", feed="nonexistent")
    with pytest.raises(InputSpecError, match="mystery/box-feather: unknown feed 'nonexistent'; valid: aligned"):
        next(module_feeds(spec, faces))
    spec = replace(specs.get("encoder", "iresnet18"), feed="ffexport.faces.feeds:_feed_aligned")
    assert next(module_feeds(spec, faces))["input"].shape == (1, 3, 112, 112)
    with pytest.raises(InputSpecError, match="cannot be imported"):
        next(module_feeds(replace(spec, feed="no_such_package.x:f"), faces))
