"""``ffexport swap``: the reference pipeline on an image or a video, on any backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from ..errors import InputSpecError
from .common import OUT_HELP, console, err_console, one_line_warnings, rel

BACKENDS = ("torch", "ort", "trt")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
PRECISIONS = ("fp32", "fp16", "int8")


def _pairs(values: List[str], flag: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise InputSpecError(f"{flag} expects MODULE={what}, got {v!r}")
        out[key.strip()] = val.strip()
    return out


def _stage_choices(values: List[str]) -> tuple[dict[str, str], dict[str, str]]:
    """``--stage MODULE=BACKEND[:PRECISION]`` -> per-module backends and precisions."""
    backends, precisions = {}, {}
    for module, spec in _pairs(values, "--stage", "BACKEND[:PRECISION]").items():
        backend, _, precision = spec.partition(":")
        if backend not in BACKENDS:
            raise InputSpecError(f"--stage {module}={spec}: unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if precision and precision not in PRECISIONS:
            raise InputSpecError(f"--stage {module}={spec}: unknown precision {precision!r}; "
                                 f"valid: {', '.join(PRECISIONS)}")
        backends[module] = backend
        if precision:
            precisions[module] = precision
    return backends, precisions


def _mask(value: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise InputSpecError(f"--mask expects 5 comma-separated numbers (blur,top,right,bottom,left), got {value!r}") from None
    if len(vals) != 5:
        raise InputSpecError(f"--mask expects 5 comma-separated numbers (blur,top,right,bottom,left), got {value!r}")
    return vals


def _faces(value: str) -> tuple[str, Path | None]:
    if value in ("all", "largest"):
        return value, None
    if value.startswith("reference:") and len(value) > len("reference:"):
        return "reference", Path(value[len("reference:"):])
    raise InputSpecError(f"--faces must be all, largest or reference:IMAGE, got {value!r}")


def register(app: typer.Typer) -> None:
    @app.command("swap")
    def swap_cmd(
        source: Path = typer.Option(..., "--source", "-s", help="image of the face to paste in"),
        target: Path = typer.Option(..., "--target", "-t", help="image (.jpg, .png, ...) or video (.mp4, .mov, ...)"),
        output: Path = typer.Option(..., "--output", "-o", help="output image or video (same kind as the target)"),
        backend: str = typer.Option("torch", "--backend", "-b", help="torch | ort | trt, for every stage"),
        precision: str = typer.Option("fp32", "--precision", "-p", help="fp32 | fp16 | int8"),
        device: str = typer.Option("cpu", "--device", "-d", help="cpu | cuda | cuda:N"),
        generator: str = typer.Option("inswapper-128", "--generator", "-g",
                                      help="inswapper-128 | simswap-256 | simswap-256-lite | identity"),
        enhance: bool = typer.Option(False, "--enhance", help="restore the swapped faces with the enhancer"),
        landmarks68: bool = typer.Option(False, "--landmarks68", help="refine the 5 points with the 68-point landmarker"),
        faces: str = typer.Option("all", "--faces", help="all | largest | reference:IMAGE"),
        checkpoints: List[str] = typer.Option([], "--checkpoint", help="MODULE=PATH state dict, repeatable"),
        variants: List[str] = typer.Option([], "--variant", help="MODULE=VARIANT (see `ffexport modules`), repeatable"),
        stages: List[str] = typer.Option([], "--stage", help="MODULE=BACKEND[:PRECISION] for one stage, repeatable"),
        detector: str = typer.Option("auto", "--detector",
                                     help="auto (MTCNN unless --checkpoint detector=...) | mtcnn | retinaface"),
        batch: int = typer.Option(1, "--batch", help="frames per GPU batch"),
        blend: str = typer.Option("box", "--blend", help="box (feathered box mask) | poisson (gradient-domain)"),
        mask: str = typer.Option("0.3,0,0,0,0", "--mask", help="blur,pad_top,pad_right,pad_bottom,pad_left"),
        min_face: float = typer.Option(20.0, "--min-face", help="smallest face to detect, pixels of the detection image (MTCNN)"),
        detect_max_side: int = typer.Option(1280, "--detect-max-side",
                                            help="MTCNN detects larger frames on a copy scaled to this long side"),
        out: Path = typer.Option(Path("artifacts"), "--out", help=OUT_HELP),
        no_build: bool = typer.Option(False, "--no-build", help="fail instead of building missing artifacts"),
        crf: int = typer.Option(18, "--crf", help="video quality (x264/VP9 CRF; lower is better)"),
        preset: str = typer.Option("veryfast", "--preset", help="x264 preset"),
        timing: bool = typer.Option(False, "--timing", help="print seconds spent per stage (synchronised)"),
        as_json: bool = typer.Option(False, "--json", help="print the run's statistics as JSON"),
        force: bool = typer.Option(False, "--force", help="overwrite OUTPUT if it exists"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    ) -> None:
        """Swap the face of SOURCE into every face of TARGET (image or video) with the reference pipeline."""
        from ..fsutil import check_overwrite
        from ..pipeline.media import is_image_path

        with one_line_warnings():
            if backend not in BACKENDS:
                raise InputSpecError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
            if precision not in PRECISIONS:
                raise InputSpecError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
            if batch < 1:
                raise InputSpecError(f"--batch must be a positive integer, got {batch}")
            if preset not in X264_PRESETS:
                raise InputSpecError(f"unknown --preset {preset!r}; valid: {', '.join(X264_PRESETS)}")
            face_mode, reference = _faces(faces)
            stage_backends, stage_precisions = _stage_choices(stages)
            if is_image_path(target) != is_image_path(output):
                kind = "an image" if is_image_path(target) else "a video"
                raise InputSpecError(f"--output {output} must be {kind} file like the target {target}")
            if not source.is_file():
                from ..errors import MediaError

                raise MediaError(f"source image {source} does not exist or is not a file")
            if not target.is_file():
                from ..errors import MediaError

                raise MediaError(f"target {target} does not exist or is not a file")
            check_overwrite(output, force)

            from ..pipeline.pipeline import Pipeline

            say = (lambda m: err_console.print(f"[dim]{m}[/]", soft_wrap=True)) if not quiet else (lambda _m: None)
            pipe = Pipeline(backend={"default": backend, **stage_backends},
                            precision={"default": precision, **stage_precisions}, device=device,
                            generator=generator, enhance=enhance, landmarks68=landmarks68, faces=face_mode,
                            detector=detector, checkpoints=_pairs(checkpoints, "--checkpoint", "PATH"), out=out,
                            batch=batch, blend=blend, mask=_mask(mask), variants=_pairs(variants, "--variant", "VARIANT"),
                            build_missing=not no_build, timing=timing, min_face=min_face,
                            detect_max_side=detect_max_side, say=say)
            with pipe:
                pipe.set_source(source)
                if reference is not None:
                    pipe.set_reference(reference)
                pipe.reset_timings()  # time the target only
                if is_image_path(target):
                    stats = pipe.process_image(target, output)
                else:
                    stats = pipe.process_video(target, output, progress=not quiet and err_console.is_terminal,
                                               crf=crf, preset=preset)
                stats["stages"] = pipe.describe()
                if timing:
                    stats["timings_s"] = {k: round(v, 4) for k, v in pipe.timings.items()}
            _report(stats, target, output, as_json)


def _report(stats: dict, target: Path, output: Path, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(stats))
        return
    frames, missing = stats["frames"], stats.get("frames_without_faces", 0)
    if frames == 1 and missing:
        err_console.print(f"[yellow]note:[/] no face found in {target}: written unchanged", soft_wrap=True)
    elif missing:
        err_console.print(f"[yellow]note:[/] no face found in {missing} of {frames} frames (passed through unchanged)",
                          soft_wrap=True)
    rate = f", {stats['throughput_fps']:.1f} frames/s" if stats.get("throughput_fps") else ""
    console.print(f"swapped {stats['faces_swapped']} face(s) in {frames - missing}/{frames} frame(s) -> "
                  f"{rel(output)} ({stats['seconds']:.1f} s{rate})", soft_wrap=True)
    if "timings_s" in stats:
        console.print("stage seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in stats["timings_s"].items()),
                      soft_wrap=True)
