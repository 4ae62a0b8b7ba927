"""Which nodes make a reduced-precision model miss its gate?

Both models run on the same real inputs with every intermediate tensor of the
parent exposed (a chunk of tensors at a time, so memory stays bounded).  For
each node of the candidate that runs in reduced precision, its *local error* is
how much the relative L2 error of its outputs exceeds the worst relative error
of its inputs: the error that node adds itself, rather than inherits.  A node
whose outputs turn inf/NaN while its inputs are finite ranks first.  The FP16
and INT8 passes keep the top-ranked nodes in FP32 and try again.

:func:`profile` runs the FP32 parent alone and reports each tensor's dtype and
largest magnitude (the FP16 pass blocks nodes whose values leave the FP16 range
before converting anything).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from .. import graph


@dataclass
class TensorStats:
    dtype: str
    absmax: float
    nonfinite: int


def profile(model, feeds: Sequence[dict]) -> dict[str, TensorStats]:
    """dtype, largest finite magnitude and non-finite count of every node output of ``model``."""
    import numpy as np

    names = graph.node_output_names(model)
    stats: dict[str, TensorStats] = {}
    for _, rows in graph.run_exposed({"m": model}, feeds, names):
        for row in rows:
            for name, arr in row.get("m", {}).items():
                dt = str(arr.dtype)
                if arr.dtype.kind == "f" and arr.size:
                    finite = np.isfinite(arr)
                    bad = int(arr.size - finite.sum())
                    amax = float(np.abs(arr[finite]).max()) if bad < arr.size else 0.0
                else:
                    bad, amax = 0, 0.0
                old = stats.get(name)
                stats[name] = TensorStats(dt, max(amax, old.absmax) if old else amax,
                                          bad + (old.nonfinite if old else 0))
    return stats


def tensor_errors(parent, candidate, feeds: Sequence[dict], names: Iterable[str]) -> dict[str, float]:
    """Relative L2 error (inf where the candidate is non-finite) of each tensor ``names`` of ``candidate``
    against ``parent`` over ``feeds``."""
    import numpy as np

    sd: dict[str, float] = {}
    sr: dict[str, float] = {}
    for _, rows in graph.run_exposed({"ref": parent, "cand": candidate}, feeds, names):
        for row in rows:
            ref, cand = row.get("ref", {}), row.get("cand", {})
            for name, r in ref.items():
                c = cand.get(name)
                if c is None or r.dtype.kind != "f" or c.shape != r.shape:
                    continue
                c64, r64 = c.astype(np.float64), r.astype(np.float64)
                if not np.isfinite(c64).all():
                    sd[name] = math.inf
                else:
                    sd[name] = sd.get(name, 0.0) + float(((c64 - r64) ** 2).sum())
                sr[name] = sr.get(name, 0.0) + float((r64 ** 2).sum())
    out = {}
    for name, d in sd.items():
        den = sr.get(name, 0.0)
        out[name] = math.inf if math.isinf(d) else (math.sqrt(d / den) if den > 0 else (0.0 if d == 0 else math.inf))
    return out


@dataclass
class NodeScore:
    node: str
    op: str
    score: float  # share of the node's output error that the node itself adds (1 = all of it)
    error_out: float
    error_in: float
    graph_order: int = 0  # > 0: ranked by position in the graph, not by measured error

    @property
    def added(self) -> float:
        return self.error_out - self.error_in

    def detail(self) -> str:
        if self.graph_order:
            return (f"adds no error of its own that stands out (outputs {self.error_out:.3g}, inputs "
                    f"{self.error_in:.3g}); taken in graph order, as early errors grow most downstream")
        if math.isinf(self.error_out):
            return f"outputs turned inf/NaN (inputs' relative error {self.error_in:.2g})"
        return (f"adds {self.added:.3g} relative error itself, {self.score:.0%} of its outputs' "
                f"{self.error_out:.3g}")


def rank_nodes(parent, candidate, feeds: Sequence[dict], candidates: set[str]) -> list[NodeScore]:
    """Nodes of ``candidates`` (names of ``parent``'s nodes), most harmful first.

    A node's error reaches the outputs amplified by everything after it, so what
    it costs at the outputs is about ``added / error_out * error_at_outputs``:
    nodes are ranked by the share of their outputs' error that they add
    themselves (early noise sources and isolated bad nodes first, then nodes
    that merely pass on inherited error), ties by the error added.
    """
    names = graph.node_output_names(parent)
    err = tensor_errors(parent, candidate, feeds, names)
    scores = []
    for n in parent.graph.node:
        if n.name not in candidates:
            continue
        outs = [err[o] for o in n.output if o in err]
        if not outs:
            continue
        e_out = max(outs)
        e_in = max([err.get(i, 0.0) for i in n.input if i] or [0.0])
        if math.isinf(e_out):
            share = math.inf if not math.isinf(e_in) else 0.0
        else:
            share = (e_out - e_in) / e_out if e_out > 0 else 0.0
        if share > 0:
            scores.append(NodeScore(n.name, n.op_type, share, e_out, e_in))
    scores.sort(key=lambda s: (-s.score, -(s.added if not math.isinf(s.error_out) else 0.0), s.node))
    # then every other candidate in graph order: where no node stands out, the error is spread
    # over many layers and amplified downstream, so the earliest layers cost the most
    listed = {s.node for s in scores}
    order = 0
    for n in parent.graph.node:
        if n.name in candidates and n.name not in listed:
            order += 1
            scores.append(NodeScore(n.name, n.op_type, 0.0, max([err.get(o, 0.0) for o in n.output] or [0.0]),
                                    max([err.get(i, 0.0) for i in n.input if i] or [0.0]), order))
    return scores
