"""``ffexport bench --pipeline``'s rows say which path ran: the streaming executor (the default) or the serial
path (``streaming: false``), measured on the same frames with the same faces."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One small real pipeline for both rows (measure() closes the pipeline it builds: closed here instead)."""
    from ffexport.pipeline.pipeline import Pipeline

    pipe = Pipeline(backend="torch", variants={"encoder": "iresnet18"}, generator="identity",
                    out=tmp_path_factory.mktemp("artifacts"))
    yield pipe
    Pipeline.close(pipe)


def test_pipeline_rows_record_the_executor_and_both_paths_swap_the_same_faces(built, monkeypatch, tmp_path):
    from ffexport.bench import e2e

    monkeypatch.setattr(built, "close", lambda: None)
    monkeypatch.setattr(e2e, "_build", lambda cfg: built)
    cfg = {"kind": "pipeline", "device": "cpu", "backend": "torch", "precision": "fp32", "artifacts": str(tmp_path),
           "variants": {"encoder": "iresnet18", "generator": "identity"}, "enhance": False, "calib": None,
           "frames": 2, "hw": (180, 320), "faces": 1, "warmup": 1, "batch": 1, "stage_frames": 1, "video": None}
    rows = {}
    for streaming in (True, False):
        built.streaming = streaming
        rows[streaming] = e2e.measure(dict(cfg))
    stream, serial = rows[True], rows[False]
    assert stream["executor"] == "streaming" and serial["executor"] == "serial"
    ex = built.executor
    assert stream["streaming"] == {"slots": ex.slots, "depth": ex.depth} and "streaming" not in serial
    assert stream["warmup"] == ex.slots + ex.depth + 1 and serial["warmup"] == 1  # the ring filled before timing
    for r in (stream, serial):
        assert r["status"] == "ok" and r["fps"] > 0 and r["frames"] == 2 and r["frame_latency_ms"]["n"] == 2
        assert r["stages_executor"] == "serial" and r["stages_ms"]["detect"] > 0
    assert "streaming executor" in stream["timer"] and "synchronised" in serial["timer"]
    assert stream["faces_swapped_per_frame"] == serial["faces_swapped_per_frame"] > 0


def test_compile_seconds_counts_compiled_stages_and_the_detectors_graphs():
    """A row's ``compile_s``: each compiled stage's first calls by module, and the MTCNN cascade's graph making
    under ``detector`` (its compiled steps happen there); stages that compile nothing are left out."""
    from types import SimpleNamespace as NS

    from ffexport.bench.e2e import compile_seconds

    stages = {"generator": NS(runner=NS(compile_s={"1x3x128x128": 1.25, "2x3x128x128": 2.5})),
              "blender": NS(runner=NS(compile_s={})), "encoder": NS(runner=NS())}
    pipe = NS(stages=stages, detector=NS(cascade=NS(capture_s={"1x3x720x1280": 58.25, "32x3x720x1280": 0.5})))
    assert compile_seconds(pipe) == {"generator": 3.75, "detector": 58.75}
    assert compile_seconds(NS(stages=stages, detector=NS())) == {"generator": 3.75}  # RetinaFace: no cascade
