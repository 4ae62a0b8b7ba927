"""Check the MTCNN cascade on converted nets against the torch FP32 cascade, level by level.

    PYTHONPATH=src python benchmarks/mtcnn_check.py --device cuda --runs torch:fp32,torch:fp16,ort:fp32,ort:fp16 \
        --resolution 1080p --frames 8 --out benchmarks/results/<host>/mtcnn_check.json

For each run: per pyramid level the P-Net's largest |prob - reference prob| and the number of
windows over the threshold (vs the reference), the R-/O-Net survivors, the faces found per frame,
and the time of each net call (synchronised).  The frames are the pipeline benchmark's (1080p
pan-and-zoom over the calibration photographs), detected the way the pipeline detects them
(long side scaled to 1280).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", default="torch:fp32,ort:fp32,ort:fp16")
    ap.add_argument("--resolution", default="1080p")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--calib", default="calibration")
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--out", default="")
    ap.add_argument("--no-sync", action="store_true", help="no device synchronisation around net calls (as the pipeline runs)")
    a = ap.parse_args(argv)

    from ffexport import specs
    from ffexport.bench.e2e import frame_set, parse_resolution
    from ffexport.pipeline import mtcnn as M
    from ffexport.pipeline.face_detector import MTCNN_MAX_SIDE, MTCNN_MODULES
    from ffexport.pipeline.stages import make_stage

    dev = a.device
    hw = parse_resolution(a.resolution)
    frames, _ = frame_set({"calib": a.calib, "faces": 1, "frames": a.frames, "hw": hw})
    x = torch.from_numpy(__import__("numpy").stack(frames)).permute(0, 3, 1, 2).float().to(dev)
    h, w = x.shape[-2:]
    if max(h, w) > MTCNN_MAX_SIDE:
        k = MTCNN_MAX_SIDE / max(h, w)
        x = F.interpolate(x, size=(round(h * k), round(w * k)), mode="bilinear", align_corners=False, antialias=True)

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # an FP32 reference

    def sync():
        if dev.startswith("cuda") and not a.no_sync:
            torch.cuda.synchronize()

    class Timed:
        def __init__(self, stage):
            self.stage, self.calls = stage, []

        def __call__(self, feeds):
            sync()
            t0 = time.perf_counter()
            out = self.stage(feeds)
            sync()
            self.calls.append((tuple(feeds["input"].shape), (time.perf_counter() - t0) * 1e3))
            return out

    def cascade(backend, precision, how=""):
        import contextlib
        from unittest import mock

        import ffexport.backends.ort as ortb

        patches = contextlib.ExitStack()
        if "exhaustive" in how:  # cuDNN exhaustive algorithm search for every net
            real = ortb._graph_facts
            patches.enter_context(mock.patch.object(ortb, "_graph_facts",
                                                    lambda p: {**real(p), "dynamic_spatial": False}))
        with patches:
            nets = [Timed(make_stage(specs.get(m), backend, precision, dev, out=a.artifacts)) for m in MTCNN_MODULES]
        for n in nets:
            r = n.stage.runner
            if "nobind" in how:  # plain session.run with host arrays (no IO binding)
                def plain(feeds, r=r):
                    arrays = {k: r._cast(k, v).detach().cpu().contiguous().numpy() for k, v in feeds.items()}
                    outs = r.sess.run(r.output_names, arrays)
                    return {k: torch.from_numpy(o).to(dev) for k, o in zip(r.output_names, outs)}
                r._infer_cuda = plain
            if "hostcopy" in how:  # IO binding, outputs ORT allocates copied to the host (no DLPack)
                patches.enter_context(mock.patch.object(ortb, "_ortvalue_to_torch",
                                                        lambda v, d: torch.from_numpy(v.numpy()).to(d)))
        patches_after.append(patches)
        return M.MTCNNDetector(*nets, device=dev), nets

    patches_after = []

    def levels(det, imgs):
        out = []
        for s in det.scales(*imgs.shape[-2:]):
            sh, sw = max(M.CELL, __import__("math").ceil(imgs.shape[-2] * s)), max(M.CELL, __import__("math").ceil(imgs.shape[-1] * s))
            lv = M.normalise(F.interpolate(imgs, size=(sh, sw), mode="area"))
            r = det.pnet({"input": lv})
            out.append((r["prob"][:, 1].float(), r["reg"].float()))
        return out

    report = {"device": torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu",
              "frames": a.frames, "detect_hw": list(x.shape[-2:]), "runs": {}}
    ref_det, _ = cascade("torch", "fp32")
    ref_levels = levels(ref_det, x)
    ref_faces = ref_det.detect(x)
    for run in a.runs.split(","):
        backend, rest = run.split(":")
        precision, _, how = rest.partition("@")
        try:
            det, nets = cascade(backend, precision, how)
        except Exception as exc:  # a run that cannot start is reported, the others go on
            report["runs"][run] = {"error": f"{type(exc).__name__}: {exc}"}
            print(run, "ERROR", exc, flush=True)
            continue
        lv = levels(det, x)
        per_level = []
        for (p, r), (rp, rr) in zip(lv, ref_levels):
            same = p.shape == rp.shape
            per_level.append({
                "shape": list(p.shape), "ref_shape": list(rp.shape),
                "prob_max_abs": float((p - rp).abs().max()) if same else None,
                "reg_max_abs": float((r - rr).abs().max()) if same else None,
                "windows": int((p >= det.thresholds[0]).sum()), "ref_windows": int((rp >= det.thresholds[0]).sum()),
                "nan": bool(torch.isnan(p).any() or torch.isnan(r).any())})
        for n in nets:
            n.calls.clear()
        faces = det.detect(x)
        for n in nets:
            n.calls.clear()
        sync()
        t0 = time.perf_counter()
        for _ in range(3):
            det.detect(x[:1])
        sync()
        ms = (time.perf_counter() - t0) / 3 * 1e3
        calls = {m: [[list(s), round(t, 3)] for s, t in n.calls[:len(n.calls) // 3]] for m, n in zip(MTCNN_MODULES, nets)}
        report["runs"][run] = {
            "faces_per_frame": [int(f[0].shape[0]) for f in faces],
            "ref_faces_per_frame": [int(f[0].shape[0]) for f in ref_faces],
            "levels": per_level, "detect_ms_one_frame": round(ms, 2), "calls_one_frame": calls}
        print(run, "faces", report["runs"][run]["faces_per_frame"], "ref", report["runs"][run]["ref_faces_per_frame"],
              f"detect {ms:.1f} ms", flush=True)
        for i, l in enumerate(per_level):
            print(f"   level {i} {l['shape']} prob_max_abs={l['prob_max_abs']} windows={l['windows']}/{l['ref_windows']}"
                  f"{' NaN' if l['nan'] else ''}", flush=True)
        for m, c in calls.items():
            print(f"   {m}: {len(c)} calls, {sum(t for _, t in c):.1f} ms", flush=True)
        for p in patches_after:
            p.close()
        patches_after.clear()
    if a.out:
        from ffexport.fsutil import write_json_atomic

        write_json_atomic(a.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
