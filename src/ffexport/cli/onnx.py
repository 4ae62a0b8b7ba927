"""``ffexport onnx``: export registered modules (or your own model) to ONNX with a parity proof."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputSpecError
from . import options as O
from .common import console, err_console, human_size, one_line_warnings, progress, rel


def _batch(value: str) -> str | int:
    if value == "dynamic":
        return value
    try:
        n = int(value)
    except ValueError:
        raise InputSpecError(f"--batch-axis must be 'dynamic' or a positive integer, got {value!r}") from None
    if n < 1:
        raise InputSpecError(f"--batch-axis must be 'dynamic' or a positive integer, got {value!r}")
    return n


def register(app: typer.Typer) -> None:
    @app.command("onnx")
    def onnx_cmd(
        module: O.Module = None,
        variant: O.Variant = None,
        opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default from configs/, else 17)"),
        batch: str = typer.Option("dynamic", "--batch-axis",
                                  help="the exported batch axis: 'dynamic' or a fixed batch size"),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="state dict to load (strict)"),
        out: O.Out = Path("artifacts"),
        force: bool = typer.Option(False, "--force", help="overwrite existing artifacts"),
        samples: int = typer.Option(4, "--parity-samples", help="faces the parity check against torch runs on",
                                    callback=O.at_least_one),
        config_dir: O.ConfigDir = None,
        model: Optional[str] = typer.Option(None, "--model", help="bring your own: package.module:factory"),
        inputs: List[str] = typer.Option([], "--input", help="with --model: name:1x3x112x112[:dtype], repeatable"),
        output_names: Optional[str] = typer.Option(None, "--output-names", help="with --model: comma-separated"),
        name: Optional[str] = typer.Option(None, "--name", help="with --model: artifact folder name"),
    ) -> None:
        """Export to ONNX (named IO, fixed opset, dynamic batch) and prove parity with torch on real faces."""
        if opset is not None:
            from ..export.onnx import check_opset

            check_opset(opset)  # before any model is built (torch would print its graph first)
        with one_line_warnings():
            if model:
                if module:
                    raise InputSpecError("give either --module or --model, not both")
                from ..export.byo import export_byo

                b = _batch(batch)
                path, rec = export_byo(model, inputs, out=out, name=name,
                                       output_names=output_names.split(",") if output_names else None,
                                       dynamic_batch=b == "dynamic", opset=opset or 17, force=force)
                _table([(rec, path, f"{name or path.parent.name}/byo")])
                return
            if not module:
                raise InputSpecError("give --module NAME (or 'all'), or --model package.module:factory")
            if inputs:
                raise InputSpecError("--input is for --model (bring your own); registered modules know their inputs")
            export_modules(module, variant=variant, opset=opset, batch=_batch(batch), checkpoint=checkpoint,
                           out=out, force=force, samples=samples, config_dir=config_dir)


def export_modules(selector: str, *, variant=None, opset=None, batch="dynamic", checkpoint=None,
                   out=Path("artifacts"), force=False, samples=4, config_dir=None) -> list:
    from ..config import resolve_spec
    from ..errors import FFExportError
    from ..export.onnx import export_module
    from .common import Failures, select_modules

    names = select_modules(selector)
    if len(names) > 1 and (variant or checkpoint):
        raise InputSpecError("--variant and --checkpoint apply to one module; name it with --module")
    specs = [resolve_spec(n, variant, opset, config_dir) for n in names]
    rows = []
    failures = Failures("exports", len(specs))
    with progress() as bar:
        task = bar.add_task("onnx", total=len(specs), status="")
        for spec in specs:
            bar.update(task, description=f"onnx {spec.key}")
            try:
                res = export_module(spec, out, checkpoint=checkpoint, batch=batch, force=force, samples=samples,
                                    progress=lambda m: bar.update(task, status=m))
            except FFExportError as exc:
                failures.add(spec.key, exc)
            else:
                rows.append((res.record, res.path, spec.key))
                err_console.print(f"[green]ok[/] {spec.key} -> {rel(res.path)}") if not bar.disable else None
            bar.advance(task)
    if rows:
        _table(rows)
    failures.table()
    failures.raise_if_any()
    return rows


def _table(rows) -> None:
    from rich.table import Table

    from ..export.parity import summary

    t = Table(title="ONNX export")
    for col in ("module", "artifact", "size", "opset", "parity (torch vs onnxruntime)", "time s"):
        t.add_column(col, overflow="fold")
    for rec, path, key in rows:
        t.add_row(key, rel(path), human_size(rec["size_bytes"]), str(rec["options"]["opset"]),
                  summary(rec["parity"]), f"{rec['duration_s']:.1f}")
    console.print(t)
