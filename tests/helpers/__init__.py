"""Helpers shared by the tests (models built to break a pass, media fixtures, TensorRT fixtures)."""
