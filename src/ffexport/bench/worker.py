"""One benchmark process: ``python -m ffexport.bench.worker --json-config CONFIG``.

The parent (:mod:`ffexport.bench.sweep`, through :mod:`ffexport.bench.pool`)
starts a fresh process for every measured combination, so device memory figures
and caches of one never pollute the next.  The process prints exactly one result
line, ``@@ffexport-bench@@ {json}``, on stdout (logs go to stderr); a user error
becomes a result with ``status: failed`` and its one-line reason.  SIGTERM (the
pool asking it to stop) ends it through its clean-ups, like Ctrl-C.

Kinds of work: ``env`` (what this machine has), ``prepare`` (inputs, references
and artifacts of a module: :mod:`ffexport.bench.prepare`), ``module`` (time one
module on one backend/precision/batch: :func:`measure_module`; an onnxruntime row on CUDA is timed with
onnxruntime's CUDA graph when it takes one, as the pipeline's fixed-shape stages run, and keeps its plain run
under ``plain``), ``pipeline`` and
``naive`` (end to end: :mod:`ffexport.bench.e2e`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from ..vocab import TORCH_BACKENDS

MARK = "@@ffexport-bench@@"


def _load_feeds(path: str, device: str) -> list[dict]:
    import torch

    feeds = torch.load(path, weights_only=True)
    return [{k: v.to(device) for k, v in f.items()} for f in feeds]


def _torch_model(cfg: dict, spec):
    import torch

    path = cfg.get("model")
    if path and Path(path).is_file():
        return torch.load(path, weights_only=False)
    from ..models import build_model

    return build_model(spec)


def open_module_runner(cfg: dict, spec):
    """The runner a ``module`` row times (not yet activated)."""
    from ..backends import open_runner

    backend, device, precision = cfg["backend"], cfg["device"], cfg["precision"]
    if backend in TORCH_BACKENDS:
        kw = {"cache_dir": Path(cfg["artifacts"]) / ".inductor"} if backend == "compile" and cfg.get("artifacts") else {}
        return open_runner(backend, spec=spec, model=_torch_model(cfg, spec), device=device, precision=precision,
                           **kw)
    if backend == "ort":
        return open_runner("ort", spec=spec, path=cfg["artifact"], device=device,
                           **({"threads": int(cfg["threads"])} if cfg.get("threads") else {}),
                           **({"cuda_graph": True} if cfg.get("cuda_graph") else {}))
    return open_runner("trt", spec=spec, path=cfg["artifact"], device=device)


def _runner_facts(runner) -> dict:
    facts: dict = {}
    sess = getattr(runner, "sess", None)
    if sess is not None:
        facts["providers"] = sess.get_providers()
        try:
            opts = sess.get_provider_options()
            cuda = opts.get("CUDAExecutionProvider")
            if cuda:
                facts["cuda_provider_options"] = {k: cuda[k] for k in ("use_tf32", "cudnn_conv_algo_search",
                                                                       "prefer_nhwc", "device_id") if k in cuda}
        except Exception:
            pass
    if getattr(runner, "compile_s", None):
        facts["compile_s"] = dict(runner.compile_s)  # the first call of each input shape, apart from latency
    flavor = getattr(runner, "flavor", None)
    if flavor is not None:
        facts["runtime"] = flavor.label
    return facts


def parity_summary(record: dict) -> str:
    """``PASS cosine_min=0.999987`` (each gate's value, 6 significant digits)."""
    parts = [f"{g['metric']}={g['value']:.6g}" if isinstance(g["value"], float) else f"{g['metric']}={g['value']}"
             for g in record["gates"]]
    return ("PASS " if record["passed"] else "FAIL ") + ", ".join(parts)


def measure_module(cfg: dict) -> dict:
    """Time one module on one backend/precision/batch and check its outputs against torch FP32."""
    from .memory import MemoryProbe

    device = cfg["device"]
    probe = MemoryProbe(device)  # before anything touches CUDA: the device's baseline
    import torch

    from ..config import resolve_spec
    from ..export.parity import check_parity
    from .prepare import set_tf32

    set_tf32(cfg.get("tf32", False))
    if cfg.get("threads") and not device.startswith("cuda"):
        torch.set_num_threads(int(cfg["threads"]))
    if device.startswith("cuda"):
        torch.zeros(1, device=device)
        probe.context_ready()
    spec = resolve_spec(cfg["module"], cfg["variant"], None, cfg.get("config_dir"))
    feeds = _load_feeds(cfg["inputs"], device)
    probe.reset_peaks()
    t0 = time.perf_counter()
    runner = open_module_runner(cfg, spec)
    runner.activate()
    load_s = time.perf_counter() - t0
    try:
        timing, memory, outs, facts = _time_runner(cfg, runner, feeds, probe)
    finally:
        runner.deactivate()
    plain = None
    if cfg["backend"] == "ort" and device.startswith("cuda"):
        # onnxruntime's stages run with its CUDA graph where the shapes are fixed (pipeline.stages), and a module
        # row's shapes are: the row is timed that way when onnxruntime takes a graph, the plain run kept beside it
        graphed = open_module_runner(dict(cfg, cuda_graph=True), spec)
        probe.reset_peaks()
        graphed.activate()
        try:
            g_timing, g_memory, g_outs, g_facts = _time_runner(cfg, graphed, feeds, probe)
            state = graphed.describe().get("cuda_graph") or "off"
        finally:
            graphed.deactivate()
        facts["cuda_graph"] = state
        if state.startswith("on"):
            summary = timing.summary(int(cfg["batch"]))
            plain = {"latency_ms": summary["latency_ms"], "fps": summary["fps"], "iters": summary["iters"],
                     **({"sm_clock_mhz": facts["sm_clock_mhz"]} if "sm_clock_mhz" in facts else {})}
            timing, memory, outs, facts = g_timing, g_memory, g_outs, dict(g_facts, cuda_graph=state)
    ref = torch.load(cfg["reference"], weights_only=True)
    trained = bool(spec.pretrained)
    label = f"{cfg['backend']} {cfg['precision']} on {device}"
    parity = check_parity(spec, ref["outputs"].__getitem__, outs.__getitem__, range(len(outs)),
                          precision=cfg["precision"], trained=trained, reference_label=ref["label"],
                          candidate_label=label, inputs_label=f"{len(outs)} real inputs of batch {cfg['batch']}",
                          raise_on_fail=False)
    result = {"status": "ok", "load_s": round(load_s, 3), **timing.summary(int(cfg["batch"])),
              "rotated_inputs": len(feeds), "memory": memory, "parity": {
                  "summary": parity_summary(parity), "passed": parity["passed"], "reference": parity["reference"],
                  "gated_on": parity["gated_on"], "gates": parity["gates"], "note": parity["note"],
                  "max_abs": parity["metrics"]["max_abs"], "rel_err": parity["metrics"]["rel_err"]},
              **facts}
    if plain is not None:
        result["plain"] = plain  # the same runner without the graph (what a caller of OrtRunner() gets)
    return result


def _time_runner(cfg: dict, runner, feeds: list[dict], probe):
    """Time an activated runner over ``feeds``; its timing, memory, outputs on the CPU and facts."""
    from .timing import Timer

    k = len(feeds)
    timing = Timer(cfg["device"]).run(lambda i: runner.infer(feeds[i % k]), iters=int(cfg["iters"]),
                                      warmup=int(cfg["warmup"]), max_seconds=cfg.get("max_time"))
    clock = probe.sm_clock_mhz()  # the clock the loop ended at (a GPU's, from NVML)
    memory = probe.read(runner)
    outs = [{n: v.detach().float().cpu() for n, v in runner.infer(f).items()} for f in feeds]
    facts = _runner_facts(runner)
    if clock is not None:
        facts["sm_clock_mhz"] = clock
    return timing, memory, outs, facts


def collect_env(cfg: dict) -> dict:
    from .report import collect_environment

    return collect_environment(cfg.get("device", "auto"))


def run_prepare(cfg: dict) -> dict:
    from .prepare import prepare

    return {"status": "ok", **prepare(cfg)}


def run_e2e(cfg: dict) -> dict:
    from . import e2e

    return e2e.measure(cfg)


KINDS = {"env": collect_env, "prepare": run_prepare, "module": measure_module, "pipeline": run_e2e,
         "naive": run_e2e}


def run(cfg: dict) -> dict:
    from ..errors import FFExportError

    if cfg.get("cwd"):
        os.chdir(cfg["cwd"])
    os.environ.update(cfg.get("environ") or {})
    kind = cfg.get("kind")
    if kind not in KINDS:
        return {"status": "failed", "reason": f"unknown worker kind {kind!r}"}
    t0 = time.perf_counter()
    try:
        if cfg.get("adopted"):  # the users' models the benchmark runs (adopted by the parent: reused here)
            from ..artifacts.adopt import adopt_all

            a = cfg["adopted"]
            adopt_all({m: Path(p) for m, p in a["onnx"].items()}, a["out"],
                      {m: Path(p) for m, p in a.get("contracts", {}).items()})
        out = KINDS[kind](cfg)
    except FFExportError as exc:
        out = {"status": "failed", "reason": str(exc)}
    except Exception as exc:  # a bug or a library failure: keep the traceback in the log, one line in the row
        traceback.print_exc(file=sys.stderr)
        text = str(exc).strip().splitlines()
        out = {"status": "failed", "reason": f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": "),
               "bug": True}
    out["pid"] = os.getpid()
    out["worker_s"] = round(time.perf_counter() - t0, 3)
    return out


def child_main(cfg_path: str, out_path: str) -> None:
    """Entry of a worker forked from the benchmark's fork server: output to ``out_path``, then :func:`main`."""
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    main(["--json-config", cfg_path])
    sys.stdout.flush()
    sys.stderr.flush()


def _stop_on_sigterm() -> None:
    """SIGTERM -> ``SystemExit``: ``finally`` blocks run (runners deactivated, temporary files removed)."""
    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    _stop_on_sigterm()
    ap = argparse.ArgumentParser(prog="python -m ffexport.bench.worker", description=__doc__.splitlines()[0])
    ap.add_argument("--json-config", required=True, help="a JSON file, or an inline JSON object")
    args = ap.parse_args(argv)
    text = args.json_config
    cfg = json.loads(text if text.lstrip().startswith("{") else Path(text).read_text())
    result = run(cfg)
    sys.stdout.write(f"\n{MARK} {json.dumps(result, default=str)}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
