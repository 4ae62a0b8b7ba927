"""The ``ffexport`` command: a thin Typer skin over the Python API.

User errors (``FFExportError``) print one line and exit 1; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="ffexport",
    help="Export face-swap pipeline modules to proven ONNX / FP16 / INT8 / TensorRT artifacts, "
         "run them end to end, and benchmark them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# one file per command group; each defines register(app)
_COMMANDS = ("modules", "onnx", "passes", "report", "trt", "swap", "bench", "run")


def _register() -> None:
    for name in _COMMANDS:
        try:
            mod = importlib.import_module(f"ffexport.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ffexport.cli.{name}":  # command group not present in this build
                continue
            raise
        mod.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    from ..errors import FFExportError
    from .common import err_console

    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except FFExportError as exc:
        from rich.markup import escape

        err_console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        return 130
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
