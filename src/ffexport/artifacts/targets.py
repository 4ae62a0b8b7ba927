"""What a pass works on: a registered module's artifact folder, or an ONNX file given with ``--onnx``.

A registered module (``--module``, or an ONNX file whose ``ffexport.spec``
metadata names a registered spec) gets real-face feeds through its own
preprocessing, its task metric and gates, and a comparison with the torch
model its ``fp32.onnx`` was exported from.  A bring-your-own model exported by
``ffexport onnx --model`` carries its IO contract in its metadata; any other
ONNX file works too, but its spec is unknown: a warning says so and every input
must be given as ``--input name:1x3x112x112``.  Both are gated on the raw
relative-error gates (:data:`ffexport.export.byo.BYO_GATES`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import ArtifactError, InputSpecError
from ..manifest import Manifest, artifact_dir

from ..vocab import FP16_ONNX as FP16, FP32_ONNX as FP32, INT8_ONNX as INT8, SIM_ONNX as SIM
from ..vocab import PRECISION_ONNX as PRECISION_FILE  # noqa: F401  (re-exported)


class UnknownSpecWarning(UserWarning):
    """An ONNX file that ffexport did not produce: its spec (preprocessing, gates) is unknown."""


@dataclass
class Target:
    spec: object  # ModuleSpec
    folder: Path
    fp32: Path  # the exported (or given) FP32 model: the root of the lineage
    names: dict = field(default_factory=lambda: {"sim": SIM, "fp16": FP16, "int8": INT8})
    registered: bool = True
    out: Path | None = None  # the artifacts root of a registered module
    source: Path | None = None  # --onnx: the file given
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.spec.key if self.registered or self.source is None else f"{self.source.name} ({self.spec.key})"

    def path(self, step: str) -> Path:
        return self.fp32 if step == "fp32" else self.folder / self.names[step]

    def manifest(self) -> Manifest:
        m = Manifest.load(self.folder)
        if self.registered:
            m.set_module(self.spec)
        elif "module" not in m.data:
            m.data.update({"module": self.spec.module, "variant": self.spec.variant, "contract": self.spec.contract()})
        return m

    def export_record(self) -> dict | None:
        """The export record of the FP32 root when it lives in this folder's manifest."""
        if self.fp32.parent.resolve() != self.folder.resolve():
            return None
        rec = Manifest.load(self.folder).get(self.fp32.name)
        if rec and rec.get("pass") == "export" and rec.get("key", {}).get("spec", self.spec.key) == self.spec.key:
            return rec
        return None

    def trained(self) -> bool:
        """True when the FP32 root was exported from trained weights (a checkpoint or package weights)."""
        rec = self.export_record()
        if rec is None:
            return self.registered and bool(getattr(self.spec, "pretrained", False))
        inputs = rec.get("inputs", {})
        return bool(inputs.get("checkpoint")) or str(inputs.get("weights", "")).startswith("trained")


def module_target(spec, out: str | Path = "artifacts") -> Target:
    """A registered module's folder under ``out``; a user's ONNX file adopted as the module (``spec.origin``)
    is its own root: no torch export above it."""
    folder = artifact_dir(out, spec)
    user = spec.origin and spec.builder == ""
    if user and not (folder / FP32).is_file():
        raise ArtifactError(f"{folder / FP32} is missing: give the user's file again with --onnx {spec.module}=PATH")
    return Target(spec, folder, folder / FP32, registered=True, out=Path(out), source=(folder / FP32) if user else None)


def _names_for(path: Path) -> dict:
    if path.name in (FP32, SIM):
        return {"sim": SIM, "fp16": FP16, "int8": INT8}
    stem = path.name[:-len(".onnx")] if path.name.endswith(".onnx") else path.stem
    stem = stem[:-len(".sim")] if stem.endswith(".sim") else stem
    return {"sim": f"{stem}.sim.onnx", "fp16": f"{stem}.fp16.onnx", "int8": f"{stem}.int8.onnx"}


def onnx_target(path: str | Path, inputs: Sequence[str] = (), out: str | Path | None = None,
                config_dir: str | Path | None = None) -> Target:
    """The target for ``--onnx PATH`` (see the module docstring)."""
    from .. import specs
    from ..config import resolve_spec
    from ..export.byo import byo_spec, parse_input_spec
    from ..passes import graph

    path = Path(path)
    model = graph.load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    key = meta.get("ffexport.spec", "")
    module, _, variant = key.partition("/")
    model_inputs = [i.name for i in graph.graph_inputs(model)]
    model_outputs = [o.name for o in model.graph.output]
    registered = bool(module) and module in specs.modules() and variant in specs.variants(module)
    notes: list[str] = []
    if registered:
        if inputs:
            raise InputSpecError(f"{path.name} was exported by ffexport for {key}: its inputs are known; drop --input")
        spec = resolve_spec(module, variant, directory=config_dir)
        if model_inputs != spec.input_names or model_outputs != spec.output_names:
            raise ArtifactError(f"{path} says it is {key} but its IO {model_inputs} -> {model_outputs} does not "
                                f"match the spec's {spec.input_names} -> {spec.output_names}")
    elif key and "ffexport.contract" in meta and not inputs:
        spec = _spec_from_contract(json.loads(meta["ffexport.contract"]), module or path.stem)
    else:
        if not key:
            msg = (f"{path.name} was not produced by ffexport (no ffexport.spec metadata): its spec is unknown, "
                   "so preprocessing comes from --input shapes and parity uses the raw relative-error gates")
            warnings.warn(msg, UnknownSpecWarning, stacklevel=2)
            notes.append(msg)
        if not inputs:
            raise InputSpecError(f"{path.name} has no ffexport spec: give each input as --input NAME:DIMxDIM... "
                                 f"(its inputs are {', '.join(model_inputs)})")
        args = [parse_input_spec(s) for s in inputs]
        names = [a.name for a in args]
        if sorted(names) != sorted(model_inputs) or len(set(names)) != len(names):
            raise InputSpecError(f"--input names {names} do not match the inputs of {path.name}: {model_inputs}")
        order = {n: i for i, n in enumerate(model_inputs)}
        args.sort(key=lambda a: order[a.name])
        dims = graph.io_dims(model)
        dynamic = all(dims.get(a.name) and isinstance(dims[a.name][0], str) for a in args)
        spec = byo_spec(module or path.stem, args, model_outputs, dynamic)
    folder = path.parent
    if out is not None:
        folder = artifact_dir(out, spec) if registered else Path(out) / spec.module
    t = Target(spec, folder, path, _names_for(path), registered=registered, out=Path(out) if out else None,
               source=path, notes=notes)
    if registered and out is None:
        t.out = folder.parent  # an artifact folder: its siblings are the other modules
    return t


def _spec_from_contract(contract: dict, name: str):
    """A bring-your-own spec from the ``ffexport.contract`` an ``ffexport onnx --model`` export carries."""
    from ..export.byo import BYO_GATES
    from ..specs.base import ModuleSpec, TensorSpec

    def tensor(d):
        shape = tuple(x if isinstance(x, int) else str(x) for x in d["shape"])
        return TensorSpec(d["name"], shape, d.get("dtype") or "float32", example={"batch": 1})

    return ModuleSpec(module=contract.get("module") or name, variant=contract.get("variant") or "byo",
                      summary="bring-your-own model", inputs=tuple(tensor(d) for d in contract["inputs"]),
                      outputs=tuple(tensor(d) for d in contract["outputs"]), builder="", task="raw",
                      gates=BYO_GATES, fallback_gates=BYO_GATES)
