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

import contextlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

from ..errors import ArtifactError, CalibrationError, InputSpecError, UnknownNameError
from ..fsutil import ensure_writable_dir, sha256_file, staging
from ..manifest import locked, new_record
from ..passes.proof import calib as C
from ..passes.base import Proof
from ..passes.proof.judge import Judge
from ..passes.registry import get as get_pass
from ..vocab import PRECISIONS
from .targets import FP32, PRECISION_FILE, Target, module_target, onnx_target

DEFAULT_CALIB = Path("calibration")
PROOF_FIELDS = ("faces", "parity_faces", "sources")  # key fields that only say which faces proved a step


@dataclass(frozen=True)
class Settings:
    """Everything that decides how artifacts are made, shared by every caller (the CLI's commands, the
    engine builds, the benchmark and the pipeline's build-on-demand).

    ``out``: the artifact root; ``config_dir``: the folder of ``<module>.yaml`` defaults (None: the usual
    lookup, see :mod:`ffexport.config`); ``calib``: the folder of calibration faces (INT8 needs one;
    FP32/FP16 are judged on it when given, else on the built-in faces); ``samples``: calibration faces;
    ``parity_samples``: faces the parity gates are checked on; ``force``: redo the chain's steps even when
    current; ``options``: explicit options per pass (``{"int8": {"method": "entropy"}}``), over the
    configs; ``progress``: status messages."""

    out: Path = Path("artifacts")
    config_dir: Path | None = None
    calib: Path | None = None
    samples: int | None = None
    parity_samples: int | None = None
    force: bool = False
    options: Mapping[str, Mapping] = field(default_factory=dict)
    progress: Callable[[str], None] | None = None

    def with_options(self, step: str, **values) -> "Settings":
        merged = {k: dict(v) for k, v in self.options.items()}
        merged.setdefault(step, {}).update({k: v for k, v in values.items() if v is not None})
        return replace(self, options=merged)


@dataclass
class StepResult:
    step: str
    path: Path
    record: dict
    skipped: bool


_LEGACY = {"method": "int8", "exclude": "int8", "keep_io_types": "fp16"}


def _settings(settings: Settings | None, legacy: dict) -> Settings:
    """``settings`` with keyword arguments of the older signature folded in (out=, calib=, keep_io_types=...)."""
    s = settings or Settings()
    plain = {k: legacy.pop(k) for k in list(legacy) if k in Settings.__dataclass_fields__ and k != "options"}
    if plain.get("out") is not None:
        plain["out"] = Path(plain["out"])
    if plain.get("calib") is not None:
        plain["calib"] = Path(plain["calib"])
    s = replace(s, **{k: v for k, v in plain.items() if v is not None or k in ("calib",)})
    for key in list(legacy):
        if key not in _LEGACY:
            raise TypeError(f"optimize() got an unexpected keyword argument {key!r}")
        value = legacy.pop(key)
        if value is not None and value != ():
            s = s.with_options(_LEGACY[key], **{key: value})
    return s


def optimize(target, precision: str, settings: Settings | None = None, *, results: list | None = None,
             reprove: bool = True, **legacy) -> Path:
    """Produce ``target``'s artifact at ``precision`` (fp32 -> fp32.sim.onnx, fp16 -> fp16.onnx,
    int8 -> int8.onnx), running the missing or stale upstream steps; return its path.

    ``target``: a module's spec (its folder under ``settings.out``) or a :class:`Target`.
    ``results``, when a list, receives a :class:`StepResult` per step.

    Upstream steps (the simplified FP32 under an FP16/INT8 artifact) are kept when their parent, options,
    gates and tools are unchanged, whichever faces proved them; the requested step is proven again when
    its faces changed, unless ``reprove`` is False (an engine build that only needs a current artifact).
    INT8 is always recalibrated when its calibration faces changed.
    """
    check_precision(precision)
    s = _settings(settings, dict(legacy))
    if not isinstance(target, Target):
        target = module_target(target, s.out)
    run = Chain(target, s, precision=precision)
    steps = ({"simplify", precision} | ({"export"} if target.source is None else set())) if s.force else set()
    # the chain's parents cannot change under it (a folder not made yet is locked by its export)
    with locked(target.folder, s.progress) if target.folder.is_dir() else contextlib.nullcontext():
        return run.chain(precision, force=steps, results=results, reprove=reprove)


def optimize_onnx(path: str | Path, precision: str, settings: Settings | None = None, *, inputs=(),
                  results: list | None = None, **legacy) -> Path:
    """:func:`optimize` for an ONNX file (bring your own): simplify it, then the precision step."""
    s = _settings(settings, dict(legacy))
    out = legacy.get("out")
    return optimize(onnx_target(path, inputs, out, s.config_dir), precision, s, results=results)


def _carry_emap(parent: Path, dst: Path) -> None:
    """Keep the source transform where loaders read it: the parent's last initializer ``emap`` (float32) stays the
    last initializer of every artifact made from it (a simplifier drops it as unused; FP16 would halve it)."""
    from ..fsutil import atomic_path
    from ..passes import graph

    emap = graph.last_initializer(graph.load(parent), "emap")
    if emap is None:
        raise ArtifactError(f"{parent} has no emap initializer (its last) although its spec transforms the source "
                            "through one: re-export it")
    model = graph.load(dst)
    have = graph.last_initializer(model, "emap")
    if have is not None and have.dtype == emap.dtype and (have == emap).all():
        return
    from ..export.onnx import set_last_initializer

    set_last_initializer(model, "emap", emap.astype("float32"))
    with atomic_path(dst) as tmp:
        tmp.write_bytes(model.SerializeToString())


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UnknownNameError("precision", precision, PRECISIONS)


def _normal(obj) -> dict:
    """The JSON round trip of ``obj`` (tuples become lists), as the manifest stores it."""
    return json.loads(json.dumps(obj, default=str))


class Chain:
    """One target's chain of steps (export or a given ONNX -> simplify -> precision step), sharing its faces,
    feeds and parity references."""

    def __init__(self, target: Target, settings: Settings | None = None, *, precision: str = "fp32", **legacy):
        from ..config import load_module_config

        s = _settings(settings, dict(legacy))
        self.settings = s
        self.target = target
        self.spec = target.spec
        self._say = s.progress
        self.cfg = load_module_config(self.spec.module, s.config_dir) if target.registered else {}
        ccfg = self.cfg.get("calibration") or {}
        calib = s.calib
        if calib is None and precision == "int8" and DEFAULT_CALIB.is_dir():
            calib = DEFAULT_CALIB
        self.calib = Path(calib) if calib is not None else None
        self.samples = s.samples if s.samples is not None else ccfg.get("samples")
        self.parity_samples = int(s.parity_samples or ccfg.get("parity_samples") or C.DEFAULT_PARITY_SAMPLES)
        if self.parity_samples < 1:
            raise InputSpecError(f"parity samples must be positive, got {self.parity_samples}")
        self._faceset = None
        self._split = None
        self._judge = None
        self._sources = None

    def options(self, step: str, **overrides):
        """The validated options of ``step``: configs, then the settings' explicit options, then ``overrides``."""
        from ..config import module_config_label

        p = get_pass(step)
        where = module_config_label(self.spec.module, self.settings.config_dir)
        explicit = {**dict(self.settings.options.get(step, {})), **{k: v for k, v in overrides.items() if v is not None}}
        return p.configure(self.cfg.get(p.config_key) if p.config_key else None, self.spec, explicit, where)

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
    def chain(self, precision: str, *, force: set, results=None, simplify_first: bool = True,
              reprove: bool = True, **overrides) -> Path:
        """export (or the given ONNX) -> simplify -> the precision's step; ``overrides`` are that step's options."""
        results = results if results is not None else []
        if precision == "int8" and self.calib is not None:
            self.faceset()  # a calibration folder without usable faces is one line before anything is written
        if self.target.source is None:
            results.append(self.export(force="export" in force))
            parent = self.target.fp32
        else:
            self.prepare()
            parent = self.target.fp32
        if simplify_first:
            # a parent step proven on other faces (another precision's chain) still proves its parent
            results.append(self.step("simplify", parent, force="simplify" in force,
                                     loose=precision != "fp32" or not reprove))
            parent = results[-1].path
        if precision in ("fp16", "int8"):
            results.append(self.step(precision, parent, force=precision in force, loose=precision == "fp16"
                                     and not reprove, **overrides))
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
        opts = get_pass("export").configure(None, self.spec, {"checkpoint": ckpt, "seed": int(key.get("seed", 0) or 0),
                                                              "batch": str(batch)})
        record = get_pass("export").run(None, t.fp32, Proof(progress=self._say, spec=self.spec), opts)
        if self._judge is not None:
            self._judge.reset_torch()
            self._judge.forget(t.fp32)
        return StepResult("export", t.fp32, record, False)

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

    def _key(self, step: str, parent: Path, options: dict, precision: str, calibration: bool = False,
             tools: tuple = ()) -> dict:
        from .._lazy import version_of

        return _normal({"pass": step, "parent_sha256": sha256_file(parent), "options": options,
                        **self.gates_key(precision), **self.faces_key(calibration),
                        "versions": {d: version_of(d) for d in tools}})

    def _parent(self, parent: Path) -> Path:
        if not Path(parent).is_file():
            raise ArtifactError(f"{parent} does not exist: run `ffexport optimize` (or `ffexport onnx`) first")
        return Path(parent)

    def _put(self, name: str, staged: Path, parent: Path, step: str, options: dict, key: dict, t0: float,
             fields: dict, inputs: dict) -> StepResult:
        """Commit the staged artifact and its record together (the parent's hash is the key's, taken at the start)."""
        parity = fields.pop("parity")
        m = self.target.manifest()
        rec = new_record(staged, name=name, pass_name=step, parent=parent, parent_sha256=key["parent_sha256"],
                         options=options, parity=parity, inputs=inputs, key=key, started=t0, **fields)
        if Path(parent).parent.resolve() != self.target.folder.resolve():
            rec["parent"]["path"] = str(parent)
        m.commit(name, staged, rec)
        return StepResult(step, self.target.folder / name, rec, False)

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

    def step(self, name: str, parent: Path, force: bool = False, loose: bool = False, **overrides) -> StepResult:
        """Run the pass ``name`` (simplify, fp16, int8) on ``parent`` unless its output is current."""
        parent = self._parent(parent)
        p = get_pass(name)
        opts = self.options(name, **overrides)
        calibration = name == "int8"
        precision = {"simplify": "fp32"}.get(name, name)
        record = p.record(opts)
        if calibration:
            if self.calib is None:
                raise CalibrationError("INT8 needs calibration faces: pass --calib DIR (a folder of face photos "
                                       "with landmark JSONs, such as the repository's calibration/)")
            record["samples"] = len(self.split()[0])


        ensure_writable_dir(self.target.folder)
        with locked(self.target.folder, self._say):
            self.target.manifest()  # a corrupt manifest fails here, before the work
            # the parent is hashed once, here, under the lock: the record names what the step was made from
            key = self._key(name, parent, record, precision, calibration=calibration, tools=p.tools)
            hit = self._skip(self.target.names["sim" if name == "simplify" else name], key, force, loose)
            if hit:
                return hit
            t0 = time.time()
            dst = self.target.folder / self.target.names["sim" if name == "simplify" else name]
            with staging(dst) as tmp:
                fields = p.run(parent, tmp, Proof(self.judge(), self._calibration_reader if calibration else None,
                                                  self.say, self.spec), opts)
                if self.spec.source_transform == "emap":
                    _carry_emap(parent, tmp)
                inputs = self._inputs(calibration=calibration)
                inputs["torch_reference"] = self.judge().torch_note or None
                return self._put(dst.name, tmp, parent, name, record, key, t0, fields, inputs)

    def _calibration_reader(self, input_names):
        return C.calibration_reader(self.target, self.faceset(), self.split()[0], self.sources(), input_names)

    # the single steps by name (the CLI's simplify / fp16 / int8 commands and older callers)
    def simplify(self, parent: Path, force: bool = False, loose: bool = False, **overrides) -> StepResult:
        return self.step("simplify", parent, force, loose, **overrides)

    def fp16(self, parent: Path, force: bool = False, loose: bool = False, **overrides) -> StepResult:
        return self.step("fp16", parent, force, loose, **overrides)

    def int8(self, parent: Path, force: bool = False, **overrides) -> StepResult:
        return self.step("int8", parent, force, **overrides)


__all__ = ["optimize", "optimize_onnx", "Chain", "Settings", "StepResult", "PRECISION_FILE", "FP32"]
