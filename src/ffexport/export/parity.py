"""Parity: run a reference and a candidate on the same real inputs and gate on the module's task metric.

The reference is the parent artifact (torch FP32 for an export, the parent
ONNX for a pass).  Metrics stream over the feeds, so memory stays bounded.
Gates come from the spec (with configs/ applied).  Where seeded weights make a
task metric meaningless (a seeded detector's boxes, a seeded landmarker's
argmax points), the spec's raw fallback gates are used instead and the record
says so; the task metric is still recorded where it can be computed.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

from .. import metrics as M
from ..errors import ParityError

Feeds = Mapping[str, "object"]
Infer = Callable[[Feeds], Mapping[str, "object"]]

# Task metrics that need trained weights to mean anything.
_NEEDS_TRAINED = {"detection": "a seeded detector's boxes are noise, so box IoU and keypoint error are not meaningful",
                  "landmarks": "a seeded landmarker's heatmaps have no clear peak, so argmax points are not meaningful"}


class _Acc:
    """Streaming per-output accumulators; ``worst`` keeps the worst value and which output had it."""

    def __init__(self):
        self.max_abs: dict[str, float] = {}
        self.sq_diff: dict[str, float] = {}
        self.sq_ref: dict[str, float] = {}
        self.nonfinite: dict[str, int] = {}
        self.task: dict[str, dict[str, float]] = {}  # metric -> output -> value

    def raw(self, name, ref, cand):
        torch = __import__("torch")
        if tuple(ref.shape) != tuple(cand.shape):
            raise ParityError(f"output '{name}' has shape {list(cand.shape)}, the reference {list(ref.shape)}")
        c64 = cand.detach().to("cpu", torch.float64)
        r64 = ref.detach().to("cpu", torch.float64)
        bad = int((~torch.isfinite(c64)).sum())
        self.nonfinite[name] = self.nonfinite.get(name, 0) + bad
        if bad:
            c64 = torch.nan_to_num(c64, nan=0.0, posinf=0.0, neginf=0.0)
        d = c64 - r64
        self.max_abs[name] = max(self.max_abs.get(name, 0.0), float(d.abs().max()) if d.numel() else 0.0)
        self.sq_diff[name] = self.sq_diff.get(name, 0.0) + float((d * d).sum())
        self.sq_ref[name] = self.sq_ref.get(name, 0.0) + float((r64 * r64).sum())

    def update(self, metric: str, name: str, value: float, worst=min):
        cur = self.task.setdefault(metric, {})
        cur[name] = worst(cur[name], value) if name in cur else value

    def rel_err(self) -> dict[str, float]:
        out = {}
        for n, sd in self.sq_diff.items():
            sr = self.sq_ref[n]
            out[n] = math.sqrt(sd / sr) if sr > 0 else (0.0 if sd == 0 else math.inf)
        return out


def _task_metrics(task: str, spec, ref: Mapping, cand: Mapping, acc: _Acc, trained: bool) -> None:
    if task == "embedding":
        for t in spec.outputs:
            acc.update("cosine_min", t.name, float(M.cosine(cand[t.name], ref[t.name]).min()))
    elif task in ("image", "blend"):
        for t in spec.outputs:
            r, c = ref[t.name], cand[t.name]
            if r.dim() != 4:
                continue
            r01, c01 = M.to_unit_range(r, t.value_range), M.to_unit_range(c, t.value_range)
            acc.update("psnr_db", t.name, float(M.psnr(c01, r01).min()))
            acc.update("ssim", t.name, float(M.ssim(c01, r01).min()))
    elif task == "landmarks":
        if "points" in ref:
            err = (cand["points"].double().cpu() - ref["points"].double().cpu()).norm(dim=-1).mean(-1)
            acc.update("point_err_px", "points", float(err.max()), worst=max)
    elif task == "detection" and trained:
        from ..vision.retinaface import box_iou, detect_postprocess

        for r, c in zip(detect_postprocess(ref), detect_postprocess(cand)):
            rb, rk = r[0].double().cpu(), r[1].double().cpu()
            cb, ck = c[0].double().cpu(), c[1].double().cpu()
            acc.update("detections", "boxes", float(len(rb)), worst=max)
            if len(rb) == 0:
                continue
            if len(cb) == 0:
                acc.update("box_iou_min", "boxes", 0.0)
                acc.update("kps_err_px", "boxes", math.inf, worst=max)
                continue
            iou = box_iou(rb, cb)
            best, idx = iou.max(dim=1)
            acc.update("box_iou_min", "boxes", float(best.min()))
            kerr = (ck[idx] - rk).norm(dim=-1).mean(-1)
            acc.update("kps_err_px", "boxes", float(kerr.max()), worst=max)


def check_parity(spec, reference: Infer, candidate: Infer, feeds: Iterable[Feeds], *, precision: str = "fp32",
                 trained: bool = False, reference_label: str = "reference", candidate_label: str = "candidate",
                 inputs_label: str = "", raise_on_fail: bool = True) -> dict:
    """Compare ``candidate`` with ``reference`` over ``feeds``; return the parity record.

    Raises :class:`ParityError` naming the output and metric when a gate fails
    (unless ``raise_on_fail`` is False; the record then has ``passed: False``).
    """
    acc = _Acc()
    n = 0
    for feed in feeds:
        ref = reference(feed)
        cand = candidate(feed)
        missing = [k for k in ref if k not in cand]
        if missing:
            raise ParityError(f"{candidate_label} lacks outputs {missing} of {reference_label}")
        for name in ref:
            acc.raw(name, ref[name], cand[name])
        _task_metrics(spec.task, spec, ref, cand, acc, trained)
        n += 1
    if n == 0:
        raise ParityError(f"parity for {spec.key}: no inputs to compare on")

    meaningful = spec.task not in _NEEDS_TRAINED or trained
    use_fallback = (not meaningful) or not spec.gates_for(precision)
    gates = spec.fallback_gates.get(precision, ()) if use_fallback else spec.gates_for(precision)
    note = ""
    if not meaningful:
        note = f"seeded weights: {_NEEDS_TRAINED[spec.task]}; gated on the raw fallback instead"
    values: dict[str, dict[str, float]] = {"max_abs": acc.max_abs, "rel_err": acc.rel_err(), **acc.task}

    results = []
    for g in gates:
        per_out = values.get(g.metric)
        if not per_out:
            raise ParityError(f"parity for {spec.key}: gate metric {g.metric!r} was not computed "
                              f"(outputs {sorted(values.get('max_abs', {}))})")
        pick = min if g.op == ">=" else max
        out_name = pick(per_out, key=lambda k: per_out[k])
        value = per_out[out_name]
        results.append({"metric": g.metric, "op": g.op, "threshold": g.threshold, "output": out_name,
                        "value": value, "passed": g.passes(value)})
    for name, bad in acc.nonfinite.items():
        if bad:
            results.append({"metric": "nonfinite", "op": "<=", "threshold": 0, "output": name,
                            "value": bad, "passed": False})

    record = {
        "reference": reference_label,
        "candidate": candidate_label,
        "inputs": inputs_label,
        "samples": n,
        "precision": precision,
        "task": spec.task,
        "task_metric_meaningful": meaningful,
        "gated_on": "fallback" if use_fallback else "task",
        "note": note,
        "metrics": values,
        "nonfinite": acc.nonfinite,
        "gates": results,
        "passed": all(r["passed"] for r in results),
    }
    if raise_on_fail and not record["passed"]:
        raise ParityError(failure_line(spec.key, candidate_label, reference_label, record))
    return record


def failure_line(what: str, cand: str, ref: str, record: dict) -> str:
    bad = [r for r in record["gates"] if not r["passed"]]
    r = bad[0]
    if r["metric"] == "nonfinite":
        detail = f"output '{r['output']}' has {r['value']} non-finite values (overflow to inf/NaN)"
    else:
        detail = f"output '{r['output']}' {r['metric']} {r['value']:.6g} fails {r['op']} {r['threshold']:g}"
    more = f" (+{len(bad) - 1} more failed gates)" if len(bad) > 1 else ""
    return f"parity failed for {what}: {cand} vs {ref}: {detail}{more}"


def summary(record: dict | None) -> str:
    """One short human line for tables: each gate's value."""
    if not record:
        return "-"
    parts = []
    for r in record["gates"]:
        v = r["value"]
        parts.append(f"{r['metric']}={v:.4g}" if isinstance(v, float) else f"{r['metric']}={v}")
    return ("PASS " if record["passed"] else "FAIL ") + ", ".join(parts)
