"""The GitHub Actions workflows: each file parses, every job has steps, every ``ffexport`` command a step runs exists in
the CLI with the options it is given, every script it names exists, and the CPU engine job installs exactly as the
README says."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main
import yaml

from conftest import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def _commands(script: str) -> list[list[str]]:
    """The simple commands of a step's shell script (split at newlines, &&, ||, ;, |), as argument lists."""
    out = []
    for part in re.split(r"\n|&&|\|\||;|\|", script):
        part = re.sub(r"\d?>&\d|\d?>\s*\S+", " ", part).strip()  # redirections
        if part:
            out.append(shlex.split(part))
    return out


def _cli():
    from ffexport.cli.main import app

    return typer.main.get_command(app)  # typer's own (vendored) click group


def _steps(path: Path):
    data = yaml.safe_load(path.read_text())
    for name, job in data["jobs"].items():
        for step in job["steps"]:
            yield name, step


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_parses_and_every_job_has_steps(path):
    data = yaml.safe_load(path.read_text())
    assert data.get("name") and data.get("jobs")
    on = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` key as true
    assert on, f"{path.name}: no trigger"
    for name, job in data["jobs"].items():
        assert job.get("runs-on") and job.get("steps"), name
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), (name, step)
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", step["uses"]), step["uses"]  # a pinned major


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_every_command_a_workflow_runs_exists(path):
    cli = _cli()
    seen = 0
    for job, step in _steps(path):
        for argv in _commands(step.get("run", "")):
            if argv[0] == "ffexport":
                seen += 1
                sub = cli.get_command(None, argv[1])
                assert sub is not None, f"{path.name} {job}: `ffexport {argv[1]}` is not a command"
                opts = {o for p in sub.params for o in (*p.opts, *p.secondary_opts)}
                for tok in argv[2:]:
                    if tok.startswith("-"):
                        assert tok.split("=")[0] in opts, f"{path.name} {job}: `ffexport {argv[1]}` has no {tok}"
                # and click accepts the whole line (values of the right type, no stray arguments)
                sub.make_context(f"ffexport {argv[1]}", list(argv[2:]), resilient_parsing=False)
            elif argv[0] == "bash":
                assert (REPO / argv[1]).is_file(), f"{path.name} {job}: {argv[1]} does not exist"
    if path.name == "engines.yml":
        assert seen >= 4


def _readme_install() -> str:
    text = (REPO / "README.md").read_text()
    main = re.search(r"```bash\n(pip install .*?) && ffexport run\n```", text)
    assert main, "the README's main command"
    return main.group(1)


def test_the_engine_job_installs_as_the_readme_says_and_checks_its_build():
    steps = [s for job, s in _steps(REPO / ".github" / "workflows" / "engines.yml") if job == "cpu"]
    runs = [s.get("run", "") for s in steps]
    assert _readme_install() in runs
    build = next(i for i, r in enumerate(runs) if r.startswith("ffexport build ") and "--check" not in r)
    check = next(i for i, r in enumerate(runs) if r.startswith("ffexport build --check"))
    assert build < check
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    saved = next(s for s in steps if s.get("uses", "").startswith("actions/cache/save@"))
    assert "hashFiles('artifacts/index.json')" in saved["with"]["key"]  # the engine cache is keyed by the index
