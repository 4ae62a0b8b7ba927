"""What the measuring processes need, made once per module before any timing starts.

For one module (one spec) this writes into the bench's cache folder:

* ``inputs_b{B}.pt``: K real inputs of batch B (:func:`ffexport.faces.module_feeds` over the
  calibration faces, K*B different faces where the folder has them), shared by every row, so
  every backend and precision is timed and checked on the same tensors;
* ``ref_b{B}.pt``: the torch FP32 outputs on those inputs, computed on the bench's device with
  TF32 off (the parity reference of every row);
* ``model.pt``: the torch module (pickled), so torch rows load it instead of re-initialising it;

and builds the ONNX artifacts (:func:`ffexport.artifacts.optimize.optimize`) and TensorRT engines
(:func:`ffexport.artifacts.engines.engine_from_onnx`, from those ONNX files) the rows need, recording a one-line reason
for any that cannot be built.  Preparation runs before the measurements (several modules in
parallel on the CPU), so no timed process shares the machine with it.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import FFExportError


def cache_dir(root: str | Path, spec) -> Path:
    return Path(root) / f"{spec.module}.{spec.variant}"


def load_faces(calib: str | Path | None, count: int):
    """``count`` face images: spread over ``calib`` (cycled when it holds fewer), else the built-in faces."""
    import warnings

    from ..faces import FaceDataWarning, builtin_faces, load_face_folder
    from ..passes.proof.calib import spread

    if calib is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FaceDataWarning)
            faces = load_face_folder(calib, min_images=1)
    else:
        faces = builtin_faces()
    if count <= len(faces):
        return spread(faces, count)
    return [faces[i % len(faces)] for i in range(count)]


def make_inputs(spec, calib, batch: int, rotate: int) -> list[dict]:
    from ..faces import module_feeds

    faces = load_faces(calib, batch * rotate)
    feeds = list(module_feeds(spec, faces, batch=batch, drop_last=True))
    if not feeds:
        raise FFExportError(f"{spec.key}: no inputs of batch {batch} could be built from the faces")
    return feeds


def set_tf32(enabled: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def reference_outputs(model, spec, feeds: list[dict], device: str) -> list[dict]:
    """torch FP32 outputs of ``feeds`` on ``device``, as CPU tensors."""
    from ..backends.torch import TorchRunner

    runner = TorchRunner(model, spec=spec, device=device, precision="fp32", name="torch fp32 reference")
    with runner:
        outs = [{k: v.detach().cpu() for k, v in runner.infer(f).items()} for f in feeds]
    return outs


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, FFExportError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:240]}" if text else type(exc).__name__


def _artifact_record(path: Path) -> dict:
    from ..export.parity import summary
    from ..manifest import Manifest

    rec = Manifest.load(path.parent).get(path.name) or {}
    parity = rec.get("parity") or {}
    vs = parity.get("vs_torch") or parity.get("vs_parent") or (parity if "gates" in parity else None)
    return {"path": str(path), "sha256": rec.get("sha256"), "size_mb": round(path.stat().st_size / 1e6, 2),
            "build_parity": summary(vs) if vs else None}


def build_onnx(spec, precisions, *, artifacts, calib, samples, parity_samples, say, config_dir=None) -> dict:
    from ..artifacts.optimize import Settings, optimize

    settings = Settings(out=Path(artifacts), config_dir=Path(config_dir) if config_dir else None,
                        calib=Path(calib) if calib else None, samples=samples, parity_samples=parity_samples,
                        progress=say)

    out = {}
    for precision in precisions:
        t0 = time.perf_counter()
        try:
            # every precision with the same faces and split: the passes key each step on its parity faces,
            # so fp32 and int8 calls judged on different faces would redo their shared simplify step (and
            # everything after it) on every call
            path = Path(optimize(spec, precision, settings))
            out[precision] = {**_artifact_record(path), "seconds": round(time.perf_counter() - t0, 2)}
        except Exception as exc:  # each failure becomes that row's reason
            out[precision] = {"error": f"cannot build the {precision} ONNX artifact: {_error_line(exc)}",
                              "seconds": round(time.perf_counter() - t0, 2)}
            if not isinstance(exc, FFExportError):
                out[precision]["bug"] = True
    return out


def build_engines(spec, precisions, onnx: dict, *, artifacts, say, config_dir=None) -> dict:
    """Engines from the ONNX artifacts ``build_onnx`` made (the same files the ORT rows run)."""
    from ..artifacts.engines import engine_from_onnx, trt_options

    out = {}
    for precision in precisions:
        t0 = time.perf_counter()
        src = onnx.get(precision) or {}
        if "path" not in src:
            out[precision] = {"error": src.get("error") or f"no {precision} ONNX artifact to build an engine from"}
            continue
        try:
            rec = engine_from_onnx(spec, precision, src["path"], trt_options(spec, config_dir, out=artifacts),
                                   out=artifacts, progress=say)
            path = Path(artifacts) / Path(src["path"]).parent.name / rec["file"]
            out[precision] = {**_artifact_record(path), "seconds": round(time.perf_counter() - t0, 2),
                              "batch_profile": (rec.get("options") or {}).get("batch"),
                              "cache_hit": rec.get("engine_cache_hit")}
        except Exception as exc:
            out[precision] = {"error": f"cannot build the {precision} TensorRT engine: {_error_line(exc)}",
                              "seconds": round(time.perf_counter() - t0, 2)}
    return out


def prepare(cfg: dict) -> dict:
    """Run one module's preparation (``cfg`` from :mod:`ffexport.bench.sweep`); return what was made."""
    import torch

    from ..config import resolve_spec
    from ..models import build_model

    t_start = time.perf_counter()
    spec = resolve_spec(cfg["module"], cfg["variant"], None, cfg.get("config_dir"))
    device = cfg.get("device", "cpu")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    set_tf32(cfg.get("tf32", False))
    folder = cache_dir(cfg["cache"], spec)
    folder.mkdir(parents=True, exist_ok=True)
    calib = cfg.get("calib")
    result: dict = {"module": spec.module, "variant": spec.variant, "inputs": {}, "reference": {}, "model": None,
                    "onnx": {}, "trt": {}, "seconds": {}}
    log: list[str] = []

    def say(msg: str) -> None:
        log.append(msg)

    batches = [int(b) for b in cfg.get("batches", [])]
    if batches and spec.origin:  # a user's ONNX file: its FP32 graph on onnxruntime CPU is the reference
        t0 = time.perf_counter()
        from ..artifacts.find import onnx_artifact
        from ..backends.ort import OrtRunner

        root = onnx_artifact(spec, "fp32", cfg["artifacts"], say=say, config_dir=cfg.get("config_dir"))
        with OrtRunner(root, spec=spec, name="user fp32") as ref:
            for b in batches:
                feeds = make_inputs(spec, calib, b, int(cfg.get("rotate", 4)))
                ip = folder / f"inputs_b{b}.pt"
                torch.save(feeds, ip)
                result["inputs"][str(b)] = str(ip)
                outs = [{k: v.cpu() for k, v in ref.infer(f).items()} for f in feeds]
                rp = folder / f"ref_b{b}.pt"
                torch.save({"outputs": outs, "label": f"{root.name} of {spec.origin} (onnxruntime CPU, FP32)"}, rp)
                result["reference"][str(b)] = str(rp)
        result["seconds"]["inputs_and_reference"] = round(time.perf_counter() - t0, 2)
        batches = []
    if batches or (cfg.get("save_model") and not spec.origin):
        t0 = time.perf_counter()
        model = build_model(spec)
        result["seconds"]["build_model"] = round(time.perf_counter() - t0, 2)
        if cfg.get("save_model"):
            path = folder / "model.pt"
            try:
                torch.save(model, path)
                result["model"] = str(path)
            except Exception as exc:  # not picklable: the worker rebuilds it
                result["model_error"] = _error_line(exc)
        t0 = time.perf_counter()
        for b in batches:
            feeds = make_inputs(spec, calib, b, int(cfg.get("rotate", 4)))
            ip = folder / f"inputs_b{b}.pt"
            torch.save(feeds, ip)
            result["inputs"][str(b)] = str(ip)
            outs = reference_outputs(model, spec, feeds, device)
            rp = folder / f"ref_b{b}.pt"
            label = (f"torch fp32 on {device}" + (f", TF32 {'on' if cfg.get('tf32') else 'off'}"
                                                  if device.startswith("cuda") else ""))
            torch.save({"outputs": outs, "label": label}, rp)
            result["reference"][str(b)] = str(rp)
        result["seconds"]["inputs_and_reference"] = round(time.perf_counter() - t0, 2)
        del model
    trt_precisions = list(cfg.get("trt_precisions", []))
    wanted = list(dict.fromkeys([*cfg.get("onnx_precisions", []), *trt_precisions]))
    t0 = time.perf_counter()
    result["onnx"] = build_onnx(spec, wanted, artifacts=cfg["artifacts"], calib=calib, samples=cfg.get("samples"),
                                parity_samples=cfg.get("parity_samples"), say=say, config_dir=cfg.get("config_dir"))
    result["seconds"]["onnx"] = round(time.perf_counter() - t0, 2)
    if trt_precisions:
        t0 = time.perf_counter()
        result["trt"] = build_engines(spec, trt_precisions, result["onnx"], artifacts=cfg["artifacts"], say=say,
                                      config_dir=cfg.get("config_dir"))
        result["seconds"]["trt"] = round(time.perf_counter() - t0, 2)
    result["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
    result["log"] = log[-40:]
    return result
