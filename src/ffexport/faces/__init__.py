"""Real faces for the parity checks and calibration: loading images with their 5-point landmarks
(``load``), deterministic augmentations and the built-in face set (``augment``), and per-module input
feeds built from them (``feeds``)."""

from .augment import AUGMENT, FLIP_ORDER, augment, builtin_faces  # noqa: F401
from .feeds import BLENDER_MASK, FEEDS, SOURCE_ENCODER, default_source_embedder, feed_for, module_feeds  # noqa: F401
from .load import (IMAGE_SUFFIXES, FaceDataWarning, FaceImage, box_from_landmarks, builtin_face,  # noqa: F401
                   image_files, iter_face_folder, load_face, load_face_folder, read_rgb, synthetic_landmarks)
