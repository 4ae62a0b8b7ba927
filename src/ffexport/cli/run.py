"""``ffexport run``: the main job on the built-in default.

export -> simplify -> FP16 -> INT8 (calibrated on calibration/) -> TensorRT
engines (where a TensorRT builder is installed) -> the lineage report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from . import options as O
from .common import Failures, console, err_console, one_line_warnings, progress


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        module: O.Module = "all",
        precisions: str = typer.Option("fp32,fp16,int8", "--precisions", help="comma-separated"),
        calib: O.Calib = Path("calibration"),
        out: O.Out = Path("artifacts"),
        trt: Optional[bool] = typer.Option(None, "--trt/--no-trt",
                                           help="build TensorRT engines (default: when a TensorRT builder is installed)"),
        force: bool = typer.Option(False, "--force", help="redo every step even when its inputs are unchanged"),
        config_dir: O.ConfigDir = None,
    ) -> None:
        """Export every module, optimise it at each precision with parity gates, build engines, and report."""
        from .. import specs as registry
        from .._lazy import available
        from ..artifacts.optimize import Settings, optimize
        from ..config import config_dir as find_config_dir
        from ..config import resolve_spec
        from ..errors import FFExportError, InputSpecError
        from ..pipeline.settings import load_pipeline_settings
        from ..vocab import PRECISIONS
        from .common import select_modules

        find_config_dir(config_dir)  # a --config-dir that does not exist is one line, before any work
        pipeline = load_pipeline_settings(config_dir)  # the variants `swap` runs are the ones built

        wanted = [p.strip() for p in precisions.split(",") if p.strip()]
        bad = [p for p in wanted if p not in PRECISIONS]
        if bad:
            raise InputSpecError(f"unknown precision {bad[0]!r}; valid: {', '.join(PRECISIONS)}")
        build_trt = trt if trt is not None else (available("tensorrt") or available("tensorrt_rtx"))
        names = select_modules(module)
        steps = len(names) * len(wanted) * (2 if build_trt else 1)
        failures = Failures("module steps", len(names) * len(wanted))
        with one_line_warnings(), progress() as bar:
            task = bar.add_task("run", total=steps, status="")
            for name in names:
                try:
                    variant = pipeline.variant_of(name)  # (a pipeline's `identity` generator is no artifact)
                    spec = resolve_spec(name, variant if variant in registry.variants(name) else None,
                                        directory=config_dir)
                except FFExportError as exc:
                    failures.add(name, exc)
                    bar.advance(task, len(wanted) * (2 if build_trt else 1))
                    continue
                for precision in wanted:
                    bar.update(task, description=f"{spec.key} {precision}")
                    say = _status(bar, task)
                    t0, state = time.perf_counter(), "ok"
                    try:
                        # FP32/FP16 are proven on the built-in faces, INT8 calibrated and proven on --calib
                        optimize(spec, precision, Settings(out=out, config_dir=config_dir, force=force, progress=say,
                                                           calib=calib if precision == "int8" else None))
                        if build_trt:
                            from ..artifacts.engines import build_module_engine

                            bar.update(task, description=f"{spec.key} {precision} TensorRT")
                            build_module_engine(spec, precision, out=out, calib=calib, force=force, progress=say,
                                                config_dir=config_dir)
                    except FFExportError as exc:
                        failures.add(f"{spec.key} {precision}", exc)
                        state = "FAILED (see the summary)"
                    bar.advance(task, 2 if build_trt else 1)
                    if bar.disable:  # no live progress (output to a log): one line per finished step
                        console.print(f"{spec.key} {precision}{' + engine' if build_trt else ''}: {state} "
                                      f"in {time.perf_counter() - t0:.1f} s")
        if not build_trt:
            err_console.print("[yellow]note:[/] no TensorRT builder installed: engines skipped "
                              "(pip install 'ffexport[trt]' for TensorRT for RTX)")
        from .report import _table, collect

        for report in collect(module, None, out, None, config_dir):
            _table(report)
        failures.table()
        console.print(f"artifacts and manifests under {out}/; `ffexport report --json` for the full lineage")
        failures.raise_if_any()


def _status(bar, task):
    def say(msg: str) -> None:
        bar.update(task, status=msg[-90:])

    return say
