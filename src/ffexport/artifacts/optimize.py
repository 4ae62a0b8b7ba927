"""export -> simplify -> FP16 or INT8, skipping every step whose inputs have not changed.

Each step has a *key*: its parent's sha256, its options, the gates it must pass,
the faces it is judged (and calibrated) on, and the versions of the tools that
make it.  The manifest stores the key with the artifact; a step whose artifact
still hashes as recorded and whose key matches is skipped.  ``force`` redoes
the steps named in it.  A failed gate raises and leaves the previous artifact
and its record untouched.

Defaults come from ``configs/<module>.yaml`` (keys ``fp16``, ``int8`` and
``calibration``); explicit arguments override them:

.. code-block:: yaml

    fp16: {keep_io_types: true, keep_fp32: [node names]}
    int8: {method: minmax, op_types: [Conv, Gemm, ...], exclude: [node names], dedicated_qdq_pair: false}
    calibration: {samples: 24, parity_samples: 8}
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..errors import ArtifactError, CalibrationError, ConfigError, InputSpecError, UnknownNameError
from ..fsutil import ensure_writable_dir, sha256_file
from ..manifest import new_record
from ..vocab import PRECISIONS
from ..passes import calib as C
from ..passes.judge import Judge
from .targets import FP32, PRECISION_FILE, Target, module_target, onnx_target

_TOOLS = {"simplify": ("onnx", "onnxruntime", "onnxsim", "onnxslim"),
          "fp16": ("onnx", "onnxruntime", "onnxconverter-common"),
          "int8": ("onnx", "onnxruntime")}
DEFAULT_CALIB = Path("calibration")
PROOF_FIELDS = ("faces", "parity_faces", "sources")  # key fields that only say which faces proved a step


@dataclass
class StepResult:
    step: str
    path: Path
    record: dict
    skipped: bool


def optimize(spec, precision: str, *, out: str | Path = "artifacts", calib: str | Path | None = None,
             force: bool = False, samples: int | None = None, method: str | None = None,
             progress: Callable[[str], None] | None = None, keep_io_types: bool | None = None,
             exclude: Sequence[str] = (), parity_samples: int | None = None,
             results: list | None = None, reprove: bool = True) -> Path:
    """Produce ``spec``'s artifact at ``precision`` (fp32 -> fp32.sim.onnx, fp16 -> fp16.onnx,
    int8 -> int8.onnx) under ``out``, running the missing or stale upstream steps; return its path.

    ``calib``: a folder of face photos with landmark JSONs; INT8 requires one
    (default ``./calibration`` when it exists); FP32/FP16 are judged on it when
    given, else on the built-in faces.  ``force`` redoes every step.
    ``results``, when a list, receives a :class:`StepResult` per step.

    Upstream steps (the simplified FP32 under an FP16/INT8 artifact) are kept when their parent, options,
    gates and tools are unchanged, whichever faces proved them; the requested step is proven again when
    its faces changed, unless ``reprove`` is False (an engine build that only needs a current artifact).
    INT8 is always recalibrated when its calibration faces changed.
    """
    _check_precision(precision)
    run = Run(module_target(spec, out), calib=calib, samples=samples, parity_samples=parity_samples,
              progress=progress, precision=precision)
    steps = {"export", "simplify", precision} if force else set()
    return run.chain(precision, force=steps, keep_io_types=keep_io_types, method=method, exclude=exclude,
                     results=results, reprove=reprove)


def optimize_onnx(path: str | Path, precision: str, *, inputs: Sequence[str] = (), out: str | Path | None = None,
                  calib: str | Path | None = None, force: bool = False, samples: int | None = None,
                  method: str | None = None, progress: Callable[[str], None] | None = None,
                  keep_io_types: bool | None = None, exclude: Sequence[str] = (),
                  parity_samples: int | None = None, results: list | None = None) -> Path:
    """:func:`optimize` for an ONNX file (bring your own): simplify it, then the precision step."""
    _check_precision(precision)
    run = Run(onnx_target(path, inputs, out), calib=calib, samples=samples, parity_samples=parity_samples,
              progress=progress, precision=precision)
    steps = {"simplify", precision} if force else set()
    return run.chain(precision, force=steps, keep_io_types=keep_io_types, method=method, exclude=exclude,
                     results=results)


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UnknownNameError("precision", precision, PRECISIONS)


def _normal(obj) -> dict:
    """The JSON round trip of ``obj`` (tuples become lists), as the manifest stores it."""
    return json.loads(json.dumps(obj, default=str))


class Run:
    """One target's steps, sharing its faces, feeds and parity references."""

    def __init__(self, target: Target, *, calib=None, samples=None, parity_samples=None, progress=None,
                 precision: str = "fp32", config_dir=None):
        from ..config import load_module_config

        self.target = target
        self.spec = target.spec
        self._say = progress
        self.cfg = load_module_config(self.spec.module, config_dir) if target.registered else {}
        ccfg = self.cfg.get("calibration") or {}
        if calib is None and precision == "int8" and DEFAULT_CALIB.is_dir():
            calib = DEFAULT_CALIB
        self.calib = Path(calib) if calib is not None else None
        self.samples = samples if samples is not None else ccfg.get("samples")
        self.parity_samples = int(parity_samples or ccfg.get("parity_samples") or C.DEFAULT_PARITY_SAMPLES)
        if self.parity_samples < 1:
            raise InputSpecError(f"parity samples must be positive, got {self.parity_samples}")
        self._faceset = None
        self._split = None
        self._judge = None
        self._sources = None

    def say(self, msg: str) -> None:
        if self._say:
            self._say(f"{self.target.label}: {msg}")

    # faces and feeds ---------------------------------------------------------------------------------
    def faceset(self) -> C.FaceSet:
        if self._faceset is None:
            if self.calib is None:
                self._faceset = C.builtin_set()
            else:
                # too few usable images fails here; more --samples than images fails in split()
                need = min(self.samples or C.MIN_CALIB_IMAGES, C.MIN_CALIB_IMAGES)
                self._faceset = C.scan_folder(self.calib, C.needs_landmarks(self.target), min_images=max(1, need))
        return self._faceset

    def split(self):
        if self._split is None:
            self._split = C.split(self.faceset(), self.samples, self.parity_samples)
        return self._split

    def sources(self) -> C.SourceIdentities | None:
        if self._sources is None and self.target.registered:
            self._sources = C.source_identities(self.spec, self.target.out)
        return self._sources

    def judge(self) -> Judge:
        if self._judge is None:
            _, parity_items, held_out = self.split()
            fs = self.faceset()
            feeds = list(C.feeds_for(self.target, fs.iter_faces(parity_items), self.sources()))
            label = f"{len(feeds)} faces of {fs.label}" + (
                ", held out from calibration" if held_out and self.calib else "")
            if not self.target.registered:
                label += f" ({C.raw_feeds_label(self.spec)})"
            self._judge = Judge(self.target, feeds, label)
        return self._judge

    def faces_key(self, with_calibration: bool) -> dict:
        fs = self.faceset()
        calib_items, parity_items, held_out = self.split()
        src = self.sources()
        key = {"faces": fs.sha256, "parity_faces": fs.describe(parity_items)["files"],
               "sources": (src.sha256 or src.label) if src else None}
        if with_calibration:
            key["calibration_faces"] = fs.describe(calib_items)["files"]
        return key

    def gates_key(self, precision: str) -> dict:
        return {"gates": [g.describe() for g in self.spec.gates_for(precision)],
                "fallback_gates": [g.describe() for g in self.spec.fallback_gates.get(precision, ())],
                "trained": self.target.trained()}

    # steps -------------------------------------------------------------------------------------------
    def chain(self, precision: str, *, force: set, keep_io_types=None, method=None, exclude=(), results=None,
              simplify_first: bool = True, reprove: bool = True) -> Path:
        results = results if results is not None else []
        if self.target.source is None:
            results.append(self.export(force="export" in force))
            parent = self.target.fp32
        else:
            self.prepare()
            parent = self.target.fp32
        if simplify_first:
            # a parent step proven on other faces (another precision's chain) still proves its parent
            results.append(self.simplify(parent, force="simplify" in force,
                                         loose=precision != "fp32" or not reprove))
            parent = results[-1].path
        if precision == "fp16":
            results.append(self.fp16(parent, force="fp16" in force, keep_io_types=keep_io_types, loose=not reprove))
        elif precision == "int8":
            results.append(self.int8(parent, force="int8" in force, method=method, exclude=exclude))
        return results[-1].path

    def prepare(self) -> None:
        """For an ONNX given with --onnx: compare it with the torch model only if it still matches it."""
        if self.target.source is None:
            return
        check = self.judge().root_matches_torch()
        if check is not None and not check["passed"]:
            self.judge().drop_torch(f"no torch reference: {self.target.fp32.name} no longer matches the torch "
                                    "model (its code or weights changed since the export)")

    def export(self, force: bool = False) -> StepResult:
        """The FP32 root: kept when it still matches the torch model, else exported (again) with the
        checkpoint, seed and batch its record names."""
        from ..export.onnx import export_module

        t = self.target
        rec = t.export_record()
        if rec is None and t.fp32.is_file() and not force:
            raise ArtifactError(f"{t.fp32} has no export record in {t.folder / 'manifest.json'}: re-export it with "
                                f"`ffexport onnx --module {self.spec.module} --force`, or pass it with --onnx")
        key = (rec or {}).get("key", {})
        ckpt = (rec or {}).get("inputs", {}).get("checkpoint")
        if ckpt and not Path(ckpt).is_file():
            raise ArtifactError(f"{t.fp32.name} was exported from checkpoint {ckpt}, which is gone: re-export with "
                                f"`ffexport onnx --module {self.spec.module} --checkpoint PATH --force`")
        if (not force and rec and t.fp32.is_file() and sha256_file(t.fp32) == rec.get("sha256")
                and key.get("opset") == self.spec.opset):
            check = self.judge().root_matches_torch()
            if check is None or check["passed"]:
                self.say("export: up to date, skipped")
                return StepResult("export", t.fp32, rec, True)
            self.say(f"export: {t.fp32.name} no longer matches the torch model (its code or weights changed): "
                     "exporting again")
        else:
            self.say("export: exporting torch -> ONNX")
        batch = key.get("batch", "dynamic")
        res = export_module(self.spec, t.out, checkpoint=ckpt, seed=int(key.get("seed", 0) or 0), force=True,
                            batch=batch if batch == "dynamic" else int(batch), progress=self._say)
        if self._judge is not None:
            self._judge.reset_torch()
            self._judge.forget(t.fp32)
        return StepResult("export", res.path, res.record, False)

    def _skip(self, name: str, key: dict, force: bool, loose: bool = False) -> StepResult | None:
        m = self.target.manifest()
        if force:
            return None
        if m.is_current(name, key):
            self.say(f"{name}: up to date (parent, options and tools unchanged), skipped")
            return StepResult(name, self.target.folder / name, m.get(name), True)
        if loose and "calibration_faces" not in key and m.is_current(name, key, ignore=PROOF_FIELDS):
            self.say(f"{name}: up to date (parent, options and tools unchanged; proven on other faces), skipped")
            return StepResult(name, self.target.folder / name, m.get(name), True)
        return None

    def _key(self, step: str, parent: Path, options: dict, precision: str, calibration: bool = False) -> dict:
        from .._lazy import version_of

        return _normal({"pass": step, "parent_sha256": sha256_file(parent), "options": options,
                        **self.gates_key(precision), **self.faces_key(calibration),
                        "versions": {d: version_of(d) for d in _TOOLS[step]}})

    def _parent(self, parent: Path) -> Path:
        if not Path(parent).is_file():
            raise ArtifactError(f"{parent} does not exist: run `ffexport optimize` (or `ffexport onnx`) first")
        return Path(parent)

    def _put(self, name: str, path: Path, parent: Path, step: str, options: dict, key: dict, t0: float,
             fields: dict, inputs: dict) -> StepResult:
        parity = fields.pop("parity")
        m = self.target.manifest()
        rec = new_record(path, pass_name=step, parent=parent, options=options, parity=parity, inputs=inputs,
                         key=key, started=t0, **fields)
        if Path(parent).parent.resolve() != self.target.folder.resolve():
            rec["parent"]["path"] = str(parent)
        m.put(name, rec)
        return StepResult(step, path, rec, False)

    def _inputs(self, calibration: bool = False) -> dict:
        fs = self.faceset()
        calib_items, parity_items, held_out = self.split()
        src = self.sources()
        d = {"parity_faces": fs.describe(parity_items), "held_out": bool(held_out and self.calib),
             "torch_reference": None}
        if calibration:
            d["calibration"] = fs.describe(calib_items)
        if src is not None:
            d["source_identities"] = src.label
        if fs.skipped:
            d["skipped_images"] = fs.skipped
        if self.target.notes:
            d["notes"] = self.target.notes
        return d

    def simplify(self, parent: Path, force: bool = False, tool: str = "auto", loose: bool = False) -> StepResult:
        from ..passes.simplify import simplify

        parent = self._parent(parent)
        name = self.target.names["sim"]
        options = {"tool": tool}
        key = self._key("simplify", parent, options, "fp32")
        return self._run(name, "simplify", parent, options, key, force,
                         lambda dst: simplify(parent, dst, self.judge(), tool=tool, progress=self.say), loose=loose)

    def _run(self, name: str, step: str, parent: Path, options: dict, key: dict, force: bool, make,
             calibration: bool = False, loose: bool = False) -> StepResult:
        """Skip ``name`` when its key is current; else ``make(dst)`` and record it with the faces used."""
        hit = self._skip(name, key, force, loose)
        if hit:
            return hit
        ensure_writable_dir(self.target.folder)
        t0 = time.time()
        dst = self.target.folder / name
        fields = make(dst)
        inputs = self._inputs(calibration=calibration)
        inputs["torch_reference"] = self.judge().torch_note or None
        return self._put(name, dst, parent, step, options, key, t0, fields, inputs)

    def fp16(self, parent: Path, force: bool = False, keep_io_types: bool | None = None,
             loose: bool = False) -> StepResult:
        from ..passes.fp16 import fp16

        parent = self._parent(parent)
        cfg = self.cfg.get("fp16") or {}
        _known(cfg, {"keep_io_types", "keep_fp32", "block_ops"}, "fp16", self.spec.module)
        kio = bool(cfg.get("keep_io_types", True)) if keep_io_types is None else bool(keep_io_types)
        block_ops = list(cfg.get("block_ops", self.spec.fp16_block_ops))
        keep_nodes = list(cfg.get("keep_fp32", []))
        name = self.target.names["fp16"]
        options = {"keep_io_types": kio, "block_ops": block_ops, "keep_fp32": keep_nodes}
        key = self._key("fp16", parent, options, "fp16")
        return self._run(name, "fp16", parent, options, key, force,
                         lambda dst: fp16(parent, dst, self.judge(), keep_io_types=kio, block_ops=block_ops,
                                          keep_nodes=keep_nodes, progress=self.say), loose=loose)

    def int8(self, parent: Path, force: bool = False, method: str | None = None,
             exclude: Iterable[str] = ()) -> StepResult:
        from ..passes.int8 import METHODS, int8

        parent = self._parent(parent)
        if self.calib is None:
            raise CalibrationError("INT8 needs calibration faces: pass --calib DIR (a folder of face photos with "
                                   "landmark JSONs, such as the repository's calibration/)")
        cfg = self.cfg.get("int8") or {}
        _known(cfg, {"method", "op_types", "exclude", "dedicated_qdq_pair"}, "int8", self.spec.module)
        method = method or cfg.get("method") or "minmax"
        if method not in METHODS:
            raise UnknownNameError("calibration method", method, METHODS)
        excl = sorted(set(exclude) | set(cfg.get("exclude", [])))
        from ..passes.int8 import DEFAULT_OP_TYPES

        op_types = list(cfg.get("op_types") or DEFAULT_OP_TYPES)
        dedicated = bool(cfg.get("dedicated_qdq_pair", False))
        name = self.target.names["int8"]
        options = {"method": method, "exclude": excl, "op_types": op_types, "dedicated_qdq_pair": dedicated,
                   "samples": len(self.split()[0])}
        key = self._key("int8", parent, options, "int8", calibration=True)

        def reader(input_names):
            return C.calibration_reader(self.target, self.faceset(), self.split()[0], self.sources(), input_names)

        return self._run(name, "int8", parent, options, key, force,
                         lambda dst: int8(parent, dst, self.judge(), reader, method=method, exclude=excl,
                                          op_types=op_types, dedicated_qdq_pair=dedicated, progress=self.say),
                         calibration=True)


def _known(cfg: dict, keys: set, section: str, module: str) -> None:
    if not isinstance(cfg, dict):
        raise ConfigError(f"configs/{module}.yaml: {section} must be a mapping")
    unknown = set(cfg) - keys
    if unknown:
        raise ConfigError(f"configs/{module}.yaml: unknown {section} keys {sorted(unknown)}; valid: {sorted(keys)}")


__all__ = ["optimize", "optimize_onnx", "Run", "StepResult", "PRECISION_FILE", "FP32"]
