"""Property-based tests of the parsers of user text: ``--input name:1x3x112x112[:dtype]``, the profile ranges of
``--batch-profile min:opt:max`` and ``--dim NAME=min:opt:max``, and the YAML configs (``configs/<module>.yaml``
and ``pipeline.yaml``).

Two properties each: valid input round-trips to the value it spells; anything else either parses or raises
the project's one-line error (an :class:`~ffexport.errors.FFExportError`), never another exception.  The
examples are derandomized (the same on every run and in CI) and few enough for the file to run in seconds.
"""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ffexport.errors import ConfigError, FFExportError, InputSpecError

FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
FILES = settings(FAST, max_examples=60)  # examples that write a config file and read it back

# text a user could type: any character a file or a shell can hold (no lone surrogates)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
# text near the grammar: its own characters, so that the near misses (1x, :x1, 0x3, 1:2:, -1:2:3) come up often
NEAR = st.text(st.sampled_from("0123456789x:=-+_. aAzZéint3264floa\t\n٣"), max_size=24)


def _only_ours(fn, *args):
    """``fn(*args)``, or None when it raised the project's error; any other exception fails the test."""
    try:
        return fn(*args)
    except FFExportError as exc:
        assert "\n" not in str(exc).strip(), f"the error is more than one line: {exc!r}"
        return None


# --- --input name:1x3x112x112[:dtype] -----------------------------------------------------------------------

NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,12}", fullmatch=True)
DIMS = st.lists(st.integers(1, 4096), min_size=1, max_size=5)
DTYPE = st.sampled_from([None, "float32", "float16", "int64", "int32"])


@FAST
@given(NAME, DIMS, DTYPE, st.sampled_from(["", " ", "  \t"]))
def test_input_spec_round_trips(name, dims, dtype, pad):
    from ffexport.export.byo import InputArg, parse_input_spec

    text = f"{name}:{'x'.join(map(str, dims))}" + (f":{dtype}" if dtype else "")
    got = parse_input_spec(pad + text + pad)
    assert got == InputArg(name, tuple(dims), dtype or "float32")
    again = f"{got.name}:{'x'.join(map(str, got.shape))}:{got.dtype}"
    assert parse_input_spec(again) == got  # what it parsed spells the same input


@FAST
@given(st.one_of(TEXT, NEAR, st.builds(lambda n, s: f"{n}:{s}", NAME, NEAR)))
@example("x:0x3")
@example("x:1x3x" + "9" * 5000)  # more digits than Python's int() converts by default
@example("x:1x3:bfloat16")
@example("x:1x3\n")
def test_input_spec_parses_or_says_why_in_one_line(text):
    from ffexport.export.byo import InputArg, parse_input_spec

    got = _only_ours(parse_input_spec, text)
    if got is not None:
        assert isinstance(got, InputArg) and got.shape and all(d > 0 for d in got.shape)


def test_input_spec_mistakes_are_input_spec_errors():
    from ffexport.export.byo import parse_input_spec

    for text, says in (("x:0x3", "dimensions must be positive"), ("x:1x3:bfloat16", "dtype 'bfloat16'"),
                       ("x=1x3", "expected name:DIMxDIMx"), ("x:" + "9" * 5000, "expected name:DIMxDIMx")):
        with pytest.raises(InputSpecError, match=says):
            parse_input_spec(text)


# --- profile ranges: --batch-profile min:opt:max, --dim NAME=min:opt:max ---------------------------------------

RANGE = st.lists(st.integers(1, 10**6), min_size=3, max_size=3).map(sorted)


@FAST
@given(RANGE, st.integers(1, 10**6))
def test_profile_ranges_round_trip(rng, single):
    from ffexport.passes.trt import parse_dim, parse_range

    lo, opt, hi = rng
    assert parse_range(f"{lo}:{opt}:{hi}", "--batch-profile") == (lo, opt, hi)
    assert parse_range(str(single), "--batch-profile") == (single, single, single)  # one number: a fixed size
    assert parse_dim(f"height={lo}:{opt}:{hi}") == ("height", (lo, opt, hi))
    assert parse_dim(f" crop size = {lo}:{opt}:{hi}") == ("crop size", (lo, opt, hi))


@FAST
@given(st.lists(st.integers(-3, 20), min_size=3, max_size=3))
def test_profile_range_out_of_order_is_refused_naming_the_flag(values):
    from ffexport.passes.trt import parse_range

    lo, opt, hi = values
    text = f"{lo}:{opt}:{hi}"
    if 1 <= lo <= opt <= hi:
        assert parse_range(text, "--batch-profile") == (lo, opt, hi)
    else:
        with pytest.raises(InputSpecError, match="--batch-profile"):
            parse_range(text, "--batch-profile")


@FAST
@given(st.one_of(TEXT, NEAR))
@example("1:2")
@example("0:1:2")
@example("4:2:8")
@example("1:" + "9" * 5000 + ":2")
@example("1::8")
def test_profile_ranges_parse_or_say_why_in_one_line(text):
    from ffexport.passes.trt import parse_dim, parse_range

    for fn, arg in ((parse_range, (text, "--batch-profile")), (parse_dim, (text,)), (parse_dim, (f"h={text}",))):
        got = _only_ours(fn, *arg)
        if got is not None:
            lo, opt, hi = got if fn is parse_range else got[1]
            assert 1 <= lo <= opt <= hi


# --- configs/<module>.yaml ----------------------------------------------------------------------------------

# keys the module configs and the passes' sections know, so the values land where they are read
KEYS = st.sampled_from(["variant", "opset", "batch", "gates", "fallback_gates", "calibration", "trt", "fp16", "int8",
                        "min", "opt", "max", "fp32", "psnr_db", "ssim", "samples", "parity_samples", "dims",
                        "height", "width", "crop_size", "keep_io_types", "block_ops", "keep_fp32", "method",
                        "exclude", "op_types", "workspace_mb", "opt_level", "flavor", "box-feather", "other"])
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**4), st.floats(), st.sampled_from(
    ["box-feather", "seventeen", "17", "1", "minmax", "auto", "", "fp16"]), st.text(max_size=6))
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(KEYS, st.integers(0, 3), st.text(max_size=4)), inner, max_size=4)), max_leaves=8)
TOP_KEYS = st.sampled_from(["variant", "opset", "batch", "gates", "fallback_gates", "calibration", "trt", "fp16",
                            "int8"])
MODULE_CONFIG = st.dictionaries(TOP_KEYS, VALUE, max_size=4)


@pytest.fixture(scope="module")
def cfg_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cfg")


def _read_every_way(cfg_dir, out) -> None:
    """Every reader of ``configs/blender.yaml``: the spec, the TensorRT profile and options, the passes' options,
    and the calibration sizes an optimisation chain takes from it."""
    from ffexport.artifacts.engines import trt_options
    from ffexport.artifacts.optimize import Chain
    from ffexport.artifacts.targets import module_target
    from ffexport.config import resolve_spec
    from ffexport.passes.trt import config_dims

    spec = resolve_spec("blender", None, None, cfg_dir)
    config_dims("blender", cfg_dir)
    trt_options(spec, cfg_dir, out=out)
    chain = Chain(module_target(spec, out), config_dir=cfg_dir, precision="int8")
    for step in ("fp16", "int8"):
        chain.options(step)


@FILES
@given(MODULE_CONFIG)
@example({"gates": ["fp32", 60]})
@example({"gates": {"fp32": {"psnr_db": float("nan")}}})
@example({"batch": {"min": 8, "opt": 4, "max": 1}})
@example({"calibration": {"samples": "many"}})
@example({"calibration": ["samples", 4]})
@example({"trt": {"dims": ["height", 64]}})
@example({"trt": "dims"})
@example({"fp16": {"keep_io_types": "yes"}})
@example({"variant": ["box-feather"]})
@example({"opset": 17.5})
def test_module_config_values_of_any_type_load_or_fail_in_one_line(cfg_dir, tmp_path_factory, data):
    (cfg_dir / "blender.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    try:
        _read_every_way(cfg_dir, tmp_path_factory.getbasetemp() / "never-written")
    except ConfigError as exc:  # names the file (the passes' sections name it configs/blender.yaml)
        assert "blender.yaml: " in str(exc) and "\n" not in str(exc), exc
    except FFExportError as exc:  # an unknown variant, pass option or flavour lists the valid names
        assert "\n" not in str(exc), exc


@FILES
@given(st.one_of(TEXT.map(str.encode), NEAR.map(str.encode), st.binary(max_size=40)))
@example(b"opset: 17\n1: unknown\n")  # a key that is not text beside one that is
@example(b"variant: box-feather\nvariant: box-feather\n")
@example(b"\xff\xfe")  # not UTF-8
@example(b"[1, 2]")
@example(b"gates: !!binary aGk=")
def test_module_config_text_of_any_kind_loads_or_fails_in_one_line(cfg_dir, tmp_path_factory, content):
    (cfg_dir / "blender.yaml").write_bytes(content)
    try:
        _read_every_way(cfg_dir, tmp_path_factory.getbasetemp() / "never-written")
    except FFExportError as exc:
        assert "\n" not in str(exc), exc


@FILES
@given(RANGE, st.sampled_from(["fp32", "fp16", "int8"]), st.floats(0, 200, allow_nan=False), st.integers(1, 64))
def test_module_config_round_trips_into_the_spec(cfg_dir, tmp_path_factory, batch, precision, psnr, samples):
    from ffexport import specs
    from ffexport.artifacts.optimize import Chain
    from ffexport.artifacts.targets import module_target
    from ffexport.config import resolve_spec

    lo, opt, hi = batch
    data = {"variant": "box-feather", "opset": 17, "batch": {"min": lo, "opt": opt, "max": hi},
            "gates": {precision: {"psnr_db": psnr}}, "calibration": {"samples": samples, "parity_samples": 2}}
    (cfg_dir / "blender.yaml").write_text(yaml.safe_dump(data))
    spec = resolve_spec("blender", None, None, cfg_dir)
    assert spec.key == specs.get("blender").key and spec.opset == 17 and spec.batch_profile == (lo, opt, hi)
    gate = {g.metric: g for g in spec.gates[precision]}["psnr_db"]
    assert gate.threshold == psnr or math.isclose(gate.threshold, psnr)
    chain = Chain(module_target(spec, tmp_path_factory.getbasetemp() / "never-written"), config_dir=cfg_dir,
                  precision="int8")
    assert (chain.samples, chain.parity_samples) == (samples, 2)


# --- pipeline.yaml ------------------------------------------------------------------------------------------

PIPELINE_KEYS = st.sampled_from(["modules", "backend", "precision", "stages", "detector", "detect_max_side", "blend",
                                 "enhance", "landmarks68", "device"])
PIPELINE_VALUE = st.recursive(st.one_of(SCALAR, st.sampled_from(
    ["torch", "ort", "trt", "fp16", "int8", "mtcnn", "box", "poisson", "cpu", "cuda:0", "cuda:x", "encoder",
     "iresnet18", "generator", "identity"])), lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.one_of(st.sampled_from(["encoder", "generator", "detector", "blender", "backend",
                                               "precision", "nope"]), st.integers(0, 2)), inner, max_size=3)),
    max_leaves=6)


@FILES
@given(st.dictionaries(PIPELINE_KEYS, PIPELINE_VALUE, max_size=4))
@example({"stages": {"encoder": ["ort"]}})
@example({"modules": {"encoder": {"variant": "iresnet18"}}})
@example({"detect_max_side": 12.5})
@example({"device": "cuda:٣"})
def test_pipeline_settings_of_any_type_load_or_fail_in_one_line(cfg_dir, data):
    from ffexport.pipeline.settings import PipelineSettings, load_pipeline_settings

    (cfg_dir / "pipeline.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    try:
        got = load_pipeline_settings(cfg_dir)
    except ConfigError as exc:
        assert str(exc).startswith(str(cfg_dir / "pipeline.yaml")) and "\n" not in str(exc), exc
    else:
        assert isinstance(got, PipelineSettings) and got.source == str(cfg_dir / "pipeline.yaml")
    finally:
        (cfg_dir / "pipeline.yaml").unlink()
