"""Helpers shared by the pipeline tests."""

from __future__ import annotations


def fail_on_call(monkeypatch, stage, call: int, message: str) -> dict:
    """Make ``stage.run`` raise ``ModelLoadError(message)`` on its ``call``-th call (1-based), as a stage that fails
    on the device would; the other calls run as before.  Returns the call counter (``{"n": calls so far}``: set it
    to 0 to fail again)."""
    from ffexport.errors import ModelLoadError

    real = stage.run
    calls = {"n": 0}

    def flaky(feeds):
        calls["n"] += 1
        if calls["n"] == call:
            raise ModelLoadError(message)
        return real(feeds)

    monkeypatch.setattr(stage, "run", flaky)
    return calls
