"""Shared by the GPU-host probes (gpu_profile_batch.py, gpu_latency_b1.py): a pipeline's stage calls and its
detection wrapped in torch.profiler ranges named ``stage:MODULE`` and ``stage:detect``."""
from torch.profiler import record_function


def range_stages(pipe) -> None:
    for name, stage in list(pipe.stages.items()):
        def ranged(feeds, _run=stage.run, _name=name):
            with record_function(f"stage:{_name}"):
                return _run(feeds)
        stage.run = ranged

    def detect_ranged(images, _detect=pipe.detect):
        with record_function("stage:detect"):
            return _detect(images)
    pipe.detect = detect_ranged
