"""5-point alignment templates (left eye, right eye, nose, left/right mouth corner).

Coordinates are the ones the public face tools use, so crops made here match
the crops the public checkpoints were trained on.
"""

from __future__ import annotations

from .base import Template

# insightface's ArcFace destination points (112x112), used by the encoder.
ARCFACE_112_V2 = Template("arcface_112_v2", 112, (
    (38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041)))

# The older ArcFace points (SimSwap's crops derive from these).
ARCFACE_112_V1 = Template("arcface_112_v1", 112, (
    (39.7300, 51.1380), (72.2700, 51.1380), (56.0000, 68.4930), (42.4630, 87.0100), (69.5370, 87.0100)))

# inswapper's 128 crop: the 112 ArcFace points shifted by 8 px in x, on a 128 canvas.
ARCFACE_128 = Template("arcface_128", 128, tuple((x + 8.0, y) for x, y in ARCFACE_112_V2.points))

# SimSwap 256: the v1 ArcFace points scaled to 256.
SIMSWAP_256 = Template("simswap_256", 256, ARCFACE_112_V1.scaled(256))

# FFHQ alignment used by GFPGAN/GPEN at 512.
FFHQ_512 = Template("ffhq_512", 512, (
    (192.98138, 239.94708), (318.90277, 240.19360), (256.63416, 314.01935),
    (201.26117, 371.41043), (313.08905, 371.15118)))

# 68-point landmarker crop: the ArcFace points shrunk to 70% around the crop centre,
# so the whole face (brows to chin, ear to ear) fits the 256 crop with a margin.
LANDMARK_256 = Template("landmark_256", 256, tuple(
    (128.0 + (x * 256 / 112 - 128.0) * 0.70, 128.0 + (y * 256 / 112 - 128.0) * 0.70 + 12.0)
    for x, y in ARCFACE_112_V2.points))

TEMPLATES = {t.name: t for t in (ARCFACE_112_V2, ARCFACE_112_V1, ARCFACE_128, SIMSWAP_256, FFHQ_512, LANDMARK_256)}
