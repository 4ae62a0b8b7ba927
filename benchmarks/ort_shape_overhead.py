"""Per-call cost of onnxruntime CUDA sessions when the input shape changes between calls.

    PYTHONPATH=src python benchmarks/ort_shape_overhead.py --out ARTIFACTS [--json FILE]

P-Net over a pyramid's level shapes: one session fed every shape in turn, against the default runner
(a session per recurring shape); R-Net in one session with a batch that changes every call, against batches padded to powers of two.
--big MODULE,...: a large model (one session) fed batch 1, 2, 1, 2 ... against batch 1 only, per call.
Each figure is the median of synchronised wall times per call (:class:`ffexport.bench.timing.Timer`), after
every input was seen twice.
"""
from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="artifact folder (one sub-folder per module)")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--json", default="", help="write the figures to this JSON file")
    ap.add_argument("--big", default="", help="large modules to time with a batch alternating 1, 2")
    a = ap.parse_args()
    from ffexport import specs
    from ffexport.backends.ort import OrtRunner
    from ffexport.artifacts.find import onnx_artifact
    from ffexport.bench.timing import Timer, stats

    def timed(fn, feeds_list, rounds=5):
        """Median ms per call over ``rounds`` passes of ``feeds_list``, after two untimed passes (a runner with
        sessions per shape opens them on a shape's second sighting)."""
        n = len(feeds_list)
        t = Timer("cuda").run(lambda i: fn(feeds_list[i % n]), iters=rounds * n, warmup=2 * n)
        return round(stats(t.wall_ms)["p50"], 3)

    res = {}
    p = onnx_artifact(specs.get("mtcnn_pnet"), a.precision, a.out, build_missing=False)
    shapes = [(1, 3, int(720 * 0.6 * 0.709 ** k), int(1280 * 0.6 * 0.709 ** k)) for k in range(10)]
    feeds = [{"input": torch.randn(s, device="cuda")} for s in shapes]
    one = OrtRunner(p, device="cuda", shape_sessions=1); one.activate()
    res["pnet_same_shape_ms"] = timed(one.infer, [feeds[0]] * 10)
    res["pnet_one_session_cycling_shapes_ms"] = timed(one.infer, feeds)
    per = OrtRunner(p, device="cuda"); per.activate()  # ffexport's default on CUDA: a session per recurring shape
    res["pnet_session_per_shape_ms"] = timed(per.infer, feeds)
    res["pnet_default_runner_sessions"] = per.shape_sessions
    r = onnx_artifact(specs.get("mtcnn_rnet"), a.precision, a.out, build_missing=False)
    rn = OrtRunner(r, device="cuda", shape_sessions=1); rn.activate()
    sizes = [37, 52, 41, 60, 33, 47, 55, 39]
    res["rnet_batch_changing_ms"] = timed(rn.infer, [{"input": torch.randn(n, 3, 24, 24, device="cuda")} for n in sizes])
    res["rnet_batch_padded_pow2_ms"] = timed(rn.infer, [{"input": torch.randn(64, 3, 24, 24, device="cuda")} for n in sizes])
    rn2 = OrtRunner(r, device="cuda", shape_sessions=1); rn2.activate()
    res["rnet_alternating_two_batches_ms"] = timed(rn2.infer, [{"input": torch.randn(n, 3, 24, 24, device="cuda")} for n in (32, 64)])
    for module in filter(None, a.big.split(",")):
        from ffexport.config import resolve_spec

        spec = resolve_spec(module)
        path = onnx_artifact(spec, a.precision, a.out, build_missing=False)
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
    if a.json:
        from ffexport.fsutil import write_json_atomic

        write_json_atomic(a.json, res)


if __name__ == "__main__":
    main()
