"""``ffexport run``: the main job: ``ffexport build`` on the config (export -> simplify -> FP16 -> INT8
calibrated on calibration/ -> TensorRT engines where a TensorRT builder is installed), then the lineage report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import options as O
from .build import Flavor, Precisions, Trt, _summary, run_build
from .common import console


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        module: O.Module = "all",
        precisions: str = Precisions,
        calib: O.Calib = Path("calibration"),
        out: O.Out = Path("artifacts"),
        trt: Optional[bool] = Trt,
        flavor: str = Flavor,
        force: bool = typer.Option(False, "--force", help="redo every step even when its inputs are unchanged"),
        config_dir: O.ConfigDir = None,
    ) -> None:
        """Build every module the config names at each precision with parity gates, build engines, and report."""
        outcomes = run_build(module, precisions, calib, out, trt, flavor, force, config_dir)
        from .report import _table, collect

        for report in collect(module or "all", None, out, None, config_dir):
            _table(report)
        console.print(f"artifacts and manifests under {out}/ (index: {out}/index.json); "
                      "`ffexport report --json` for the full lineage")
        _summary(outcomes, check=False)
