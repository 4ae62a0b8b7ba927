"""Shared test fixtures: small-but-real variants of every registered module, exported once per session.

The tests are laid out like the package (tests/<layer>/test_*.py); helpers shared by several files live in
tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def small_spec(module: str):
    """The variant each module is tested with in CI: the one its spec marks ``ci=True`` (the real architecture
    at its smallest registered size); a module without one fails tests/export/test_export.py."""
    from ffexport import specs

    return specs.get(module, specs.ci_variant(module))


@pytest.fixture(scope="session")
def session_artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def exported_small(session_artifacts):
    """exported_small(module) -> (spec, path of fp32.onnx), exported once per session."""
    from ffexport.export.onnx import export_module

    cache: dict[str, tuple] = {}

    def get(module: str):
        if module not in cache:
            from ffexport.manifest import artifact_dir

            spec = small_spec(module)
            path = artifact_dir(session_artifacts, spec) / "fp32.onnx"
            if not path.is_file():  # tests that build engines export into the same folder through optimize()
                path = export_module(spec, session_artifacts, samples=2).path
            cache[module] = (spec, path)
        return cache[module]

    return get


@pytest.fixture(autouse=True)
def _forget_user_models():
    """Users' ONNX files a test adopted (--onnx MODULE=PATH) register variants: gone after the test."""
    yield
    from ffexport import specs

    for s in specs.all_specs():
        if s.origin:
            specs.unregister(s.module, s.variant)


@pytest.fixture(autouse=True)
def _no_cwd_configs(monkeypatch, tmp_path):
    """Tests run with the repo's configs/ unless they chdir; keep FFEXPORT_CONFIGS pointing at it."""
    monkeypatch.setenv("FFEXPORT_CONFIGS", str(REPO / "configs"))
    yield


def pytest_report_header(config):
    try:
        import onnxruntime
        import torch

        return f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, threads {os.cpu_count()}"
    except ImportError:
        return "torch/onnxruntime missing"
