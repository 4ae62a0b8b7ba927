"""The options shared by ffexport's commands, defined once: the same flag means the same thing on every
command.

* ``--out``: the artifact root (one folder per module) on every command;
* ``--samples``: calibration faces (INT8); ``--parity-samples``: faces the parity gates are checked on;
* ``--batch``: items per inference call (``swap``: frames per call; ``bench``: the batch sizes of its rows).
  The shape of an artifact's batch axis is ``onnx --batch-axis`` and an engine's batch range
  ``trt --batch-profile``;
* ``--calib``: the folder of calibration faces; ``--config-dir``: the folder of ``<module>.yaml`` defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

def at_least_one(ctx: typer.Context, param: typer.CallbackParam, value):
    """A count option (faces, samples) below 1 is a mistake to say, not to round up."""
    if value is not None and value < 1:
        from ..errors import InputSpecError

        raise InputSpecError(f"{param.opts[0]} {value}: needs at least 1 (it counts faces)")
    return value


MODULE_HELP = "module name, comma-separated names, or 'all' (see `ffexport modules`)"
OUT_HELP = "artifact root: one folder per module (default artifacts/)"

Module = Annotated[Optional[str], typer.Option("--module", "-m", help=MODULE_HELP)]
Variant = Annotated[Optional[str], typer.Option("--variant", help="module variant (see `ffexport modules`)")]
Out = Annotated[Path, typer.Option("--out", help=OUT_HELP)]
OptionalOut = Annotated[Optional[Path], typer.Option(
    "--out", help=OUT_HELP + "; with --onnx: beside the file unless given")]
Force = Annotated[bool, typer.Option("--force", help="redo the step even when its inputs have not changed")]
Calib = Annotated[Optional[Path], typer.Option(
    "--calib", help="folder of face photos with landmark JSONs (INT8 calibration; parity faces when given)")]
Samples = Annotated[Optional[int], typer.Option("--samples", help="calibration faces for INT8 (default: up to 24)",
                                                callback=at_least_one)]
ParitySamples = Annotated[Optional[int], typer.Option("--parity-samples", help="faces the parity gates are checked on",
                                                      callback=at_least_one)]
ConfigDir = Annotated[Optional[Path], typer.Option("--config-dir", help="folder of <module>.yaml defaults "
                                                                        "(default: $FFEXPORT_CONFIGS, else ./configs)")]
OnnxFile = Annotated[List[str], typer.Option(
    "--onnx", help="MODULE=PATH: a user's model in a public layout (insightface / FaceFusion files) as that module's "
                   "FP32 artifact, repeatable; or one PATH of any other ONNX file instead of --module (outputs go "
                   "beside it or under --out)")]
ModuleOnnx = Annotated[List[str], typer.Option(
    "--onnx", help="MODULE=PATH: a user's model in a public layout (insightface / FaceFusion files, e.g. "
                   "detector=det_10g.onnx) runs as that module; repeatable")]
Contract = Annotated[List[str], typer.Option(
    "--contract", help="MODULE=FILE: a YAML describing an unusual --onnx file (layout, preprocess, template, "
                       "inputs, outputs, source_transform, trained)")]
Inputs = Annotated[List[str], typer.Option(
    "--input", help="with --onnx for a model ffexport did not export: name:1x3x112x112[:dtype], repeatable")]
Exclude = Annotated[List[str], typer.Option("--exclude", help="INT8: node to keep in float (repeatable or a,b,c)")]
Method = Annotated[Optional[str], typer.Option("--method", help="INT8 calibration: minmax | entropy | percentile")]
KeepIoTypes = Annotated[Optional[bool], typer.Option("--keep-io-types/--no-keep-io-types",
                                                     help="FP16: keep float32 inputs and outputs (default from "
                                                          "configs/, else yes)")]
Precision = Annotated[str, typer.Option("--precision", "-p", help="fp32 | fp16 | int8")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
