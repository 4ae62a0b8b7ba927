"""``ffexport bench`` on whatever host runs the suite: the report's schema, one process per row, honest
not-runnable rows, the time budget, and a tiny end-to-end run with the naive baseline beside the reference pipeline.

The bench's ``auto`` device is the GPU where torch sees one, else the CPU; each test checks the rows and the
report against what this host is (the ``host`` fixture reads it the way a user would, apart from the bench), so
the same assertions hold on the CPU-only CI machine and on a GPU host.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ffexport.bench.report import MODULE_COLUMNS, PIPELINE_COLUMNS, speedups
from ffexport.bench.plan import Settings, parse_backends, plan_rows
from ffexport.bench.sweep import run_bench
from ffexport.bench.timing import percentile, stats
from conftest import REPO

CALIB = REPO / "calibration"
PNG = b"\x89PNG\r\n\x1a\n"
NUMBERS = ("latency_ms", "wall_ms", "fps", "memory", "parity", "iters")


@pytest.fixture(scope="module")
def host() -> dict:
    """This machine as the bench must describe it: the device ``auto`` resolves to, the report's host tag (the
    GPU's name, or ``cpu-<model>``), and whether a TensorRT runtime can run engines here, or why not (no GPU;
    on an H100/H200, TensorRT-RTX refuses compute capability 9.0 and full TensorRT may be absent)."""
    import torch

    from ffexport.backends.trt import trt_availability
    from ffexport.bench.plan import slug
    from ffexport.bench.report import cpu_model

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    trt_ok, trt_reason = trt_availability()
    return {"device": "cuda" if gpu else "cpu", "gpu": gpu, "torch": torch.__version__,
            "tag": slug(gpu) if gpu else "cpu-" + slug(cpu_model()), "trt_ok": trt_ok, "trt_reason": trt_reason}


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def module_run(bench_dir):
    """MTCNN's R-Net (trained, small) on torch, onnxruntime and TensorRT through the CLI, each row in a new interpreter."""
    from ffexport.cli.main import main

    out = bench_dir / "modules"
    rc = main(["bench", "--modules", "mtcnn_rnet", "--backends", "torch,ort,trt",
               "--precisions", "fp32", "--iters", "3", "--warmup", "1", "--rotate", "2", "--calib", str(CALIB),
               "--out", str(bench_dir / "artifacts"), "--report", str(out), "--isolation", "subprocess"])
    assert rc == 0
    return json.loads((out / "results.json").read_text()), out


def _row(res, **match):
    hits = [r for r in res["rows"] if all(r.get(k) == v for k, v in match.items())]
    assert len(hits) == 1, (match, [(r["backend"], r["precision"]) for r in res["rows"]])
    return hits[0]


def test_results_json_schema(module_run, host):
    res, out = module_run
    assert res["schema"] == "ffexport-bench/1" and res["complete"] is True
    assert res["host"] == host["tag"]  # the GPU's name on a GPU host, cpu-<model> on a CPU-only one
    assert res["settings"]["device_resolved"] == host["device"]
    if host["gpu"]:
        assert res["environment"]["gpu"]["name"] == host["gpu"] and not res["host"].startswith("cpu-")
    else:
        assert "gpu" not in res["environment"] and res["host"].startswith("cpu-")
    env = res["environment"]
    for key in ("cpu", "python", "platform", "torch", "onnxruntime", "tensorrt", "versions"):
        assert key in env, key
    assert env["torch"]["version"] and env["onnxruntime"]["version"]
    settings = res["settings"]
    for key in ("git_commit", "command", "date_utc", "tf32", "device_resolved", "iters", "warmup", "rotate"):
        assert key in settings, key
    assert settings["command"].startswith("ffexport bench") and "--modules mtcnn_rnet" in settings["command"]
    assert settings["git_commit"] != ""
    assert len(settings["source_sha256"]) == 64  # the code that ran, wherever the tree was copied (below)
    for backend in ("torch", "ort"):
        r = _row(res, kind="module", backend=backend, precision="fp32")
        assert r["status"] == "ok", r.get("reason")
        assert r["device"] == host["device"]  # torch and ort rows run on the main device
        lat = r["latency_ms"]
        assert lat["n"] == 3 and 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert r["fps"] > 0 and r["rotated_inputs"] == 2
        assert r["timer"] == ("cuda_events" if host["gpu"] else "perf_counter")
        assert r["load_s"] >= 0 and r["memory"]["host_peak_rss_mb"] > 0
        if host["gpu"]:  # a GPU row reads its device memory
            assert r["memory"]["vram_mb"] >= 0 and r["memory"]["vram_source"]
        else:  # a CPU row has no device memory, and says so
            assert r["memory"]["vram_mb"] is None
        assert r["parity"]["passed"] and r["parity"]["summary"].startswith("PASS rel_err=")
    ort = _row(res, kind="module", backend="ort", precision="fp32")
    assert ort["artifact"]["path"].endswith("fp32.sim.onnx")
    assert ort["providers"][0] == ("CUDAExecutionProvider" if host["gpu"] else "CPUExecutionProvider")
    if host["gpu"]:  # timed with onnxruntime's CUDA graph (the pipeline's way for fixed shapes), the plain run beside
        assert ort["cuda_graph"].startswith("on: 1 input shapes"), ort["cuda_graph"]
        plain = ort["plain"]["latency_ms"]
        assert plain["n"] == 3 and 0 < plain["p50"] and ort["plain"]["fps"] > 0
        assert "| ort (cuda, CUDA graph; plain p50 " in (out / "results.md").read_text()
    else:  # no graph on the CPU: one timing, no plain figure beside it
        assert "plain" not in ort and "cuda_graph" not in ort
    assert sorted(res["files"]) == sorted(str(out / f) for f in ("results.json", "results.md", "latency_b1.png"))


def test_results_md_columns_and_plot(module_run):
    res, out = module_run
    md = (out / "results.md").read_text()
    lines = md.splitlines()
    header = "| " + " | ".join(MODULE_COLUMNS) + " |"
    assert header == "| module | backend | precision | batch | latency p50 ms | p95 | FPS | VRAM MB | parity |"
    assert header in lines
    body = lines[lines.index(header) + 2:]
    table = [ln for ln in body[:len(res["rows"])] if ln.startswith("| mtcnn_rnet")]
    assert len(table) == len(res["rows"]) == 3
    for ln in table:
        assert len(ln.strip("|").split("|")) == len(MODULE_COLUMNS)
    assert "VRAM MB" in md and "CPU rows use no device memory" in md
    png = out / "latency_b1.png"
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000


def test_each_row_ran_in_a_process_of_its_own(module_run, host):
    res, _ = module_run
    measured = [r for r in res["rows"] if r["status"] == "ok"]
    pids = [r["pid"] for r in measured] + [p["pid"] for p in res["prepared"].values()]
    assert len(measured) == (3 if host["trt_ok"] else 2)  # torch, ort, and trt where a runtime can run engines
    assert len(set(pids)) == len(pids)
    assert os.getpid() not in pids


def test_trt_row_runs_or_says_why_no_runtime_can(module_run, host):
    """The TensorRT row runs where a TensorRT runtime can execute engines; elsewhere it is a row with the reason
    and no numbers: no CUDA GPU on a CPU host; on a GPU host, the runtime's own (TensorRT-RTX refuses compute
    capability 9.0, say, and full TensorRT is not installed)."""
    res, out = module_run
    r = _row(res, kind="module", backend="trt")
    assert r["device"] == "cuda"
    md = (out / "results.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| mtcnn_rnet") and "| trt (cuda) |" in ln)
    cells = [c.strip() for c in line.strip("|").split("|")]
    if host["trt_ok"]:
        assert r["status"] == "ok" and r["fps"] > 0 and r["parity"]["passed"], r.get("reason")
        assert cells[4] != "–" and cells[8].startswith("PASS")
        return
    assert r["status"] == "not_runnable"
    why = "no CUDA GPU here" if not host["gpu"] else host["trt_reason"]
    assert why in r["reason"] and why in res["environment"]["tensorrt"]["reason"], (why, r["reason"])
    if host["gpu"]:  # the reason is the runtime's, not a claim that the GPU is missing
        assert "no CUDA GPU" not in r["reason"]
    assert not any(k in r for k in NUMBERS)
    assert cells[4:8] == ["–"] * 4 and cells[8].startswith("not runnable: ") and why in cells[8]


def test_module_rows_repeated_in_turns(bench_dir, module_run, host):
    """``repeats=3``: every module row runs in three fresh processes, all rows once before any again; the row is
    the process of the median p50, the three listed."""
    out = bench_dir / "repeats"
    res = run_bench(Settings(modules=["mtcnn_rnet"], backends="torch,ort", precisions=["fp32"], repeats=3, iters=3,
                             warmup=1, rotate=2, calib=str(CALIB), out=str(bench_dir / "artifacts"), report=str(out)))
    names = []
    for backend in ("torch", "ort"):
        r = _row(res, kind="module", backend=backend)
        assert r["status"] == "ok", r.get("reason")
        runs = r["repeats"]
        assert len(runs) == 3 and len({x["pid"] for x in runs}) == 3
        assert r["latency_ms"]["p50"] == sorted(x["p50"] for x in runs)[1]
        assert runs[r["repeat"]]["pid"] == r["pid"] and runs[r["repeat"]]["p50"] == r["latency_ms"]["p50"]
        assert r["parity"]["passed"]
        names.append(f"{r['module']}-{backend}-{host['device']}-fp32-b1")
    log = (bench_dir / "artifacts" / ".bench" / "bench.log").read_text()
    ran = [line.split()[1][4:] for line in log.splitlines() if line.startswith("===== ") and "-mtcnn_rnet-" in line]
    assert ran == names * 3  # in turns, not three in a row
    md = (out / "results.md").read_text()
    assert "median of 3 processes" in md and "each module row in 3 processes" in md


def test_torch_int8_and_time_budget_rows(bench_dir):
    res = run_bench(Settings(modules=["encoder"], variants={"encoder": "iresnet18"}, backends="torch",
                             precisions=["int8", "fp32"], calib=str(CALIB), out=str(bench_dir / "artifacts"),
                             report=str(bench_dir / "budget"), deadline=0.01, iters=3, warmup=1))
    int8 = _row(res, kind="module", precision="int8")
    assert int8["status"] == "not_runnable" and "torch backend runs fp32 and fp16" in int8["reason"]
    fp32 = _row(res, kind="module", precision="fp32")
    assert fp32["status"] in ("skipped", "no_artifact") and "time budget" in fp32["reason"]
    for r in (int8, fp32):
        assert not any(k in r for k in NUMBERS)
    assert "time budget" in (bench_dir / "budget" / "results.md").read_text()


def test_pipeline_bench_beside_the_naive_baseline(bench_dir, host):
    """Reference pipeline and naive baseline on the same tiny frames, decode/encode included; ratio reported."""
    out = bench_dir / "pipeline"
    res = run_bench(Settings(modules=[], backends="torch", precisions=["fp32"], pipeline=True, resolution="320x180",
                             pipeline_batches=[1, 2], frames=2, naive_frames=1, faces=1, enhance=False, warmup=1,
                             variants={"encoder": "iresnet18", "generator": "simswap-256-lite"}, calib=str(CALIB),
                             out=str(bench_dir / "artifacts"), report=str(out)))
    ref = _row(res, kind="pipeline", pipeline="reference", batch=1)
    naive = _row(res, kind="pipeline", pipeline="naive")
    assert naive["batch"] == 1  # the naive baseline runs frame by frame only
    assert ref["device"] == naive["device"] == host["device"]  # the pipeline runs on the main device only
    for r in (ref, naive):
        assert r["status"] == "ok", r.get("reason")
        assert r["fps"] > 0 and r["frame_latency_ms"]["n"] == r["frames"]
        assert r["faces_swapped_per_frame"] >= 1  # the frames hold a real face and both pipelines find it
        assert r["stages_ms"]["detect"] > 0 and r["stages_ms"]["swap"] > 0
    assert ref["frames"] == 2 and naive["frames"] == 1
    assert ref["stages_ms"]["encode"] == 0.0 and naive["stages_ms"]["encode"] > 0  # cached vs recomputed per face
    assert "transfer" in ref["stages_ms"] and "transfer" not in naive["stages_ms"]
    from ffexport._lazy import available

    if available("av"):  # decode+encode needs PyAV (ffexport[video]); without it the row has no video part
        v = ref["video"]
        assert v["status"] == "ok" and v["frames"] == 2 and v["fps"] > 0
        # an untimed video first (the clip's first frames: here all 2 of them), as frames in memory warm up
        assert v["warmup"]["frames"] == 2 and v["warmup"]["seconds"] > 0
        # audio in, audio copied out; the codecs alone measured in the same run, the row compared with them
        assert v["audio_codec"] == "aac" and v["audio_packets"] > 0
        assert v["encode_only_fps"] > 0 and v["decode_only_fps"] > 0 and v["passthrough_fps"] > 0
        assert v["of_encode_only"] == pytest.approx(v["fps"] / v["encode_only_fps"], abs=1e-3)
        # three rounds of encode-only then file to file; the row is the round of the median fraction
        rounds = v["rounds"]
        assert len(rounds) == 3 and all(r["encode_only_fps"] > 0 and r["fps"] > 0 for r in rounds)
        for r in rounds:
            assert r["of_encode_only"] == pytest.approx(r["fps"] / r["encode_only_fps"], abs=1e-3)
        assert rounds[v["round"]]["of_encode_only"] == v["of_encode_only"]
        assert v["of_encode_only"] == sorted(r["of_encode_only"] for r in rounds)[1]
        assert v["encode_only_runs"] == [r["encode_only_fps"] for r in rounds]
        assert v["of_fastest_encode_only"] == pytest.approx(v["fps"] / max(v["encode_only_runs"]), abs=1e-3)
        assert v["encode_only_rgb_fps"] > 0  # the first round measures the RGB form too
        shown = f"{v['encode_only_fps']:.1f}" if v["encode_only_fps"] < 100 else f"{v['encode_only_fps']:.0f}"
        assert f"{v['of_encode_only']:.2f}x encode-only {shown}" in (out / "results.md").read_text()
    else:
        assert not ref.get("video") or ref["video"].get("status") != "ok"
    assert ref["pid"] != naive["pid"]
    assert set(speedups(res)) == {("torch", host["device"], "fp32")}
    ratio = speedups(res)[("torch", host["device"], "fp32")]
    assert ratio == pytest.approx(ref["fps"] / naive["fps"], rel=0.02)
    md = (out / "results.md").read_text()
    assert "| " + " | ".join(PIPELINE_COLUMNS) + " |" in md and f"{ratio:.2f}x" in md
    two = _row(res, kind="pipeline", pipeline="reference", batch=2)  # --pipeline-batch 1,2: both frames in one call
    assert two["status"] == "ok" and two["frames"] == 2 and two["frame_latency_ms"]["n"] == 1
    assert two["faces_swapped_per_frame"] >= 1 and two["fps"] > 0 and two["memory"]
    assert f"| reference | torch ({host['device']}) | fp32 | 2 |" in md
    for name in ("pipeline_fps.png", "pipeline_stages.png", "pipeline_batch.png"):
        assert (out / name).read_bytes()[:8] == PNG


def test_timing_statistics_and_backend_names():
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    s = stats(xs)
    assert s["n"] == 5 and s["mean"] == 3.0 and s["p50"] == 3.0 and s["min"] == 1.0 and s["max"] == 5.0
    assert s["p95"] == pytest.approx(4.8) and percentile(sorted(xs), 99) == pytest.approx(4.96)
    got = parse_backends("torch,ort,trt,ort:cpu", "cpu")
    assert [(b.name, b.device) for b in got] == [("torch", "cpu"), ("ort", "cpu"), ("trt", "cuda")]
    with pytest.raises(Exception, match="unknown backend"):
        parse_backends("onnx", "cpu")


def test_gpu_plan_rows_reasons_and_order():
    """What a GPU machine's sweep plans (no GPU needed: the machine's facts are given)."""
    settings = Settings(modules=["detector", "encoder"], backends="torch,ort,trt,ort:cpu",
                        precisions=["fp32", "fp16", "int8"], batches=[1, 8], cpu_batches=[1],
                        cpu_precisions=["fp32", "int8"], pipeline=True)
    env = {"torch": {"version": "2.11.0+cu130", "cuda": True},
           "onnxruntime": {"version": "1.31.1", "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]},
           "tensorrt": {"ok": False, "reason": "TensorRT-RTX 1.7 does not support compute capability 9.0"}}
    rows = plan_rows(settings, env, "cuda")
    mods = [r for r in rows if r["kind"] == "module"]
    # 2 modules x (3 GPU backends x 3 precisions x 2 batches + ort:cpu x 2 precisions x 1 batch)
    assert len(mods) == 2 * (3 * 3 * 2 + 2)
    cpu = [r for r in mods if r["device"] == "cpu"]
    assert {(r["precision"], r["batch"]) for r in cpu} == {("fp32", 1), ("int8", 1)}
    for r in rows:
        if r["backend"] == "trt":
            assert r["status"] == "not_runnable" and "compute capability 9.0" in r["reason"]
        elif r["backend"] == "torch" and r["precision"] == "int8":
            assert r["status"] == "not_runnable"
        else:
            assert r["status"] == "pending", r
    pipes = [r for r in rows if r["kind"] == "pipeline"]
    assert {r["device"] for r in pipes} == {"cuda"} and len(pipes) == 3 * 3 * 2
    # batch-1 GPU rows first, then the pipeline, then batch 8, then the CPU rows
    tiers = [0 if r["kind"] == "module" and r["batch"] == 1 and r["device"] == "cuda" else
             1 if r["kind"] == "pipeline" else 2 if r["device"] == "cuda" else 3 for r in rows]
    assert tiers == sorted(tiers)
    assert [r["pipeline"] for r in pipes[:2]] == ["reference", "naive"]
    # the compile backend: fp32/fp16 (int8 is an ONNX artifact), pipeline rows at each --pipeline-batch, no naive
    compiled = Settings(modules=["encoder"], backends="compile", precisions=["fp16", "int8"], pipeline=True,
                        pipeline_batches=[1, 8])
    got = plan_rows(compiled, env, "cuda")
    assert [(r["kind"], r["precision"], r["status"]) for r in got if r["kind"] == "module"] == [
        ("module", "fp16", "pending"), ("module", "int8", "not_runnable")]
    assert sorted((r["pipeline"], r["precision"], r["batch"]) for r in got if r["kind"] == "pipeline") == [
        ("reference", "fp16", 1), ("reference", "fp16", 8), ("reference", "int8", 1), ("reference", "int8", 8)]
    # the detector's engine profile ends at batch 4 (configs/detector.yaml): its batch-8 TensorRT rows say so
    env["tensorrt"] = {"ok": True, "reason": "TensorRT 10.x on NVIDIA H100"}
    det8 = [r for r in plan_rows(settings, env, "cuda") if r.get("module") == "detector" and r["backend"] == "trt" and r["batch"] == 8]
    assert det8 and all("batch profile ends at 4" in r["reason"] for r in det8)


def test_pool_stops_workers_at_their_timeout_and_on_exit(tmp_path):
    """A worker past its timeout is asked to stop (SIGTERM), then killed; leaving the pool stops the rest."""
    from ffexport.bench.pool import Pool

    with Pool(tmp_path, tmp_path / "bench.log", "subprocess", grace=2.0) as pool:
        res = pool.run({"kind": "env", "device": "cpu"}, "env-late", timeout=0.01)
        assert res["status"] == "failed" and "timed out" in res["reason"]
        job = pool.start({"kind": "env", "device": "cpu"}, "env-left", timeout=600)
    assert not pool.live and job.proc.poll() is not None and job.result is None
    assert "===== env-late" in (tmp_path / "bench.log").read_text()


def test_which_commit_finds_the_commit_whose_source_ran(tmp_path):
    """A results file's source_sha256 (the package's source and configs on disk) leads back to the commit with
    the same files (benchmarks/which_commit.py), and to no other: the GPU host's copy has no usable history."""
    import subprocess
    import sys
    from pathlib import Path

    from ffexport.bench.report import source_digest

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "which_commit.py"
    repo = tmp_path / "repo"
    (repo / "src" / "ffexport" / "sub").mkdir(parents=True)
    (repo / "configs").mkdir()

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    commits, digests = [], []
    for i in range(2):
        (repo / "src" / "ffexport" / "sub" / "m.py").write_text(f"X = {i}\n")
        (repo / "configs" / "pipeline.yaml").write_text("batch: 1\n")
        (repo / "README.md").write_text(f"not covered {i}\n")
        git("add", "-A")
        git("commit", "-qm", f"c{i}")
        commits.append(git("rev-parse", "HEAD"))
        digests.append(source_digest(repo))
    assert digests[0] != digests[1]
    for want, commit in zip(digests, commits):
        results = tmp_path / "results.json"
        results.write_text(json.dumps({"settings": {"source_sha256": want}}))
        out = subprocess.run([sys.executable, str(script), str(results)], cwd=repo, capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.split() == [commit], out.stderr
