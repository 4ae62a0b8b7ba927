"""Do our ONNX exports load and run in insightface's own loaders?

    python benchmarks/insightface_compat.py --detector ARTS/detector/fp32.onnx \
        --encoder ARTS/encoder.iresnet18/fp32.onnx --generator ARTS/generator/fp32.onnx \
        [--image calibration/astronaut.jpg] [--json OUT.json]

Each file given goes through ``insightface.model_zoo.get_model(path, providers=['CPUExecutionProvider'])``;
the script prints the class the router picked and then runs it the way insightface does:

* detector:  ``.prepare(ctx_id=-1, input_size=(640, 640))`` + ``.detect(img_bgr, input_size=(640, 640))``
  (seeded weights may find 0 faces: the point is that it runs);
* encoder:   ``.get_feat(crop)`` on the 112x112 BGR crop aligned by ``face_align.norm_crop`` from the
  image's landmarks (``<image>.json``, key ``landmarks``: 5 (x, y) points, left eye, right eye, nose,
  left mouth corner, right mouth corner);
* generator: ``.get(img, target_face, source_face, paste_back=False)`` (and ``paste_back=True``) with
  hand-made ``insightface.app.common.Face`` objects: target ``kps`` = the image's landmarks, source
  ``embedding`` = a seeded random unit vector (``normed_embedding`` is a read-only property computed from
  ``embedding``).

One line per model, then a JSON summary.  Exit 1 if any model is not routed to the expected class
(detector: RetinaFace or SCRFD; encoder: ArcFaceONNX; generator: INSwapper) or fails to run.  Where the
file carries ffexport's ``ffexport.contract`` metadata, the preprocessing the routed class applies is
compared with the contract's and a mismatch is listed under ``warnings`` (not a failure: it does not
stop the model from running, but the numbers would be off).  For a detector whose routed class fails,
the summary also says whether insightface's ``SCRFD`` class (not reachable through the 0.7.3 router)
runs it.

Needs insightface (not a dependency of ffexport).  Install that worked on the dev machine (Python 3.11,
gcc/g++ present; the sdist builds a Cython extension; the build backend pulls setuptools, numpy and
cython itself; about 2 minutes on 2 cores):

    python3.11 -m venv /tmp/ifvenv
    . /tmp/ifvenv/bin/activate
    pip install insightface==0.7.3 onnxruntime opencv-python-headless
    # resolved there: numpy 2.4.6, onnx 1.23.2, onnxruntime 1.32.0, opencv-python-headless 5.0.0.93,
    # scikit-image 0.26.0, albumentations 2.0.8, scipy 1.17.1 (insightface itself does not require an
    # opencv package; its model_zoo and face_align need cv2 and skimage)

Routing in insightface 0.7.3 (``model_zoo/model_zoo.py``, ``ModelRouter.get_model``), first match wins,
``inputs[0].shape`` = ``s``:

1. ``len(outputs) >= 5``                                  -> ``RetinaFace`` (``scrfd.SCRFD`` is never
   returned: its import is commented out in the router; ``RetinaFace`` is an SCRFD-style decoder)
2. ``s[2] == 192 and s[3] == 192``                          -> ``Landmark``
3. ``s[2] == 96 and s[3] == 96``                            -> ``Attribute``
4. ``len(inputs) == 2 and s[2] == 128 and s[3] == 128``     -> ``INSwapper``
5. ``s[2] == s[3] and s[2] >= 112 and s[2] % 16 == 0``      -> ``ArcFaceONNX``
6. otherwise ``None`` (a symbolic H/W is a str: rules 2-4 miss it and rule 5 raises TypeError)

What each class needs of the graph:

* ``RetinaFace``: ``len(outputs)`` in {6, 9, 10, 15} (6/9: strides 8, 16, 32 with 2 anchors per location,
  9 adds keypoints; 10/15: strides 8..128, 1 anchor), any other count leaves it half-initialised;
  outputs ordered scores(all strides), boxes(all strides), kps(all strides); each **2-D**
  ``(H/s * W/s * A, 1|4|10)``, anchors row-major (y, x) with the A anchors of a location adjacent; scores
  are probabilities; box = distances (l, t, r, b) and kps = offsets, both in units of the stride.  It does
  not handle a leading batch axis (``SCRFD`` does: when ``outputs[0]`` is 3-D it takes ``[0]``).
  Input: one NCHW float tensor, RGB (``swapRB=True``), ``(x - 127.5) / 128``; a static H/W fixes the
  input size (``prepare``'s ``input_size`` is then ignored with a warning), a symbolic one takes it from
  ``prepare``/``detect``.  ``det_thresh`` 0.5, ``nms_thresh`` 0.4.
* ``ArcFaceONNX``: exactly 1 output (``(N, 512)``); input ``(N, 3, 112, 112)`` RGB; normalisation
  ``(x - 127.5) / 127.5`` unless one of the first 8 node *names* starts with ``Sub``/``_minus`` and one
  with ``Mul``/``_mul`` (mxnet-style graph that normalises itself), then raw 0..255.  ``get_feat`` takes a
  list of crops and batches them, so a dynamic batch axis is used as such.
* ``INSwapper``: ``emap = numpy_helper.to_array(onnx.load(path).graph.initializer[-1])`` - the **last**
  initializer, used as ``latent = normed_embedding @ emap; latent /= ||latent||`` (so 512x512);
  ``inputs[0]`` is the target crop ``(1, 3, 128, 128)`` RGB in [0, 1] and ``inputs[1]`` the latent
  ``(1, 512)`` (by position, not by name); exactly 1 output, ``(1, 3, 128, 128)`` RGB in [0, 1]; the crop
  is ``face_align.norm_crop2(img, kps, 128)`` (arcface template shifted +8 px in x).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import traceback
from pathlib import Path

import numpy as np

DEFAULT_IMAGE = Path(__file__).resolve().parent.parent / "calibration" / "astronaut.jpg"
EXPECTED = {"detector": ("RetinaFace", "SCRFD"), "encoder": ("ArcFaceONNX",), "generator": ("INSwapper",)}
PROVIDERS = ["CPUExecutionProvider"]


def _contract(path: str):
    """ffexport's contract metadata, or None."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - only informative
        return None
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        return json.loads(meta["ffexport.contract"]) if "ffexport.contract" in meta else None
    except ValueError:
        return None


def _preprocess_warnings(contract, order: str, mean: float, std: float) -> list[str]:
    """Compare what the routed class feeds (channel order, mean, std) with the contract's preprocess."""
    if not contract or not contract.get("preprocess"):
        return []
    want = contract["preprocess"]
    out = []
    want_order = want.split(",")[0].strip().upper()
    if want_order in ("RGB", "BGR") and want_order != order:
        out.append(f"channel order: insightface feeds {order}, the graph's contract wants {want_order} ({want!r})")
    norm = f"(x - {mean:g}) / {std:g}"
    if norm.replace(" ", "") not in want.replace(" ", ""):
        out.append(f"normalisation: insightface feeds {norm}, the graph's contract says {want!r}")
    return out


def _load(path: str):
    from insightface import model_zoo

    with contextlib.redirect_stdout(sys.stderr):  # the router and INSwapper print to stdout
        return model_zoo.get_model(path, providers=PROVIDERS)


def _declared(session) -> dict:
    return {
        "inputs": {i.name: list(i.shape) for i in session.get_inputs()},
        "outputs": {o.name: list(o.shape) for o in session.get_outputs()},
    }


def _run_detector(model, img) -> dict:
    with contextlib.redirect_stdout(sys.stderr):
        model.prepare(ctx_id=-1, input_size=(640, 640))
    det, kpss = model.detect(img, input_size=(640, 640))
    # the raw outputs of one forward, for their actual shapes
    import cv2

    blob = cv2.dnn.blobFromImage(np.zeros((640, 640, 3), np.uint8), 1.0 / model.input_std, (640, 640),
                                 (model.input_mean,) * 3, swapRB=True)
    raw = model.session.run(model.output_names, {model.input_name: blob})
    return {
        "faces": int(det.shape[0]),
        "det_shape": list(det.shape),
        "kps_shape": None if kpss is None else list(kpss.shape),
        "raw_output_shapes": {n: list(a.shape) for n, a in zip(model.output_names, raw)},
        "best_score": float(det[:, 4].max()) if det.shape[0] else None,
    }


def _run_encoder(model, img, kps) -> dict:
    from insightface.utils import face_align

    crop = face_align.norm_crop(img, landmark=kps, image_size=model.input_size[0])
    feat = model.get_feat(crop)
    feat2 = model.get_feat([crop, crop[:, ::-1].copy()])  # a batch of 2 through get_feat's list path
    return {
        "crop_shape": list(crop.shape),
        "feat_shape": list(feat.shape),
        "feat_norm": float(np.linalg.norm(feat)),
        "batch2_shape": list(feat2.shape),
        "input_mean_std": [model.input_mean, model.input_std],
    }


def _run_generator(model, img, kps, seed: int) -> dict:
    from insightface.app.common import Face

    rng = np.random.default_rng(seed)
    emb = rng.standard_normal(512).astype(np.float32)
    emb /= np.linalg.norm(emb)
    target = Face(kps=kps.astype(np.float32))
    source = Face(embedding=emb)
    bgr_fake, M = model.get(img, target, source, paste_back=False)
    merged = model.get(img, target, source, paste_back=True)
    return {
        "emap_shape": list(model.emap.shape),
        "input_names": list(model.input_names),
        "out_shape": list(bgr_fake.shape),
        "out_dtype": str(bgr_fake.dtype),
        "M_shape": list(np.asarray(M).shape),
        "paste_back_shape": list(merged.shape),
    }


def _scrfd_direct(path: str, img) -> dict:
    """Whether insightface's SCRFD class (which handles a batch axis) runs the file."""
    import onnxruntime
    from insightface.model_zoo.scrfd import SCRFD

    try:
        m = SCRFD(model_file=path, session=onnxruntime.InferenceSession(path, providers=PROVIDERS))
        with contextlib.redirect_stdout(sys.stderr):
            m.prepare(ctx_id=-1, input_size=(640, 640))
        det, kpss = m.detect(img, input_size=(640, 640))
        return {"ok": True, "faces": int(det.shape[0]), "batched": m.batched,
                "kps_shape": None if kpss is None else list(kpss.shape)}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def check(kind: str, path: str, img, kps, seed: int) -> dict:
    rec: dict = {"model": kind, "path": path, "expected": list(EXPECTED[kind]), "routed": None,
                 "routed_ok": False, "ran": False, "warnings": []}
    try:
        model = _load(path)
    except Exception as exc:  # noqa: BLE001
        rec["error"] = f"get_model: {type(exc).__name__}: {exc}"
        rec["traceback"] = traceback.format_exc(limit=-3)
        return rec
    rec["routed"] = None if model is None else type(model).__name__
    rec["routed_ok"] = rec["routed"] in EXPECTED[kind]
    if model is None:
        rec["error"] = "router returned None (no rule matched)"
        return rec
    rec["declared"] = _declared(model.session)
    contract = _contract(path)
    name = rec["routed"]
    # every routed class feeds RGB (cv2.dnn.blobFromImage(..., swapRB=True)) with its own mean/std
    rec["warnings"] += _preprocess_warnings(contract, "RGB", getattr(model, "input_mean", 0.0),
                                            getattr(model, "input_std", 1.0))
    if not rec["routed_ok"]:
        rec["error"] = f"routed to {name}, expected {' or '.join(EXPECTED[kind])}"
        return rec
    try:
        if kind == "detector":
            rec["result"] = _run_detector(model, img)
        elif kind == "encoder":
            rec["result"] = _run_encoder(model, img, kps)
        else:
            rec["result"] = _run_generator(model, img, kps, seed)
        rec["ran"] = True
    except Exception as exc:  # noqa: BLE001
        rec["error"] = f"run: {type(exc).__name__}: {exc}"
        rec["traceback"] = traceback.format_exc(limit=-3)
        if kind == "detector":
            rec["scrfd_direct"] = _scrfd_direct(path, img)
    return rec


def line(rec: dict) -> str:
    head = f"{rec['model']:9s} {Path(rec['path']).name if rec['path'] else '-'}: routed={rec['routed']}"
    if rec["routed_ok"] and rec["ran"]:
        r = rec["result"]
        if rec["model"] == "detector":
            body = (f"OK faces={r['faces']} det={r['det_shape']} kps={r['kps_shape']} "
                    f"raw={sorted(set(tuple(s) for s in r['raw_output_shapes'].values()))}")
        elif rec["model"] == "encoder":
            body = (f"OK feat={r['feat_shape']} |feat|={r['feat_norm']:.3f} batch2={r['batch2_shape']} "
                    f"mean/std={r['input_mean_std']}")
        else:
            body = (f"OK out={r['out_shape']} {r['out_dtype']} emap={r['emap_shape']} "
                    f"paste_back={r['paste_back_shape']}")
    else:
        body = f"FAIL {rec.get('error')}"
        if "scrfd_direct" in rec:
            body += f" | SCRFD class directly: {rec['scrfd_direct']}"
    warn = "".join(f"\n          warning: {w}" for w in rec["warnings"])
    return f"{head} {body}{warn}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector")
    ap.add_argument("--encoder")
    ap.add_argument("--generator")
    ap.add_argument("--image", default=str(DEFAULT_IMAGE))
    ap.add_argument("--landmarks", help="JSON with 'landmarks' (5 x/y points); default: the image's .json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the summary here")
    args = ap.parse_args(argv)
    jobs = [(k, getattr(args, k)) for k in ("detector", "encoder", "generator") if getattr(args, k)]
    if not jobs:
        ap.error("give at least one of --detector, --encoder, --generator")

    import cv2
    import insightface

    img = cv2.imread(args.image)
    if img is None:
        ap.error(f"cannot read image {args.image}")
    lm_path = Path(args.landmarks) if args.landmarks else Path(args.image).with_suffix(".json")
    kps = np.asarray(json.loads(lm_path.read_text())["landmarks"], dtype=np.float32).reshape(5, 2)

    recs = [check(kind, path, img, kps, args.seed) for kind, path in jobs]
    for rec in recs:
        print(line(rec))
    summary = {
        "insightface": insightface.__version__,
        "image": args.image,
        "image_shape": list(img.shape),
        "kps": kps.tolist(),
        "ok": all(r["routed_ok"] and r["ran"] for r in recs),
        "models": recs,
    }
    text = json.dumps(summary, indent=1, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
