"""Start a GPU sweep from committed results: copy SEED's measured rows where `ffexport bench --resume` looks.

    python3 benchmarks/seed_results.py SEED WORK_RESULTS [pipeline|all]

SEED is a committed results.json (benchmarks/results/<gpu-name>/results.json); its rows are written to
WORK_RESULTS/<gpu-name>/results.json unless a file is already there (a resumed run on the same machine).
'pipeline' drops the pipeline rows so they are measured again; 'all' drops every row.
"""
import argparse
import json
import pathlib


def main(seed: str, root: str, redo: str = "") -> None:
    seed_p = pathlib.Path(seed)
    dest = pathlib.Path(root) / seed_p.parent.name / "results.json"
    if dest.is_file():
        print(f"[sweep] {dest} exists: resuming from it, not from {seed}")
        return
    res = json.loads(seed_p.read_text())
    drop = {"pipeline": lambda r: r.get("kind") == "pipeline", "all": lambda r: True}.get(redo, lambda r: False)
    res["rows"] = [r for r in res["rows"] if not drop(r)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(res))
    print(f"[sweep] seeded {dest} from {seed}: {len(res['rows'])} rows kept")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seed", help="a committed results.json (benchmarks/results/<gpu-name>/results.json)")
    ap.add_argument("root", help="where the sweep's reports go (its results.json is ROOT/<gpu-name>/results.json)")
    ap.add_argument("redo", nargs="?", default="", choices=("", "pipeline", "all"),
                    help="'pipeline': measure the pipeline rows again; 'all': every row")
    a = ap.parse_args()
    main(a.seed, a.root, a.redo)
