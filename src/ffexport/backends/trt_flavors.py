"""TensorRT flavours behind one API shape: TensorRT 10.x, TensorRT 11.x and TensorRT for RTX.

All three expose the same Python objects (Builder, OnnxParser, Runtime,
ICudaEngine, IExecutionContext); they differ in a few facts, kept here:

* strong typing: opt-in with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``
  on 10.x; always on in 11.x (the flag is accepted and ignored) and in RTX
  (a network made with no flags reports ``get_flag(STRONGLY_TYPED) == True``);
* building: TensorRT 10/11 build for the GPU they run on; TensorRT for RTX
  builds ahead of time on a machine without a GPU, for a set of compute
  capabilities (``IBuilderConfig.set_compute_capability``);
* timing caches: used by 10/11; no-ops in RTX since 1.2 (its library says so,
  and refuses to read back the cache it serialises);
* engine files start with ``ftrt`` (TensorRT) or ``vtrt`` (TensorRT for RTX).

Nothing here imports TensorRT at module import time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType

from .._lazy import available, require
from ..errors import MissingDependencyError, RuntimeUnavailableError, UnknownNameError

FLAVORS = ("tensorrt", "tensorrt_rtx")
LABELS = {"tensorrt": "TensorRT", "tensorrt_rtx": "TensorRT-RTX"}
MAGIC = {b"ftrt": "tensorrt", b"vtrt": "tensorrt_rtx"}
INSTALL = {"tensorrt": "pip install tensorrt (TensorRT 10/11, needs an NVIDIA GPU to build and run)",
           "tensorrt_rtx": "pip install 'ffexport[trt]' (TensorRT for RTX: builds without a GPU)"}


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    cc: tuple[int, int]

    @property
    def cc_str(self) -> str:
        return f"{self.cc[0]}.{self.cc[1]}"


def local_gpu(index: int = 0) -> GpuInfo | None:
    """The CUDA GPU torch sees, or None (no torch, a CPU build of torch, or no GPU)."""
    if not available("torch"):
        return None
    torch = require("torch")
    try:
        if not torch.cuda.is_available() or torch.cuda.device_count() <= index:
            return None
        return GpuInfo(index, torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index)))
    except Exception:  # a broken driver is "no usable GPU", not a crash
        return None


@dataclass(frozen=True)
class Flavor:
    """One importable TensorRT flavour and the facts the builder and runner need about it."""

    name: str
    trt: ModuleType

    @property
    def version(self) -> str:
        return str(self.trt.__version__)

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def label(self) -> str:
        return f"{LABELS[self.name]} {self.version}"

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt_rtx"

    @property
    def builds_without_gpu(self) -> bool:
        return self.is_rtx

    @property
    def uses_timing_cache(self) -> bool:
        return not self.is_rtx

    def network_flags(self) -> int:
        """Creation flags for a strongly typed network (explicit batch is implicit since 10.0)."""
        flags = self.trt.NetworkDefinitionCreationFlag
        if self.name == "tensorrt" and self.major < 11:
            if not hasattr(flags, "STRONGLY_TYPED"):
                raise RuntimeUnavailableError(f"{self.label} has no strongly typed networks; "
                                              "ffexport needs TensorRT 10 or newer")
            return 1 << int(flags.STRONGLY_TYPED)
        return 0  # 11.x and RTX: strongly typed is the only mode

    def target_ccs(self) -> dict[str, object]:
        """RTX: compute capabilities an engine can be built for, '8.6' -> ComputeCapability.SM86."""
        enum = getattr(self.trt, "ComputeCapability", None)
        if enum is None:
            return {}
        out = {}
        for name, member in enum.__members__.items():
            m = re.fullmatch(r"SM(\d+)(\d)", name)
            if m:
                out[f"{int(m.group(1))}.{m.group(2)}"] = member
        return dict(sorted(out.items(), key=lambda kv: tuple(int(x) for x in kv[0].split("."))))

    def runs_on(self, gpu: GpuInfo) -> tuple[bool, str]:
        """Whether engines of this flavour can run on ``gpu`` at all, and why not.

        TensorRT for RTX runs on the compute capabilities of its ``ComputeCapability`` list and on later ones;
        on an H100 (9.0) its runtime says: "Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0".
        """
        if self.is_rtx:
            ccs = self.target_ccs()
            known = [tuple(int(x) for x in c.split(".")) for c in ccs]
            if known and gpu.cc_str not in ccs and tuple(gpu.cc) <= max(known):
                return False, (f"{self.label} does not support compute capability {gpu.cc_str} ({gpu.name}): "
                               f"engines built with it cannot run on this GPU (it supports {', '.join(ccs)} "
                               "and later)")
        return True, ""


def load(name: str, purpose: str = "TensorRT engines") -> Flavor:
    if name not in FLAVORS:
        raise UnknownNameError("TensorRT flavor", name, (*FLAVORS, "auto"))
    if not available(name):
        raise MissingDependencyError(f"{name} is not installed (needed for {purpose}): {INSTALL[name]}")
    return Flavor(name, require(name, purpose))


def resolve(name: str = "auto", *, for_build: bool = True, gpu: GpuInfo | None = None) -> Flavor:
    """``auto``: TensorRT when it is installed and a GPU is present, else TensorRT for RTX."""
    if name != "auto":
        flavor = load(name)
        if for_build and not flavor.builds_without_gpu and (gpu or local_gpu()) is None:
            raise RuntimeUnavailableError(f"{flavor.label} needs a CUDA GPU to build engines and none is present; "
                                          "use --flavor tensorrt_rtx to build ahead of time without a GPU")
        return flavor
    gpu = gpu or local_gpu()
    if available("tensorrt") and gpu is not None:
        return load("tensorrt")
    if available("tensorrt_rtx"):
        return load("tensorrt_rtx")
    if available("tensorrt"):
        raise RuntimeUnavailableError("TensorRT is installed but there is no CUDA GPU to build with; "
                                      f"install TensorRT for RTX to build without one: {INSTALL['tensorrt_rtx']}")
    raise MissingDependencyError(f"no TensorRT is installed: {INSTALL['tensorrt_rtx']}, or {INSTALL['tensorrt']}")


def sniff(header: bytes) -> str | None:
    """The flavour whose magic tag starts ``header``, or None."""
    return MAGIC.get(bytes(header[:4]))


# ---------------------------------------------------------------------------------------------
# Logging: every TensorRT call reports through an ILogger; keep what it says, answer in one line
# ---------------------------------------------------------------------------------------------

# Printed by TensorRT for RTX on a machine without a GPU for every call that touches CUDA; not the cause of anything.
_NOISE = ("cudaError 35",)
_SRC = re.compile(r"\s*In \w+ at /?_?src/[^\s)]+:\d+")
_TAG = re.compile(r"\[[\w./-]+(?::\d+)?(?::+ ?\w+)+(?::\d+)?\]\s*")
_CALL = re.compile(r"^(?:\w+::\w+:\s*)?(?:Error Code \d+:\s*)?")


def clean(message: str, limit: int = 320) -> str:
    """One readable line from a TensorRT message: source locations, tags and codes removed."""
    lines = [ln for ln in str(message).splitlines() if ln.strip() and not any(n in ln for n in _NOISE)]
    lines = [ln for ln in lines if not ln.startswith("Invalid Node - ")] or lines
    text = " ".join(ln.strip() for ln in lines)
    text = _SRC.sub("", text)
    text = _TAG.sub("", text)
    text = _CALL.sub("", text).strip()
    quoted = re.fullmatch(r'(?:Assertion failed:)?[^"]*?&&\s*"(.+)"', text)
    if quoted:
        text = quoted.group(1)
    elif text.startswith("Assertion failed:"):
        rest = text[len("Assertion failed:"):].strip()
        if "): " in rest:
            text = rest.split("): ", 1)[1]
        elif ": " in rest:
            text = rest.split(": ", 1)[1]
    text = re.sub(r"\s+", " ", text).strip(" ;")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def capture_logger(trt: ModuleType, echo=None):
    """An ``ILogger`` of ``trt`` that keeps errors, warnings and info (not verbose) for error lines."""

    class CaptureLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[tuple[int, str]] = []

        def log(self, severity, msg):
            sev = int(severity)
            if sev <= int(trt.ILogger.Severity.INFO):
                self.messages.append((sev, str(msg)))
                if echo is not None and sev <= int(trt.ILogger.Severity.WARNING):
                    echo(clean(msg))

        def errors(self) -> list[str]:
            limit = int(trt.ILogger.Severity.ERROR)
            errs = [m for s, m in self.messages if s <= limit]
            real = [m for m in errs if not any(n in m for n in _NOISE)]
            return [clean(m) for m in (real or errs)]

        def mentions(self, *needles: str) -> list[str]:
            return [m for _, m in self.messages if all(n.lower() in m.lower() for n in needles)]

        def clear(self) -> None:
            self.messages.clear()

    return CaptureLogger()
