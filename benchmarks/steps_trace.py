# python3 benchmarks/steps_trace.py DEVICE [FRAMES [TRACED]]   (cpu or cuda; on the GPU host PYTHONPATH=/tmp/site:src)
"""#12, lever 16's open question: where the compiled cascade's faces part from the eager cascade's on a GPU.

Part 1, the final faces on the benchmark's first FRAMES frames (default 64; 1080p scaled to the 1280-px detection
copy) from fixed-shape cascades on the same nets: eager steps one frame a call (``eager-1``, a CUDA graph on the
GPU as in the pipeline), compiled steps one a call (``steps-1``, the pipeline's, rounding as eager torch does:
``eager_rounding``), the same compiled with inductor's own rounding (``fast-1``), eager and compiled steps 32
frames a call (``eager-32``, ``steps-32``) and, on the GPU, eager steps one a call without a graph (``nograph-1``).  Each pair against
``eager-1``: the frames whose boxes differ by more than 0.05 px, the largest box and landmark differences.

Part 2, on up to TRACED (default 4) of the frames where ``steps-1`` differs (or the frames of ``TRACE_FRAMES``,
e.g. ``TRACE_FRAMES=56``): the eager cascade (no graph) once
more, each step called both ways on the same inputs (the eager step's result goes on), so the first step whose
compiled form returns something else is named, with what differs: float tensors' largest difference and how many
elements differ, index and mask tensors' mismatches, and for the windows' and the NMS's orders whether the scores
in them are the same (the same candidates in another order: ties).
"""
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ffexport import specs
from ffexport.bench.e2e import frame_set
from ffexport.pipeline.detectors import MTCNN_MODULES, make_detector
from ffexport.pipeline import mtcnn
from ffexport.pipeline.mtcnn import Capacity, MTCNNDetector
from ffexport.pipeline.stages import make_stage

device = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 64
traced = int(sys.argv[3]) if len(sys.argv) > 3 else 4
torch._dynamo.config.recompile_limit = 64
frames, _ = frame_set({"calib": None, "faces": 1, "frames": n, "hw": (1080, 1920)})
x = torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2).float()
x = F.interpolate(x, size=(720, 1280), mode="bilinear", align_corners=False, antialias=True)
gpu = device == "cuda"
if gpu:
    stages = {m: make_stage(specs.get(m), "compile", "fp16", "cuda", out=os.environ.get("ARTS", "/tmp/arts"))
              for m in MTCNN_MODULES}
    steps = make_detector("mtcnn", stages, "cuda").cascade
    nets, opts = (steps.pnet, steps.rnet, steps.onet), dict(device="cuda", thresholds=steps.thresholds,
                                                            min_face=steps.min_face, channels_last=steps.channels_last)
else:
    nets = [make_stage(specs.get(m), "torch", os.environ.get("PRECISION", "fp16"), "cpu", out="artifacts")
            for m in MTCNN_MODULES]
    opts = {}
    steps = MTCNNDetector(*nets, capacity=Capacity(), compile_steps=True, **opts)
fast = MTCNNDetector(*nets, capacity=Capacity(), cuda_graphs=gpu, compile_steps=True, **opts)
fast.eager_rounding = False  # inductor's own rounding (approximate division, fused multiply-adds)
eager = MTCNNDetector(*nets, capacity=Capacity(), cuda_graphs=gpu, **opts)
plain = MTCNNDetector(*nets, capacity=Capacity(), **opts)  # no graph (the same as eager on the CPU)
assert steps.compile_steps and not eager.compile_steps
print(f"torch {torch.__version__}, inductor options of the compiled steps: {mtcnn.eager_rounding()}", flush=True)


def run(det, per_call):
    out = []
    for i in range(0, n, per_call):
        out += [(b.cpu(), p.cpu(), s.cpu()) for b, p, s in det.detect(x[i:i + per_call])]
    return out


t0 = time.time()
results = {"eager-1": run(eager, 1), "steps-1": run(steps, 1), "fast-1": run(fast, 1), "eager-32": run(eager, 32),
           "steps-32": run(steps, 32)}
if gpu:
    results["nograph-1"] = run(plain, 1)
print(f"part 1: {len(results)} cascades on {n} frames in {time.time() - t0:.0f} s", flush=True)
differing = {}
for name, faces in results.items():
    if name == "eager-1":
        continue
    boxes, points, over = [], [], []
    for i, (a, b) in enumerate(zip(results["eager-1"], faces)):
        if a[0].shape != b[0].shape:
            print(f"  {name} frame {i}: face counts {len(a[2])} and {len(b[2])}")
            over.append(i)
            continue
        if not a[0].numel():
            continue
        boxes.append((a[0] - b[0]).abs().max().item())
        points.append((a[1] - b[1]).norm(dim=-1).max().item())
        if boxes[-1] > 0.05:
            over.append(i)
            print(f"  {name} frame {i}: box {boxes[-1]:.3f} px, landmarks {points[-1]:.3f} px, scores "
                  f"{[round(v, 5) for v in a[2].tolist()]} / {[round(v, 5) for v in b[2].tolist()]}")
    differing[name] = over
    print(f"{name} against eager-1: {len(over)} of {n} frames over 0.05 px, largest box {max(boxes, default=0):.3f} "
          f"px, largest landmark {max(points, default=0):.3f} px", flush=True)


def describe(a, b, path=""):
    """What differs between two step results (nested tuples/lists of tensors and Nones)."""
    if isinstance(a, (tuple, list)):
        return [d for k, (u, v) in enumerate(zip(a, b)) for d in describe(u, v, f"{path}[{k}]")]
    if not isinstance(a, torch.Tensor):
        return [] if a == b else [f"{path}: {a} / {b}"]
    if a.shape != b.shape:
        return [f"{path}: shapes {tuple(a.shape)} / {tuple(b.shape)}"]
    if a.is_floating_point():
        fa, fb = a.double(), b.double()
        both = torch.isfinite(fa) & torch.isfinite(fb)
        diff = (fa - fb).abs()[both]
        bad = int((fa != fb).sum())
        largest = f"{diff.max().item():.3g}" if diff.numel() else "-"
        return [] if bad == 0 else [f"{path}: {bad} of {a.numel()} differ, largest {largest}"]
    bad = int((a != b).sum())
    return [] if bad == 0 else [f"{path}: {bad} of {a.numel()} {a.dtype} differ"]


class Trace(MTCNNDetector):
    """The eager cascade whose every step also runs compiled (as the pipeline compiles it) on the same inputs."""

    log: list

    def _step(self, name):
        eager_step = getattr(self, name)
        if name not in self._compiled:
            self._compiled[name] = torch.compile(eager_step, dynamic=None, options=mtcnn.eager_rounding())

        def both(*args):
            a = eager_step(*args)
            b = self._compiled[name](*args)
            notes = describe(a, b)
            if notes and name in ("_level_windows", "_nms"):  # same scores, other order: a tie broken otherwise
                sa, sb = a[1], b[1]
                notes.append("scores in order identical" if torch.equal(sa, sb) else
                             f"scores in order differ (largest {(sa - sb).abs().nan_to_num().max().item():.3g})")
            if notes and name == "_crops":  # what the crops' difference does to the net's scores
                net = self.rnet if args[2] == 24 else self.onet
                pa, pb = (self._run(net, c)["prob"][:, 1].float() for c in (a, b))
                notes.append(f"{'R' if args[2] == 24 else 'O'}-Net scores: {int((pa != pb).sum())} of {pa.numel()} "
                             f"differ, largest {(pa - pb).abs().max().item():.3g}")
            self.log.append((name, notes))
            return a

        return both


chosen = ([int(v) for v in os.environ["TRACE_FRAMES"].split(",")] if os.environ.get("TRACE_FRAMES")
          else differing.get("steps-1", [])[:traced])
if chosen:
    trace = Trace(*nets, capacity=Capacity(), **opts)
    for i in chosen:
        trace.log = []
        trace.detect(x[i:i + 1])
        bad = [(k, name, notes) for k, (name, notes) in enumerate(trace.log) if notes]
        print(f"part 2, frame {i}: {len(trace.log)} step calls, {len(bad)} differ", flush=True)
        for k, name, notes in bad[:8]:
            print(f"  call {k} {name}: " + "; ".join(notes[:6]))
print(f"done in {time.time() - t0:.0f} s")
