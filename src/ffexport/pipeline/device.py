"""The pipeline's device: ``cpu``, ``cuda`` or ``cuda:N``, checked once with a one-line error."""

from __future__ import annotations

import contextlib
import os
import threading
import warnings

import torch

from ..errors import InputSpecError, RuntimeUnavailableError


def check_device(device: str) -> torch.device:
    """``torch.device`` for ``device``; a one-line error when CUDA is asked for and absent."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputSpecError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeUnavailableError("CUDA requested but no GPU is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeUnavailableError(f"{device} requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif dev.type != "cpu":
        raise InputSpecError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return dev


def from_host(values, device: torch.device, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """``values`` (host numbers, nested lists) as a tensor on ``device`` without waiting for the device: on CUDA
    through page-locked memory, a copy queued behind the work already on the stream (a plain
    ``torch.tensor(values, device=...)`` waits for that work to finish)."""
    host = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


# How a thread that needs the device's results waits for them on CUDA: spinning on a core until the work is done
# ("spin", CUDA's own choice when a process has fewer GPUs than cores), or asleep on the event ("block",
# cudaEventBlockingSync), leaving its core to the other threads.  Frames in memory spin (batch 1 on the H200 host:
# p50 8.1 ms spinning, 9.7 asleep); while a video is transcoded the threads sleep, where the codecs' threads need
# the cores (file to file at 8 frames a call: 0.73-0.90x of encode-only spinning, 0.80-0.92x asleep).  Measured in
# benchmarks/NOTES.md, #12 session 15.  $FFEXPORT_CUDA_WAIT, when set, chooses for every run.
CUDA_WAITS = ("spin", "block")
CUDA_WAIT_SET = os.environ.get("FFEXPORT_CUDA_WAIT", "").strip().lower() or None
if CUDA_WAIT_SET is not None and CUDA_WAIT_SET not in CUDA_WAITS:
    warnings.warn(f"FFEXPORT_CUDA_WAIT={CUDA_WAIT_SET!r} is not one of {', '.join(CUDA_WAITS)}; ignored",
                  stacklevel=1)
    CUDA_WAIT_SET = None
_asleep = 0  # runs under way that asked for sleeping waits (asleep_while_running), in any thread
_asleep_lock = threading.Lock()


def cuda_wait() -> str:
    """How host threads wait for the GPU now: $FFEXPORT_CUDA_WAIT when set, else ``block`` while a run asked
    for it (:func:`asleep_while_running`), else ``spin``."""
    return CUDA_WAIT_SET or ("block" if _asleep else "spin")


@contextlib.contextmanager
def asleep_while_running():
    """Threads wait for the GPU asleep while the block runs (in every thread of the process: runs in several
    threads overlap safely; the last one out restores spinning), unless $FFEXPORT_CUDA_WAIT chose.  Yields
    :func:`cuda_wait`'s answer at the start."""
    global _asleep
    with _asleep_lock:
        _asleep += 1
    try:
        yield cuda_wait()
    finally:
        with _asleep_lock:
            _asleep -= 1


def cuda_event() -> "torch.cuda.Event":
    """A CUDA event that a host thread will wait on (:func:`cuda_wait` says how)."""
    return torch.cuda.Event(blocking=cuda_wait() == "block")


def wait_for(device: torch.device) -> None:
    """Return once the work queued so far on ``device``'s current stream has finished (the thread waits as
    :func:`cuda_wait` says; a plain read-back such as ``.cpu()`` would spin); at once off CUDA."""
    if device.type == "cuda":
        done = cuda_event()
        done.record(torch.cuda.current_stream(device))
        done.synchronize()
