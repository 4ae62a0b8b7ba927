"""Benchmark reports: the machine, ``results.json``, ``results.md`` and the compact table for the terminal.

``results.md`` holds the module table in the layout users compare tools by::

    | module | backend | precision | batch | latency p50 ms | p95 | FPS | VRAM MB | parity |

then the end-to-end table (reference pipeline and naive baseline side by
side, with the speed-up), the per-stage breakdown, and the combinations that
could not run here with their reasons.  Rows that did not run carry a reason
in place of numbers, never a number.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Callable

from .. import __version__
from .._lazy import version_of
from ..fsutil import write_bytes_atomic
from ..vocab import BACKENDS, PRECISIONS

MODULE_COLUMNS = ("module", "backend", "precision", "batch", "latency p50 ms", "p95", "FPS", "VRAM MB", "parity")
PIPELINE_COLUMNS = ("pipeline", "backend", "precision", "batch", "FPS", "frame p50 ms", "p95", "VRAM MB",
                    "FPS incl. decode+encode", "faces/frame", "speed-up vs naive")
STAGE_ORDER = ("detect", "landmarks", "align", "encode", "swap", "enhance", "blend", "transfer")
_DISTS = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-rtx-cu13", "numpy",
          "opencv-python-headless", "opencv-python", "av", "matplotlib", "nvidia-ml-py", "onnxsim", "onnxslim",
          "onnxconverter-common")
NA = "–"


# --- the machine (runs inside the ``env`` worker) -------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def collect_environment(device: str = "auto") -> dict:
    """Hardware, driver, CUDA and library versions, and which backends can run here."""
    env: dict = {"status": "ok", "ffexport": __version__, "python": platform.python_version(),
                 "platform": platform.platform(),
                 "cpu": {"model": cpu_model(), "cores": os.cpu_count(), "memory_gb": memory_gb()},
                 "versions": {d: v for d in _DISTS if (v := version_of(d))}}
    try:
        import torch

        t = {"version": torch.__version__, "cuda": bool(torch.cuda.is_available()), "cuda_version": torch.version.cuda,
             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
             "defaults": {"cuda.matmul.allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
                          "cudnn.allow_tf32": bool(torch.backends.cudnn.allow_tf32),
                          "cudnn.benchmark": bool(torch.backends.cudnn.benchmark)}}
        env["torch"] = t
        if t["cuda"] and device != "cpu":
            props = torch.cuda.get_device_properties(0)
            env["gpu"] = {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
                          "compute_capability": "{}.{}".format(*torch.cuda.get_device_capability(0)),
                          "memory_gb": round(props.total_memory / 1e9, 1),
                          "multiprocessors": getattr(props, "multi_processor_count", None)}
            from .memory import Nvml

            nv = Nvml()
            env["gpu"]["driver"] = nv.driver_version()
            env["gpu"]["nvml"] = nv.ok or nv.error
    except Exception as exc:  # no torch at all: every row says so
        env["torch"] = {"version": None, "cuda": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        import onnxruntime as ort

        env["onnxruntime"] = {"version": ort.__version__, "providers": ort.get_available_providers(),
                              "device": ort.get_device(), "file": str(Path(ort.__file__).parent)}
    except Exception as exc:
        env["onnxruntime"] = {"version": None, "providers": [], "error": f"{type(exc).__name__}: {exc}"}
    try:
        from ..backends.trt import trt_availability

        ok, reason = trt_availability()
        env["tensorrt"] = {"ok": ok, "reason": reason}
    except Exception as exc:
        env["tensorrt"] = {"ok": False, "reason": f"TensorRT check failed: {type(exc).__name__}: {exc}"}
    return env


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


SOURCE_DIRS = {"src/ffexport/": ".py", "configs/": ".yaml"}  # what source_digest covers: folder -> suffix


def covered(path: str) -> bool:
    """Whether ``path`` (relative to the repository root, ``/``-separated) counts in :func:`source_digest`: the
    package's Python files at any depth, the config files at the top of ``configs/``."""
    for folder, suffix in SOURCE_DIRS.items():
        if path.startswith(folder) and path.endswith(suffix):
            return folder != "configs/" or "/" not in path[len(folder):]
    return False


def digest_files(files) -> str:
    """sha256 over ``(path, bytes)`` pairs in path order (each path, a NUL, its bytes, a NUL)."""
    import hashlib

    h = hashlib.sha256()
    for path, data in sorted(files):
        h.update(path.encode() + b"\0" + data + b"\0")
    return h.hexdigest()


def source_digest(root: str | Path | None = None) -> str:
    """:func:`digest_files` of the package's source and configs as they are on disk (:func:`covered`).  Unlike
    the commit, it names the code that ran wherever the tree was copied without its history (the GPU host's copy
    carries an old HEAD with the new files on top): ``python3 benchmarks/which_commit.py RESULTS.json`` finds
    the commit whose files give the same digest."""
    base = Path(root) if root is not None else Path(__file__).resolve().parents[3]
    files = [(f.relative_to(base).as_posix(), f) for d in SOURCE_DIRS if (base / d).is_dir()
             for f in (base / d).rglob("*") if f.is_file()]
    chosen = [(rel, f.read_bytes()) for rel, f in files if covered(rel)]
    return digest_files(chosen) if chosen else "unknown"


def settings_record(s, device: str) -> dict:
    from dataclasses import asdict

    d = asdict(s)
    d.update(device_resolved=device, git_commit=git_commit(), source_sha256=source_digest(),
             date_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             tf32=("on" if s.tf32 else "off") + " (torch.backends.cuda.matmul.allow_tf32 and cudnn.allow_tf32)")
    return d


# --- formatting -----------------------------------------------------------------------------------

def _ms(x) -> str:
    if x is None:
        return NA
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def _fps(x) -> str:
    if x is None:
        return NA
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def _mb(x) -> str:
    return NA if x is None else f"{x:.0f}"


def _table(columns, rows) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return out


def _shown(path: str) -> str:
    """``path`` relative to the current folder when it lies inside it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _why(row: dict) -> str:
    return f"{row.get('status', '?').replace('_', ' ')}: {row.get('reason') or 'no reason recorded'}"


def _vram_sources(rows) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        src = (r.get("memory") or {}).get("vram_source")
        if r.get("status") == "ok" and src:
            out[src] = out.get(src, 0) + 1
    return out


def module_rows(res: dict) -> list[list[str]]:
    rows = [r for r in res["rows"] if r["kind"] == "module"]
    order = {m: i for i, m in enumerate(res["settings"].get("modules", []))}
    rows.sort(key=lambda r: (order.get(r["module"], 99), BACKENDS.index(r["backend"]), r["device"] != "cuda",
                             PRECISIONS.index(r["precision"]), r["batch"]))
    sources = _vram_sources(rows)
    mixed = len(sources) > 1
    out = []
    for r in rows:
        head = [f"{r['module']} ({r['variant']})", f"{r['backend']} ({r['device']})", r["precision"], str(r["batch"])]
        if r.get("status") != "ok":
            out.append(head + [NA, NA, NA, NA, _why(r)])
            continue
        lat, mem = r["latency_ms"], r.get("memory") or {}
        if str(r.get("cuda_graph", "")).startswith("on"):  # timed with onnxruntime's CUDA graph, plain beside it
            plain = ((r.get("plain") or {}).get("latency_ms") or {}).get("p50")
            head[1] = f"{r['backend']} ({r['device']}, CUDA graph; plain p50 {_ms(plain)} ms)"
        vram = _mb(mem.get("vram_mb"))
        if mixed and mem.get("vram_source"):
            vram += f" ({mem['vram_source']})"
        p50 = _ms(lat["p50"])
        ran = [x["p50"] for x in r.get("repeats") or [] if x.get("p50") is not None]
        if len(ran) > 1:  # --repeats: the process of the median p50, the spread of all of them beside it
            p50 += f" (median of {len(ran)} processes: {_ms(min(ran))}-{_ms(max(ran))})"
        out.append(head + [p50, _ms(lat["p95"]), _fps(r.get("fps")), vram,
                           (r.get("parity") or {}).get("summary", NA)])
    return out


def speedups(res: dict) -> dict[tuple, float]:
    """(backend, device, precision) -> reference FPS / naive FPS, where both ran."""
    runs = {(r["pipeline"], r["backend"], r["device"], r["precision"], r.get("batch", 1)): r for r in res["rows"]
            if r["kind"] == "pipeline" and r.get("status") == "ok" and r.get("fps")}
    out = {}
    for (kind, b, d, p, batch), r in runs.items():
        naive = runs.get(("naive", b, d, p, 1))
        if kind == "reference" and naive and batch == 1:
            out[(b, d, p)] = round(r["fps"] / naive["fps"], 2)
    return out


def pipeline_rows(res: dict) -> list[list[str]]:
    ups = speedups(res)
    out = []
    for r in (x for x in res["rows"] if x["kind"] == "pipeline"):
        head = [r["pipeline"], f"{r['backend']} ({r['device']})", r["precision"], str(r.get("batch", 1))]
        if r.get("status") != "ok":
            out.append(head + [NA] * 6 + [_why(r)])
            continue
        lat, mem, video = r["frame_latency_ms"], r.get("memory") or {}, r.get("video") or {}
        vfps = _fps(video.get("fps")) if video.get("status") == "ok" else NA
        if video.get("status") == "ok" and video.get("of_encode_only"):
            n = len(video.get("rounds") or [])
            vfps += (f" ({video['of_encode_only']:.2f}x encode-only {_fps(video.get('encode_only_fps'))}"
                     + (f", the median of {n} rounds" if n > 1 else "") + ")")
        up = ups.get((r["backend"], r["device"], r["precision"])) if r.get("batch", 1) == 1 else None
        up_s = f"{up:.2f}x" if (up is not None and r["pipeline"] == "reference") else ("1.00x (baseline)" if
                                                                                       r["pipeline"] == "naive" else NA)
        out.append(head + [_fps(r["fps"]), _ms(lat.get("p50")), _ms(lat.get("p95")), _mb(mem.get("vram_mb")), vfps,
                           f"{r.get('faces_swapped_per_frame', 0):.2f}", up_s])
    return out


def stage_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    runs = [r for r in res["rows"] if r["kind"] == "pipeline" and r.get("status") == "ok" and r.get("stages_ms")]
    stages = [s for s in STAGE_ORDER if any(r["stages_ms"].get(s) for r in runs)]
    stages += sorted({k for r in runs for k in r["stages_ms"] if k not in STAGE_ORDER and r["stages_ms"][k]})
    rows = []
    for r in runs:
        vals = [r["stages_ms"].get(s) for s in stages]
        rows.append([f"{r['pipeline']} {r['backend']} ({r['device']}) {r['precision']} b{r.get('batch', 1)}",
                     *(_ms(v) for v in vals),
                     _ms(sum(v for v in vals if v))])
    return ["run", *stages, "sum"], rows


def _header(res: dict) -> list[str]:
    env, s = res["environment"], res["settings"]
    gpu = env.get("gpu") or {}
    t = env.get("torch") or {}
    ort = env.get("onnxruntime") or {}
    trt = env.get("tensorrt") or {}
    cpu = env.get("cpu") or {}
    lines = [f"# ffexport benchmark: {res['host']}", "",
             f"{s['date_utc']} · ffexport {env.get('ffexport')} · commit `{s['git_commit']}` · "
             f"{res.get('elapsed_s', 0):.0f} s{'' if res.get('complete') else ' · INCOMPLETE (interrupted)'}", "",
             f"Command: `{s.get('command') or '(python API)'}`", ""]
    facts = []
    if gpu:
        facts.append(("GPU", f"{gpu.get('name')} (compute capability {gpu.get('compute_capability')}, "
                             f"{gpu.get('memory_gb')} GB), driver {gpu.get('driver') or '?'}"))
    facts.append(("CPU", f"{cpu.get('model')} · {cpu.get('cores')} cores · {cpu.get('memory_gb')} GB"))
    facts.append(("torch", f"{t.get('version')} (CUDA {t.get('cuda_version') or NA}, cuDNN {t.get('cudnn') or NA})"))
    facts.append(("onnxruntime", f"{ort.get('version')} (providers: {', '.join(ort.get('providers', [])) or NA})"))
    facts.append(("TensorRT", trt.get("reason") or NA))
    facts.append(("python", f"{env.get('python')} · {env.get('platform')}"))
    lines += _table(("", ""), facts) + [""]
    return lines


def _reading_notes(res: dict) -> list[str]:
    s = res["settings"]
    rows = [r for r in res["rows"] if r["kind"] == "module"]
    from .memory import VRAM_SOURCES

    srcs = _vram_sources(rows + [r for r in res["rows"] if r["kind"] == "pipeline"])
    vram = "; ".join(f"{VRAM_SOURCES.get(k, k)} ({n} rows)" for k, n in srcs.items()) or "no GPU rows"
    calib = f"`{_shown(s['calib'])}`" if s.get("calib") else "the built-in faces"
    samples = s.get("samples")
    return [
        "How to read it:", "",
        f"* **latency**: one call with a batch of B inputs, synchronised after every call "
        f"({'CUDA events on the runner stream' if s.get('device_resolved') == 'cuda' else 'perf_counter'}); "
        f"{s['warmup']} warm-up calls excluded; up to {s['iters']} timed calls (at most {s.get('max_time')} s each row); "
        f"inputs rotate over {s['rotate']} different real faces already on the device. **FPS** = B × 1000 / mean latency.",
        f"* **VRAM MB**: {vram}. CPU rows use no device memory ({NA}); their peak host RSS is in results.json, "
        "beside torch's allocated/reserved peaks and the memory outside torch's allocator (onnxruntime's arena).",
        "* **parity**: the row's artifact against torch FP32 (run on this benchmark's device with TF32 "
        f"{'on' if s.get('tf32', '').startswith('on') else 'off'}) on the same inputs, gated by the module's "
        "threshold for the row's precision; seeded detectors and landmarkers are gated on relative error.",
        f"* **artifacts**: built before any timing by the `ffexport optimize` passes on the faces of {calib}: "
        f"INT8 calibrated on {samples or 'the passes’ default number of'} samples, each pass parity-gated on "
        f"{s.get('parity_samples') or 'the passes’ default number of'} held-out faces (the parity column is "
        "this benchmark's own check, on other inputs).",
        *_ort_tf32_note(rows),
        "* every row ran in a fresh process (its `pid` is in results.json), one at a time"
        + (f"; each module row in {s['repeats']} processes, every row once before any again: the row shown is the "
           "process of the median p50, `repeats` in results.json lists them all." if (s.get("repeats") or 1) > 1
           else "."), ""]


def _ort_tf32_note(rows) -> list[str]:
    """What onnxruntime's CUDA provider said about TF32 (its own option, apart from torch's)."""
    seen = sorted({str((r.get("cuda_provider_options") or {}).get("use_tf32")) for r in rows
                   if r.get("status") == "ok" and r.get("cuda_provider_options")})
    if not seen:
        return []
    nhwc = sorted({str((r.get("cuda_provider_options") or {}).get("prefer_nhwc")) for r in rows
                   if r.get("status") == "ok" and (r.get("cuda_provider_options") or {}).get("prefer_nhwc")})
    layout = f", `prefer_nhwc={'/'.join(nhwc)}` (`1`: convolutions in NHWC)" if nhwc else ""
    return [f"* onnxruntime's CUDA provider ran with `use_tf32={'/'.join(seen)}` (its own setting: `0` for FP32 and "
            "Q/DQ artifacts, whose FP32 convolutions and matmuls would otherwise use TF32, which torch's FP32 rows "
            "here do not; `1` for FP16 artifacts, whose convolutions onnxruntime runs without tensor cores under "
            f"`0`){layout}."]


def render_markdown(res: dict) -> str:
    s = res["settings"]
    lines = _header(res) + _reading_notes(res)
    if any(r["kind"] == "module" for r in res["rows"]):
        lines += ["## Modules", ""] + _table(MODULE_COLUMNS, module_rows(res)) + [""]
    if any(r["kind"] == "pipeline" for r in res["rows"]):
        lines += [f"## Pipeline: {s['resolution']}, {s['faces']} face(s) per frame", "",
                  f"Reference pipeline (`ffexport.pipeline.Pipeline`, MTCNN detector, enhancer "
                  f"{'on' if s.get('enhance') else 'off'}) and the naive baseline (`ffexport.bench.naive`: the same "
                  "models and backend driven the way common scripts do it) on the same frames, decoded into memory "
                  f"up front: {s['frames']} timed frames for the reference, {s['naive_frames']} for the naive baseline, "
                  "one frame per call. *FPS incl. decode+encode* runs the same frames from an H.264 file through "
                  "decode → pipeline → encode, each run right after an encode-only run of the file's frames (the "
                  "host's encoder alone, same encoder and preset); of "
                  f"{s.get('video_rounds') or 1} such round(s), the one of the median fraction is shown.", ""]
        lines += _table(PIPELINE_COLUMNS, pipeline_rows(res)) + [""]
        cols, rows = stage_rows(res)
        if rows:
            lines += ["Per-stage milliseconds per frame (a separate pass with synchronising stage timers; the naive "
                      f"baseline's host↔device copies are inside its stages, so its transfer is {NA}):", ""]
            lines += _table(cols, rows) + [""]
    bad = [r for r in res["rows"] if r.get("status") != "ok"]
    if bad:
        lines += ["## Not measured here", ""]
        groups: dict[str, list[str]] = {}
        for r in bad:
            what = (f"{r['module']} {r['precision']} b{r['batch']}" if r["kind"] == "module"
                    else f"pipeline {r['pipeline']} {r['precision']}")
            groups.setdefault(f"`{r['backend']} ({r['device']})` — {_why(r)}", []).append(what)
        for k, v in groups.items():
            lines.append(f"* {k} ({len(v)} rows: {', '.join(v[:6])}{' ...' if len(v) > 6 else ''})")
        lines.append("")
    plots = res.get("plots") or []
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(lines)


def compact_table(res: dict) -> str:
    """The measured rows in a few short columns, then the rows not measured grouped by reason (for a terminal)."""
    lines = []
    mods = [r for r in res["rows"] if r["kind"] == "module"]
    ok = [r for r in mods if r.get("status") == "ok"]
    if ok:
        lines.append(f"{'module':<30} {'backend':<12} {'prec':<4} {'b':>2} {'p50 ms':>9} {'p95 ms':>9} {'FPS':>8} "
                     f"{'VRAM':>6}  parity")
        for r in sorted(ok, key=lambda r: (r["module"], BACKENDS.index(r["backend"]), r["device"],
                                           PRECISIONS.index(r["precision"]), r["batch"])):
            lat, mem = r["latency_ms"], r.get("memory") or {}
            lines.append(f"{r['module'] + '/' + r['variant']:<30} {r['backend'] + '/' + r['device']:<12} "
                         f"{r['precision']:<4} {r['batch']:>2} {_ms(lat['p50']):>9} {_ms(lat['p95']):>9} "
                         f"{_fps(r.get('fps')):>8} {_mb(mem.get('vram_mb')):>6}  "
                         f"{(r.get('parity') or {}).get('summary', NA)}")
    pipes = [r for r in res["rows"] if r["kind"] == "pipeline"]
    if pipes:
        lines += ([""] if lines else []) + _table(PIPELINE_COLUMNS, pipeline_rows(res))
    groups: dict[str, int] = {}
    for r in res["rows"]:
        if r.get("status") != "ok":
            key = f"{r['backend']}/{r['device']}: {_why(r)}"
            groups[key] = groups.get(key, 0) + 1
    if groups:
        lines += ["", "not measured:"] + [f"  {n} row(s) {k}" for k, n in groups.items()]
    return "\n".join(lines)


def write_reports(res: dict, out: str | Path, plots: Callable[[dict, Path], list] | None = None) -> list[str]:
    """``results.json``, ``results.md`` and the PNG plots ``plots(res, out)`` makes (e.g.
    :func:`ffexport.bench.plots.make_plots`) in ``out``; their paths."""
    from ..fsutil import write_json_atomic

    out = Path(out)
    res["plots"] = []
    if plots is not None:
        try:
            res["plots"] = [str(p) for p in plots(res, out)]
        except Exception as exc:  # a plot is never worth losing the tables
            res["plots_error"] = f"{type(exc).__name__}: {exc}"
    res["files"] = [str(out / "results.json"), str(out / "results.md"), *res["plots"]]
    write_bytes_atomic(out / "results.md", render_markdown(res).encode())
    write_json_atomic(out / "results.json", res)
    return res["files"]
