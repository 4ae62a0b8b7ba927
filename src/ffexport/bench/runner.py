"""The parent of a benchmark run: which combinations, which can run here, preparation, one process per row.

The parent never imports torch, onnxruntime or TensorRT: what this machine has
comes from an ``env`` worker, artifacts from ``prepare`` workers (several at a
time, before any timing), and every measured row from a fresh worker process
of its own, one after the other, each with a timeout.  A combination that
cannot run here is a row with its reason and no numbers.  ``results.json`` is
rewritten after every row, so an interrupted run keeps what it measured and
``--resume`` measures only what is missing.

Rows are measured in this order, so a time budget (``--deadline``) cuts the
least important ones: batch-1 rows on the main device, the end-to-end
pipeline runs, larger batches, then CPU rows on a GPU machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import FFExportError, InputSpecError, UnknownNameError
from ..fsutil import ensure_writable_dir, write_json_atomic
from .worker import MARK

BACKENDS = ("torch", "ort", "trt")
DEVICES = ("cuda", "cpu")
PRECISIONS = ("fp32", "fp16", "int8")
RUNNABLE_STATUSES = ("ok",)
PIPELINE_MODULES = ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "encoder", "generator", "enhancer", "blender")


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
        raise InputSpecError("--backends needs at least one of torch, ort, trt")
    return out


def parse_list(text: str, valid, what: str) -> list[str]:
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    for s in items:
        if s not in valid:
            raise UnknownNameError(what, s, valid)
    if not items:
        raise InputSpecError(f"--{what}s needs at least one value; valid: {', '.join(valid)}")
    return list(dict.fromkeys(items))


def parse_batches(text: str) -> list[int]:
    try:
        out = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise InputSpecError(f"--batch expects comma-separated positive integers, got {text!r}") from None
    if not out or any(b < 1 for b in out):
        raise InputSpecError(f"--batch expects comma-separated positive integers, got {text!r}")
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


@dataclass
class Settings:
    """Everything a run depends on (the CLI fills it; tests build it directly)."""

    modules: list[str]
    backends: str = "torch,ort,trt"
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))
    batches: list[int] = field(default_factory=lambda: [1])
    variants: dict[str, str] = field(default_factory=dict)
    device: str = "auto"
    iters: int = 100
    warmup: int = 10
    max_time: float | None = 10.0
    rotate: int = 4
    pipeline: bool = False
    resolution: str = "1080p"
    frames: int = 32
    faces: int = 1
    naive: bool = True
    naive_frames: int = 8
    video: bool = True
    enhance: bool = True
    calib: str | None = None
    artifacts: str = "artifacts"
    work: str | None = None
    out: str = "benchmarks/results/{host}"
    timeout: float = 900.0
    prepare_timeout: float = 3600.0
    deadline: float | None = None
    resume: bool = False
    samples: int | None = None
    parity_samples: int | None = None
    prepare_jobs: int = 0
    tf32: bool = False
    threads: int = 0
    isolation: str = "forkserver" if sys.platform.startswith("linux") else "subprocess"
    cpu_batches: list[int] | None = None
    cpu_precisions: list[str] | None = None
    command: str = ""


def row_key(row: dict) -> str:
    if row["kind"] == "module":
        return "|".join(str(row[k]) for k in ("kind", "module", "variant", "backend", "device", "precision", "batch"))
    return "|".join(str(row[k]) for k in ("kind", "pipeline", "backend", "device", "precision", "resolution", "faces"))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "unknown"


def host_tag(env: dict, device: str) -> str:
    if device == "cuda" and env.get("gpu", {}).get("name"):
        return _slug(env["gpu"]["name"])
    return "cpu-" + _slug(env.get("cpu", {}).get("model") or "unknown")


# --- worker processes ---------------------------------------------------------------------------

ISOLATION = ("forkserver", "subprocess")
# what the fork server imports once, so each worker starts with them loaded (CUDA stays untouched)
PRELOAD = ["numpy", "torch", "ffexport.bench.worker", "ffexport.bench.timing", "ffexport.bench.memory",
           "ffexport.config", "ffexport.specs", "ffexport.export.parity"]
_FORK = None
PASS_ENV = ("FFEXPORT_CONFIGS", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")


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

    def kill(self) -> None:
        self.p.kill()

    def wait(self):
        self.p.join()
        return self.p.exitcode

    @property
    def returncode(self):
        return self.p.exitcode


class Job:
    """One worker process (its config written to a file), polled until it ends or times out."""

    live: set = set()  # jobs started and not yet finished (killed if the parent is interrupted)

    def __init__(self, cfg: dict, work: Path, name: str, timeout: float, log: Path, isolation: str = "subprocess"):
        # a forked worker starts in the fork server's folder and environment: give it the caller's
        cfg = dict(cfg, cwd=os.getcwd(), environ={k: os.environ[k] for k in PASS_ENV if k in os.environ})
        self.cfg, self.name, self.timeout, self.log = cfg, name, float(timeout), log
        cfg_dir = ensure_writable_dir(work / "configs")
        self.cfg_path = cfg_dir / f"{_slug(name)}.json"
        self.cfg_path.write_text(json.dumps(cfg, indent=1, default=str))
        self.out_path = cfg_dir / f"{_slug(name)}.out"
        self._out = open(self.out_path, "w")
        self.started = time.monotonic()
        self.result: dict | None = None
        Job.live.add(self)
        if isolation == "forkserver":
            self.proc = _Forked(self.cfg_path, self.out_path)
            return
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_src_root(), env.get("PYTHONPATH", "")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen([sys.executable, "-m", "ffexport.bench.worker", "--json-config",
                                      str(self.cfg_path)], stdout=self._out, stderr=subprocess.STDOUT, env=env)

    def poll(self, hard_stop: float | None = None) -> bool:
        """True once the process has ended (killed at its timeout or at ``hard_stop``)."""
        if self.result is not None:
            return True
        rc = self.proc.poll()
        now = time.monotonic()
        if rc is None:
            over = now - self.started > self.timeout
            stop = hard_stop is not None and now > hard_stop
            if not (over or stop):
                return False
            self.proc.kill()
            self.proc.wait()
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

    def kill(self) -> None:
        """End this job's own process (only it: never anything by name)."""
        if self.result is None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        Job.live.discard(self)

    def _finish(self, forced: dict | None) -> None:
        Job.live.discard(self)
        self._out.close()
        text = self.out_path.read_text(errors="replace")
        with open(self.log, "a") as f:
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


# --- the run ------------------------------------------------------------------------------------

class BenchRun:
    def __init__(self, s: Settings, say: Callable[[str], None] | None = None, progress=None):
        from dataclasses import replace

        def absolute(p):
            return str(Path(p).absolute()) if p else p

        self.s = s = replace(s, artifacts=absolute(s.artifacts), work=absolute(s.work), calib=absolute(s.calib),
                             out=absolute(s.out))
        self.say = say or (lambda _m: None)
        self.progress = progress  # optional rich Progress
        self.t0 = time.monotonic()
        self.stop_at = self.t0 + s.deadline if s.deadline else None
        self.rows: list[dict] = []
        self.prepared: dict[str, dict] = {}
        self.env: dict = {}

    # -- setup ---------------------------------------------------------------------------------
    def _work(self) -> Path:
        return Path(self.s.work) if self.s.work else Path(self.s.artifacts) / ".bench"

    def inspect(self) -> None:
        work = ensure_writable_dir(self._work())
        self.log = work / "bench.log"
        self.log.write_text("")
        job = Job({"kind": "env", "device": self.s.device}, work, "env", 300, self.log, self.s.isolation)
        env = job.wait()
        if env.get("status") != "ok":
            raise FFExportError(f"cannot inspect this machine (torch, onnxruntime, GPU): {env.get('reason')}")
        self.env = env
        cuda = bool(env.get("torch", {}).get("cuda"))
        if self.s.device == "auto":
            self.device = "cuda" if cuda else "cpu"
        elif self.s.device in DEVICES:
            self.device = self.s.device
        else:
            raise InputSpecError(f"--device {self.s.device!r}: use auto, cuda or cpu")
        self.host = host_tag(env, self.device)
        self.out = Path(str(self.s.out).replace("{host}", self.host))

    def why_not(self, backend: Backend, precision: str) -> str | None:
        """Why ``backend`` at ``precision`` cannot run here (None when it can)."""
        env = self.env
        if backend.name == "torch" and precision == "int8":
            return ("the torch backend runs fp32 and fp16; int8 is a Q/DQ ONNX artifact "
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

    # -- plan ----------------------------------------------------------------------------------
    def plan(self) -> list[dict]:
        from ..config import resolve_spec

        s = self.s
        self.backends = parse_backends(s.backends, self.device)
        rows: list[dict] = []
        self.specs = {}
        for module in s.modules:
            spec = resolve_spec(module, s.variants.get(module))
            self.specs[spec.module] = spec
            for b in self.backends:
                off_main = b.device == "cpu" and self.device == "cuda"
                for p in (s.cpu_precisions or s.precisions) if off_main else s.precisions:
                    for batch in (s.cpu_batches or s.batches) if off_main else s.batches:
                        row = {"kind": "module", "module": spec.module, "variant": spec.variant, "backend": b.name,
                               "device": b.device, "precision": p, "batch": batch}
                        reason = self.why_not(b, p)
                        if reason is None and b.name == "trt" and batch > spec.batch_profile[2]:
                            reason = (f"the engine's batch profile ends at {spec.batch_profile[2]} "
                                      f"(configs/{spec.module}.yaml batch.max): build one for batch {batch} with "
                                      f"`ffexport trt --batch 1:1:{batch}`")
                        rows.append(self._status(row, reason))
        if s.pipeline:
            # the pipeline runs on the main device only (a CPU pipeline on a GPU machine says little)
            for b in (b for b in self.backends if b.device == self.device or b.name == "trt"):
                for p in s.precisions:
                    for kind in ("reference", "naive") if s.naive else ("reference",):
                        row = {"kind": "pipeline", "pipeline": kind, "backend": b.name, "device": b.device,
                               "precision": p, "resolution": s.resolution, "faces": s.faces}
                        rows.append(self._status(row, self.why_not(b, p)))
        main = self.device
        tiers = {"module": lambda r: 0 if (r["batch"] == 1 and r["device"] == main) else (
            2 if r["device"] == main else 3), "pipeline": lambda r: 1 if r["device"] == main else 3}
        order = {m: i for i, m in enumerate(s.modules)}
        brank = {b: i for i, b in enumerate(BACKENDS)}
        prank = {p: i for i, p in enumerate(PRECISIONS)}
        rows.sort(key=lambda r: (tiers[r["kind"]](r), r.get("batch", 0), order.get(r.get("module"), -1),
                                 brank[r["backend"]], r["device"], prank[r["precision"]],
                                 r.get("pipeline") == "naive"))
        return rows

    @staticmethod
    def _status(row: dict, reason: str | None) -> dict:
        if reason:
            row.update(status="not_runnable", reason=reason)
        else:
            row.update(status="pending", reason=None)
        return row

    def _resume(self, rows: list[dict]) -> None:
        path = self.out / "results.json"
        if not (self.s.resume and path.is_file()):
            return
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return
        done = {row_key(r): r for r in old.get("rows", []) if r.get("status") == "ok"}
        for i, r in enumerate(rows):
            if r["status"] == "pending" and row_key(r) in done:
                rows[i] = dict(done[row_key(r)], resumed=True)

    # -- prepare -------------------------------------------------------------------------------
    def _prepare_plan(self, rows: list[dict]) -> dict[str, dict]:
        s = self.s
        plans: dict[str, dict] = {}

        def plan_for(spec) -> dict:
            key = f"{spec.module}.{spec.variant}"
            return plans.setdefault(key, {"kind": "prepare", "module": spec.module, "variant": spec.variant,
                                          "device": self.device, "batches": [], "save_model": False,
                                          "onnx_precisions": [], "trt_precisions": [], "rotate": s.rotate,
                                          "calib": s.calib, "artifacts": s.artifacts,
                                          "cache": str(self._work() / "cache"), "samples": s.samples,
                                          "parity_samples": s.parity_samples, "tf32": s.tf32})

        def add(lst: list, value) -> None:
            if value not in lst:
                lst.append(value)

        for r in rows:
            if r["status"] != "pending":
                continue
            if r["kind"] == "module":
                p = plan_for(self.specs[r["module"]])
                add(p["batches"], r["batch"])
                if r["backend"] == "torch":
                    p["save_model"] = True
                elif r["backend"] == "ort":
                    add(p["onnx_precisions"], r["precision"])
                else:
                    add(p["trt_precisions"], r["precision"])
            elif r["backend"] != "torch":
                for m, spec in self._pipeline_specs().items():
                    p = plan_for(spec)
                    add(p["onnx_precisions" if r["backend"] == "ort" else "trt_precisions"],
                        _stage_precision(m, r["precision"]))
        return plans

    def _pipeline_specs(self) -> dict:
        """The modules (and variants) of the benchmarked pipeline: MTCNN, encoder, generator, enhancer, blender."""
        from ..config import resolve_spec

        return {m: resolve_spec(m, self.s.variants.get(m)) for m in PIPELINE_MODULES
                if m != "enhancer" or self.s.enhance}

    def _pipeline_missing(self, row: dict) -> str | None:
        """Why the artifacts of a pipeline row are not there (None when they all are)."""
        if row["backend"] == "torch":
            return None
        for m, spec in self._pipeline_specs().items():
            prep = self.prepared.get(f"{spec.module}.{spec.variant}") or {}
            if prep.get("status") != "ok":
                return f"preparing {spec.key} failed: {prep.get('reason') or 'not prepared'}"
            prec = _stage_precision(m, row["precision"])
            art = (prep.get("onnx" if row["backend"] == "ort" else "trt") or {}).get(prec) or {}
            if "path" not in art:
                return f"{spec.key}: {art.get('error') or f'no {prec} artifact'}"
        return None

    def prepare(self, rows: list[dict]) -> None:
        plans = self._prepare_plan(rows)
        if not plans:
            return
        jobs_n = self.s.prepare_jobs or max(1, min(4, (os.cpu_count() or 1) // 4))
        threads = max(1, (os.cpu_count() or 1) // jobs_n)
        # the encoder first (the generator waits for it), then the longest first
        order = sorted(plans, key=lambda k: (not k.startswith("encoder."), -_weight(plans[k])))
        waiting = list(order)
        running: list[tuple[str, Job]] = []
        task = self.progress.add_task("prepare", total=len(order), status="") if self.progress else None
        self.say(f"preparing {len(order)} module(s): inputs, torch references and artifacts "
                 f"({jobs_n} at a time)")
        while waiting or running:
            for key, job in list(running):
                if job.poll(self.stop_at):
                    running.remove((key, job))
                    self.prepared[key] = job.result
                    st = job.result.get("status")
                    secs = (job.result.get("seconds") or {}).get("total")
                    self.say(f"prepared {key}: {st}" + (f" in {secs:.0f} s" if secs else "")
                             + (f" ({job.result.get('reason')})" if st != "ok" else ""))
                    if task is not None:
                        self.progress.advance(task)
            blocked = self._generator_waits(waiting, running)
            late = bool(self.stop_at and time.monotonic() > self.stop_at)
            while waiting and len(running) < jobs_n and not late:
                nxt = next((k for k in waiting if not (k.startswith("generator.") and blocked)), None)
                if nxt is None:
                    break
                waiting.remove(nxt)
                cfg = dict(plans[nxt], threads=threads)
                running.append((nxt, Job(cfg, self._work(), f"prepare-{nxt}", self.s.prepare_timeout, self.log,
                                           self.s.isolation)))
            if self.stop_at and time.monotonic() > self.stop_at and waiting:
                for k in waiting:
                    self.prepared[k] = {"status": "skipped", "reason": "not prepared: the time budget (--deadline) ran out"}
                waiting.clear()
            time.sleep(0.1)

    def _generator_waits(self, waiting: list[str], running: list) -> bool:
        """The generator's calibration identities come from the default encoder's simplified ONNX when it
        exists (:func:`ffexport.passes.calib.source_identities`): while that encoder is being prepared and
        its ``fp32.sim.onnx`` is not there yet, starting the generator would key its artifacts on other
        identities than the next run sees (and rebuild them then)."""
        from ..config import resolve_spec
        from ..manifest import artifact_dir

        enc = resolve_spec("encoder")
        key = f"encoder.{enc.variant}"
        if key not in waiting and key not in (k for k, _ in running):
            return False
        return not (artifact_dir(self.s.artifacts, enc) / "fp32.sim.onnx").is_file()

    def _prepared_for(self, row: dict) -> tuple[dict | None, str | None]:
        spec = self.specs[row["module"]]
        prep = self.prepared.get(f"{spec.module}.{spec.variant}")
        if prep is None:
            return None, "not prepared"
        if prep.get("status") != "ok":
            return None, f"preparing {spec.key} failed: {prep.get('reason')}"
        b = str(row["batch"])
        cfg = {"inputs": prep["inputs"].get(b), "reference": prep["reference"].get(b), "model": prep.get("model")}
        if not cfg["inputs"] or not cfg["reference"]:
            return None, f"no inputs of batch {row['batch']} were prepared"
        if row["backend"] in ("ort", "trt"):
            art = prep["onnx" if row["backend"] == "ort" else "trt"].get(row["precision"]) or {}
            if "path" not in art:
                return None, art.get("error") or f"no {row['precision']} artifact"
            cfg["artifact"] = art["path"]
            cfg["artifact_info"] = art
        return cfg, None

    # -- measure -------------------------------------------------------------------------------
    def _video(self) -> tuple[str | None, str | None]:
        if not (self.s.pipeline and self.s.video):
            return None, "not asked for (--no-video)"
        from .._lazy import available

        if not available("av"):
            return None, "PyAV is not installed: pip install 'ffexport[video]'"
        from .e2e import frame_set, parse_resolution, write_video

        cfg = {"calib": self.s.calib, "faces": self.s.faces, "frames": self.s.frames,
               "hw": parse_resolution(self.s.resolution)}
        frames, _ = frame_set(cfg)
        path = self._work() / f"frames-{_slug(self.s.resolution)}-{self.s.faces}f-{self.s.frames}.mp4"
        write_video(frames, path)
        return str(path), None

    def measure(self, rows: list[dict]) -> None:
        from .e2e import parse_resolution

        todo = [r for r in rows if r["status"] == "pending"]
        task = self.progress.add_task("measure", total=len(todo), status="") if self.progress else None
        video, video_reason = (None, None)
        if any(r["kind"] == "pipeline" for r in todo):
            try:
                video, video_reason = self._video()
            except FFExportError as exc:
                video, video_reason = None, str(exc)
        for i, row in enumerate(rows):
            if row["status"] != "pending":
                continue
            if self.stop_at and time.monotonic() > self.stop_at:
                row.update(status="skipped", reason=f"not measured: the time budget (--deadline {self.s.deadline:.0f} s) "
                                                    "ran out; run again with --resume to measure it")
                continue
            base = {"device": row["device"], "backend": row["backend"], "precision": row["precision"],
                    "tf32": self.s.tf32, "threads": self.s.threads or None}
            if row["kind"] == "module":
                prep, reason = self._prepared_for(row)
                if reason:
                    row.update(status="no_artifact", reason=reason)
                    continue
                info = prep.pop("artifact_info", None)
                cfg = {**base, "kind": "module", "module": row["module"], "variant": row["variant"],
                       "batch": row["batch"], "iters": self.s.iters, "warmup": self.s.warmup,
                       "max_time": self.s.max_time, **prep}
                if info:
                    row["artifact"] = info
                name = f"{i:03d}-{row['module']}-{row['backend']}-{row['device']}-{row['precision']}-b{row['batch']}"
            else:
                reason = self._pipeline_missing(row)
                if reason:
                    row.update(status="no_artifact", reason=reason)
                    continue
                cfg = {**base, "kind": "naive" if row["pipeline"] == "naive" else "pipeline",
                       "artifacts": self.s.artifacts, "variants": self.s.variants, "enhance": self.s.enhance,
                       "calib": self.s.calib, "frames": self.s.frames, "hw": parse_resolution(self.s.resolution),
                       "faces": self.s.faces, "warmup": max(1, min(2, self.s.warmup)),
                       "stage_frames": min(self.s.frames, 16),
                       "naive_frames": self.s.naive_frames, "video": video, "video_reason": video_reason}
                name = f"{i:03d}-pipeline-{row['pipeline']}-{row['backend']}-{row['device']}-{row['precision']}"
            if self.progress is not None:
                self.progress.update(task, status=name[4:])
            result = Job(cfg, self._work(), name, self.s.timeout, self.log, self.s.isolation).wait(self.stop_at)
            row.update(result)
            if row.get("status") == "ok" and row["kind"] == "module":
                row["load_s"] = row.get("load_s")
            self.say(_row_line(row))
            if task is not None:
                self.progress.advance(task)
            self.save(rows, complete=False)

    # -- output --------------------------------------------------------------------------------
    def results(self, rows: list[dict], complete: bool) -> dict:
        from .report import settings_record

        return {"schema": "ffexport-bench/1", "complete": complete, "host": self.host,
                "environment": self.env, "settings": settings_record(self.s, self.device),
                "elapsed_s": round(time.monotonic() - self.t0, 1), "rows": rows,
                "prepared": {k: {kk: vv for kk, vv in v.items() if kk != "log"} for k, v in self.prepared.items()}}

    def save(self, rows: list[dict], complete: bool) -> dict:
        res = self.results(rows, complete)
        ensure_writable_dir(self.out)
        write_json_atomic(self.out / "results.json", res)
        return res

    def run(self) -> dict:
        self.inspect()
        rows = self.plan()
        self._resume(rows)
        self.rows = rows
        try:
            self.prepare(rows)
            self.measure(rows)
        finally:  # interrupted: end the workers this run started, keep what was measured
            for job in list(Job.live):
                job.kill()
        from .report import write_reports

        res = self.results(rows, complete=True)
        write_reports(res, self.out)
        return res


def _stage_precision(module: str, precision: str) -> str:
    """The precision a pipeline stage runs at: the blender has no weights, so int8 runs it at fp32 (as the Pipeline does)."""
    return "fp32" if (module == "blender" and precision == "int8") else precision


def _weight(plan: dict) -> int:
    """Rough preparation cost, to start the longest first."""
    heavy = {"enhancer": 6, "generator": 5, "landmarker": 4, "encoder": 3, "detector": 2}
    return heavy.get(plan["module"], 1) * (1 + len(plan["onnx_precisions"]) + len(plan["trt_precisions"]))


def _row_line(row: dict) -> str:
    if row["kind"] == "module":
        what = f"{row['module']}/{row['variant']} {row['backend']} ({row['device']}) {row['precision']} b{row['batch']}"
        if row.get("status") == "ok":
            lat = row["latency_ms"]
            return (f"{what}: p50 {lat['p50']:.3f} ms, {row['fps']:.1f} FPS, parity "
                    f"{(row.get('parity') or {}).get('summary', '-')}")
    else:
        what = f"pipeline {row['pipeline']} {row['backend']} ({row['device']}) {row['precision']}"
        if row.get("status") == "ok":
            return f"{what}: {row['fps']:.2f} FPS, p50 {row['frame_latency_ms']['p50']:.1f} ms"
    return f"{what}: {row.get('status')}: {row.get('reason')}"


def run_bench(settings: Settings, say: Callable[[str], None] | None = None, progress=None) -> dict:
    """Run a benchmark; returns the results (also written to ``<out>/results.json`` with the reports)."""
    return BenchRun(settings, say, progress).run()
