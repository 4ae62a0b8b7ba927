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
_COMMANDS = ("modules", "onnx", "passes", "report", "trt", "swap", "bench", "build", "run", "triton")


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


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: unwinds like KeyboardInterrupt (every ``finally`` runs: temporary files go, the
    previous good artifacts stay), but passes through click, which would print "Aborted!" and exit 1."""

    def __init__(self, signum: int):
        import signal

        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


def _stop_on_signals():
    """SIGINT and SIGTERM raise :class:`Stopped` in the main thread; returns how to put the old handlers back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum, _frame):
        from ..fsutil import deferring

        if deferring(signum):  # inside a commit's renames: delivered again when they are done
            return
        raise Stopped(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(s, h) for s, h in old.items()]


def main(argv: list[str] | None = None) -> int:
    from ..errors import FFExportError
    from .common import err_console

    restore = _stop_on_signals()
    try:
        app(args=argv, standalone_mode=True)
    except Stopped as stop:
        err_console.print(f"[red]stopped[/] by {stop.name}: the step in progress was abandoned and its temporary "
                          "files removed; artifacts finished before it are intact", soft_wrap=True)
        return 128 + stop.signum
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except FFExportError as exc:
        from rich.markup import escape

        err_console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        return 130
    except OSError as exc:
        line = _disk_full(exc)
        if line is None:
            return _internal(exc)
        return _say_error(line)
    except Exception as exc:  # a bug in ffexport, not a mistake of the user's: one line here, the traceback in a log
        line = _disk_full(exc)
        if line is not None:  # wrapped by a library (onnx, torch) on its way up
            return _say_error(line)
        return _internal(exc)
    finally:
        restore()
    return 0


def _say_error(line: str) -> int:
    from rich.markup import escape

    from .common import err_console

    err_console.print(f"[red]error:[/] {escape(line)}", soft_wrap=True)
    return 1


def _internal(exc: BaseException) -> int:
    from rich.markup import escape

    from .common import err_console

    log = _internal_error_log(exc)
    text = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
    err_console.print(f"[red]internal error[/] (a bug in ffexport, not in your input): {escape(what)}; "
                      f"traceback in {escape(str(log))}", soft_wrap=True)
    return INTERNAL_ERROR


def _disk_full(exc: BaseException) -> str | None:
    """One line for a write that ran out of room (a full disk, a quota, a file size limit), also when a library
    wrapped the OSError; None for anything else.  Whatever was being written was abandoned before its rename."""
    import errno

    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            where = f" while writing {e.filename}" if e.filename else ""
            return (f"{e.strerror or 'no space left'}{where}: nothing was replaced (the previous artifacts and "
                    "records are as they were); free some space, or raise the limit, and run again")
        if not isinstance(e, OSError) and any(s in str(e) for s in ("No space left on device", "File too large",
                                                                    "Disk quota exceeded")):
            return (f"{str(e).strip().splitlines()[0][:200]}: nothing was replaced (the previous artifacts and "
                    "records are as they were); free some space, or raise the limit, and run again")
        e = e.__cause__ or e.__context__
    return None


INTERNAL_ERROR = 70  # EX_SOFTWARE: user mistakes exit 1 (or their error's own code), bugs exit 70


def _internal_error_log(exc: BaseException):
    """The traceback of ``exc`` in a new file of ``$FFEXPORT_LOG_DIR`` (default: the system's temporary folder)."""
    import os
    import tempfile
    import time
    import traceback
    from pathlib import Path

    folder = Path(os.environ.get("FFEXPORT_LOG_DIR") or tempfile.gettempdir())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=time.strftime("ffexport-internal-error-%Y%m%d-%H%M%S-"), suffix=".log",
                                    dir=folder)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"ffexport {' '.join(sys.argv[1:])}\n\n")
            fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return Path(name)
    except OSError:  # nowhere to write: the traceback goes to stderr after all
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        return "stderr (no log folder was writable)"


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
