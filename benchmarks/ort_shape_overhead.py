"""Per-call cost of onnxruntime CUDA sessions when the input shape changes between calls.

    PYTHONPATH=src python benchmarks/ort_shape_overhead.py --artifacts DIR [--out FILE]

P-Net over a pyramid's level shapes: one session fed every shape in turn, against the default runner
(a session per recurring shape); R-Net in one session with a batch that changes every call, against batches padded to powers of two.
--big MODULE,...: a large model (one session) fed batch 1, 2, 1, 2 ... against batch 1 only, per call.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--out", default="")
    ap.add_argument("--big", default="", help="large modules to time with a batch alternating 1, 2")
    a = ap.parse_args()
    from ffexport import specs
    from ffexport.backends.ort import OrtRunner
    from ffexport.artifacts.find import onnx_artifact

    def timed(fn, feeds_list, rounds=5):
        for _ in range(2):  # twice: a runner with sessions per shape opens them on a shape's second sighting
            for f in feeds_list:
                fn(f)
        torch.cuda.synchronize()
        ms = []
        for _ in range(rounds):
            for f in feeds_list:
                t0 = time.perf_counter()
                fn(f)
                torch.cuda.synchronize()
                ms.append((time.perf_counter() - t0) * 1e3)
        return round(statistics.median(ms), 3)

    res = {}
    p = onnx_artifact(specs.get("mtcnn_pnet"), a.precision, a.artifacts, build_missing=False)
    shapes = [(1, 3, int(720 * 0.6 * 0.709 ** k), int(1280 * 0.6 * 0.709 ** k)) for k in range(10)]
    feeds = [{"input": torch.randn(s, device="cuda")} for s in shapes]
    one = OrtRunner(p, device="cuda", shape_sessions=1); one.activate()
    res["pnet_same_shape_ms"] = timed(one.infer, [feeds[0]] * 10)
    res["pnet_one_session_cycling_shapes_ms"] = timed(one.infer, feeds)
    per = OrtRunner(p, device="cuda"); per.activate()  # ffexport's default on CUDA: a session per recurring shape
    res["pnet_session_per_shape_ms"] = timed(per.infer, feeds)
    res["pnet_default_runner_sessions"] = per.shape_sessions
    r = onnx_artifact(specs.get("mtcnn_rnet"), a.precision, a.artifacts, build_missing=False)
    rn = OrtRunner(r, device="cuda", shape_sessions=1); rn.activate()
    sizes = [37, 52, 41, 60, 33, 47, 55, 39]
    res["rnet_batch_changing_ms"] = timed(rn.infer, [{"input": torch.randn(n, 3, 24, 24, device="cuda")} for n in sizes])
    res["rnet_batch_padded_pow2_ms"] = timed(rn.infer, [{"input": torch.randn(64, 3, 24, 24, device="cuda")} for n in sizes])
    rn2 = OrtRunner(r, device="cuda", shape_sessions=1); rn2.activate()
    res["rnet_alternating_two_batches_ms"] = timed(rn2.infer, [{"input": torch.randn(n, 3, 24, 24, device="cuda")} for n in (32, 64)])
    for module in filter(None, a.big.split(",")):
        from ffexport.config import resolve_spec

        spec = resolve_spec(module)
        path = onnx_artifact(spec, a.precision, a.artifacts, build_missing=False)
        big = OrtRunner(path, spec=spec, device="cuda")  # default: one session (large model)
        big.activate()

        def feeds(n, big=big):
            return {k: torch.randn([n if d is None else d for d in shape], device="cuda")
                    for k, shape in big.input_shapes.items()}

        res[f"{module}_batch_1_ms"] = timed(big.infer, [feeds(1)] * 4, rounds=3)
        res[f"{module}_batch_alternating_1_2_ms"] = timed(big.infer, [feeds(1), feeds(2)], rounds=3)
        res[f"{module}_sessions"] = big.shape_sessions
        big.deactivate()
    print(json.dumps(res, indent=1))
    if a.out:
        from ffexport.fsutil import write_json_atomic

        write_json_atomic(a.out, res)


if __name__ == "__main__":
    main()
