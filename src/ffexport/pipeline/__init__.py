"""Alignment, detection post-processing, the MTCNN cascade, stages, the reference pipeline and video IO."""
