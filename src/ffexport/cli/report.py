"""``ffexport report``: the lineage of every artifact (parent, pass, options, parity, size) from the manifests."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from ..errors import ArtifactError, InputSpecError
from . import options as O
from .common import console, human_size


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        module: O.Module = None,
        variant: O.Variant = None,
        out: O.Out = Path("artifacts"),
        folder: Optional[Path] = typer.Option(None, "--dir", help="one artifact folder (e.g. beside an --onnx file)"),
        as_json: bool = typer.Option(False, "--json", help="print the lineage as JSON"),
        config_dir: O.ConfigDir = None,
        onnx: O.ModuleOnnx = [], contract: O.Contract = [],
    ) -> None:
        """Print each artifact's lineage: parent, pass, options, parity (vs parent and vs torch), size."""
        if onnx:
            from ..artifacts.adopt import adopt_all, parse_module_paths

            if module or folder is not None:
                raise InputSpecError("give either --onnx MODULE=PATH or --module / --dir, not both")
            adopted = adopt_all(parse_module_paths(onnx), out, parse_module_paths(contract, "--contract"))
            reports = [r for m, v in adopted.items() for r in collect(m, v, out, None, config_dir)]
        else:
            reports = collect(module, variant, out, folder, config_dir)
        if as_json:
            console.print_json(json.dumps(reports, default=str, allow_nan=False))
            return
        for r in reports:
            _table(r)


def collect(module: str | None, variant: str | None, out: Path, folder: Path | None, config_dir=None) -> list[dict]:
    from ..config import resolve_spec
    from ..manifest import Manifest, artifact_dir
    from .common import select_modules

    if folder is not None:
        if module:
            raise InputSpecError("give either --module or --dir, not both")
        if not (folder / "manifest.json").is_file():
            raise ArtifactError(f"no manifest.json in {folder}: run a pass on a model there first")
        return [lineage(Manifest.load(folder, required=True))]
    if not module:
        raise InputSpecError("give --module NAME (or 'all'), or --dir FOLDER")
    if module == "all" and not variant:  # every artifact folder under --out, whatever its variant
        found = sorted(p.parent for p in Path(out).glob("*/manifest.json")) if Path(out).is_dir() else []
        if not found:
            raise ArtifactError(f"no artifacts under {out}: run `ffexport optimize --module all` first")
        return [lineage(Manifest.load(f, required=True)) for f in found]
    names = select_modules(module)
    if len(names) > 1 and variant:
        raise InputSpecError("--variant applies to one module; name it with --module")
    reports = []
    for n in names:
        f = artifact_dir(out, resolve_spec(n, variant, None, config_dir))
        if not (f / "manifest.json").is_file():
            if module != "all":
                raise ArtifactError(f"no artifacts for {n} in {f}: run `ffexport optimize --module {n}` first")
            continue
        reports.append(lineage(Manifest.load(f, required=True)))
    if not reports:
        raise ArtifactError(f"no artifacts under {out}: run `ffexport optimize --module all` first")
    return reports


def _finite(v):
    """Strict JSON has no Infinity: identical images have PSNR +inf, written as the string "inf"."""
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)


def _gates(parity: dict | None) -> list[dict]:
    return [{"metric": g["metric"], "op": g["op"], "threshold": g["threshold"], "output": g["output"],
             "value": _finite(g["value"]), "passed": g["passed"]} for g in (parity or {}).get("gates", [])]


def _parity(parity: dict | None) -> dict | None:
    if not parity:
        return None
    if "vs_parent" not in parity:  # an export record: torch vs onnxruntime
        return {"passed": parity.get("passed"), "vs_torch": {"reference": parity.get("reference"),
                                                            "gated_on": parity.get("gated_on"),
                                                            "note": parity.get("note"),
                                                            "gates": _gates(parity)},
                "inputs": parity.get("inputs"), "samples": parity.get("samples")}
    out = {"passed": parity.get("passed"), "inputs": parity.get("inputs"), "samples": parity.get("samples")}
    for side in ("vs_parent", "vs_torch"):
        rec = parity.get(side)
        out[side] = None if rec is None else {"reference": rec.get("reference"), "gated_on": rec.get("gated_on"),
                                              "note": rec.get("note"), "gates": _gates(rec)}
    return out


def _status(folder: Path, rec: dict) -> str:
    from ..fsutil import sha256_file

    p = folder / rec["file"]
    if not p.is_file():
        return "missing"
    return "ok" if sha256_file(p) == rec.get("sha256") else "modified since recorded"


def lineage(manifest) -> dict:
    """The manifest's artifacts ordered parent first, each with what a reader needs."""
    arts = manifest.data.get("artifacts", {})
    by_sha = {r.get("sha256"): name for name, r in arts.items()}
    depth: dict[str, int] = {}

    def level(name: str, seen=()) -> int:
        if name in depth:
            return depth[name]
        parent = (arts[name].get("parent") or {}).get("sha256")
        pname = by_sha.get(parent)
        depth[name] = 0 if not pname or pname in seen or pname == name else level(pname, (*seen, name)) + 1
        return depth[name]

    rows = []
    for name in sorted(arts, key=lambda n: (level(n), n)):
        rec = arts[name]
        parent = rec.get("parent") or {}
        pname = by_sha.get(parent.get("sha256"))
        extra = {k: rec[k] for k in ("tool", "kept_fp32_counts", "excluded_counts", "quantized", "note",
                                     "calibration_samples") if k in rec}
        rows.append({
            "file": name, "pass": rec.get("pass"),
            "parent": pname or parent.get("path") or parent.get("file"),
            "parent_current": bool(pname) if parent else None,
            "options": rec.get("options"), "parity": _parity(rec.get("parity")),
            "size_bytes": rec.get("size_bytes"), "sha256": rec.get("sha256"), "status": _status(manifest.folder, rec),
            "created_utc": rec.get("created_utc"), "duration_s": rec.get("duration_s"), **extra,
        })
    return {"module": manifest.data.get("module"), "variant": manifest.data.get("variant"),
            "folder": str(manifest.folder), "artifacts": rows}


def _short_options(rec: dict) -> str:
    o = rec.get("options") or {}
    keep = {k: v for k, v in o.items() if k in ("tool", "opset", "batch", "keep_io_types", "method", "samples",
                                                 "exclude", "precision", "variant") and v not in (None, [], "")}
    bits = [f"{k}={v}" for k, v in keep.items()]
    for k in ("kept_fp32_counts", "excluded_counts"):
        if rec.get(k):
            bits.append(("fp32 nodes: " if k.startswith("kept") else "float nodes: ")
                        + ", ".join(f"{n} {r}" for r, n in rec[k].items()))
    if rec.get("tool"):
        bits.append(f"used {rec['tool']}")
    if rec.get("quantized") is False:
        bits.append("nothing quantized (no weighted ops)")
    return "\n".join(bits) or "-"


def _parity_text(p: dict | None) -> str:
    if not p:
        return "-"
    lines = []
    for side in ("vs_parent", "vs_torch"):
        s = p.get(side)
        if not s:
            continue
        gates = ", ".join(f"{g['metric']}={g['value']:.4g}" if isinstance(g["value"], (int, float)) else
                          f"{g['metric']}={g['value']}" for g in s["gates"])
        ok = all(g["passed"] for g in s["gates"])
        lines.append(f"{side.replace('_', ' ')}: {'PASS' if ok else 'FAIL'} {gates}"
                     + (" (raw fallback gates)" if s.get("gated_on") == "fallback" else ""))
    return "\n".join(lines) or "-"


def _table(report: dict) -> None:
    from rich.table import Table

    from rich.markup import escape

    title = f"{report['module']}/{report['variant']}  ({report['folder']})"
    t = Table(title=escape(title))
    for col in ("artifact", "pass", "parent", "options", "parity", "size", "status", "created (UTC)"):
        t.add_column(col, overflow="fold")
    for a in report["artifacts"]:
        parent = (a["parent"] or "-") + ("" if a["parent_current"] in (None, True) else " (changed since)")
        t.add_row(escape(a["file"]), a["pass"] or "-", escape(parent), escape(_short_options(a)),
                  escape(_parity_text(a["parity"])), human_size(a["size_bytes"]), a["status"],
                  (a["created_utc"] or "-").replace("T", " ").rstrip("Z"))
    console.print(t)
