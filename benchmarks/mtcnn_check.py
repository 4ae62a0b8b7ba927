"""Check the MTCNN cascade on converted nets against the torch FP32 cascade, level by level.

    PYTHONPATH=src python benchmarks/mtcnn_check.py --device cuda --runs torch:fp32,torch:fp16,ort:fp32,ort:fp16 \
        --resolution 1080p --frames 8 --out ARTIFACTS --json benchmarks/results/<host>/mtcnn_check.json

For each run: per pyramid level the P-Net's largest |prob - reference prob| and the number of
windows over the threshold (vs the reference), the R-/O-Net survivors, the faces found per frame,
and the time of each net call (synchronised).  The frames are the pipeline benchmark's (1080p
pan-and-zoom over the calibration photographs), detected the way the pipeline detects them
(long side scaled to 1280) by :class:`ffexport.pipeline.mtcnn.MTCNNDetector`; the P-Net outputs of
each level are the ones the cascade itself computed.

A run is BACKEND:PRECISION, or ort:PRECISION@nobind (plain ``InferenceSession.run`` on host arrays, no IO
binding; ``@nobind+exhaustive`` with cuDNN's exhaustive algorithm search for every net).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F


class Timed:
    """A net ``{"input": x} -> outputs`` whose calls are timed (``sync`` around each) and, while ``keep`` is
    on, whose outputs are kept (the P-Net's: one call per pyramid level)."""

    def __init__(self, net, sync):
        self.net, self.sync = net, sync
        self.calls: list = []
        self.kept: list = []
        self.keep = False

    def __call__(self, feeds):
        self.sync()
        t0 = time.perf_counter()
        out = self.net(feeds)
        self.sync()
        self.calls.append((tuple(feeds["input"].shape), (time.perf_counter() - t0) * 1e3))
        if self.keep:
            self.kept.append((out["prob"][:, 1].float(), out["reg"].float()))
        return out

    def close(self) -> None:
        if hasattr(self.net, "close"):
            self.net.close()


class SessionNet:
    """An ONNX net on a plain onnxruntime session (``ffexport.backends.ort.ort_session``): host arrays in and
    out, no IO binding; ``exhaustive``: cuDNN's exhaustive algorithm search even for dynamic shapes."""

    def __init__(self, path, device: str, exhaustive: bool):
        from ffexport.backends.ort import ort_session

        self.sess = ort_session(path, device, dynamic_spatial=False if exhaustive else None)
        self.dtypes = {i.name: ("float16" if i.type == "tensor(float16)" else "float32") for i in self.sess.get_inputs()}
        self.names = [o.name for o in self.sess.get_outputs()]
        self.device = device

    def __call__(self, feeds):
        arrays = {k: v.detach().float().cpu().numpy().astype(self.dtypes[k]) for k, v in feeds.items()}
        outs = self.sess.run(self.names, arrays)
        return {k: torch.from_numpy(o).to(self.device) for k, o in zip(self.names, outs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", default="torch:fp32,ort:fp32,ort:fp16",
                    help="BACKEND:PRECISION[@nobind[+exhaustive]],... compared with torch fp32")
    ap.add_argument("--resolution", default="1080p")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--calib", default="calibration")
    ap.add_argument("--out", default="artifacts", help="artifact folder (one sub-folder per module)")
    ap.add_argument("--json", default="", help="write the report to this JSON file")
    ap.add_argument("--no-sync", action="store_true", help="no device synchronisation around net calls (as the pipeline runs)")
    a = ap.parse_args(argv)

    import numpy as np

    from ffexport import specs
    from ffexport.artifacts.find import onnx_artifact
    from ffexport.bench.e2e import frame_set, parse_resolution
    from ffexport.pipeline.detectors import MTCNN_MAX_SIDE, MTCNN_MODULES
    from ffexport.pipeline.mtcnn import MTCNNDetector
    from ffexport.pipeline.stages import make_stage

    dev = a.device
    hw = parse_resolution(a.resolution)
    frames, _ = frame_set({"calib": a.calib, "faces": 1, "frames": a.frames, "hw": hw})
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().to(dev)
    h, w = x.shape[-2:]
    if max(h, w) > MTCNN_MAX_SIDE:  # as the pipeline's detector does
        k = MTCNN_MAX_SIDE / max(h, w)
        x = F.interpolate(x, size=(round(h * k), round(w * k)), mode="bilinear", align_corners=False, antialias=True)

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # an FP32 reference

    def sync():
        if dev.startswith("cuda") and not a.no_sync:
            torch.cuda.synchronize()

    def net(module: str, backend: str, precision: str, how: str):
        ways = set(filter(None, how.split("+")))
        if not ways:
            return make_stage(specs.get(module), backend, precision, dev, out=a.out)
        if backend != "ort" or "nobind" not in ways or ways - {"nobind", "exhaustive"}:
            raise ValueError(f"@{how}: only ort:PRECISION@nobind[+exhaustive] is available")
        return SessionNet(onnx_artifact(specs.get(module), precision, out=a.out), dev, "exhaustive" in ways)

    def cascade(backend, precision, how=""):
        nets = [Timed(net(m, backend, precision, how), sync) for m in MTCNN_MODULES]
        return MTCNNDetector(*nets, device=dev), nets

    def detect_with_levels(det, nets, imgs):
        """Faces per frame, and the P-Net's (prob, reg) of every pyramid level of that detection."""
        pnet = nets[0]
        pnet.kept.clear()
        pnet.keep = True
        try:
            faces = det.detect(imgs)
        finally:
            pnet.keep = False
        return faces, list(pnet.kept)

    def close(nets):
        for n in nets:
            n.close()

    report = {"device": torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu",
              "frames": a.frames, "detect_hw": list(x.shape[-2:]), "runs": {}}
    ref_det, ref_nets = cascade("torch", "fp32")
    ref_faces, ref_levels = detect_with_levels(ref_det, ref_nets, x)
    close(ref_nets)
    for run in a.runs.split(","):
        backend, rest = run.split(":")
        precision, _, how = rest.partition("@")
        try:
            det, nets = cascade(backend, precision, how)
        except Exception as exc:  # a run that cannot start is reported, the others go on
            report["runs"][run] = {"error": f"{type(exc).__name__}: {exc}"}
            print(run, "ERROR", exc, flush=True)
            continue
        faces, lv = detect_with_levels(det, nets, x)
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
        sync()
        t0 = time.perf_counter()
        for _ in range(3):
            det.detect(x[:1])
        sync()
        ms = (time.perf_counter() - t0) / 3 * 1e3
        calls = {m: [[list(s), round(t, 3)] for s, t in n.calls[:len(n.calls) // 3]] for m, n in zip(MTCNN_MODULES, nets)}
        close(nets)
        report["runs"][run] = {
            "faces_per_frame": [int(f[0].shape[0]) for f in faces],
            "ref_faces_per_frame": [int(f[0].shape[0]) for f in ref_faces],
            "levels": per_level, "detect_ms_one_frame": round(ms, 2), "calls_one_frame": calls}
        print(run, "faces", report["runs"][run]["faces_per_frame"], "ref", report["runs"][run]["ref_faces_per_frame"],
              f"detect {ms:.1f} ms", flush=True)
        for i, lvl in enumerate(per_level):
            print(f"   level {i} {lvl['shape']} prob_max_abs={lvl['prob_max_abs']} windows={lvl['windows']}/"
                  f"{lvl['ref_windows']}{' NaN' if lvl['nan'] else ''}", flush=True)
        for m, c in calls.items():
            print(f"   {m}: {len(c)} calls, {sum(t for _, t in c):.1f} ms", flush=True)
    if a.json:
        from ffexport.fsutil import write_json_atomic

        write_json_atomic(a.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
