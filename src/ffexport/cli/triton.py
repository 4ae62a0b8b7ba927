"""``ffexport triton``: a Triton Inference Server model repository from the artifacts already built."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import InputSpecError
from . import options as O
from .common import console, err_console, one_line_warnings, rel


def register(app: typer.Typer) -> None:
    @app.command("triton")
    def triton_cmd(
        repository: Optional[Path] = typer.Option(None, "--repository",
                                                  help="the model repository folder to write, e.g. model_repository/"),
        out: O.Out = Path("artifacts"),
        precision: O.Precision = "fp16",
        backend: str = typer.Option("onnxruntime", "--backend",
                                    help="onnxruntime (serve the ONNX artifacts) | tensorrt (serve "
                                         "<precision>.tensorrt.engine; TensorRT-RTX engines are refused)"),
        module: O.Module = "all",
        config_dir: O.ConfigDir = None,
        force: bool = typer.Option(False, "--force",
                                   help="replace an existing repository that `ffexport triton` wrote"),
    ) -> None:
        """Write a Triton model repository: a model per module, and the encoder -> generator ensembles."""
        from ..artifacts.triton import write_repository

        if repository is None:
            raise InputSpecError("give --repository FOLDER: the Triton model repository to write")
        with one_line_warnings():
            repo = write_repository(repository, out=out, precision=precision, backend=backend,
                                    modules=module or "all", config_dir=config_dir, force=force)
        _table(repo)


def _io_text(tensors, batched: bool) -> str:
    def dims(t):
        d = ["B" if batched and i == 0 else ("?" if x == -1 else str(x)) for i, x in enumerate(t.dims)]
        return "x".join(d)

    return ", ".join(f"{t.name} {dims(t)} {t.data_type[5:].lower()}" for t in tensors)


def _table(repo) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"Triton model repository {rel(repo.path)} ({repo.backend}, {repo.precision})"))
    for col in ("model", "platform", "served from", "max batch", "inputs -> outputs", "file"):
        t.add_column(col, overflow="fold")
    for m in repo.models:
        batched = m.max_batch_size > 0
        source = (f"{rel(m.artifact)} ({m.spec_key})" if m.artifact is not None else
                  "written by ffexport" if m.kind == "latent" else
                  " -> ".join(step[0] for step in m.steps))
        placed = f"{m.file.name} ({m.placed})" if m.file is not None else "-"
        t.add_row(escape(m.name), m.platform, escape(source), str(m.max_batch_size),
                  escape(f"{_io_text(m.inputs, batched)} -> {_io_text(m.outputs, batched)}"), escape(placed))
    console.print(t)
    for m in repo.models:
        for note in m.notes:
            if m.kind == "module":
                err_console.print(f"[yellow]note:[/] {escape(m.name)}: {escape(note)}", soft_wrap=True)
    for note in repo.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    console.print(f"serve it: docker run --gpus all --rm -p8000:8000 -p8001:8001 -p8002:8002 "
                  f"-v {escape(str(Path(repo.path).resolve()))}:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 "
                  "tritonserver --model-repository=/models", soft_wrap=True)
