"""The bounded queues between the pipeline's threads (decode, upload, compute, encode): what ends a stream, what
carries a failure across, and a put that gives up when the run is stopped."""

from __future__ import annotations

import queue
import threading

POLL_S = 0.1  # how often a blocked thread looks at the stop event


class End:
    """The last item of a stream."""


END = End()


class Failure:
    """An exception raised in one thread, carried to the thread that reads the queue."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set; False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False
