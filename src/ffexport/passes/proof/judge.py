"""Parity gates of a pass: its output against its parent ONNX and against the torch FP32 model.

Both comparisons run on the same real-face feeds (never random noise for a
registered module) with the module's gates for the pass's precision (configs/
applied), through :func:`ffexport.export.parity.check_parity`.  Outputs of the
parent and of torch are computed once per feed set and reused, so a pass that
tries several candidates (the FP16 and INT8 fallbacks) pays for them once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ...fsutil import final_name
from ...errors import ParityError
from ...export.parity import check_parity, failure_line
from ...fsutil import sha256_file


class Judge:
    def __init__(self, target, feeds: Sequence[dict], inputs_label: str, torch_reference: bool = True):
        self.target = target
        self.spec = target.spec
        self.feeds = list(feeds)
        self.inputs_label = inputs_label
        self.trained = target.trained()
        self._cache: dict[tuple[str, str], list[dict]] = {}
        self._torch: list[dict] | None = None
        self.torch_note = ""
        self._want_torch = torch_reference
        if not self.feeds:
            raise ParityError(f"parity for {target.label}: no inputs to compare on")

    # reference outputs ---------------------------------------------------------------------------
    def outputs(self, path: str | Path, qdq_reference: bool = True) -> list[dict]:
        """Outputs of ``path`` on the feeds (onnxruntime CPU).  A Q/DQ model runs as its operators define
        it (``qdq_reference``, the default): the artifact's own arithmetic, the same on every CPU and what
        TensorRT computes; False runs onnxruntime's fused integer kernels, which differ between CPUs."""
        from ...backends.ort import OrtRunner

        key = (str(Path(path).resolve()), sha256_file(path), qdq_reference)
        if key not in self._cache:
            with OrtRunner(path, spec=self.spec, name=Path(path).name, qdq_reference=qdq_reference) as r:
                self._cache[key] = [r.infer(f) for f in self.feeds]
        return self._cache[key]

    def forget(self, path: str | Path) -> None:
        p = str(Path(path).resolve())
        for k in [k for k in self._cache if k[0] == p]:
            del self._cache[k]

    def torch_outputs(self) -> list[dict] | None:
        if self._torch is not None or not self._want_torch:
            return self._torch
        rec = self.target.export_record() if self.target.registered else None
        if rec is None and getattr(self.spec, "origin", ""):
            self.torch_note = f"no torch reference: {self.spec.origin}; its FP32 ONNX is the reference"
            self._want_torch = False
            return None
        if rec is None:
            self.torch_note = ("no torch reference: " + ("a bring-your-own model" if not self.target.registered
                               else f"no export record for {self.target.fp32.name} in {self.target.folder}"))
            self._want_torch = False
            return None
        ckpt = rec.get("inputs", {}).get("checkpoint")
        if ckpt and not Path(ckpt).is_file():
            self.torch_note = f"no torch reference: checkpoint {ckpt} of the export is gone"
            self._want_torch = False
            return None
        from ...backends.torch import TorchRunner
        from ...models import build_model

        seed = int(rec.get("key", {}).get("seed", 0) or 0)
        model = build_model(self.spec, checkpoint=ckpt, seed=seed)
        with TorchRunner(model, spec=self.spec, name="torch fp32") as r:
            self._torch = [r.infer(f) for f in self.feeds]
        self.torch_note = f"torch fp32 eager CPU ({'checkpoint ' + ckpt if ckpt else f'seeded weights, seed {seed}'})"
        return self._torch

    def root_matches_torch(self) -> dict | None:
        """Parity of the FP32 root ONNX against the torch model now (FP32 gates), or None without a torch
        reference.  A failure means the model code or weights changed since the export."""
        ref = self.torch_outputs()
        if ref is None:
            return None
        root = self.outputs(self.target.fp32)
        return check_parity(self.spec, ref.__getitem__, root.__getitem__, range(len(self.feeds)), precision="fp32",
                            trained=self.trained, raise_on_fail=False, reference_label=self.torch_note,
                            candidate_label=self.target.fp32.name, inputs_label=self.inputs_label)

    def drop_torch(self, note: str) -> None:
        self._torch, self.torch_note, self._want_torch = None, note, False

    def reset_torch(self) -> None:
        self._torch, self.torch_note, self._want_torch = None, "", True

    # comparison ----------------------------------------------------------------------------------
    def compare(self, candidate: str | Path, parent: str | Path, precision: str,
                candidate_outputs: list[dict] | None = None) -> dict:
        """Parity of ``candidate`` against ``parent`` and against torch; never raises on a failed gate."""
        cand = candidate_outputs if candidate_outputs is not None else self.outputs(candidate)
        par = self.outputs(parent)
        idx = range(len(self.feeds))
        common = dict(precision=precision, trained=self.trained, raise_on_fail=False,
                      candidate_label=f"{final_name(candidate)} (onnxruntime CPU)", inputs_label=self.inputs_label)
        vs_parent = check_parity(self.spec, par.__getitem__, cand.__getitem__, idx,
                                 reference_label=f"{final_name(parent)} (onnxruntime CPU)", **common)
        ref = self.torch_outputs()
        vs_torch = None
        if ref is not None:
            vs_torch = check_parity(self.spec, ref.__getitem__, cand.__getitem__, idx,
                                    reference_label=self.torch_note, **common)
        vs_parent = _ungate_discrete(self.spec, vs_parent)
        vs_torch = _ungate_discrete(self.spec, vs_torch)
        return {"passed": vs_parent["passed"] and (vs_torch is None or vs_torch["passed"]),
                "precision": precision, "inputs": self.inputs_label, "samples": len(self.feeds),
                "vs_parent": vs_parent, "vs_torch": vs_torch,
                "torch_reference": self.torch_note or None}

    def require(self, result: dict, what: str) -> None:
        """Raise :class:`ParityError` (one line) when ``result`` failed a gate."""
        if result["passed"]:
            return
        which = result["vs_parent"] if not result["vs_parent"]["passed"] else result["vs_torch"]
        raise ParityError(failure_line(what, which["candidate"], which["reference"], which))


# Outputs that are an argmax of another output.  With seeded weights the heatmaps have no clear
# peak, so the smallest perturbation moves the argmax anywhere: like the task metric computed from
# them (see export.parity), their raw error is not meaningful.  The continuous outputs they are
# decoded from are gated instead; theirs is still recorded.
_DISCRETE = {"landmarks": ("points",)}


def _ungate_discrete(spec, record: dict | None) -> dict | None:
    if record is None or record.get("gated_on") != "fallback" or spec.task not in _DISCRETE:
        return record
    skip = [o for o in _DISCRETE[spec.task] if o in record["metrics"].get("rel_err", {})]
    if not skip:
        return record
    gates = []
    for g in record["gates"]:
        per_out = {k: v for k, v in record["metrics"].get(g["metric"], {}).items() if k not in skip}
        if g["metric"] == "nonfinite" or not per_out:
            gates.append(g)
            continue
        pick = min if g["op"] == ">=" else max
        out = pick(per_out, key=lambda k: per_out[k])
        ok = per_out[out] >= g["threshold"] if g["op"] == ">=" else per_out[out] <= g["threshold"]
        gates.append({**g, "output": out, "value": per_out[out], "passed": bool(ok and per_out[out] == per_out[out])})
    note = (f"{', '.join(skip)} (argmax of seeded heatmaps) recorded but not gated: the smallest perturbation "
            "moves an argmax without a clear peak")
    return {**record, "gates": gates, "passed": all(g["passed"] for g in gates),
            "note": "; ".join(x for x in (record.get("note"), note) if x)}


def summary(parity: dict | None) -> str:
    """One line per comparison for tables: 'vs parent: PASS cosine_min=0.9998; vs torch: ...'."""
    from ...export.parity import summary as one

    if not parity:
        return "-"
    if "vs_parent" not in parity:  # an export record
        return one(parity)
    parts = [f"vs parent: {one(parity['vs_parent'])}"]
    if parity.get("vs_torch"):
        parts.append(f"vs torch: {one(parity['vs_torch'])}")
    return "\n".join(parts)
