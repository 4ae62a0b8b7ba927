"""The streaming executor: host copies, uploads, GPU work and downloads of consecutive batches overlapped.

::

    source (decode) --> upload thread: frames -> ring slot (page-locked) -> upload on the copy-in stream
                    --(bounded queue, event)--> caller's thread: the compute stream waits for the upload's event,
                        runs the per-batch GPU function, records an event
                    --> copy-out stream: waits for that event, downloads into page-locked memory, records an event
                    --> results handed back in order once their download event has completed

While batch k runs on the compute stream, batch k+1 is copied into its slot and uploaded, and batch k-1 comes down.
The host never synchronises the device inside a batch: streams are ordered by events; the caller's thread waits
only for the download of an earlier batch (when ``depth`` downloads are in flight) and the upload thread only for
an earlier upload out of the slot it is about to refill.  The compute stream is the caller's current stream (the
runners, the CUDA graphs and onnxruntime's stream ordering see what they see in the serial path).

The ring holds ``slots`` host buffers, one batch each.  A slot is taken by the upload thread, filled with
``np.copyto`` (one copy, from the caller's array into page-locked memory), uploaded, and given back once the
compute function has returned for its batch; before it is filled again, the event of its upload (its consumer)
must have completed.  So at most ``slots`` batches are between the source and the compute function, and at most
``slots`` batches of input frames are on the device.  Downloads go to page-locked blocks of torch's caching host
allocator (torch records the copy's event on the block: a block is reused only after its download completed and
the caller dropped the frames that view it), at most ``depth`` of them waiting.

On a CPU the same executor runs with the same threads and no streams or events: the slot is the compute
function's input (no upload; so its outputs must not view its input, which is refilled once it returns), and
the outputs are the serial path's, bit for bit.

A batch whose frames differ in size (or an empty one) goes to ``fallback`` (the serial path), in order.  An
exception raised by the source, the frame check or the compute function is raised in the caller's thread as it
was raised; the upload thread then stops, and so does the source when it shares ``stop``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from .device import cuda_event
from .queues import END as _END
from .queues import Failure as _Failure
from .queues import put as _put

# frames (B x H x W x 3 uint8, on the device) -> (the frames that changed, T x H x W x 3 uint8 on the device, or None;
# their indices in the batch, ascending)
ComputeFn = Callable[[torch.Tensor], "tuple[torch.Tensor | None, list[int]]"]
Frames = Callable[[list[np.ndarray]], list[np.ndarray]]

SLOTS = 3  # host slots of the ring: one in the compute function, one uploaded and waiting, one being filled
DEPTH = 2  # downloads in flight before the caller's thread waits for the oldest
POLL_S = 0.1  # how often blocked threads look at the stop event
JOIN_S = 10.0  # how long a run waits for its upload thread to end after a failure


def as_arrays(batch) -> list[np.ndarray]:
    """A batch as a list of ``H x W x 3`` host arrays: a list of arrays (or host tensors), one ``H x W x 3``
    array, or a ``B x H x W x 3`` array or tensor."""
    if isinstance(batch, torch.Tensor):
        batch = list(batch.unbind(0)) if batch.ndim == 4 else [batch]
    elif isinstance(batch, np.ndarray):
        batch = [batch] if batch.ndim == 3 else list(batch)
    return [f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f) for f in batch]


class _Slot:
    """One host buffer of the ring (``capacity x H x W x 3`` uint8) and the event of its last upload."""

    __slots__ = ("index", "buffer", "array", "event")

    def __init__(self, index: int):
        self.index = index
        self.buffer: torch.Tensor | None = None
        self.array: np.ndarray | None = None
        self.event = None


class SlotRing:
    """``size`` host slots for batches of frames, page-locked when ``pinned``; taken and given back by index.

    ``allocations`` counts the buffers made (a slot grows when a batch is larger or its frames another size);
    ``peak_in_use`` is the most slots taken at once.
    """

    def __init__(self, size: int, pinned: bool):
        if size < 1:
            raise ValueError(f"a ring needs at least one slot, got {size}")
        self.size, self.pinned = int(size), bool(pinned)
        self.slots = [_Slot(i) for i in range(self.size)]
        self._free: queue.Queue = queue.Queue()
        for s in self.slots:
            self._free.put(s)
        self._count = threading.Lock()
        self.in_use = 0
        self.peak_in_use = 0
        self.allocations = 0

    def acquire(self, stop: threading.Event) -> _Slot | None:
        """A free slot; blocks until one is given back; None when ``stop`` is set first."""
        while not stop.is_set():
            try:
                slot = self._free.get(timeout=POLL_S)
            except queue.Empty:
                continue
            with self._count:
                self.in_use += 1
                self.peak_in_use = max(self.peak_in_use, self.in_use)
            return slot
        return None

    def release(self, slot: _Slot) -> None:
        with self._count:
            self.in_use -= 1
        self._free.put(slot)

    def fit(self, slot: _Slot, n: int, frame_shape: tuple[int, ...]) -> np.ndarray:
        """``slot``'s first ``n`` frames as a host array (the slot's last upload must have completed)."""
        b = slot.buffer
        if b is None or tuple(b.shape[1:]) != tuple(frame_shape) or b.shape[0] < n:
            slot.buffer = slot.array = None
            slot.buffer = torch.empty((n, *frame_shape), dtype=torch.uint8, pin_memory=self.pinned)
            slot.array = slot.buffer.numpy()
            self.allocations += 1
        return slot.array[:n]


class _Batch:
    """One batch between the upload thread and the compute function."""

    __slots__ = ("frames", "slot", "device", "uploaded")

    def __init__(self, frames: list[np.ndarray], slot: _Slot | None = None, device: torch.Tensor | None = None,
                 uploaded=None):
        self.frames, self.slot, self.device, self.uploaded = frames, slot, device, uploaded


class _Done:
    """A computed batch: its results once its download (if any) has completed."""

    __slots__ = ("frames", "touched", "host", "event")

    def __init__(self, frames: list[np.ndarray], touched: Sequence[int] = (), host: torch.Tensor | None = None,
                 event=None):
        self.frames, self.touched, self.host, self.event = frames, touched, host, event

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def result(self) -> list[np.ndarray]:
        if self.event is not None:
            self.event.synchronize()  # this batch's download (not the device)
        out = list(self.frames)  # frames without a face: returned as given, like the serial path
        if self.host is not None:
            changed = self.host.numpy()
            for j, b in enumerate(self.touched):
                out[b] = changed[j]
        return out


class _RunState:
    __slots__ = ("error",)

    def __init__(self):
        self.error: BaseException | None = None


class StreamingExecutor:
    """Runs ``compute`` (one batch of uploaded frames -> the frames it changed) over a stream of batches, with
    copies in and out overlapped with the compute of the neighbouring batches (see the module docstring).

    ``fallback`` runs a batch the ring cannot hold (frames of several sizes, or none) on the host arrays;
    ``check`` validates a batch's arrays in the upload thread (its exception is the caller's).
    """

    def __init__(self, compute: ComputeFn, device: str | torch.device, *, fallback: Frames,
                 check: Callable[[list[np.ndarray]], None] | None = None, slots: int = SLOTS, depth: int = DEPTH):
        dev = torch.device(device)
        self.cuda = dev.type == "cuda"
        if self.cuda and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self.device = dev
        self.compute, self.fallback, self.check = compute, fallback, check
        self.slots, self.depth = int(slots), max(0, int(depth))
        self.ring: SlotRing | None = None
        self._copy_in = self._copy_out = None
        # held by the upload thread around its CUDA calls, and by the caller's thread while it computes a batch
        # of a new shape (where CUDA graphs are captured and modules compiled: no other thread's CUDA calls then)
        self._cuda_calls = threading.Lock()
        self._shapes: set[tuple] = set()
        self._running = False

    # --- the run ------------------------------------------------------------------------------
    def run(self, batches: Iterable, stop: threading.Event | None = None) -> Iterator[list[np.ndarray]]:
        """The results of ``batches`` (each a list of ``H x W x 3`` uint8 arrays), one list per batch, in order.

        ``stop``: set it to end the run early (batches not yet returned are dropped); the run sets it when it
        fails or is closed early, so a source that shares it stops too.
        """
        if self._running:
            raise RuntimeError("this streaming executor is already running")
        self._running = True
        stop = stop if stop is not None else threading.Event()
        if self.ring is None:
            self.ring = SlotRing(self.slots, pinned=self.cuda)
        if self.cuda and self._copy_in is None:
            self._copy_in = torch.cuda.Stream(device=self.device)
            self._copy_out = torch.cuda.Stream(device=self.device)
        inbox: queue.Queue = queue.Queue(maxsize=self.slots)
        state = _RunState()
        ring = self.ring
        feeder = threading.Thread(target=self._feed, args=(iter(batches), inbox, stop, state, ring),
                                  name="ffexport-upload", daemon=True)
        pending: deque[_Done] = deque()
        finished = False
        try:
            feeder.start()
            while True:
                item = self._next(inbox, feeder, stop, state)
                if item is None or item is _END:
                    break
                if isinstance(item, _Failure):
                    raise item.exc
                pending.append(self._compute_one(item, ring))
                while pending and (len(pending) > self.depth or pending[0].ready()):
                    yield pending.popleft().result()
            while pending and not stop.is_set():
                yield pending.popleft().result()
            finished = True
        finally:
            if not finished:
                stop.set()
            feeder.join(timeout=JOIN_S)
            if not finished:
                # slots held by batches never computed: a fresh ring next run (torch keeps the page-locked
                # blocks, and reuses them only after their uploads completed)
                self.ring = None
            self._running = False

    def _next(self, inbox: queue.Queue, feeder: threading.Thread, stop: threading.Event, state: _RunState):
        """The next item from the upload thread; None when the run was stopped from outside."""
        while True:
            try:
                return inbox.get(timeout=POLL_S)
            except queue.Empty:
                if feeder.is_alive():
                    continue
                if not inbox.empty():
                    continue
                if state.error is not None:
                    raise state.error
                if stop.is_set():
                    return None
                raise RuntimeError("the upload thread stopped without finishing")

    # --- the upload thread ---------------------------------------------------------------------
    def _feed(self, source: Iterator, inbox: queue.Queue, stop: threading.Event, state: _RunState,
              ring: SlotRing) -> None:
        try:
            with torch.inference_mode(), (torch.cuda.device(self.device) if self.cuda else contextlib.nullcontext()):
                for batch in source:
                    if stop.is_set():
                        return
                    item = self._load(as_arrays(batch), stop, ring)
                    if item is None:
                        return
                    if not _put(inbox, item, stop):
                        if item.slot is not None:
                            ring.release(item.slot)
                        return
            _put(inbox, _END, stop)
        except BaseException as exc:  # raised in the caller's thread
            state.error = exc
            _put(inbox, _Failure(exc), stop)

    def _load(self, frames: list[np.ndarray], stop: threading.Event, ring: SlotRing) -> _Batch | None:
        """``frames`` copied into a slot and (on a GPU) uploaded; None when stopped while waiting for a slot."""
        if self.check is not None:
            self.check(frames)
        if not frames or any(f.shape != frames[0].shape for f in frames):
            return _Batch(frames)  # the fallback's
        slot = ring.acquire(stop)
        if slot is None:
            return None
        try:
            n, shape = len(frames), tuple(frames[0].shape)
            with self._cuda_calls if self.cuda else contextlib.nullcontext():
                if slot.event is not None:
                    slot.event.synchronize()  # the slot's last upload has finished reading it
                    slot.event = None
                host = ring.fit(slot, n, shape)
            for i, f in enumerate(frames):
                np.copyto(host[i], f)  # the one host copy (numpy lets other threads run meanwhile)
            if not self.cuda:
                return _Batch(frames, slot, slot.buffer[:n])
            with self._cuda_calls, torch.cuda.stream(self._copy_in):
                dev = slot.buffer[:n].to(self.device, non_blocking=True)
                uploaded = cuda_event()
                uploaded.record(self._copy_in)
            slot.event = uploaded
            return _Batch(frames, slot, dev, uploaded)
        except BaseException:
            ring.release(slot)
            raise

    # --- the caller's thread -----------------------------------------------------------------
    def _compute_one(self, item: _Batch, ring: SlotRing) -> _Done:
        if item.slot is None:
            if not item.frames:
                return _Done([])
            with self._cuda_calls if self.cuda else contextlib.nullcontext():  # it may meet new shapes
                return _Done(self.fallback(item.frames))
        key = (len(item.frames), *item.frames[0].shape)
        new_shape = key not in self._shapes
        try:
            with torch.inference_mode():
                if self.cuda:
                    stream = torch.cuda.current_stream(self.device)
                    stream.wait_event(item.uploaded)
                    item.device.record_stream(stream)  # allocated on the copy-in stream, read on this one
                with self._cuda_calls if (self.cuda and new_shape) else contextlib.nullcontext():
                    out, touched = self.compute(item.device)
        finally:
            item.device = None
            ring.release(item.slot)
        self._shapes.add(key)
        if out is None:
            return _Done(item.frames)
        if not self.cuda:
            return _Done(item.frames, touched, out)
        with torch.inference_mode():
            computed = torch.cuda.Event()
            computed.record(stream)
            with torch.cuda.stream(self._copy_out):
                self._copy_out.wait_event(computed)
                host = torch.empty(tuple(out.shape), dtype=out.dtype, pin_memory=True)
                host.copy_(out, non_blocking=True)
                out.record_stream(self._copy_out)  # allocated on the compute stream, read on this one
                downloaded = cuda_event()
                downloaded.record(self._copy_out)
        return _Done(item.frames, touched, host, downloaded)

    def close(self) -> None:
        """Drop the ring and the streams (a later run makes new ones)."""
        if self._running:
            return
        self.ring = None
        self._copy_in = self._copy_out = None
