"""PNG plots of a benchmark (matplotlib, Agg backend): latency per module, pipeline FPS, stage breakdown.

They draw the numbers of :mod:`ffexport.bench.report`'s tables (speed-ups, stage rows); the report takes
the plots as a function (``write_reports(res, out, plots=make_plots)``), so it never imports this module.

At most five files: ``latency_b1.png`` (and ``latency_b<N>.png`` for the
largest other batch), ``pipeline_fps.png``, ``pipeline_stages.png`` and, with several pipeline batches,
``pipeline_batch.png`` (FPS against batch, with the published A100 figure as a line).
"""

from __future__ import annotations

import math
from pathlib import Path

from .._lazy import require
from ..vocab import BACKENDS, PRECISIONS
from .report import speedups, stage_rows

PRECISION_COLORS = {"fp32": "#4C72B0", "fp16": "#55A868", "int8": "#C44E52"}
STAGE_COLORS = {"detect": "#4C72B0", "landmarks": "#8172B2", "align": "#CCB974", "encode": "#64B5CD",
                "swap": "#C44E52", "enhance": "#55A868", "blend": "#DD8452", "transfer": "#937860"}


def _plt():
    mpl = require("matplotlib", "benchmark plots")
    mpl.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Render to memory, then write atomically (a killed run never leaves half a PNG)."""
    import io

    from ..fsutil import write_bytes_atomic

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_bytes_atomic(path, buf.getvalue())
    return path


def _finish(plt, fig, ax, path: Path) -> Path:
    """Legend beside the axes, layout, the file written, the figure closed."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _ok(rows, **match):
    return [r for r in rows if r.get("status") == "ok" and all(r.get(k) == v for k, v in match.items())]


def latency_plot(res: dict, batch: int, path: Path) -> Path | None:
    rows = _ok(res["rows"], kind="module", batch=batch)
    if not rows:
        return None
    plt = _plt()
    modules = list(dict.fromkeys(r["module"] for r in rows))
    labels = list(dict.fromkeys(f"{r['backend']}/{r['device']}\n{r['precision']}" for r in sorted(
        rows, key=lambda r: (BACKENDS.index(r["backend"]), r["device"] != "cuda",
                             PRECISIONS.index(r["precision"])))))
    ncols = min(3, len(modules))
    nrows = math.ceil(len(modules) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax, module in zip(axes.flat, modules):
        by = {f"{r['backend']}/{r['device']}\n{r['precision']}": r for r in rows if r["module"] == module}
        xs = range(len(labels))
        p50 = [by[lb]["latency_ms"]["p50"] if lb in by else 0.0 for lb in labels]
        p95 = [by[lb]["latency_ms"]["p95"] if lb in by else 0.0 for lb in labels]
        colors = [PRECISION_COLORS.get(lb.split("\n")[1], "grey") for lb in labels]
        ax.bar(xs, p50, color=colors, yerr=[[0] * len(p50), [max(0.0, b - a) for a, b in zip(p50, p95)]],
               capsize=3, error_kw={"elinewidth": 0.8})
        for x, v, lb in zip(xs, p50, labels):
            ax.text(x, v, f"{v:.3g}" if lb in by else "n/a", ha="center", va="bottom", fontsize=7)
        variant = next(r["variant"] for r in rows if r["module"] == module)
        ax.set_title(f"{module} ({variant})", fontsize=10)
        ax.set_xticks(list(xs), labels, fontsize=7)
        ax.set_ylabel("latency p50 ms (bar) to p95 (whisker)", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(modules):]:
        ax.axis("off")
    fig.suptitle(f"{res['host']}: latency per module, batch {batch}", fontsize=11)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _run_label(r: dict) -> str:
    batch = r.get("batch", 1)
    return f"{r['backend']}/{r['device']} {r['precision']}" + (f" b{batch}" if batch != 1 else "")


# what users compare with: FaceFusion's pipeline on an A100 with TensorRT FP16 at 1080p (a published figure)
A100_REFERENCE_FPS = 92.0


def pipeline_batch_plot(res: dict, path: Path) -> Path | None:
    """Reference-pipeline FPS against frames per call, a line per backend and precision, with the published
    A100 figure as a reference line (drawn when at least two batches ran)."""
    rows = _ok(res["rows"], kind="pipeline", pipeline="reference")
    if len({r.get("batch", 1) for r in rows}) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    lines: dict[str, list] = {}
    for r in sorted(rows, key=lambda r: r.get("batch", 1)):
        lines.setdefault(f"{r['backend']}/{r['device']} {r['precision']}", []).append((r.get("batch", 1), r["fps"]))
    for label, pts in lines.items():
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", label=label)
        for x, y in pts:
            ax.annotate(f"{y:.0f}", (x, y), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=7)
    ax.axhline(A100_REFERENCE_FPS, color="#999999", linestyle="--", linewidth=1)
    ax.text(0.99, A100_REFERENCE_FPS, "A100, TensorRT FP16, 92 FPS (published, FaceFusion)", fontsize=7,
            va="bottom", ha="right", color="#666666", transform=ax.get_yaxis_transform())
    ax.set_xscale("log", base=2)
    batches = sorted({r.get("batch", 1) for r in rows})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("frames per pipeline call (batch)")
    ax.set_ylabel("frames per second")
    ax.set_ylim(bottom=0)
    s = res["settings"]
    enh = "with enhancer" if s.get("enhance") else "no enhancer"
    ax.set_title(f"{res['host']}: pipeline at {s['resolution']}, {enh}", fontsize=10)
    return _finish(plt, fig, ax, path)


def pipeline_fps_plot(res: dict, path: Path) -> Path | None:
    rows = _ok(res["rows"], kind="pipeline")
    if not rows:
        return None
    plt = _plt()
    labels = list(dict.fromkeys(_run_label(r) for r in rows))
    get = {(r["pipeline"], _run_label(r)): r for r in rows}
    series = [("reference", "reference (frames in memory)", "#4C72B0", lambda r: r["fps"]),
              ("reference", "reference incl. decode+encode", "#8DA0CB",
               lambda r: (r.get("video") or {}).get("fps") if (r.get("video") or {}).get("status") == "ok" else None),
              ("naive", "naive baseline", "#C44E52", lambda r: r["fps"])]
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(labels)) + 2.6, 4.2))
    width = 0.8 / len(series)
    for k, (kind, name, color, value) in enumerate(series):
        vals = [value(get[(kind, lb)]) if (kind, lb) in get else None for lb in labels]
        xs = [i + (k - 1) * width for i in range(len(labels))]
        ax.bar(xs, [v or 0.0 for v in vals], width, label=name, color=color)
        for x, v in zip(xs, vals):
            if v:
                ax.text(x, v, f"{v:.3g}", ha="center", va="bottom", fontsize=7)
    ups = speedups(res)
    for i, lb in enumerate(labels):
        r = get.get(("reference", lb))
        up = ups.get((r["backend"], r["device"], r["precision"])) if r else None
        if up:
            ax.annotate(f"{up:.1f}x vs naive", (i, 0), xytext=(0, -28), textcoords="offset points", ha="center",
                        fontsize=8, color="#333333")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("frames per second")
    top = max([v for (kind, _n, _c, value) in series for lb in labels
               if (kind, lb) in get and (v := value(get[(kind, lb)]))] or [1.0])
    ax.set_ylim(0, top * 1.15)
    s = res["settings"]
    ax.set_title(f"{res['host']}: pipeline at {s['resolution']}, {s['faces']} face(s) per frame", fontsize=10)
    return _finish(plt, fig, ax, path)


def pipeline_stages_plot(res: dict, path: Path) -> Path | None:
    rows = [r for r in _ok(res["rows"], kind="pipeline") if r.get("stages_ms")]
    if not rows:
        return None
    plt = _plt()
    cols, _ = stage_rows(res)
    stages = cols[1:-1]
    fig, ax = plt.subplots(figsize=(10.5, 0.55 * len(rows) + 1.4))
    names = [f"{r['pipeline']} {_run_label(r)}" for r in rows]
    left = [0.0] * len(rows)
    for st in stages:
        vals = [r["stages_ms"].get(st) or 0.0 for r in rows]
        ax.barh(names, vals, left=left, label=st, color=STAGE_COLORS.get(st))
        left = [a + b for a, b in zip(left, vals)]
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:.1f} ms", va="center", fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds per frame (synchronised stage timers)")
    ax.set_title(f"{res['host']}: where a frame's time goes", fontsize=10)
    ax.set_xlim(0, max(left) * 1.15)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def make_plots(res: dict, out: str | Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    batches = sorted({r["batch"] for r in _ok(res["rows"], kind="module")})
    wanted = batches[:1] + ([batches[-1]] if len(batches) > 1 else [])
    made = [latency_plot(res, b, out / f"latency_b{b}.png") for b in wanted]
    made += [pipeline_fps_plot(res, out / "pipeline_fps.png"), pipeline_stages_plot(res, out / "pipeline_stages.png"),
             pipeline_batch_plot(res, out / "pipeline_batch.png")]
    return [p for p in made if p is not None]
