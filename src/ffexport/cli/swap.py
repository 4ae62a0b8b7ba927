"""``ffexport swap``: the reference pipeline on an image or a video, on any backend.

What the pipeline runs comes from ``configs/pipeline.yaml`` (:mod:`ffexport.pipeline.settings`; the folder
``--config-dir``, else ``$FFEXPORT_CONFIGS``, else ``./configs``); the flags given override it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence

import typer

from ..errors import InputSpecError
from ..pipeline.settings import PipelineSettings as Defaults  # torch-free: the built-in defaults, for the help
from ..vocab import BACKENDS, PRECISIONS
from . import options as O
from .common import OUT_HELP, console, err_console, one_line_warnings, rel

if TYPE_CHECKING:
    from ..pipeline.settings import PipelineSettings

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
CONFIG_DIR_HELP = "folder of pipeline.yaml and <module>.yaml defaults (default: $FFEXPORT_CONFIGS, then ./configs)"


def _filed(text: str, default) -> str:
    """Help of a flag whose default comes from pipeline.yaml (``default``: the built-in one)."""
    default = ("on" if default else "off") if isinstance(default, bool) else default
    return f"{text} (default: pipeline.yaml, else {default})"


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


def _batch(value: str) -> int | str:
    """``--batch``: ``auto`` or a positive whole number."""
    from ..pipeline.autobatch import parse_batch

    try:
        return parse_batch(value)
    except InputSpecError:
        raise InputSpecError(f"--batch must be a positive whole number or auto, got {value!r}") from None


def _faces(value: str) -> tuple[str, Path | None]:
    if value in ("all", "largest"):
        return value, None
    if value.startswith("reference:") and len(value) > len("reference:"):
        return "reference", Path(value[len("reference:"):])
    raise InputSpecError(f"--faces must be all, largest or reference:IMAGE, got {value!r}")


def swap_settings(config_dir: Path | None = None, *, backend: str | None = None, precision: str | None = None,
                  stages: Sequence[str] = (), variants: Sequence[str] = (), generator: str | None = None,
                  device: str | None = None, enhance: bool | None = None, landmarks68: bool | None = None,
                  detector: str | None = None, blend: str | None = None,
                  detect_max_side: int | None = None, streaming: bool | None = None) -> "PipelineSettings":
    """The settings ``swap`` builds its pipeline from: ``pipeline.yaml`` of ``config_dir`` (see
    :func:`~ffexport.pipeline.settings.load_pipeline_settings`), then the flags given (``None``/empty: not given).

    ``--backend``/``--precision`` are every stage's (they replace the file's per-stage choices);
    ``--stage MODULE=BACKEND[:PRECISION]`` then sets one stage; ``--variant`` and ``--generator`` pick variants.
    """
    from ..pipeline.settings import load_pipeline_settings

    if backend is not None and backend not in BACKENDS:
        raise InputSpecError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if precision is not None and precision not in PRECISIONS:
        raise InputSpecError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if detect_max_side is not None and detect_max_side < 0:
        raise InputSpecError(f"--detect-max-side must be >= 0 (0: never scale), got {detect_max_side}")
    stage_backends, stage_precisions = _stage_choices(list(stages))
    modules = _pairs(list(variants), "--variant", "VARIANT")
    if generator is not None:
        modules["generator"] = generator
    return load_pipeline_settings(config_dir).override(
        modules=modules, backend=backend, precision=precision, stage_backends=stage_backends,
        stage_precisions=stage_precisions, device=device, enhance=enhance, landmarks68=landmarks68,
        detector=detector, blend=blend, detect_max_side=detect_max_side, streaming=streaming)


def register(app: typer.Typer) -> None:
    @app.command("swap")
    def swap_cmd(
        source: Path = typer.Option(..., "--source", "-s", help="image of the face to paste in"),
        target: Path = typer.Option(..., "--target", "-t", help="image (.jpg, .png, ...) or video (.mp4, .mov, ...)"),
        output: Path = typer.Option(..., "--output", "-o", help="output image or video (same kind as the target)"),
        config_dir: Optional[Path] = typer.Option(None, "--config-dir", help=CONFIG_DIR_HELP),
        backend: Optional[str] = typer.Option(None, "--backend", "-b", help=_filed("torch | compile | ort | trt, for every stage",
                                                                                  Defaults.backend)),
        precision: Optional[str] = typer.Option(None, "--precision", "-p",
                                                help=_filed("fp32 | fp16 | int8, for every stage", Defaults.precision)),
        device: Optional[str] = typer.Option(None, "--device", "-d", help=_filed("cpu | cuda | cuda:N", Defaults.device)),
        generator: Optional[str] = typer.Option(None, "--generator", "-g", help=_filed(
            "inswapper-128 | simswap-256 | simswap-256-lite | identity", "inswapper-128")),
        enhance: Optional[bool] = typer.Option(None, "--enhance/--no-enhance", help=_filed(
            "restore the swapped faces with the enhancer", Defaults.enhance)),
        landmarks68: Optional[bool] = typer.Option(None, "--landmarks68/--no-landmarks68", help=_filed(
            "refine the 5 points with the 68-point landmarker", Defaults.landmarks68)),
        faces: str = typer.Option("all", "--faces", help="all | largest | reference:IMAGE"),
        checkpoints: List[str] = typer.Option([], "--checkpoint", help="MODULE=PATH state dict, repeatable"),
        variants: List[str] = typer.Option([], "--variant", help="MODULE=VARIANT (see `ffexport modules`), repeatable"),
        onnx: O.ModuleOnnx = [], contract: O.Contract = [],
        stages: List[str] = typer.Option([], "--stage", help="MODULE=BACKEND[:PRECISION] for one stage, repeatable"),
        detector: Optional[str] = typer.Option(None, "--detector", help=_filed(
            "auto (MTCNN unless --checkpoint detector=...) | mtcnn | retinaface", Defaults.detector)),
        batch: str = typer.Option("auto", "--batch", help="frames per pipeline call of a video, or auto: as many as "
                                  "fit a memory budget on a GPU (measured on the video's first frames, at most 32), "
                                  "4 on a CPU"),
        streaming: Optional[bool] = typer.Option(None, "--streaming/--no-streaming", help=_filed(
            "overlap a video's copies and transfers with the GPU work (off: batch after batch)", Defaults.streaming)),
        blend: Optional[str] = typer.Option(None, "--blend", help=_filed(
            "box (feathered box mask) | poisson (gradient-domain)", Defaults.blend)),
        mask: str = typer.Option("0.3,0,0,0,0", "--mask", help="blur,pad_top,pad_right,pad_bottom,pad_left"),
        min_face: float = typer.Option(20.0, "--min-face", help="smallest face to detect, pixels of the detection image (MTCNN)"),
        detect_max_side: Optional[int] = typer.Option(None, "--detect-max-side", help=_filed(
            "MTCNN detects larger frames on a copy scaled to this long side; 0: never", Defaults.detect_max_side)),
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
        from ..pipeline.media import is_image_path

        with one_line_warnings():
            source_image = _check_paths(source, target, output, force)  # before any model is built or adopted
            from ..artifacts.adopt import adopt_all, parse_module_paths

            users = parse_module_paths(onnx)
            contracts = parse_module_paths(contract, "--contract")
            if set(contracts) - set(users):
                raise InputSpecError("--contract MODULE=FILE describes a user model given with --onnx MODULE=PATH")
            clash = sorted(set(users) & ({"generator"} if generator else set()) | set(users) & set(
                _pairs(variants, "--variant", "VARIANT")))
            if clash:
                raise InputSpecError(f"{clash[0]}: given both with --onnx and as a variant; keep one")
            if users:
                adopted = adopt_all(users, out, contracts,
                                    (lambda m: err_console.print(f"[dim]{m}[/]", soft_wrap=True)) if not quiet else None)
                variants = [*variants, *(f"{m}={v}" for m, v in adopted.items() if m != "generator")]
                generator = adopted.get("generator", generator)
            settings = swap_settings(config_dir, backend=backend, precision=precision, stages=stages,
                                     variants=variants, generator=generator, device=device, enhance=enhance,
                                     landmarks68=landmarks68, detector=detector, blend=blend,
                                     detect_max_side=detect_max_side, streaming=streaming)
            batch_value = _batch(batch)
            if preset not in X264_PRESETS:
                raise InputSpecError(f"unknown --preset {preset!r}; valid: {', '.join(X264_PRESETS)}")
            face_mode, reference = _faces(faces)
            from ..pipeline.pipeline import Pipeline

            say = (lambda m: err_console.print(f"[dim]{m}[/]", soft_wrap=True)) if not quiet else (lambda _m: None)
            pipe = Pipeline.from_settings(settings, faces=face_mode,
                                          checkpoints=_pairs(checkpoints, "--checkpoint", "PATH"), out=out,
                                          batch=batch_value, mask=_mask(mask), build_missing=not no_build,
                                          timing=timing, min_face=min_face, say=say)
            with pipe:
                pipe.set_source(source_image, str(source))  # decoded once, by the check
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


def _check_paths(source: Path, target: Path, output: Path, force: bool):
    """Source, target and output, one line each when wrong: the source decodes, the target exists (a video target
    has a video stream whose first frame decodes), the output is a file of the target's kind in an existing folder,
    not the target itself, and not there yet unless --force.  Returns the decoded source image."""
    from ..errors import MediaError, OutputExistsError
    from ..pipeline.media import is_image_path, read_image

    image = read_image(source, "source image")
    if not target.is_file():
        raise MediaError(f"target {target} does not exist or is not a file")
    if is_image_path(target) != is_image_path(output):
        kind = "an image" if is_image_path(target) else "a video"
        raise InputSpecError(f"--output {output} must be {kind} file like the target {target}")
    if output.exists() and output.resolve() == target.resolve():
        raise InputSpecError(f"--output {output} is the target itself: write the result to another file")
    if output.is_dir():
        raise OutputExistsError(f"--output {output} is a folder: name a file in it (e.g. {output / 'swapped'}"
                                f"{target.suffix})")
    if not output.parent.is_dir():
        raise MediaError(f"--output {output}: its folder {output.parent} does not exist; create it first")
    if output.exists() and not force:
        raise OutputExistsError(f"--output {output} already exists; pass --force to overwrite it")
    if not is_image_path(target):  # a video without a stream, a frame or a decodable codec: before any model
        from ..pipeline.video import probe

        probe(target)
    return image


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
    if "batch" in stats:  # a video
        rate += f", batch {stats['batch']}{' (auto)' if stats.get('batch_auto') else ''}"
    console.print(f"swapped {stats['faces_swapped']} face(s) in {frames - missing}/{frames} frame(s) -> "
                  f"{rel(output)} ({stats['seconds']:.1f} s{rate})", soft_wrap=True)
    if "timings_s" in stats:
        console.print("stage seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in stats["timings_s"].items()),
                      soft_wrap=True)
