"""``ffexport trt`` (strongly typed TensorRT engines from the ONNX artifacts) and ``ffexport inspect ENGINE``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputSpecError
from . import options as O
from .common import Failures, console, err_console, human_size, one_line_warnings, progress, rel


def register(app: typer.Typer) -> None:
    @app.command("trt")
    def trt_cmd(
        module: O.Module = None,
        onnx: O.OnnxFile = [], contract: O.Contract = [],
        name: Optional[str] = typer.Option(None, "--name", help="with --onnx: artifact folder name (default: the module's folder for an ffexport artifact, else the file name)"),
        variant: O.Variant = None,
        precision: str = typer.Option("fp16", "--precision", "-p",
                                      help="fp32 | fp16 | int8: picks the ONNX artifact (fp32.sim / fp16 / int8 Q/DQ)"),
        calib: O.Calib = None,
        batch: Optional[str] = typer.Option(None, "--batch-profile",
                                            help="the engine's batch range min:opt:max (default from configs/)"),
        dims: List[str] = typer.Option([], "--dim", help="other dynamic axis NAME=min:opt:max, repeatable"),
        workspace: Optional[int] = typer.Option(None, "--workspace", help="builder workspace limit in MB"),
        opt_level: Optional[int] = typer.Option(None, "--opt-level", help="builder optimization level 0-5"),
        target_cc: Optional[str] = typer.Option(None, "--target-cc",
                                                help="compute capabilities to build for, e.g. 8.6,8.9 (TensorRT-RTX)"),
        version_compatible: bool = typer.Option(False, "--version-compatible",
                                                help="engine that later TensorRT versions can run"),
        flavor: str = typer.Option("auto", "--flavor",
                                   help="auto | tensorrt | tensorrt_rtx (auto: TensorRT with a GPU, else TensorRT-RTX)"),
        out: O.Out = Path("artifacts"),
        cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="timing caches (default OUT/.trt-cache)"),
        force: bool = typer.Option(False, "--force", help="rebuild even when the engine cache key matches"),
        config_dir: O.ConfigDir = None,
    ) -> None:
        """Build strongly typed TensorRT engines (TensorRT 10/11 or TensorRT for RTX) from the ONNX artifacts."""
        from ..passes.trt import parse_dim, parse_range
        from ..vocab import PRECISIONS

        with one_line_warnings():
            if precision not in PRECISIONS:
                raise InputSpecError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
            opts = dict(flavor=flavor, batch=parse_range(batch, "--batch-profile") if batch else None,
                        dims=dict(parse_dim(d) for d in dims), workspace_mb=workspace, opt_level=opt_level,
                        target_cc=target_cc.split(",") if target_cc else None,
                        version_compatible=version_compatible, force=force)
            from ..artifacts.adopt import adopt_all, parse_module_paths
            from .passes import split_onnx

            named, plain = split_onnx(onnx)
            contracts = parse_module_paths(contract, "--contract")
            if (named or plain is not None) and module:
                raise InputSpecError("give either --module or --onnx, not both")
            if named:
                if name:
                    raise InputSpecError("--name is for a plain --onnx PATH; MODULE=PATH models get their module's folder")
                variants = adopt_all(named, out, contracts)
                rows = build_modules(",".join(variants), precision, variants=variants, calib=calib, out=out,
                                     cache_dir=cache_dir, config_dir=config_dir, **opts)
            elif plain is not None:
                rows = [_build_onnx(plain, name, precision, out, cache_dir, config_dir, opts)]
            elif module:
                if name:
                    raise InputSpecError("--name is for --onnx; registered modules use their own folder")
                rows = build_modules(module, precision, variant=variant, calib=calib, out=out, cache_dir=cache_dir,
                                     config_dir=config_dir, **opts)
            else:
                raise InputSpecError("give --module NAME (or 'all'), or --onnx PATH")
        _table(rows)

    @app.command("inspect")
    def inspect_cmd(
        engine: Path = typer.Argument(..., help="a .engine file"),
        layers: bool = typer.Option(False, "--layers", help="list every layer (needs a GPU and the runtime)"),
        as_json: bool = typer.Option(False, "--json", help="print everything as JSON"),
        device: int = typer.Option(0, "--device", help="CUDA device index"),
    ) -> None:
        """Show an engine's IO tensors, optimization profile and build record, and its layers where a GPU allows."""
        from ..backends.trt_engine import inspect_engine

        with one_line_warnings():
            info = inspect_engine(engine, device=device)
        if as_json:
            console.print_json(json.dumps(info, default=str))
            return
        _print_inspect(info, layers)


def build_modules(selector: str, precision: str, *, variant=None, calib=None, out=Path("artifacts"), cache_dir=None,
                  config_dir=None, variants=None, **opts) -> list:
    """Build each selected module's engine; with several, a failing module does not stop the others: the
    table shows it and the command still ends with one error line and exit 1."""
    from ..config import resolve_spec
    from ..errors import FFExportError
    from ..manifest import artifact_dir
    from ..artifacts.engines import build_module_engine
    from .common import select_modules

    names = select_modules(selector)
    if len(names) > 1 and variant:
        raise InputSpecError("--variant applies to one module; name it with --module")
    specs = [resolve_spec(n, (variants or {}).get(n, variant), None, config_dir) for n in names]
    rows = []
    failures = Failures(f"{precision} engines", len(specs))
    with progress() as bar:
        task = bar.add_task("trt", total=len(specs), status="")
        for spec in specs:
            bar.update(task, description=f"trt {spec.key} {precision}")
            try:
                rec = build_module_engine(spec, precision, out=out, calib=calib, cache_dir=cache_dir,
                                          config_dir=config_dir, progress=lambda m: bar.update(task, status=m), **opts)
            except FFExportError as exc:
                failures.add(spec.key, exc)
                rows.append((spec.key, None, {"error": str(exc)}))
            else:
                rows.append((spec.key, artifact_dir(out, spec) / rec["file"], rec))
            bar.advance(task)
    if failures:
        _table(rows)
    failures.raise_if_any()
    return rows


def _build_onnx(onnx: Path, name, precision, out, cache_dir, config_dir, opts) -> tuple:
    """``--onnx PATH``: any ONNX file; one that ffexport made keeps its module's batch profile and axis ranges."""
    from ..config import resolve_spec
    from ..errors import FFExportError
    from ..export.onnx import read_metadata
    from ..manifest import artifact_dir
    from ..passes.trt import DEFAULT_CACHE, build_engine, config_dims
    from ..vocab import engine_name
    from ..backends.trt_flavors import resolve

    spec = None
    key = read_metadata(onnx).get("ffexport.spec", "") if onnx.is_file() else ""
    if "/" in key:
        try:
            spec = resolve_spec(*key.split("/", 1), None, config_dir)
        except FFExportError:  # a module this version does not register: treat it as any ONNX file
            spec = None
    if spec is not None:
        opts["dims"] = {**config_dims(spec.module, config_dir), **opts["dims"]}
    fl = resolve(opts.pop("flavor"))
    folder = Path(out) / name if name else artifact_dir(out, spec) if spec else Path(out) / onnx.name.split(".")[0]
    path = folder / engine_name(precision, fl.name)
    rec = build_engine(onnx, spec, precision=precision, out_path=path, flavor=fl,
                       cache_dir=cache_dir or Path(out) / DEFAULT_CACHE, **opts)
    return (name or onnx.name, path, rec)


def _profile_text(rec: dict) -> str:
    dims = (rec.get("options") or {}).get("dims") or {}
    return ", ".join(f"{k} {lo}..{hi} (opt {opt})" for k, (lo, opt, hi) in dims.items()) or "static shapes"


def _table(rows) -> None:
    from rich.table import Table

    t = Table(title="TensorRT engines")
    for col in ("module", "engine", "runtime", "target cc", "profile", "size", "build s", "cache"):
        t.add_column(col, overflow="fold")
    for key, path, rec in rows:
        if "error" in rec:
            t.add_row(key, "-", "-", "-", "-", "-", "-", f"FAILED: {rec['error']}")
            continue
        tc = rec.get("timing_cache") or {}
        cache = "engine hit (skipped)" if rec.get("engine_cache_hit") else "built"
        if tc.get("used") and not rec.get("engine_cache_hit"):
            cache += ", timing cache " + ("hit" if tc.get("hit") else "miss")
        t.add_row(key, rel(path), f"{rec['flavor']} {rec['trt_version']}", ",".join(rec["target_cc"]),
                  _profile_text(rec), human_size(rec.get("engine_size")),
                  f"{rec['build_time_s']:.1f}", cache)
    console.print(t)
    for _key, _path, rec in rows:
        for note in rec.get("notes") or ():  # failed rows have none
            err_console.print(f"[yellow]note:[/] {rec['file']}: {note}", soft_wrap=True)


def _print_inspect(info: dict, layers: bool) -> None:
    from rich.table import Table

    from ..backends.trt_flavors import LABELS

    rec = info.get("record") or {}
    console.print(f"[bold]{info['file']}[/]  {human_size(info['size_bytes'])}  sha256 {info['sha256'][:16]}...")
    console.print(f"flavor: {LABELS[info['flavor']]}" + (f", built with {rec['trt_version']}" if rec else
                                                          " (no build record beside it)"))
    if rec:
        parent = (rec.get("parent") or {}).get("file", "?")
        o = rec.get("options") or {}
        console.print(f"built from {parent} ({o.get('precision')}), target cc {','.join(rec.get('target_cc', []))}, "
                      f"workspace {str(rec['workspace_mb']) + ' MB' if rec.get('workspace_mb') else 'default'}, opt level "
                      f"{o.get('opt_level') if o.get('opt_level') is not None else 'default'}, "
                      f"build {rec.get('build_time_s')} s on {rec.get('created_utc')}")
    if info["deserialized"]:
        console.print(f"runtime: {info['runtime']} on {info['gpu']}; {info['num_layers']} layers, "
                      f"{info['optimization_profiles']} profile(s), device memory "
                      f"{human_size(info['device_memory_bytes'])}")
        io, source = info["io"], "the engine"
    else:
        io, source = _record_io(rec), "the build record"
        then = ("IO and profile below come from the build record, per-layer information needs the engine" if io
                else "with no build record beside it, its IO, profile and layers are unknown here")
        err_console.print(f"[yellow]engine not deserialised:[/] {info['reason']}; {then}", soft_wrap=True)
    t = Table(title=f"IO tensors (from {source})")
    for col in ("name", "mode", "dtype", "shape", "profile min", "opt", "max"):
        t.add_column(col, overflow="fold")
    for x in io or ():
        p = (x.get("profiles") or [x.get("profile")])[0] or {}
        t.add_row(x["name"], x["mode"], x["dtype"], str(x["shape"]), str(p.get("min", "")), str(p.get("opt", "")),
                  str(p.get("max", "")))
    console.print(t if io else "no IO information (the engine was not read here, and no build record is beside it)")
    if info.get("layers") is not None:
        lay = info["layers"]
        console.print(f"layers (engine inspector): {len(lay)}")
        for item in lay if layers else lay[:10]:
            console.print("  " + (item if isinstance(item, str) else
                                  f"{item.get('Name', '?')} [{item.get('LayerType', '?')}]"))
        if not layers and len(lay) > 10:
            console.print(f"  ... {len(lay) - 10} more (--layers lists all)")
    elif info.get("layers_reason"):
        err_console.print(f"[yellow]layers:[/] {info['layers_reason']}", soft_wrap=True)


def _record_io(rec: dict) -> list[dict] | None:
    io = rec.get("io")
    if not io:
        return None
    return ([dict(x, mode="input") for x in io.get("inputs", [])]
            + [dict(x, mode="output") for x in io.get("outputs", [])])
