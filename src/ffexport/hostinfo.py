"""What the host's CPU can do, as far as it changes numbers: the x86 vector extensions that select
onnxruntime's integer kernels."""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.lru_cache(maxsize=1)
def cpu_features() -> dict:
    """``{"model", "arch", "avx2", "avx512f", "vnni"}``; ``vnni`` is AVX512-VNNI or AVX-VNNI (exact u8 x s8
    dot products), read from /proc/cpuinfo (False where it cannot be read)."""
    model, flags = platform.processor() or "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model or platform.machine(), "arch": platform.machine(), "avx2": "avx2" in flags,
            "avx512f": "avx512f" in flags, "vnni": bool({"avx512_vnni", "avx_vnni"} & flags)}
