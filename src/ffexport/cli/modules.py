"""``ffexport modules``: the registry, with each module's IO contract."""

from __future__ import annotations

import json

import typer

from .common import console


def register(app: typer.Typer) -> None:
    @app.command("modules")
    def modules_cmd(as_json: bool = typer.Option(False, "--json", help="print the contracts as JSON")) -> None:
        """List the registered pipeline modules, their variants and IO contracts."""
        from rich.table import Table

        from .. import specs

        if as_json:
            console.print_json(json.dumps([s.contract() | {"default": s.variant == specs.default_variant(s.module)}
                                           for s in specs.all_specs()]))
            return
        t = Table(title="ffexport modules")
        for col in ("module", "variant", "inputs", "outputs", "preprocess", "template"):
            t.add_column(col, overflow="fold")
        for s in specs.all_specs():
            default = s.variant == specs.default_variant(s.module)
            t.add_row(s.module, s.variant + (" (default)" if default else ""),
                      "\n".join(f"{i.name} {list(i.shape)}" for i in s.inputs),
                      "\n".join(f"{o.name} {list(o.shape)}" for o in s.outputs),
                      s.preprocess.describe() if s.preprocess else "-",
                      s.template.name if s.template else "-")
        console.print(t)
