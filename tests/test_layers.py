"""The package's layers point one way: a file imports only from its own layer or below, and no two
sub-packages import each other (imports inside functions count too)."""

from __future__ import annotations

import ast

from conftest import REPO

PKG = REPO / "src" / "ffexport"
# lowest first (see README, "How the code is laid out")
LAYERS = [
    {"errors", "_lazy", "vocab", "fsutil", "hostinfo", "toolchain", "metrics", "__init__"},
    {"specs", "config", "manifest"},
    {"vision", "models"},
    {"faces"},
    {"backends"},
    {"export", "passes"},
    {"artifacts"},
    {"pipeline", "bench"},
    {"cli", "__main__"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> dict[tuple[str, str], list[str]]:
    """(importer unit, imported unit) -> the files where it happens."""
    edges: dict[tuple[str, str], list[str]] = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG.parent).with_suffix("")
        mod = ".".join(rel.parts).removesuffix(".__init__")
        pkg = mod if f.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for n in ast.walk(ast.parse(f.read_text())):
            targets = []
            if isinstance(n, ast.ImportFrom):
                if n.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
                    targets = [".".join(base + ([n.module] if n.module else []))]
                    if not n.module:  # from . import x, y: each name may be a sub-package
                        targets = [".".join(base + [a.name]) for a in n.names]
                elif n.module and n.module.split(".")[0] == "ffexport":
                    targets = [n.module]
            elif isinstance(n, ast.Import):
                targets = [a.name for a in n.names if a.name.split(".")[0] == "ffexport"]
            for t in targets:
                a, b = _unit(mod), _unit(t)
                if a != b:
                    edges.setdefault((a, b), []).append(str(f.relative_to(PKG)))
    return edges


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
             if (p.is_file() and p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert not units - set(RANK), f"add these to a layer (and to the README's layout): {sorted(units - set(RANK))}"


def test_no_upward_import():
    up = {f"{a} -> {b} ({', '.join(sorted(set(files))[:3])})" for (a, b), files in _imports().items()
          if a in RANK and b in RANK and RANK[b] > RANK[a]}
    assert not up, "upward imports:\n" + "\n".join(sorted(up))


def test_no_import_cycle():
    edges = _imports()
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)

    def reaches(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    loops = sorted(u for u in graph if u in reaches(u))
    assert not loops, f"units on an import cycle: {loops}"
