"""``ffexport simplify | fp16 | int8 | optimize``: the optimization passes, each gated by parity on real faces."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InputSpecError
from rich.markup import escape

from . import options as O
from .common import Failures, console, human_size, one_line_warnings, progress, rel



def _exclude(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def split_onnx(values) -> tuple[dict, Path | None]:
    """``--onnx`` values -> ({module: path} of MODULE=PATH values, the one plain PATH or None)."""
    from .. import specs
    from ..artifacts.adopt import parse_module_paths

    named = [v for v in values or () if v.partition("=")[0] in specs.modules() and "=" in v]
    plain = [v for v in values or () if v not in named]
    if len(plain) > 1:
        raise InputSpecError(f"--onnx takes one plain PATH (got {len(plain)}); name the module of each user model "
                             "with MODULE=PATH")
    if plain and named:
        raise InputSpecError("give either MODULE=PATH values or one plain PATH to --onnx, not both")
    return parse_module_paths(named), (Path(plain[0]) if plain else None)


def _runs(module, onnx, inputs, variant, out, calib, samples, parity_samples, config_dir, precision, bar, task,
          contract=()):
    """A Chain per selected target."""
    from ..config import resolve_spec
    from ..artifacts.adopt import adopt_all, parse_module_paths
    from ..artifacts.optimize import Chain
    from ..artifacts.targets import module_target, onnx_target
    from .common import select_modules

    def say(msg):
        bar.update(task, status=msg[-90:])

    named, plain = split_onnx(onnx)
    contracts = parse_module_paths(contract, "--contract")
    if contracts and not named:
        raise InputSpecError("--contract MODULE=FILE describes a user model given with --onnx MODULE=PATH")
    if named or plain is not None:
        if module:
            raise InputSpecError("give either --module or --onnx, not both")
        if plain is not None:
            t = onnx_target(plain, inputs, out, config_dir)
            return [Chain(t, calib=calib, samples=samples, parity_samples=parity_samples, progress=say,
                          precision=precision, config_dir=config_dir)]
        if inputs:
            raise InputSpecError("--input is for a plain --onnx PATH; a MODULE=PATH model's inputs come from its layout")
        out = out or Path("artifacts")
        variants = adopt_all(named, out, contracts, say)
        return [Chain(module_target(resolve_spec(m, v, None, config_dir), out), calib=calib, samples=samples,
                      parity_samples=parity_samples, progress=say, precision=precision, config_dir=config_dir)
                for m, v in variants.items()]
    if not module:
        raise InputSpecError("give --module NAME (or 'all'), or --onnx MODULE=PATH (or one plain PATH)")
    if inputs:
        raise InputSpecError("--input is for --onnx files ffexport did not export; registered modules know their inputs")
    out = out or Path("artifacts")
    names = select_modules(module)
    if len(names) > 1 and variant:
        raise InputSpecError("--variant applies to one module; name it with --module")
    runs = []
    for n in names:
        spec = resolve_spec(n, variant, None, config_dir)
        runs.append(Chain(module_target(spec, out), calib=calib, samples=samples, parity_samples=parity_samples,
                        progress=say, precision=precision, config_dir=config_dir))
    return runs


def _run_all(what: str, runs_factory, work, show=None) -> list:
    """``work(run)`` for every target; with several, a failing one does not stop the others: ``show(rows)``
    prints what finished, then the failures' table, and the command ends with one error line and exit 1."""
    from ..errors import FFExportError

    rows = []
    with progress() as bar:
        task = bar.add_task(what, total=None, status="")
        runs = runs_factory(bar, task)
        bar.update(task, total=len(runs))
        failures = Failures(f"{what} jobs", len(runs))
        for run in runs:
            bar.update(task, description=f"{what} {run.target.label}")
            try:
                rows.append((run, work(run)))
            except FFExportError as exc:
                failures.add(run.target.label, exc)
            bar.advance(task)
    if show is not None:
        show(rows)
    failures.table()
    failures.raise_if_any()
    return rows


def register(app: typer.Typer) -> None:
    @app.command("simplify")
    def simplify_cmd(
        module: O.Module = None, onnx: O.OnnxFile = [], contract: O.Contract = [],
        inputs: O.Inputs = [], variant: O.Variant = None,
        out: O.OptionalOut = None, force: O.Force = False, calib: O.Calib = None,
        parity_samples: O.ParitySamples = None, config_dir: O.ConfigDir = None,
    ) -> None:
        """Simplify the FP32 ONNX (onnxsim, onnxslim fallback) -> fp32.sim.onnx; prints the op counts."""
        with one_line_warnings():
            _run_all("simplify", lambda bar, task: _runs(module, onnx, inputs, variant, out, calib, None,
                                                                parity_samples, config_dir, "fp32", bar, task, contract),
                            lambda run: _step(run, "simplify", force), show=lambda rows: _show(rows, "simplify", _ops_table))

    @app.command("fp16")
    def fp16_cmd(
        module: O.Module = None, onnx: O.OnnxFile = [], contract: O.Contract = [],
        inputs: O.Inputs = [], variant: O.Variant = None,
        out: O.OptionalOut = None, force: O.Force = False, calib: O.Calib = None,
        parity_samples: O.ParitySamples = None, config_dir: O.ConfigDir = None,
        keep_io_types: O.KeepIoTypes = None,
    ) -> None:
        """FP16 ONNX -> fp16.onnx; fragile nodes stay FP32, more are kept FP32 until the parity gate passes."""
        with one_line_warnings():
            _run_all("fp16", lambda bar, task: _runs(module, onnx, inputs, variant, out, calib, None,
                                                            parity_samples, config_dir, "fp16", bar, task, contract),
                            lambda run: _step(run, "fp16", force, keep_io_types=keep_io_types),
                            show=lambda rows: _show(rows, "fp16", _fp16_table))

    @app.command("int8")
    def int8_cmd(
        module: O.Module = None, onnx: O.OnnxFile = [], contract: O.Contract = [],
        inputs: O.Inputs = [], variant: O.Variant = None,
        out: O.OptionalOut = None, force: O.Force = False, calib: O.Calib = None,
        parity_samples: O.ParitySamples = None, config_dir: O.ConfigDir = None,
        method: O.Method = None, samples: O.Samples = None, exclude: O.Exclude = [],
    ) -> None:
        """Calibrated INT8 Q/DQ ONNX -> int8.onnx (symmetric, per-channel weights, float biases)."""
        with one_line_warnings():
            _run_all("int8", lambda bar, task: _runs(module, onnx, inputs, variant, out, calib, samples,
                                                            parity_samples, config_dir, "int8", bar, task, contract),
                            lambda run: _step(run, "int8", force, method=method, exclude=_exclude(exclude)),
                            show=lambda rows: _show(rows, "int8", _int8_table))

    @app.command("optimize")
    def optimize_cmd(
        module: O.Module = None, onnx: O.OnnxFile = [], contract: O.Contract = [],
        inputs: O.Inputs = [], variant: O.Variant = None,
        out: O.OptionalOut = None, calib: O.Calib = None,
        parity_samples: O.ParitySamples = None, config_dir: O.ConfigDir = None,
        precision: O.Precision = "fp16",
        force: O.Force = False,
        method: O.Method = None, samples: O.Samples = None, exclude: O.Exclude = [],
        keep_io_types: O.KeepIoTypes = None,
    ) -> None:
        """export -> simplify -> fp16 | int8, skipping steps whose inputs have not changed."""
        from ..artifacts.optimize import check_precision

        check_precision(precision)
        with one_line_warnings():
            _run_all("optimize", lambda bar, task: _runs(module, onnx, inputs, variant, out, calib, samples,
                                                                parity_samples, config_dir, precision, bar, task, contract),
                            lambda run: _optimize(run, precision, force, keep_io_types=keep_io_types,
                                                  method=method, exclude=_exclude(exclude)),
                            show=lambda rows: _show(rows, f"optimize --precision {precision}", None))


def _show(rows, title: str, detail) -> None:
    if detail is not None:
        for run, results in rows:
            detail(run, results[-1])
    if rows:
        _steps_table(rows, title)


_STEP_FLAGS = {"fp16": ("keep_io_types",), "int8": ("method", "exclude")}  # the CLI flags each pass takes


def _for(step: str, kw: dict) -> dict:
    return {k: v for k, v in kw.items() if k in _STEP_FLAGS.get(step, ())}


def _optimize(run, precision: str, force: bool, **kw) -> list:
    results: list = []
    run.faceset()  # a bad --calib folder is one line before the export writes anything
    run.chain(precision, force={"export", "simplify", precision} if force else set(), results=results,
              **_for(precision, kw))
    return results


def _step(run, step: str, force: bool, **kw) -> list:
    """A single pass: on --onnx the given file is its parent; on --module the missing or stale upstream
    steps (export, simplify) run first."""
    results: list = []
    run.faceset()  # a bad --calib folder is one line before the export writes anything
    if run.target.source is not None:
        run.prepare()
        parent = run.target.fp32
        fn = {"simplify": run.simplify, "fp16": run.fp16, "int8": run.int8}[step]
        results.append(fn(parent, force=force, **_for(step, kw)))
        return results
    precision = {"simplify": "fp32"}.get(step, step)
    run.chain(precision, force={step} if force else set(), results=results, **_for(step, kw))
    return results


def _steps_table(rows, title: str) -> None:
    from rich.table import Table

    from ..passes.proof.judge import summary

    t = Table(title=title)
    for col in ("module", "step", "artifact", "status", "size", "parity", "time s"):
        t.add_column(col, overflow="fold")
    for run, results in rows:
        for r in results:
            rec = r.record or {}
            t.add_row(escape(run.target.label), r.step, escape(rel(r.path)),
                      "skipped (up to date)" if r.skipped else "done",
                      human_size(rec.get("size_bytes")), escape(summary(rec.get("parity"))),
                      "-" if r.skipped or rec.get("duration_s") is None else f"{rec['duration_s']:.1f}")
    console.print(t)


def _ops_table(run, result) -> None:
    from rich.table import Table

    rec = result.record or {}
    before, after = rec.get("ops_before", {}), rec.get("ops_after", {})
    t = Table(title=escape(f"{run.target.label}: {rec.get('parent', {}).get('file', '?')} -> {rec.get('file', '?')} "
                           f"with {rec.get('tool', '?')}"))
    for col in ("op", "before", "after", "change"):
        t.add_column(col, justify="right" if col != "op" else "left")
    for op in sorted(set(before) | set(after), key=lambda o: (-before.get(o, 0), o)):
        b, a = before.get(op, 0), after.get(op, 0)
        t.add_row(op, str(b), str(a), f"{a - b:+d}" if a != b else "")
    t.add_row("[bold]total", f"[bold]{sum(before.values())}", f"[bold]{sum(after.values())}",
              f"[bold]{sum(after.values()) - sum(before.values()):+d}")
    console.print(t)
    for f in rec.get("fallback_from", []):
        console.print(f"[yellow]{f['tool']} not used:[/] {escape(f['failed'])}")


def _fp16_table(run, result) -> None:
    from rich.table import Table

    rec = result.record or {}
    counts = rec.get("kept_fp32_counts", {})
    console.print(f"{run.target.label}: {rec.get('fp16_nodes', '?')} of {rec.get('nodes', '?')} nodes in FP16; "
                  f"kept FP32: {', '.join(f'{v} {k}' for k, v in counts.items()) or 'none'}")
    chosen = [k for k in rec.get("kept_fp32", []) if k["reason"] in ("overflow", "parity", "converter", "requested")]
    if chosen:
        t = Table(title=f"{run.target.label}: nodes kept FP32 by parity and range checks")
        for col in ("node", "op", "reason", "why"):
            t.add_column(col, overflow="fold")
        for k in chosen[:40]:
            t.add_row(escape(k["node"]), k["op"], k["reason"], escape(k["detail"]))
        console.print(t)


def _int8_table(run, result) -> None:
    from rich.table import Table

    rec = result.record or {}
    if not rec.get("quantized", True):
        console.print(escape(f"{run.target.label}: {rec.get('note')}"))
        return
    q = rec.get("qdq", {})
    console.print(f"{run.target.label}: {q.get('quantize_linear')} Q / {q.get('dequantize_linear')} DQ; weights "
                  f"per-channel {q.get('weights_per_channel')}, per-tensor {len(q.get('weights_per_tensor', []))}, "
                  f"float {len(q.get('weights_float', []))}; non-zero zero points "
                  f"{len(q.get('nonzero_zero_points', []))}; float biases {q.get('biases_float')}; "
                  f"calibrated on {rec.get('calibration_samples')} faces ({rec.get('options', {}).get('method')})")
    if rec.get("excluded"):
        t = Table(title=f"{run.target.label}: nodes left in float")
        for col in ("node", "op", "reason", "why"):
            t.add_column(col, overflow="fold")
        for e in rec["excluded"][:40]:
            t.add_row(escape(e["node"]), e["op"], e["reason"], escape(e["detail"]))
        if len(rec["excluded"]) > 40:
            t.add_row(f"... {len(rec['excluded']) - 40} more (see the manifest)", "", "", "")
        console.print(t)
