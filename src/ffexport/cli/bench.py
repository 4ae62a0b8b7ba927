"""``ffexport bench``: latency / FPS / VRAM per module and end to end, beside a naive pipeline."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from ..bench.plan import DEFAULT_BACKENDS, DEFAULT_ISOLATION, ISOLATION
from ..vocab import BACKENDS, PRECISIONS
from . import options as O
from .common import MODULE_HELP, OUT_HELP, console, err_console, one_line_warnings


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_cmd(
        ctx: typer.Context,
        modules: str = typer.Option("all", "--modules", "-m", help=MODULE_HELP + "; 'none' with --pipeline"),
        backends: str = typer.Option(DEFAULT_BACKENDS, "--backends",
                                     help=f"{', '.join(BACKENDS)} (compile only when named); NAME:cpu or NAME:cuda "
                                          "pins a device (e.g. ort:cpu)"),
        precisions: str = typer.Option(",".join(PRECISIONS), "--precisions",
                                       help=f"comma-separated {', '.join(PRECISIONS)}"),
        batch: str = typer.Option("1", "--batch", help="comma-separated batch sizes, e.g. 1,8"),
        batch_cpu: Optional[str] = typer.Option(None, "--batch-cpu",
                                                help="batch sizes of CPU rows on a GPU machine (default: --batch)"),
        precisions_cpu: Optional[str] = typer.Option(None, "--precisions-cpu",
                                                     help="precisions of CPU rows on a GPU machine (default: --precisions)"),
        pipeline: bool = typer.Option(False, "--pipeline/--no-pipeline",
                                      help="also benchmark the whole pipeline (reference and naive, side by side)"),
        pipeline_batch: str = typer.Option("1", "--pipeline-batch",
                                           help="frames per pipeline call, comma-separated (e.g. 1,8,32): a row each"),
        resolution: str = typer.Option("1080p", "--resolution", help="pipeline frame size: 360p, 720p, 1080p, 4k or WxH"),
        frames: int = typer.Option(32, "--frames", help="timed pipeline frames"),
        faces: int = typer.Option(1, "--faces", help="faces per pipeline frame"),
        naive: bool = typer.Option(True, "--naive/--no-naive", help="run the naive baseline beside the pipeline"),
        naive_frames: int = typer.Option(8, "--naive-frames", help="timed frames of the (slow) naive baseline"),
        video: bool = typer.Option(True, "--video/--no-video", help="also time the pipeline with decode + encode"),
        video_rounds: int = typer.Option(3, "--video-rounds",
                                         help="rounds of encode-only then file to file in the video row; the round "
                                              "of the median fraction counts"),
        enhance: bool = typer.Option(True, "--enhance/--no-enhance", help="run the enhancer in the pipeline"),
        iters: int = typer.Option(100, "--iters", help="timed calls per row (at most; see --max-time)"),
        repeats: int = typer.Option(1, "--repeats",
                                    help="fresh processes per module row, all rows once before any again; the row "
                                         "is the process of the median p50, every one listed"),
        warmup: int = typer.Option(10, "--warmup", help="untimed calls before timing"),
        max_time: float = typer.Option(10.0, "--max-time", help="stop a row's timing after this many seconds (0: never)"),
        rotate: int = typer.Option(4, "--rotate", help="different real inputs the timed calls rotate over"),
        out: Path = typer.Option(Path("artifacts"), "--out",
                                 help=OUT_HELP + "; the rows' artifacts are built there before any timing, "
                                                 "or reused"),
        report: str = typer.Option("benchmarks/results/{host}", "--report",
                                   help="folder of results.json, results.md and the plots; {host} becomes the GPU "
                                        "name (e.g. nvidia-h100-80gb-hbm3) or cpu-<model>"),
        device: str = typer.Option("auto", "--device", help="auto | cuda | cpu"),
        calib: Optional[Path] = typer.Option(None, "--calib",
                                             help="face photos with landmark JSONs (default: ./calibration if present)"),
        variants: str = typer.Option("", "--variants", help="MODULE=VARIANT,... (e.g. encoder=iresnet18)"),
        onnx: O.ModuleOnnx = [], contract: O.Contract = [],
        config_dir: O.ConfigDir = None,
        timeout: float = typer.Option(900.0, "--timeout", help="seconds one measured combination may take"),
        deadline: float = typer.Option(0.0, "--deadline",
                                       help="time budget of the whole run in seconds (0: none); rows left are "
                                            "reported as not measured"),
        resume: bool = typer.Option(False, "--resume", help="keep the rows already measured in REPORT/results.json"),
        samples: Optional[int] = typer.Option(None, "--samples", help="INT8 calibration samples (default: the passes')"),
        parity_samples: Optional[int] = typer.Option(None, "--parity-samples",
                                                     help="faces each pass is parity-gated on (default: the passes')"),
        prepare_jobs: int = typer.Option(0, "--prepare-jobs", help="modules prepared at once (0: cores / 4, at most 4)"),
        work: Optional[Path] = typer.Option(None, "--work", help="cache, worker configs and log (default: OUT/.bench)"),
        tf32: bool = typer.Option(False, "--tf32/--no-tf32", help="allow TF32 in torch (off: true FP32 references)"),
        threads: int = typer.Option(0, "--threads", help="CPU threads of CPU rows (0: the library default)"),
        isolation: str = typer.Option(DEFAULT_ISOLATION, "--isolation",
                                      help="how each row gets its fresh process: forkserver (forked from a server "
                                           "with torch imported, CUDA untouched) or subprocess (a new interpreter)"),
    ) -> None:
        """Latency / FPS / VRAM / parity per module, backend, precision and batch, and the pipeline end to end."""
        from ..bench.plan import Settings, parse_batches, parse_precisions, parse_variants
        from ..bench.report import compact_table
        from ..bench.sweep import run_bench
        from ..errors import InputSpecError
        from ..config import config_dir as find_config_dir
        from .common import select_modules

        find_config_dir(config_dir)  # a --config-dir that does not exist is one line, before any work

        for name, value, low in (("--frames", frames, 1), ("--faces", faces, 1), ("--iters", iters, 1),
                                 ("--warmup", warmup, 0), ("--rotate", rotate, 1), ("--naive-frames", naive_frames, 1),
                                 ("--repeats", repeats, 1), ("--video-rounds", video_rounds, 1)):
            if value < low:
                raise InputSpecError(f"{name} must be at least {low}, got {value}")
        if isolation not in ISOLATION:
            raise InputSpecError(f"--isolation {isolation!r}: use {' or '.join(ISOLATION)}")
        if pipeline and max(parse_batches(pipeline_batch, "--pipeline-batch")) > frames:
            raise InputSpecError(f"--frames {frames} is fewer than the largest --pipeline-batch: time at least one "
                                 "call of each batch")
        if modules == "none" and not pipeline:
            raise InputSpecError("--modules none leaves nothing to measure: add --pipeline, or name modules")
        from ..artifacts.adopt import parse_module_paths

        users = {m: str(p) for m, p in parse_module_paths(onnx).items()}
        contracts = {m: str(p) for m, p in parse_module_paths(contract, "--contract").items()}
        if set(contracts) - set(users):
            raise InputSpecError("--contract MODULE=FILE describes a user model given with --onnx MODULE=PATH")
        if calib is None and Path("calibration").is_dir():
            calib = Path("calibration")
        if pipeline:
            from ..bench.e2e import parse_resolution

            parse_resolution(resolution)
        settings = Settings(
            modules=[] if modules == "none" else select_modules(modules), backends=backends, precisions=parse_precisions(precisions),
            batches=parse_batches(batch), variants=parse_variants(variants), onnx=users, contracts=contracts,
            device=device, iters=iters, warmup=warmup,
            max_time=max_time or None, rotate=rotate, pipeline=pipeline,
            pipeline_batches=parse_batches(pipeline_batch, "--pipeline-batch"), resolution=resolution, frames=frames,
            faces=faces, naive=naive, naive_frames=naive_frames, video=video, video_rounds=video_rounds,
            repeats=repeats, enhance=enhance,
            calib=str(calib) if calib else None, config_dir=str(config_dir) if config_dir else None, out=str(out), work=str(work) if work else None, report=report,
            timeout=timeout, deadline=deadline or None, resume=resume, samples=samples,
            parity_samples=parity_samples, prepare_jobs=prepare_jobs, tf32=tf32, threads=threads,
            isolation=isolation, cpu_batches=parse_batches(batch_cpu) if batch_cpu else None,
            cpu_precisions=parse_precisions(precisions_cpu) if precisions_cpu else None,
            command=_command_line(ctx))
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("{task.fields[status]}"), console=err_console, transient=False,
                       disable=not err_console.is_terminal)
        say = (lambda m: err_console.print(f"[dim]{m}[/]", soft_wrap=True))
        with one_line_warnings(), bar:
            res = run_bench(settings, say=say, progress=bar if err_console.is_terminal else None)
        console.print(compact_table(res), soft_wrap=True, markup=False)
        console.print(f"reports: {', '.join(res['files'])}", soft_wrap=True, markup=False)


def _command_line(ctx: typer.Context) -> str:
    """``ffexport bench`` with the options given on the command line (as parsed, in a canonical form)."""
    parts = ["ffexport", "bench"]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params[param.name]
        if isinstance(value, bool):
            flag = param.opts[0] if value else (param.secondary_opts or param.opts)[0]
            parts.append(flag)
        else:
            parts += [param.opts[0], shlex.quote(str(value))]
    return " ".join(parts)
