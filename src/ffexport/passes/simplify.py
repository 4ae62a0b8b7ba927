"""Simplify an FP32 ONNX model: onnxsim first, onnxslim where onnxsim fails or breaks parity.

A simplified model must keep every symbolic axis of its parent (the dynamic
batch axis above all) and pass the FP32 parity gates against its parent and
the torch model on real faces; otherwise the next tool is tried, and when none
passes the pass fails and ``dst`` is left as it was.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Callable

from .._lazy import require
from ..errors import ModelLoadError, ParityError
from ..fsutil import atomic_path
from . import graph

TOOLS = ("onnxsim", "onnxslim")


def _onnxsim(model):
    onnxsim = require("onnxsim", "simplifying ONNX models")
    with contextlib.redirect_stdout(io.StringIO()):
        simplified, ok = onnxsim.simplify(model, check_n=0)
    if not ok:
        raise RuntimeError("onnxsim's own check failed")
    return simplified


def _onnxslim(model):
    onnxslim = require("onnxslim", "simplifying ONNX models")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return onnxslim.slim(model)


_RUN = {"onnxsim": _onnxsim, "onnxslim": _onnxslim}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def simplify(src: str | Path, dst: str | Path, judge, *, tool: str = "auto",
             progress: Callable[[str], None] | None = None) -> dict:
    """Write the simplified ``src`` to ``dst``; return the pass's record fields (tool, op counts, parity)."""
    onnx = require("onnx")
    say = progress or (lambda _m: None)
    src, dst = Path(src), Path(dst)
    model = graph.load(src)
    before = graph.op_counts(model)
    tools = TOOLS if tool == "auto" else (tool,)
    tried: list[dict] = []
    with atomic_path(dst) as tmp:
        for name in tools:
            say(f"simplify with {name}")
            parent_copy = onnx.ModelProto()
            parent_copy.CopyFrom(model)
            try:
                out = _RUN[name](parent_copy)
                lost = graph.dynamic_axes_lost(model, out, judge.spec)
                if lost:
                    raise RuntimeError(f"dynamic axes {', '.join(lost)} became fixed")
                graph.copy_metadata(model, out)
                onnx.checker.check_model(out)
                graph.save(out, tmp)
            except Exception as exc:  # each tool fails in its own way; the next one is tried
                tried.append({"tool": name, "failed": _first_line(exc)})
                continue
            say(f"parity of the {name} result")
            parity = judge.compare(tmp, src, "fp32")
            judge.forget(tmp)
            if not parity["passed"]:
                bad = next(g for r in (parity["vs_parent"], parity["vs_torch"]) if r for g in r["gates"]
                           if not g["passed"])
                tried.append({"tool": name, "failed": f"parity: {bad['output']} {bad['metric']}={bad['value']:.4g} "
                                                      f"fails {bad['op']} {bad['threshold']:g}"})
                continue
            return {"tool": name, "fallback_from": tried, "ops_before": before, "ops_after": graph.op_counts(out),
                    "nodes_before": sum(before.values()), "nodes_after": len(out.graph.node), "parity": parity}
        why = "; ".join(f"{t['tool']}: {t['failed']}" for t in tried)
        if all(not t["failed"].startswith("parity") for t in tried):
            raise ModelLoadError(f"cannot simplify {src.name}: {why}")
        raise ParityError(f"simplify of {src.name} failed its gates with every tool ({why}); "
                          f"{dst.name} left as it was")
