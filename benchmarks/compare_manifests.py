"""Compare the manifests of two artifact roots (e.g. two `ffexport run`s): every record field but the times
(created_utc, duration_s, build_time_s) and the random temporary-file names parity labels carry.

    python3 benchmarks/compare_manifests.py BEFORE/artifacts AFTER/artifacts

Prints each difference (module/artifact/field: a != b) and a count of the records identical apart from times."""
import json, re, sys
from pathlib import Path
a, b = Path(sys.argv[1]), Path(sys.argv[2])
IGNORE = {"created_utc", "duration_s", "build_time_s"}
def strip(x):
    if isinstance(x, str):
        return re.sub(r"\.[\w.]+?\.[a-z0-9_]{8}\.part", "<temporary file>", x)
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in IGNORE}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x
def diff(x, y, path=""):
    out = []
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            if k not in x or k not in y:
                out.append(f"{path}/{k}: only in {'b' if k not in x else 'a'}")
            else:
                out += diff(x[k], y[k], f"{path}/{k}")
    elif x != y:
        out.append(f"{path}: {str(x)[:80]} != {str(y)[:80]}")
    return out
total = same = 0
for mod in sorted(p.name for p in a.iterdir() if (p / "manifest.json").is_file()):
    ma = json.loads((a / mod / "manifest.json").read_text()); mb_path = b / mod / "manifest.json"
    if not mb_path.is_file():
        print(f"{mod}: not in b"); continue
    mb = json.loads(mb_path.read_text())
    top = diff(strip({k: v for k, v in ma.items() if k != "artifacts"}), strip({k: v for k, v in mb.items() if k != "artifacts"}), mod)
    for t in top: print(t)
    for name, ra in ma["artifacts"].items():
        rb = mb["artifacts"].get(name)
        total += 1
        if rb is None:
            print(f"{mod}/{name}: not in b"); continue
        d = diff(strip(ra), strip(rb), f"{mod}/{name}")
        if d:
            print("\n".join(d[:8]))
        else:
            same += 1
print(f"{same} of {total} artifact records identical apart from times")
