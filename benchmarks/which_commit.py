# python3 benchmarks/which_commit.py RESULTS.json [REV_RANGE]   (from the repository root)
"""The commit whose source ran a benchmark: the results' ``settings.source_sha256`` (ffexport.bench.report.
source_digest, the package's source and configs as they were on disk) against the same digest of each commit's
files, newest first (default: the last 50 commits).  Prints the matching commits, or says none matched."""
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from ffexport.bench.report import covered, digest_files  # noqa: E402


def git(*args: str) -> bytes:
    return subprocess.run(["git", *args], check=True, capture_output=True).stdout


def digest_at(rev: str) -> str:
    paths = [p for p in git("ls-tree", "-r", "--name-only", rev).decode().splitlines() if covered(p)]
    return digest_files((p, git("show", f"{rev}:{p}")) for p in paths)


try:
    want = json.loads(Path(sys.argv[1]).read_text()).get("settings", {}).get("source_sha256")
except (IndexError, OSError, ValueError) as exc:
    sys.exit(f"usage: which_commit.py RESULTS.json [REV_RANGE]: cannot read the results ({type(exc).__name__}: {exc})")
if not want:
    sys.exit(f"{sys.argv[1]} has no settings.source_sha256 (written by ffexport since this script exists)")
revs = git("rev-list", sys.argv[2] if len(sys.argv) > 2 else "-50", *([] if len(sys.argv) > 2 else ["HEAD"]))
found = [r for r in revs.decode().split() if digest_at(r) == want]
print("\n".join(found) if found else f"no commit in range has source_sha256 {want}")
