"""Worker processes of a benchmark: each job (inspect the machine, prepare a module, measure a row) in a
fresh process of its own, polled until it ends, asked to stop at its timeout and killed if it does not.

A job's config is written to ``<work>/configs/<name>.json``; its output (the worker's one result line,
``@@ffexport-bench@@ {json}``, and its logs) to ``<name>.out``, appended to the run's log when it ends.
Two ways to get the fresh process (``isolation``):

* ``forkserver``: forked from a server that imported torch once (CUDA never initialised there), so every
  worker starts with the imports done;
* ``subprocess``: a new interpreter, ``python -m ffexport.bench.worker --json-config CONFIG``.

Stopping: at its timeout (or the run's time budget) a worker gets SIGTERM, which the worker turns into an
exit that runs its clean-ups (runners deactivated, temporary files removed); one still there after
:data:`GRACE_S` seconds is killed.  Only the pool's own processes are ever signalled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..fsutil import ensure_writable_dir
from .plan import ISOLATION, slug
from .worker import MARK

GRACE_S = 5.0  # seconds a worker asked to stop has before it is killed
# what the fork server imports once, so each worker starts with them loaded (CUDA stays untouched)
PRELOAD = ["numpy", "torch", "ffexport.bench.worker", "ffexport.bench.timing", "ffexport.bench.memory",
           "ffexport.config", "ffexport.specs", "ffexport.export.parity"]
PASS_ENV = ("FFEXPORT_CONFIGS", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")

_FORK = None  # the forkserver context (one server per parent process)


def _src_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def _fork_context():
    """A ``forkserver`` context whose server has torch imported (never CUDA initialised): every worker is
    still a fresh process of its own, without paying the imports again."""
    global _FORK
    if _FORK is None:
        import multiprocessing as mp

        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _FORK = ctx
    return _FORK


class _Forked:
    """A forked worker behind the part of ``subprocess.Popen``'s interface that :class:`Job` uses."""

    def __init__(self, cfg_path: Path, out_path: Path):
        from .worker import child_main

        self.p = _fork_context().Process(target=child_main, args=(str(cfg_path), str(out_path)),
                                         name=f"ffexport-bench-{cfg_path.stem}")
        self.p.start()

    def poll(self):
        return self.p.exitcode

    def send_signal(self, sig: int) -> None:
        if self.p.exitcode is None and self.p.pid is not None:
            try:
                os.kill(self.p.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.p.kill()

    def wait(self, timeout: float | None = None):
        self.p.join(timeout)
        return self.p.exitcode

    @property
    def returncode(self):
        return self.p.exitcode


class Job:
    """One worker process (its config written to a file), polled until it ends or times out."""

    def __init__(self, pool: "Pool", cfg: dict, name: str, timeout: float):
        # a forked worker starts in the fork server's folder and environment: give it the caller's
        cfg = dict(cfg, cwd=os.getcwd(), environ={k: os.environ[k] for k in PASS_ENV if k in os.environ})
        self.pool, self.cfg, self.name, self.timeout = pool, cfg, name, float(timeout)
        cfg_dir = ensure_writable_dir(pool.work / "configs")
        self.cfg_path = cfg_dir / f"{slug(name)}.json"
        self.cfg_path.write_text(json.dumps(cfg, indent=1, default=str))
        self.out_path = cfg_dir / f"{slug(name)}.out"
        self._out = open(self.out_path, "w")
        self.started = time.monotonic()
        self.result: dict | None = None
        if pool.isolation == "forkserver":
            self.proc = _Forked(self.cfg_path, self.out_path)
            return
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_src_root(), env.get("PYTHONPATH", "")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen([sys.executable, "-m", "ffexport.bench.worker", "--json-config",
                                      str(self.cfg_path)], stdout=self._out, stderr=subprocess.STDOUT, env=env)

    def poll(self, hard_stop: float | None = None) -> bool:
        """True once the process has ended (stopped at its timeout or at ``hard_stop``)."""
        if self.result is not None:
            return True
        rc = self.proc.poll()
        now = time.monotonic()
        if rc is None:
            over = now - self.started > self.timeout
            stop = hard_stop is not None and now > hard_stop
            if not (over or stop):
                return False
            self._end_process()
            self._finish({"status": "skipped" if stop and not over else "failed",
                          "reason": (f"killed after {now - self.started:.0f} s: the benchmark's time budget "
                                     "(--deadline) ran out" if stop and not over
                                     else f"timed out after {self.timeout:.0f} s (--timeout)")})
            return True
        self._finish(None)
        return True

    def wait(self, hard_stop: float | None = None) -> dict:
        while not self.poll(hard_stop):
            time.sleep(0.05)
        return self.result

    def running(self) -> bool:
        return self.result is None and self.proc.poll() is None

    def ask_to_stop(self) -> None:
        """SIGTERM to this job's own process (only it: never anything by name)."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, until: float | None = None) -> None:
        """End this job's process: asked to stop, killed if still there at ``until`` (default: the grace
        period from now).  Its result stays unset; the pool forgets it."""
        if self.running():
            self._end_process(until)
        self._out.close()
        self.pool.live.discard(self)

    def _end_process(self, until: float | None = None) -> None:
        """SIGTERM, time to clean up (until ``until``, default :data:`GRACE_S` seconds), then SIGKILL."""
        self.ask_to_stop()
        until = time.monotonic() + self.pool.grace if until is None else until
        while self.proc.poll() is None and time.monotonic() < until:
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def _finish(self, forced: dict | None) -> None:
        self.pool.live.discard(self)
        self._out.close()
        text = self.out_path.read_text(errors="replace")
        with open(self.pool.log, "a") as f:
            f.write(f"\n===== {self.name} (rc={self.proc.returncode}, {time.monotonic() - self.started:.1f} s) =====\n")
            f.write(text[-20000:])
        if forced is not None:
            self.result = forced
            return
        lines = [ln for ln in text.splitlines() if ln.startswith(MARK)]
        if lines:
            self.result = json.loads(lines[-1][len(MARK):])
            return
        tail = [ln.strip() for ln in text.splitlines() if ln.strip()]
        last = tail[-1][:300] if tail else "no output"
        self.result = {"status": "failed", "reason": f"worker exited with code {self.proc.returncode}: {last}"}


class Pool:
    """The worker processes of one run: configs and outputs under ``work``, every job's output appended to
    ``log``.  ``with Pool(...) as pool:`` stops the jobs still running on exit (an interrupted run)."""

    def __init__(self, work: str | Path, log: str | Path, isolation: str = "subprocess", grace: float = GRACE_S):
        if isolation not in ISOLATION:
            from ..errors import InputSpecError

            raise InputSpecError(f"--isolation {isolation!r}: use {' or '.join(ISOLATION)}")
        self.work, self.log = Path(work), Path(log)
        self.isolation, self.grace = isolation, float(grace)
        self.live: set[Job] = set()  # jobs started and not yet finished
        self.adopted: dict | None = None  # users' models (--onnx MODULE=PATH) every worker registers first

    def start(self, cfg: dict, name: str, timeout: float) -> Job:
        """Start ``cfg`` (a worker config: ``kind`` and its fields) in a fresh process named ``name``."""
        if self.adopted:
            cfg = dict(cfg, adopted=self.adopted)
        job = Job(self, cfg, name, timeout)
        self.live.add(job)
        return job

    def run(self, cfg: dict, name: str, timeout: float, hard_stop: float | None = None) -> dict:
        """Start a job and wait for its result (stopped at ``timeout`` seconds or at ``hard_stop``)."""
        return self.start(cfg, name, timeout).wait(hard_stop)

    def stop_all(self) -> None:
        """Stop every job still running: all asked at once, then each killed if still there after the grace
        period."""
        jobs = list(self.live)
        for job in jobs:
            job.ask_to_stop()
        until = time.monotonic() + self.grace
        for job in jobs:
            job.stop(until)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
