"""Device memory of one benchmark process, read three ways where the machine allows.

* **NVML** (``pynvml`` from nvidia-ml-py): the memory the driver has given this
  process (CUDA context, torch's cache, onnxruntime's arena, TensorRT, cuDNN and
  cuBLAS workspaces: everything).  Where the driver does not list this
  process (a container whose PIDs differ from the host's), the growth of the
  device's used memory since the process started is used instead; each bench
  worker runs alone on the GPU, so that is the same figure.
* **torch** caching allocator: peak allocated and reserved since the last reset.
* **the runner's own report** (``Runner.memory_report()``: TensorRT engine memory ...)
  and, derived, the memory outside torch's allocator: NVML minus the CUDA
  context baseline minus torch reserved (onnxruntime's arena for ORT rows).

Arenas and caches do not shrink during inference, so the figure read after the
timed loop is the high-water mark of the steady state.  On the CPU the host's
peak resident set size is reported instead.
"""

from __future__ import annotations

import importlib
import os
import resource
import sys

MB = float(1 << 20)
VRAM_SOURCES = {
    "nvml_process": "NVML used GPU memory of the benchmark process (context + every allocator), read after the timed loop",
    "nvml_device_delta": "growth of the GPU's used memory (NVML) from before the benchmark process touched CUDA to after "
                         "its timed loop (each process runs alone on the GPU)",
    "torch_reserved": "torch.cuda.max_memory_reserved (torch's allocator only; no NVML here)",
}


def host_peak_rss_mb() -> float:
    """Peak resident set size of this process (MB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (MB if sys.platform == "darwin" else 1024.0), 1)


class Nvml:
    """A lazily initialised NVML session; every method answers None when NVML cannot tell."""

    def __init__(self):
        self.error = ""
        try:
            self.nv = importlib.import_module("pynvml")
            self.nv.nvmlInit()
            self.ok = True
        except Exception as exc:  # not installed, no driver, no GPU
            self.nv, self.ok = None, False
            self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}".strip(": ")

    def handle(self, cuda_index: int = 0):
        """The NVML handle of CUDA device ``cuda_index`` (CUDA_VISIBLE_DEVICES respected)."""
        if not self.ok:
            return None
        try:
            visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
            if visible and cuda_index < len(visible):
                v = visible[cuda_index]
                if v.isdigit():
                    return self.nv.nvmlDeviceGetHandleByIndex(int(v))
                return self.nv.nvmlDeviceGetHandleByUUID(v if v.startswith("GPU-") else f"GPU-{v}")
            return self.nv.nvmlDeviceGetHandleByIndex(cuda_index)
        except Exception:
            return None

    def device_used_mb(self, handle) -> float | None:
        if handle is None:
            return None
        try:
            return self.nv.nvmlDeviceGetMemoryInfo(handle).used / MB
        except Exception:
            return None

    def process_used_mb(self, handle, pid: int | None = None) -> float | None:
        if handle is None:
            return None
        pid = os.getpid() if pid is None else pid
        for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            try:
                procs = getattr(self.nv, getter)(handle)
            except Exception:
                continue
            for p in procs:
                used = getattr(p, "usedGpuMemory", None)
                if p.pid == pid and used is not None:
                    return used / MB
        return None

    def sm_clock_mhz(self, handle) -> int | None:
        """The SM clock now (MHz): a GPU that idled between processes may run a short row below its boost clock."""
        if handle is None:
            return None
        try:
            return int(self.nv.nvmlDeviceGetClockInfo(handle, self.nv.NVML_CLOCK_SM))
        except Exception:
            return None

    def driver_version(self) -> str | None:
        if not self.ok:
            return None
        try:
            v = self.nv.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        except Exception:
            return None

    def name(self, handle) -> str | None:
        try:
            v = self.nv.nvmlDeviceGetName(handle)
            return v.decode() if isinstance(v, bytes) else str(v)
        except Exception:
            return None


class MemoryProbe:
    """Create it before the process touches CUDA (it reads the device's baseline), then
    :meth:`context_ready` once CUDA is initialised, :meth:`reset_peaks` before the measured
    work, and :meth:`read` after it."""

    def __init__(self, device: str = "cpu"):
        self.device = str(device)
        self.cuda = self.device.startswith("cuda")
        self.index = int(self.device.split(":")[1]) if self.cuda and ":" in self.device else 0
        self.nvml = Nvml() if self.cuda else None
        self._handle = self.nvml.handle(self.index) if self.nvml else None
        self.base_device_mb = self.nvml.device_used_mb(self._handle) if self.nvml else None
        self.context_mb: float | None = None

    def _nvml_process(self) -> tuple[float | None, str | None]:
        if self.nvml is None:
            return None, None
        mb = self.nvml.process_used_mb(self._handle)
        if mb is not None:
            return mb, "nvml_process"
        now = self.nvml.device_used_mb(self._handle)
        if now is not None and self.base_device_mb is not None:
            return max(0.0, now - self.base_device_mb), "nvml_device_delta"
        return None, None

    def context_ready(self) -> None:
        """Record the footprint of a bare CUDA context (after CUDA init, before any model)."""
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            self.context_mb, _ = self._nvml_process()

    def sm_clock_mhz(self) -> int | None:
        """The device's SM clock now, from NVML (None on the CPU or without NVML); read right after a timed loop."""
        return self.nvml.sm_clock_mhz(self._handle) if self.nvml else None

    def reset_peaks(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self, runner=None) -> dict:
        out: dict = {"host_peak_rss_mb": host_peak_rss_mb()}
        if runner is not None:
            try:
                rep = runner.memory_report() or {}
            except Exception as exc:  # a report is never worth failing a measurement
                rep = {"error": f"{type(exc).__name__}: {exc}"}
            if rep:
                out["runner"] = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in rep.items()}
        if not self.cuda:
            out.update(vram_mb=None, vram_source=None)
            return out
        import torch

        torch.cuda.synchronize(self.device)
        reserved = torch.cuda.max_memory_reserved(self.device) / MB
        out["torch_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(self.device) / MB, 1)
        out["torch_max_reserved_mb"] = round(reserved, 1)
        proc, source = self._nvml_process()
        if proc is not None:
            out[source + "_mb"] = round(proc, 1)
            if self.context_mb is not None:
                out["cuda_context_mb"] = round(self.context_mb, 1)
                out["outside_torch_mb"] = round(max(0.0, proc - self.context_mb - torch.cuda.memory_reserved(self.device) / MB), 1)
            out.update(vram_mb=round(proc, 1), vram_source=source)
        else:
            out.update(vram_mb=round(reserved, 1), vram_source="torch_reserved",
                       nvml_error=(self.nvml.error if self.nvml else "") or "NVML gave no reading")
        return out
