"""What a benchmark run measures: its settings, the parsing of the command's lists, and the plan of rows.

A row is one combination (module x backend x device x precision x batch, or one pipeline run).  Planning
needs no GPU and imports no torch: what the machine has comes in as the ``env`` facts an ``env`` worker
collected (:func:`ffexport.bench.report.collect_environment`), and a combination that cannot run here is
planned as a ``not_runnable`` row with its reason.

Rows are ordered so that a time budget (``--deadline``) cuts the least important ones: batch-1 rows on
the main device, the end-to-end pipeline runs, larger batches, then CPU rows on a GPU machine.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from ..errors import InputSpecError, UnknownNameError
from ..vocab import BACKENDS, PRECISIONS, TORCH_BACKENDS

DEVICES = ("cuda", "cpu")
# what --backends measures unless told: compile is asked for by name (its rows compile each model first, minutes)
DEFAULT_BACKENDS = ",".join(b for b in BACKENDS if b != "compile")
ISOLATION = ("forkserver", "subprocess")  # how a row gets its fresh process (see ffexport.bench.pool)
DEFAULT_ISOLATION = "forkserver" if sys.platform.startswith("linux") else "subprocess"
# the modules of the benchmarked pipeline (the enhancer only with Settings.enhance)
PIPELINE_MODULES = ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "encoder", "generator", "enhancer", "blender")


@dataclass
class Settings:
    """Everything a run depends on (the CLI fills it; tests build it directly).

    ``out`` is the artifact root (as on every command), ``report`` the folder of results.json, results.md
    and the plots (``{host}`` in it becomes :func:`host_tag`), ``work`` the cache and logs (default
    ``<out>/.bench``).
    """

    modules: list[str]
    backends: str = DEFAULT_BACKENDS
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))
    batches: list[int] = field(default_factory=lambda: [1])
    variants: dict[str, str] = field(default_factory=dict)
    onnx: dict[str, str] = field(default_factory=dict)  # --onnx MODULE=PATH: users' models, adopted before the rows
    contracts: dict[str, str] = field(default_factory=dict)  # --contract MODULE=FILE
    device: str = "auto"
    iters: int = 100
    warmup: int = 10
    max_time: float | None = 10.0
    rotate: int = 4
    pipeline: bool = False
    pipeline_batches: list[int] = field(default_factory=lambda: [1])  # frames per pipeline call
    resolution: str = "1080p"
    frames: int = 32
    faces: int = 1
    naive: bool = True
    naive_frames: int = 8
    video: bool = True
    video_rounds: int = 3  # the video row's rounds of encode-only then file to file (bench.e2e.VIDEO_ROUNDS)
    repeats: int = 1  # fresh processes per module row, taken in turns; the row is the one of the median p50
    enhance: bool = True
    calib: str | None = None
    config_dir: str | None = None
    out: str = "artifacts"
    work: str | None = None
    report: str = "benchmarks/results/{host}"
    timeout: float = 900.0
    prepare_timeout: float = 3600.0
    deadline: float | None = None
    resume: bool = False
    samples: int | None = None
    parity_samples: int | None = None
    prepare_jobs: int = 0
    tf32: bool = False
    threads: int = 0
    isolation: str = DEFAULT_ISOLATION
    cpu_batches: list[int] | None = None
    cpu_precisions: list[str] | None = None
    command: str = ""


# --- the command's lists ------------------------------------------------------------------------

@dataclass(frozen=True)
class Backend:
    name: str
    device: str

    @property
    def label(self) -> str:
        return f"{self.name} ({self.device})"


def parse_backends(text: str, device: str) -> list[Backend]:
    """``torch,ort,trt,ort:cpu`` -> backends; a name without ``:device`` runs on ``device``
    (TensorRT always on ``cuda``: where there is none, its rows say so)."""
    out: list[Backend] = []
    for item in (s.strip() for s in str(text).split(",")):
        if not item:
            continue
        name, _, dev = item.partition(":")
        if name not in BACKENDS:
            raise UnknownNameError("backend", name, BACKENDS)
        dev = dev or ("cuda" if name == "trt" else device)
        if dev not in DEVICES:
            raise InputSpecError(f"--backends {item}: unknown device {dev!r}; valid: {', '.join(DEVICES)}")
        b = Backend(name, dev)
        if b not in out:
            out.append(b)
    if not out:
        raise InputSpecError(f"--backends needs at least one of {', '.join(BACKENDS)}")
    return out


def parse_list(text: str, valid, what: str) -> list[str]:
    """``fp32,int8`` -> the names, each checked against ``valid``, duplicates dropped."""
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    for s in items:
        if s not in valid:
            raise UnknownNameError(what, s, valid)
    if not items:
        raise InputSpecError(f"--{what}s needs at least one value; valid: {', '.join(valid)}")
    return list(dict.fromkeys(items))


def parse_precisions(text: str) -> list[str]:
    return parse_list(text, PRECISIONS, "precision")


def parse_batches(text: str, option: str = "--batch") -> list[int]:
    try:
        out = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise InputSpecError(f"{option} expects comma-separated positive integers, got {text!r}") from None
    if not out or any(b < 1 for b in out):
        raise InputSpecError(f"{option} expects comma-separated positive integers, got {text!r}")
    return sorted(set(out))


def parse_variants(text: str | None) -> dict[str, str]:
    """``encoder=iresnet18,generator=simswap-256-lite`` -> {module: variant} (each checked)."""
    from .. import specs

    out: dict[str, str] = {}
    for item in (s.strip() for s in str(text or "").split(",")):
        if not item:
            continue
        module, sep, variant = item.partition("=")
        if not sep or not module.strip() or not variant.strip():
            raise InputSpecError(f"--variants expects MODULE=VARIANT[,...], got {item!r}")
        specs.get(module.strip(), variant.strip())
        out[module.strip()] = variant.strip()
    return out


# --- names ----------------------------------------------------------------------------------------

def slug(text: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3`` (for file and folder names)."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "unknown"


def host_tag(env: dict, device: str) -> str:
    """What ``{host}`` in the report folder becomes: the GPU's name, or ``cpu-<model>``."""
    if device == "cuda" and env.get("gpu", {}).get("name"):
        return slug(env["gpu"]["name"])
    return "cpu-" + slug(env.get("cpu", {}).get("model") or "unknown")


def resolve_device(requested: str, env: dict) -> str:
    """``auto`` -> ``cuda`` where torch sees a GPU, else ``cpu``; ``cuda``/``cpu`` as given."""
    if requested == "auto":
        return "cuda" if env.get("torch", {}).get("cuda") else "cpu"
    if requested in DEVICES:
        return requested
    raise InputSpecError(f"--device {requested!r}: use auto, {' or '.join(DEVICES)}")


def row_key(row: dict) -> str:
    """The identity of a row across runs (what ``--resume`` matches on)."""
    if row["kind"] == "module":
        return "|".join(str(row[k]) for k in ("kind", "module", "variant", "backend", "device", "precision", "batch"))
    return "|".join(str(row.get(k, 1)) for k in ("kind", "pipeline", "backend", "device", "precision", "resolution",
                                                 "faces", "batch"))


# --- the plan -------------------------------------------------------------------------------------

def why_not(env: dict, backend: Backend, precision: str) -> str | None:
    """Why ``backend`` at ``precision`` cannot run on the machine ``env`` describes (None when it can)."""
    if backend.name in TORCH_BACKENDS and precision == "int8":
        return (f"the {backend.name} backend runs fp32 and fp16; int8 is a Q/DQ ONNX artifact "
                "(its rows are the ort and trt ones)")
    if backend.device == "cuda" and not env.get("torch", {}).get("cuda"):
        return f"no CUDA GPU here (torch {env.get('torch', {}).get('version', '?')} sees none)"
    if backend.name == "ort":
        ort = env.get("onnxruntime") or {}
        if not ort.get("version"):
            return "onnxruntime is not installed: pip install 'ffexport[export]' (or 'ffexport[gpu]' for CUDA)"
        if backend.device == "cuda" and "CUDAExecutionProvider" not in ort.get("providers", []):
            return (f"onnxruntime {ort['version']} here has no CUDAExecutionProvider (providers: "
                    f"{', '.join(ort.get('providers', []))}): install onnxruntime-gpu (pip install 'ffexport[gpu]')")
    if backend.name == "trt":
        if backend.device != "cuda":
            return "TensorRT engines run on a CUDA GPU; this row's device is the CPU"
        trt = env.get("tensorrt") or {}
        if not trt.get("ok"):
            return trt.get("reason") or "no TensorRT runtime here"
    return None


def module_specs(s: Settings) -> dict:
    """{module: spec} of the modules measured one by one (each at its ``--variants`` variant or default)."""
    from ..config import resolve_spec

    specs = {}
    for module in s.modules:
        spec = resolve_spec(module, s.variants.get(module), None, s.config_dir)
        specs[spec.module] = spec
    return specs


def pipeline_variants(s: Settings) -> dict[str, str]:
    """The benchmarked pipeline's variant per module: ``configs/pipeline.yaml``'s (as ``swap`` runs it), then
    ``--variants``."""
    from ..pipeline.settings import load_pipeline_settings

    return {**dict(load_pipeline_settings(s.config_dir).modules), **s.variants}


def pipeline_specs(s: Settings) -> dict:
    """{module: spec} of the benchmarked pipeline: MTCNN, encoder, generator, enhancer, blender."""
    from ..config import resolve_spec

    variants = pipeline_variants(s)
    return {m: resolve_spec(m, variants.get(m), None, s.config_dir) for m in PIPELINE_MODULES
            if m != "enhancer" or s.enhance}


def stage_precision(module: str, precision: str) -> str:
    """The precision a pipeline stage runs at (a module with nothing to quantise runs FP32 for INT8, as the
    Pipeline does)."""
    from .. import specs

    return specs.get(module).stage_precision(precision)


def _status(row: dict, reason: str | None) -> dict:
    if reason:
        row.update(status="not_runnable", reason=reason)
    else:
        row.update(status="pending", reason=None)
    return row


def plan_rows(s: Settings, env: dict, device: str) -> list[dict]:
    """Every row of the run on the machine ``env`` describes, main device ``device``, in measuring order:
    ``pending`` rows to measure and ``not_runnable`` ones with their reason."""
    backends = parse_backends(s.backends, device)
    rows: list[dict] = []
    for spec in module_specs(s).values():
        for b in backends:
            off_main = b.device == "cpu" and device == "cuda"
            for p in (s.cpu_precisions or s.precisions) if off_main else s.precisions:
                for batch in (s.cpu_batches or s.batches) if off_main else s.batches:
                    row = {"kind": "module", "module": spec.module, "variant": spec.variant, "backend": b.name,
                           "device": b.device, "precision": p, "batch": batch}
                    reason = why_not(env, b, p)
                    if reason is None and spec.origin and b.name in TORCH_BACKENDS:
                        reason = f"{spec.origin} has no torch form: it runs on ort and trt"
                    elif reason is None and spec.origin and batch > spec.batch_profile[2]:
                        reason = f"{spec.origin} takes batch {spec.batch_profile[2]} at most (its graph fixes it)"
                    if reason is None and b.name == "trt" and batch > spec.batch_profile[2]:
                        reason = (f"the engine's batch profile ends at {spec.batch_profile[2]} "
                                  f"(configs/{spec.module}.yaml batch.max): build one for batch {batch} with "
                                  f"`ffexport trt --batch 1:1:{batch}`")
                    rows.append(_status(row, reason))
    if s.pipeline:
        # the pipeline runs on the main device only (a CPU pipeline on a GPU machine says little)
        for b in (b for b in backends if b.device == device or b.name == "trt"):
            for p in s.precisions:
                for batch in s.pipeline_batches:
                    # the naive baseline is eager, one frame at a time, by definition
                    naive = s.naive and b.name != "compile" and batch == min(s.pipeline_batches)
                    for kind in ("reference", "naive") if naive else ("reference",):
                        row = {"kind": "pipeline", "pipeline": kind, "backend": b.name, "device": b.device,
                               "precision": p, "resolution": s.resolution, "faces": s.faces,
                               "batch": 1 if kind == "naive" else batch}
                        rows.append(_status(row, why_not(env, b, p)))
    tiers = {"module": lambda r: 0 if (r["batch"] == 1 and r["device"] == device) else (
        2 if r["device"] == device else 3), "pipeline": lambda r: 1 if r["device"] == device else 3}
    # pipeline rows: batch by batch; module rows keep their own batch order
    order = {m: i for i, m in enumerate(s.modules)}
    brank = {b: i for i, b in enumerate(BACKENDS)}
    prank = {p: i for i, p in enumerate(PRECISIONS)}
    rows.sort(key=lambda r: (tiers[r["kind"]](r), r.get("batch", 0), order.get(r.get("module"), -1),
                             brank[r["backend"]], r["device"], prank[r["precision"]],
                             r.get("pipeline") == "naive"))
    return rows

