# python3 benchmarks/cascade_faces.py dump DEVICE OUT.npz      (the cascade's faces on the benchmark's frames)
# python3 benchmarks/cascade_faces.py compare A.npz B.npz       (two dumps: the frames whose faces moved)
"""#12 session 12: the MTCNN cascade's faces, eager (no graph, no compiled steps), on the benchmark's first 64
frames (1080p, scaled to the pipeline's 1280-px detection copy), one frame a call, torch FP32 and FP16 nets,
variable-size and fixed-shape cascades: each frame's boxes, landmarks and scores into OUT.npz (keys
``PRECISION-CASCADE-FRAME``, rows ``x1 y1 x2 y2, 5 points, score``), with the time a frame took.

``compare``: for each precision and cascade, the frames whose faces differ by more than 0.05 px between two
dumps (two commits: run ``dump`` with ``PYTHONPATH`` at each one's ``src``, or two devices), the median and largest
box and landmark differences, and the face counts that differ; then, within each dump, fixed against variable.
"""
import sys
import time

import numpy as np

FRAMES = 64


def dump(device: str, path: str) -> None:
    import torch
    import torch.nn.functional as F

    from ffexport import specs
    from ffexport.bench.e2e import frame_set
    from ffexport.pipeline.detectors import MTCNN_MODULES
    from ffexport.pipeline.mtcnn import Capacity, MTCNNDetector
    from ffexport.pipeline.stages import make_stage

    frames, _ = frame_set({"calib": None, "faces": 1, "frames": FRAMES, "hw": (1080, 1920)})
    x = torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(720, 1280), mode="bilinear", align_corners=False, antialias=True)
    out = {}
    for precision in ("fp32", "fp16"):
        nets = [make_stage(specs.get(m), "torch", precision, device, out="/tmp/arts") for m in MTCNN_MODULES]
        for name, cap in (("variable", None), ("fixed", Capacity())):
            det = MTCNNDetector(*nets, device=device, capacity=cap)
            t0 = time.perf_counter()
            faces = [det.detect(x[i:i + 1])[0] for i in range(FRAMES)]
            print(f"{precision} {name}: {(time.perf_counter() - t0) / FRAMES * 1000:.1f} ms a frame", flush=True)
            for i, (b, p, s) in enumerate(faces):
                out[f"{precision}-{name}-{i}"] = torch.cat([b.reshape(-1, 4), p.reshape(-1, 10), s[:, None]],
                                                           1).cpu().numpy()
    np.savez(path, **out)


def differences(a, b, key_a: str, key_b: str) -> str:
    rows, counts = [], 0
    for i in range(FRAMES):
        u, v = a[f"{key_a}-{i}"], b[f"{key_b}-{i}"]
        if u.shape != v.shape:
            counts += 1
        elif u.size:
            rows.append((np.abs(u[:, :4] - v[:, :4]).max(),
                         np.linalg.norm((u[:, 4:14] - v[:, 4:14]).reshape(-1, 5, 2), axis=-1).max()))
    d = np.array(rows)
    moved = d[:, 0] > 0.05
    median = (f", moved ones' median box {np.median(d[moved, 0]):.2f} px, landmarks {np.median(d[moved, 1]):.2f} px"
              if moved.any() else "")
    return (f"{moved.sum()} of {FRAMES} frames over 0.05 px, face counts differ on {counts}{median}, largest box "
            f"{d[:, 0].max():.3f} px, landmarks {d[:, 1].max():.3f} px")


def compare(path_a: str, path_b: str) -> None:
    a, b = np.load(path_a), np.load(path_b)
    for precision in ("fp32", "fp16"):
        for name in ("variable", "fixed"):
            key = f"{precision}-{name}"
            print(f"{key}: {path_a} against {path_b}: {differences(a, b, key, key)}")
    for path, d in ((path_a, a), (path_b, b)):
        for precision in ("fp32", "fp16"):
            print(f"{path} {precision}: fixed against variable: "
                  f"{differences(d, d, f'{precision}-fixed', f'{precision}-variable')}")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("dump", "compare"):
        sys.exit("usage: cascade_faces.py dump DEVICE OUT.npz | compare A.npz B.npz")
    if sys.argv[1] == "dump":
        dump(sys.argv[2], sys.argv[3])
    else:
        compare(sys.argv[2], sys.argv[3])
