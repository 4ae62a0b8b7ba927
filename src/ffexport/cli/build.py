"""``ffexport build``: every artifact the config names, skipping what is up to date (see
:mod:`ffexport.artifacts.build`); ``--check`` changes nothing and fails when something is stale or failed."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import options as O
from .common import console, err_console, one_line_warnings, progress

Precisions = typer.Option("fp32,fp16,int8", "--precisions", help="comma-separated: fp32, fp16, int8")
Trt = typer.Option(None, "--trt/--no-trt", help="build TensorRT engines (default: when a TensorRT builder is installed)")
Flavor = typer.Option("auto", "--flavor", help="engine builder: auto | tensorrt | tensorrt_rtx")


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build_cmd(
        config: Optional[Path] = typer.Option(None, "--config", help="the pipeline.yaml whose modules and variants "
                                              "are built (its folder holds the <module>.yaml files; default "
                                              "configs/pipeline.yaml)"),
        module: O.Module = "all",
        precisions: str = Precisions,
        calib: O.Calib = Path("calibration"),
        out: O.Out = Path("artifacts"),
        trt: Optional[bool] = Trt,
        flavor: str = Flavor,
        check: bool = typer.Option(False, "--check", help="change nothing; exit 1 listing every step that is stale "
                                                          "or failed"),
        jobs: int = typer.Option(1, "--jobs", "-j", help="modules built at once, each in its own process",
                                 callback=O.at_least_one),
        force: bool = typer.Option(False, "--force", help="redo every step even when its inputs are unchanged"),
        config_dir: O.ConfigDir = None,
    ) -> None:
        """Export, optimise and build engines for every module the config names, skipping what is up to date, and
        write artifacts/index.json."""
        config_dir = _config_folder(config, config_dir)
        outcomes = run_build(module, precisions, calib, out, trt, flavor, force, config_dir, check=check, jobs=jobs)
        _summary(outcomes, check)


def _config_folder(config: Path | None, config_dir: Path | None) -> Path | None:
    from ..errors import ConfigError

    if config is None:
        return config_dir
    if config_dir is not None:
        raise ConfigError("give --config or --config-dir, not both")
    if not config.is_file():
        raise ConfigError(f"--config {config}: no such file; pass the pipeline.yaml to build (like "
                          "configs/pipeline.yaml)")
    if config.name != "pipeline.yaml":
        raise ConfigError(f"--config {config}: expected a file named pipeline.yaml (its folder holds the "
                          "<module>.yaml files); use --config-dir for a folder")
    return config.parent


def run_build(module: str | None, precisions: str, calib: Path | None, out: Path, trt: bool | None, flavor: str,
              force: bool, config_dir: Path | None, *, check: bool = False, jobs: int = 1):
    """The specs the config names, then :func:`ffexport.artifacts.build.build` with progress; returns its outcomes
    plus a failed outcome for each module whose spec could not be resolved."""
    import time

    from .. import specs as registry
    from .._lazy import available
    from ..artifacts.build import BuildOptions, Outcome, Step, build
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
    if bad or not wanted:
        what = f"unknown precision {bad[0]!r}" if bad else "no precision given"
        raise InputSpecError(f"--precisions {precisions!r}: {what}; valid: {', '.join(PRECISIONS)}")
    engines = trt if trt is not None else (available("tensorrt") or available("tensorrt_rtx"))
    specs, unresolved = [], []
    for name in select_modules(module or "all"):
        try:
            variant = pipeline.variant_of(name)  # (a pipeline's `identity` generator is no artifact)
            specs.append(resolve_spec(name, variant if variant in registry.variants(name) else None,
                                      directory=config_dir))
        except FFExportError as exc:
            unresolved.append((name, exc))
    options = BuildOptions(out=Path(out), config_dir=config_dir, calib=Path(calib or "calibration"),
                           flavor=flavor if engines else None, force=force)
    total = len(specs) * len(wanted) * (2 if engines else 1)
    with one_line_warnings(), progress() as bar:
        task = bar.add_task("check" if check else "build", total=total, status="")

        def on_step(o) -> None:
            bar.advance(task)
            bar.update(task, description=o.step.label, status=o.state)
            if bar.disable or check:  # no live progress (output to a log): one line per finished step
                console.print(_line(o), soft_wrap=True, markup=False)

        def status(msg: str) -> None:
            bar.update(task, status=msg[-90:])

        t0 = time.perf_counter()
        outcomes = build(specs, wanted, options, check=check, jobs=jobs, on_step=on_step, progress=status)
        bar.update(task, description=f"{'checked' if check else 'built'} in {time.perf_counter() - t0:.1f} s")
    if not engines and trt is None and not check:  # (--no-trt asked for none: nothing to say)
        err_console.print("[yellow]note:[/] no TensorRT builder installed: engines skipped "
                          "(pip install 'ffexport\\[trt]' for TensorRT for RTX)")
    for name, exc in unresolved:
        outcomes.append(Outcome(Step(_Unresolved(name), "-"), "failed", error=str(exc)))
    return outcomes


class _Unresolved:
    """A module whose spec could not be resolved, standing in for it in the summary."""

    def __init__(self, module: str):
        self.module = self.key = module


def _line(o) -> str:
    tail = f" ({o.gate})" if o.gate else ""
    if o.state == "failed":
        tail = f": {o.error}"
    elif o.state == "stale":
        tail = f": {o.why}" + (f" ({o.error})" if o.error else "")
    secs = f" in {o.seconds:.1f} s" if o.state in ("built", "failed") and o.seconds else ""
    return f"{o.step.label}: {o.state}{secs}{tail}"


def _summary(outcomes, check: bool) -> None:
    """Counts per state; the failed (or, for --check, stale) steps in a table; one error line and exit 1 if any."""
    from collections import Counter

    from rich.table import Table

    from ..errors import FFExportError

    counts = Counter(o.state for o in outcomes)
    console.print(", ".join(f"{n} {state}" for state, n in counts.items()) or "nothing to build")
    bad = [o for o in outcomes if o.state in ("failed", "stale")]
    if not bad:
        return
    t = Table(title=f"{len(bad)} of {len(outcomes)} steps {'stale or failed' if check else 'failed'}")
    t.add_column("step")
    t.add_column("state")
    t.add_column("why", overflow="fold")
    for o in bad:
        t.add_row(o.step.label, o.state, o.why + (f" ({o.error})" if o.why and o.error else "") or (o.error or ""))
    console.print(t)
    first = bad[0]
    if len(outcomes) == 1 and not check:  # a single step: its own error line
        raise FFExportError(first.error or "failed")
    more = f" (+{len(bad) - 1} more, see the table above)" if len(bad) > 1 else ""
    if check:
        raise FFExportError(f"{len(bad)} of {len(outcomes)} steps are not up to date; {first.step.label}: "
                            f"{first.why or first.error}{more}; run `ffexport build`")
    rest = " (the others finished)" if len(bad) < len(outcomes) else ""
    raise FFExportError(f"{len(bad)} of {len(outcomes)} steps failed{rest}; {first.step.label}: {first.error}{more}")
