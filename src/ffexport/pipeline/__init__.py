"""The reference face-swap pipeline: stages (a module on a backend), face detectors (MTCNN, RetinaFace),
paste-back, the settings of configs/pipeline.yaml, the pipeline itself, and image and video IO."""
