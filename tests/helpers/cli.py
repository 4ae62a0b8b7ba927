"""Helpers shared by the tests that run the real ``ffexport`` command in a subprocess."""

from __future__ import annotations

import subprocess


def one_line(res: subprocess.CompletedProcess, *needles: str) -> str:
    """A user mistake's answer: a non-zero exit, nothing on stdout, one line on stderr holding every needle."""
    assert res.returncode not in (0, None), res
    assert res.stdout == "", res.stdout[:2000]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr[:2000]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]
