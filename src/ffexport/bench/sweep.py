"""The parent of a benchmark run: inspect the machine, plan the rows, prepare the artifacts, measure each row
in a process of its own, write the report.

The parent never imports torch, onnxruntime or TensorRT: what this machine has comes from an ``env``
worker, artifacts from ``prepare`` workers (several at a time, before any timing), and every measured row
from a fresh worker process of its own, one after the other, each with a timeout
(:mod:`ffexport.bench.pool`).  Which rows, in which order, and why some cannot run here:
:mod:`ffexport.bench.plan`.  ``results.json`` is rewritten after every row, so an interrupted run keeps
what it measured and ``--resume`` measures only what is missing.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..errors import FFExportError
from ..fsutil import ensure_writable_dir, write_json_atomic
from ..vocab import SIM_ONNX, TORCH_BACKENDS
from .plan import Settings, host_tag, module_specs, pipeline_specs, pipeline_variants, plan_rows, resolve_device, row_key, slug, \
    stage_precision
from .pool import Pool
from .timing import median_index

Say = Callable[[str], None]


class Sweep:
    """One run of ``ffexport bench`` (:func:`run_bench` is the way in)."""

    def __init__(self, s: Settings, say: Say | None = None, progress=None):
        def absolute(p):
            return str(Path(p).absolute()) if p else p

        self.s = s = replace(s, out=absolute(s.out), work=absolute(s.work), calib=absolute(s.calib),
                             report=absolute(s.report))
        self.say = say or (lambda _m: None)
        self.progress = progress  # optional rich Progress
        self.t0 = time.monotonic()
        self.stop_at = self.t0 + s.deadline if s.deadline else None
        self.rows: list[dict] = []
        self.specs: dict = {}
        self.prepared: dict[str, dict] = {}
        self.env: dict = {}

    @property
    def work(self) -> Path:
        """Cache, worker configs and the log: ``--work``, default ``<out>/.bench``."""
        return Path(self.s.work) if self.s.work else Path(self.s.out) / ".bench"

    # -- setup ---------------------------------------------------------------------------------
    def inspect(self) -> None:
        """What this machine has (from an ``env`` worker): the main device and the report folder."""
        work = ensure_writable_dir(self.work)
        self.log = work / "bench.log"
        self.log.write_text("")
        self.pool = Pool(work, self.log, self.s.isolation)
        if self.s.onnx:  # users' models: adopted once here, registered again in each worker (same file: reused)
            from ..artifacts.adopt import adopt_all

            adopted = adopt_all({m: Path(p) for m, p in self.s.onnx.items()}, self.s.out,
                                {m: Path(p) for m, p in self.s.contracts.items()}, self.say)
            self.s.variants.update(adopted)
            self.pool.adopted = {"onnx": dict(self.s.onnx), "contracts": dict(self.s.contracts), "out": self.s.out}
        env = self.pool.run({"kind": "env", "device": self.s.device}, "env", 300)
        if env.get("status") != "ok":
            raise FFExportError(f"cannot inspect this machine (torch, onnxruntime, GPU): {env.get('reason')}")
        self.env = env
        self.device = resolve_device(self.s.device, env)
        self.host = host_tag(env, self.device)
        self.report = Path(str(self.s.report).replace("{host}", self.host))

    def plan(self) -> list[dict]:
        self.specs = module_specs(self.s)
        return plan_rows(self.s, self.env, self.device)

    def resume(self, rows: list[dict]) -> None:
        """With ``--resume``: the rows measured in ``<report>/results.json`` stand in for their pending rows."""
        path = self.report / "results.json"
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
        """One ``prepare`` worker config per module (and variant) the pending rows need."""
        s = self.s
        plans: dict[str, dict] = {}

        def plan_for(spec) -> dict:
            key = f"{spec.module}.{spec.variant}"
            return plans.setdefault(key, {"kind": "prepare", "module": spec.module, "variant": spec.variant,
                                          "device": self.device, "batches": [], "save_model": False,
                                          "onnx_precisions": [], "trt_precisions": [], "rotate": s.rotate,
                                          "calib": s.calib, "artifacts": s.out, "config_dir": s.config_dir,
                                          "cache": str(self.work / "cache"), "samples": s.samples,
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
                if r["backend"] in TORCH_BACKENDS:
                    p["save_model"] = True
                elif r["backend"] == "ort":
                    add(p["onnx_precisions"], r["precision"])
                else:
                    add(p["trt_precisions"], r["precision"])
            elif r["backend"] not in TORCH_BACKENDS:
                for m, spec in pipeline_specs(s).items():
                    p = plan_for(spec)
                    add(p["onnx_precisions" if r["backend"] == "ort" else "trt_precisions"],
                        stage_precision(m, r["precision"]))
        return plans

    def _pipeline_missing(self, row: dict) -> str | None:
        """Why the artifacts of a pipeline row are not there (None when they all are)."""
        if row["backend"] in TORCH_BACKENDS:  # torch builds the models itself
            return None
        for m, spec in pipeline_specs(self.s).items():
            prep = self.prepared.get(f"{spec.module}.{spec.variant}") or {}
            if prep.get("status") != "ok":
                return f"preparing {spec.key} failed: {prep.get('reason') or 'not prepared'}"
            prec = stage_precision(m, row["precision"])
            art = (prep.get("onnx" if row["backend"] == "ort" else "trt") or {}).get(prec) or {}
            if "path" not in art:
                return f"{spec.key}: {art.get('error') or f'no {prec} artifact'}"
        return None

    def prepare(self, rows: list[dict]) -> None:
        """Inputs, references and artifacts of every module the pending rows need, several at a time."""
        plans = self._prepare_plan(rows)
        if not plans:
            return
        jobs_n = self.s.prepare_jobs or max(1, min(4, (os.cpu_count() or 1) // 4))
        threads = max(1, (os.cpu_count() or 1) // jobs_n)
        # the encoder first (the generator waits for it), then the longest first
        order = sorted(plans, key=lambda k: (not k.startswith("encoder."), -_weight(plans[k])))
        waiting = list(order)
        running: list = []
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
                running.append((nxt, self.pool.start(cfg, f"prepare-{nxt}", self.s.prepare_timeout)))
            if self.stop_at and time.monotonic() > self.stop_at and waiting:
                for k in waiting:
                    self.prepared[k] = {"status": "skipped", "reason": "not prepared: the time budget (--deadline) ran out"}
                waiting.clear()
            time.sleep(0.1)

    def _generator_waits(self, waiting: list[str], running: list) -> bool:
        """The generator's calibration identities come from the default encoder's simplified ONNX when it
        exists (:func:`ffexport.passes.calib.source_identities`): while that encoder is being prepared and
        its simplified ONNX is not there yet, starting the generator would key its artifacts on other
        identities than the next run sees (and rebuild them then)."""
        from ..config import resolve_spec
        from ..manifest import artifact_dir

        enc = resolve_spec("encoder")
        key = f"encoder.{enc.variant}"
        if key not in waiting and key not in (k for k, _ in running):
            return False
        return not (artifact_dir(self.s.out, enc) / SIM_ONNX).is_file()

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
        """The pipeline frames as an H.264 file (for the decode+encode-included run), or why there is none."""
        if not (self.s.pipeline and self.s.video):
            return None, "not asked for (--no-video)"
        from .._lazy import available

        if not available("av"):
            return None, "PyAV is not installed: pip install 'ffexport[video]'"
        from .e2e import frame_set, parse_resolution, write_video

        cfg = {"calib": self.s.calib, "faces": self.s.faces, "frames": self.s.frames,
               "hw": parse_resolution(self.s.resolution)}
        frames, _ = frame_set(cfg)
        path = self.work / f"frames-{slug(self.s.resolution)}-{self.s.faces}f-{self.s.frames}.mp4"
        write_video(frames, path)
        return str(path), None

    def _config(self, row: dict, video: str | None, video_reason: str | None) -> dict | None:
        """The worker config of a pending row, or None with the row marked ``no_artifact`` and why."""
        from .e2e import parse_resolution

        base = {"device": row["device"], "backend": row["backend"], "precision": row["precision"],
                "tf32": self.s.tf32, "threads": self.s.threads or None, "config_dir": self.s.config_dir}
        if row["kind"] == "module":
            prep, reason = self._prepared_for(row)
            if reason:
                row.update(status="no_artifact", reason=reason)
                return None
            info = prep.pop("artifact_info", None)
            if info:
                row["artifact"] = info
            return {**base, "kind": "module", "module": row["module"], "variant": row["variant"],
                    "batch": row["batch"], "iters": self.s.iters, "warmup": self.s.warmup,
                    "max_time": self.s.max_time, **prep}
        reason = self._pipeline_missing(row)
        if reason:
            row.update(status="no_artifact", reason=reason)
            return None
        return {**base, "kind": "naive" if row["pipeline"] == "naive" else "pipeline",
                "artifacts": self.s.out, "variants": pipeline_variants(self.s), "enhance": self.s.enhance,
                "calib": self.s.calib, "frames": self.s.frames, "hw": parse_resolution(self.s.resolution),
                "faces": self.s.faces, "warmup": max(1, min(2, self.s.warmup)), "batch": row.get("batch", 1),
                "stage_frames": min(self.s.frames, max(16, 2 * row.get("batch", 1))),
                "naive_frames": self.s.naive_frames, "video": video, "video_reason": video_reason,
                "video_rounds": self.s.video_rounds}

    def _late(self) -> bool:
        return bool(self.stop_at and time.monotonic() > self.stop_at)

    def measure(self, rows: list[dict]) -> None:
        """Each pending row in a fresh worker, one at a time, in plan order, until the time budget ends; with
        ``repeats`` above 1, the module rows again in that order, pass after pass (:func:`merge_repeats`)."""
        todo = [r for r in rows if r["status"] == "pending"]
        again = max(1, int(self.s.repeats)) - 1
        total = len(todo) + again * sum(r["kind"] == "module" for r in todo)
        task = self.progress.add_task("measure", total=total, status="") if self.progress else None
        video, video_reason = (None, None)
        if any(r["kind"] == "pipeline" for r in todo):
            try:
                video, video_reason = self._video()
            except FFExportError as exc:
                video, video_reason = None, str(exc)
        runs: dict[int, tuple[dict, dict, list[dict]]] = {}  # module rows: (plan row, config, results)
        for i, row in enumerate(rows):
            if row["status"] != "pending":
                continue
            if self._late():
                row.update(status="skipped", reason=f"not measured: the time budget (--deadline {self.s.deadline:.0f} s) "
                                                    "ran out; run again with --resume to measure it")
                continue
            cfg = self._config(row, video, video_reason)
            if cfg is None:
                continue
            planned = dict(row)
            row.update(self._run(i, row, cfg, task))
            if row["kind"] == "module" and again and row.get("status") == "ok":  # a failed row is not run again
                runs[i] = (planned, cfg, [dict(row)])
            self.save(rows, complete=False)
        for _ in range(again):
            for i, (planned, cfg, results) in runs.items():
                if self._late():
                    return  # the rows keep the runs they have (``repeats`` lists them)
                results.append(dict(planned, **self._run(i, planned, cfg, task)))
                rows[i] = dict(planned, **merge_repeats(results))
                self.save(rows, complete=False)

    def _run(self, i: int, row: dict, cfg: dict, task) -> dict:
        """One worker for row ``i``; its result (a line said)."""
        name = _row_name(i, row)
        if self.progress is not None:
            self.progress.update(task, status=name[4:])
        result = self.pool.run(cfg, name, self.s.timeout, self.stop_at)
        self.say(_row_line({**row, **result}))
        if task is not None:
            self.progress.advance(task)
        return result

    # -- output --------------------------------------------------------------------------------
    def results(self, rows: list[dict], complete: bool) -> dict:
        from .report import settings_record

        return {"schema": "ffexport-bench/1", "complete": complete, "host": self.host,
                "environment": self.env, "settings": settings_record(self.s, self.device),
                "elapsed_s": round(time.monotonic() - self.t0, 1), "rows": rows,
                "prepared": {k: {kk: vv for kk, vv in v.items() if kk != "log"} for k, v in self.prepared.items()}}

    def save(self, rows: list[dict], complete: bool) -> dict:
        res = self.results(rows, complete)
        ensure_writable_dir(self.report)
        write_json_atomic(self.report / "results.json", res)
        return res

    def run(self) -> dict:
        self.inspect()
        with self.pool:  # interrupted: stop the workers this run started, keep what was measured
            rows = self.plan()
            self.resume(rows)
            self.rows = rows
            self.prepare(rows)
            self.measure(rows)
        from .plots import make_plots
        from .report import write_reports

        res = self.results(rows, complete=True)
        write_reports(res, self.report, plots=make_plots)
        return res


def run_bench(settings: Settings, say: Say | None = None, progress=None) -> dict:
    """Run a benchmark; returns the results (also written to ``<report>/results.json`` with the reports)."""
    return Sweep(settings, say, progress).run()


def merge_repeats(runs: list[dict]) -> dict:
    """A module row measured in several fresh processes (``--repeats``), as one row: the run of the median p50
    (the upper one of an even count), with ``repeats`` listing every run (p50, p95, FPS, pid, the GPU's SM clock
    after its timed loop; the plain p50 of a row timed with onnxruntime's CUDA graph) and ``repeat``, the index
    of the one shown.  A run that failed makes the row that failure.  One run is returned as it is."""
    if len(runs) == 1:
        return runs[0]
    listed = []
    for r in runs:
        if r.get("status") != "ok":
            listed.append({"status": r.get("status"), "reason": r.get("reason"), "pid": r.get("pid")})
            continue
        one = {"p50": r["latency_ms"]["p50"], "p95": r["latency_ms"]["p95"], "fps": r.get("fps"), "pid": r.get("pid"),
               **({"sm_clock_mhz": r["sm_clock_mhz"]} if r.get("sm_clock_mhz") else {})}
        plain = ((r.get("plain") or {}).get("latency_ms") or {}).get("p50")
        listed.append(one if plain is None else dict(one, plain_p50=plain))
    bad = next((k for k, r in enumerate(runs) if r.get("status") != "ok"), None)
    if bad is not None:
        r = runs[bad]
        return dict(r, reason=f"run {bad + 1} of {len(runs)}: {r.get('reason')}", repeats=listed, repeat=bad)
    k = median_index([r["latency_ms"]["p50"] for r in runs], upper=True)
    return dict(runs[k], repeats=listed, repeat=k)


def _weight(plan: dict) -> int:
    """Rough preparation cost, to start the longest first."""
    heavy = {"enhancer": 6, "generator": 5, "landmarker": 4, "encoder": 3, "detector": 2}
    return heavy.get(plan["module"], 1) * (1 + len(plan["onnx_precisions"]) + len(plan["trt_precisions"]))


def _row_name(i: int, row: dict) -> str:
    """``003-encoder-ort-cuda-fp16-b1``: the name of row ``i``'s worker (its config file and log section)."""
    if row["kind"] == "module":
        return f"{i:03d}-{row['module']}-{row['backend']}-{row['device']}-{row['precision']}-b{row['batch']}"
    return f"{i:03d}-pipeline-{row['pipeline']}-{row['backend']}-{row['device']}-{row['precision']}"


def _row_line(row: dict) -> str:
    """One line of progress for a measured (or not measured) row."""
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
