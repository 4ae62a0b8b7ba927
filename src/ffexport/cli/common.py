"""Shared CLI plumbing: the console, progress, one-line warnings, module selection."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator

from rich.console import Console


def _width(stream) -> int | None:
    """Rich's own width on a terminal or with COLUMNS set; 160 columns when piped to a file or a log
    (rich would fold every table into 80, which makes artifact paths and parity cells unreadable)."""
    try:
        if stream.isatty() or os.environ.get("COLUMNS"):
            return None
    except (AttributeError, ValueError):
        return None
    return 160


console = Console(highlight=False, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))

from .options import MODULE_HELP, OUT_HELP  # noqa: E402,F401  (defined once in options.py)


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show warnings raised inside as single 'warning:' lines on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        from rich.markup import escape

        err_console.print(f"[yellow]warning:[/] {escape(str(message))}", soft_wrap=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        old = warnings.showwarning
        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = old


def select_modules(selector: str) -> list[str]:
    from .. import specs

    return specs.resolve_modules(selector)


def progress():
    """A rich progress bar for long multi-module work."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=err_console,
                    transient=False, disable=not err_console.is_terminal)


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def rel(p: str | Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


class Failures:
    """The failures of a job over several modules.  One module's failure does not stop the others: each is
    kept with its one-line reason, shown in a table at the end, and the job ends with one error line and a
    non-zero exit (:meth:`raise_if_any`).  With a single module its own error is raised unchanged."""

    def __init__(self, what: str, total: int):
        self.what, self.total = what, total
        self.items: list[tuple[str, Exception]] = []

    def add(self, label: str, exc: Exception) -> None:
        if self.total <= 1:
            raise exc
        self.items.append((label, exc))

    def __bool__(self) -> bool:
        return bool(self.items)

    def table(self) -> None:
        if not self.items:
            return
        from rich.table import Table

        t = Table(title=f"{len(self.items)} of {self.total} {self.what} failed")
        t.add_column("module")
        t.add_column("why", overflow="fold")
        for label, exc in self.items:
            t.add_row(_escape(label), _escape(str(exc)))
        console.print(t)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        from ..errors import FFExportError

        label, exc = self.items[0]
        more = f" (+{len(self.items) - 1} more, see the table above)" if len(self.items) > 1 else ""
        rest = " (the others finished)" if len(self.items) < self.total else ""
        raise FFExportError(f"{len(self.items)} of {self.total} {self.what} failed{rest}; {label}: {exc}{more}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
