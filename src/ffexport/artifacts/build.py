"""``ffexport build``: every artifact a config names, in dependency order, skipping what is up to date.

The plan is modules × precisions (× a TensorRT engine each).  Each step has a *fingerprint*, a hash of
everything that decides its output and is cheap to read: the spec (variant, IO contract, opset), the code that
makes artifacts (ffexport's ``specs``, ``models``, ``export``, ``passes``, ``faces``, ``vision``,
``backends`` and ``artifacts`` sources), the module's config file, the checkpoint (or seed) the export was
made from, the calibration faces (INT8), the build's options, the tool versions, and the fingerprints of the
steps it depends on (its own chain, and for the generator the encoder whose embeddings drive it).

``artifacts/index.json`` keeps, per step, the fingerprint it was built with and the size, mtime and sha256 of
each file it made.  A step is *up to date* when its fingerprint is unchanged, each file is still there with
the recorded size and mtime, and the folder's manifest still holds a record with the recorded sha256; then
nothing is loaded, run or re-hashed.  Otherwise the step goes through :func:`~.optimize.optimize` (and the
engine pass), which redoes only what its own keys say changed: an export whose inputs changed is re-checked
against its torch model, and re-exported only when that check fails.

The index also lists every artifact of the built folders with its lineage, hashes, parity and size.
``check`` changes nothing and says what is stale or failed: the CI gate.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..errors import FFExportError
from ..fsutil import sha256_file, write_json_atomic
from ..manifest import MANIFEST, Manifest, artifact_dir, tool_versions
from ..vocab import PRECISION_ONNX, engine_name

INDEX = "index.json"
INDEX_VERSION = 1
# the parts of ffexport whose code decides what an artifact is (the CLI, the benchmark and the pipeline do not)
_ARTIFACT_CODE = ("specs", "models", "export", "passes", "faces", "vision", "backends", "artifacts", "assets")
_NOT_ARTIFACT_CODE = ("artifacts/build.py", "artifacts/triton.py")  # they read artifacts, they do not make them
_ARTIFACT_FILES = ("manifest.py", "fsutil.py", "config.py", "vocab.py", "metrics.py", "errors.py", "_lazy.py",
                   "toolchain.py")


@dataclass(frozen=True)
class Step:
    """One step of the plan: a module's ONNX artifact at ``precision`` (with its chain), or its engine."""

    spec: object
    precision: str
    engine: bool = False

    @property
    def id(self) -> str:
        return f"{self.spec.key}/{self.precision}" + ("/engine" if self.engine else "")

    @property
    def label(self) -> str:
        return f"{self.spec.key} {self.precision}" + (" engine" if self.engine else "")


@dataclass
class Outcome:
    step: Step
    state: str  # "up to date", "built", "failed", and for check: "stale"
    seconds: float = 0.0
    gate: str = ""
    error: str | None = None
    why: str = ""  # check: why the step is not up to date


@dataclass
class BuildOptions:
    """What the build makes and how: the artifact root, the config folder, calibration faces for INT8, the
    engine flavor (``None``: no engines), force."""

    out: Path = Path("artifacts")
    config_dir: Path | None = None
    calib: Path = Path("calibration")
    flavor: str | None = None
    force: bool = False

    def describe(self) -> dict:
        return {"calib": str(self.calib), "flavor": self.flavor}


def plan(specs: Sequence, precisions: Sequence[str], engines: bool) -> list[Step]:
    """The steps in dependency order: the encoder first (the generator's proofs embed sources with it), then each
    module's precisions in the given order, each followed by its engine."""
    order = sorted(specs, key=lambda s: 0 if s.module == "encoder" else 1)
    steps = []
    for spec in order:
        for p in precisions:
            steps.append(Step(spec, p))
            if engines:
                steps.append(Step(spec, p, engine=True))
    return steps


class Fingerprints:
    """Cheap fingerprints of the plan's steps (see the module docstring), with a stat cache for file hashes."""

    def __init__(self, options: BuildOptions, stat_cache: dict | None = None):
        self.o = options
        self.stat_cache: dict = dict(stat_cache or {})
        self._memo: dict[str, str] = {}
        self._weights: dict[str, dict] = {}
        self.parts: dict[str, dict[str, str]] = {}  # step id -> what went into its fingerprint, each hashed
        self._code: str | None = None
        self._tools: dict | None = None
        self._flavor: tuple | None = None

    # pieces -------------------------------------------------------------------------------------------
    def file_sha(self, path: Path) -> str:
        """sha256 of ``path``, read again only when its size, mtime or inode changed."""
        st = path.stat()
        key = str(path.resolve())
        hit = self.stat_cache.get(key)
        sig = [st.st_size, st.st_mtime_ns, st.st_ino]
        if hit and hit[:3] == sig:
            return hit[3]
        sha = sha256_file(path)
        self.stat_cache[key] = [*sig, sha]
        return sha

    def code(self) -> str:
        if self._code is None:
            root = Path(__file__).resolve().parents[1]
            files = [root / f for f in _ARTIFACT_FILES if (root / f).is_file()]
            for part in _ARTIFACT_CODE:
                files += sorted(p for p in (root / part).rglob("*") if p.is_file() and "__pycache__" not in p.parts
                                and p.relative_to(root).as_posix() not in _NOT_ARTIFACT_CODE)
            h = hashlib.sha256()
            for f in sorted(files):
                h.update(str(f.relative_to(root)).encode() + b"\0" + self.file_sha(f).encode() + b"\0")
            self._code = h.hexdigest()
        return self._code

    def tools(self) -> dict:
        if self._tools is None:
            self._tools = tool_versions()
        return self._tools

    def config(self, module: str) -> str:
        from ..config import config_dir

        folder = config_dir(self.o.config_dir)
        f = folder / f"{module}.yaml" if folder else None
        return self.file_sha(f) if f is not None and f.is_file() else "none"

    def calib(self) -> str:
        folder = Path(self.o.calib)
        if not folder.is_dir():
            return "none"
        h = hashlib.sha256()
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(folder)).encode() + b"\0" + self.file_sha(f).encode() + b"\0")
        return h.hexdigest()

    def flavor(self) -> tuple:
        """The engine builder this build would use: (name, version), or why there is none."""
        if self._flavor is None:
            from ..backends import trt_flavors as F

            try:
                fl = F.resolve(self.o.flavor or "auto")
                self._flavor = (fl.name, fl.version)
            except FFExportError as exc:
                self._flavor = ("unavailable", str(exc))
        return self._flavor

    def weights(self, spec) -> dict:
        """What the export's weights come from: the checkpoint its record names (hashed), or its seed (read once
        per module: every step of a module asks)."""
        if spec.key not in self._weights:
            self._weights[spec.key] = self._read_weights(spec)
        return self._weights[spec.key]

    def _read_weights(self, spec) -> dict:
        rec = Manifest.load(artifact_dir(self.o.out, spec)).get("fp32.onnx") or {}
        ckpt = (rec.get("inputs") or {}).get("checkpoint")
        key = rec.get("key") or {}
        if ckpt:
            p = Path(ckpt)
            return {"checkpoint": ckpt, "sha256": self.file_sha(p) if p.is_file() else "missing"}
        return {"seed": key.get("seed", 0), "batch": key.get("batch", "dynamic"), "pretrained": bool(spec.pretrained)}

    # steps --------------------------------------------------------------------------------------------
    def of(self, step: Step, encoder: Step | None = None) -> str:
        if step.id in self._memo:
            return self._memo[step.id]
        spec = step.spec
        parts: dict = {"step": step.id, "code": self.code(), "tools": self.tools(), "config": self.config(spec.module),
                       "spec": {"key": spec.key, "opset": spec.opset, "contract": spec.contract()},
                       "weights": self.weights(spec), "options": self.o.describe()}
        if step.engine:
            parts["onnx"] = self.of(Step(spec, step.precision), encoder)
            parts["flavor"] = list(self.flavor())
        else:
            if step.precision == "int8":
                parts["calibration"] = self.calib()
            if encoder is not None and any(t.name == "source" for t in spec.inputs):
                parts["encoder"] = self.of(encoder)
        self.parts[step.id] = {k: _digest(v) for k, v in parts.items()}
        fp = _digest(parts)
        self._memo[step.id] = fp
        return fp


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def step_files(step: Step, flavor: str | None) -> list[str]:
    """The files a step makes (the ONNX steps' chain: export, simplified, precision)."""
    if step.engine:
        return [engine_name(step.precision, flavor)] if flavor else []
    names = ["fp32.onnx", PRECISION_ONNX["fp32"]]
    if step.precision != "fp32":
        names.append(PRECISION_ONNX[step.precision])
    return names


class Index:
    """``<out>/index.json``: the steps' fingerprints and files, the stat cache, and every artifact's summary."""

    def __init__(self, out: Path):
        self.path = Path(out) / INDEX
        self.data: dict = {"version": INDEX_VERSION, "steps": {}, "stat_cache": {}, "artifacts": []}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if isinstance(data, dict) and data.get("version") == INDEX_VERSION:
                    self.data.update(data)
            except (OSError, json.JSONDecodeError):
                pass  # an unreadable index only costs a full check; it is rewritten at the end

    def why_stale(self, step: Step, fingerprint: str, folder: Path, flavor: str | None,
                  parts: dict | None = None) -> str:
        """'' when ``step`` is up to date, else the reason in a few words."""
        rec = self.data["steps"].get(step.id)
        if not rec:
            return "never built"
        if rec.get("state") != "ok":
            return "failed last time"
        if rec.get("fingerprint") != fingerprint:
            old = rec.get("parts") or {}
            changed = sorted(k for k in set(old) | set(parts or {}) if old.get(k) != (parts or {}).get(k))
            return "inputs changed" + (f": {', '.join(changed)}" if changed else "")
        manifest = None
        for name in step_files(step, flavor):
            f = rec.get("files", {}).get(name)
            p = folder / name
            if not f or not p.is_file():
                return f"{name} missing"
            st = p.stat()
            if [st.st_size, st.st_mtime_ns] != [f["size"], f["mtime_ns"]]:
                # touched, copied or restored from a cache: the same file if it still hashes as recorded
                if st.st_size != f["size"] or sha256_file(p) != f["sha256"]:
                    return f"{name} changed on disk"
                f["mtime_ns"] = st.st_mtime_ns
            if manifest is None:
                try:
                    manifest = Manifest.load(folder)
                except FFExportError:
                    return f"{folder / MANIFEST} unreadable"
            if (manifest.get(name) or {}).get("sha256") != f["sha256"]:
                return f"{name}'s record changed"
        return ""

    def record(self, step: Step, fingerprint: str | None, folder: Path, flavor: str | None,
               error: str | None = None, parts: dict | None = None) -> None:
        if error is not None:
            self.data["steps"][step.id] = {"state": "failed", "error": error, "fingerprint": fingerprint,
                                           "parts": parts}
            return
        manifest = Manifest.load(folder)
        files = {}
        for name in step_files(step, flavor):
            st = (folder / name).stat()
            files[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                           "sha256": (manifest.get(name) or {}).get("sha256")}
        self.data["steps"][step.id] = {"state": "ok", "fingerprint": fingerprint, "parts": parts,
                                       "folder": folder.name, "files": files}

    def save(self, folders: Iterable[Path], stat_cache: dict) -> None:
        self.data["stat_cache"] = stat_cache
        self.data["artifacts"] = artifact_summaries(folders)
        write_json_atomic(self.path, self.data)


def artifact_summaries(folders: Iterable[Path]) -> list[dict]:
    """Every artifact of ``folders`` with its lineage, hashes, parity and size, from the manifests."""
    rows = []
    for folder in sorted(set(folders)):
        try:
            m = Manifest.load(folder)
        except FFExportError:
            continue
        for name, rec in sorted(m.data["artifacts"].items()):
            parity = rec.get("parity") or {}
            gates = []
            for side in ("vs_parent", "vs_torch"):
                for g in (parity.get(side) or {}).get("gates", []) if isinstance(parity, dict) else []:
                    gates.append({"vs": side[3:], **{k: g.get(k) for k in ("output", "metric", "op", "threshold",
                                                                              "value", "passed")}})
            rows.append({"module": m.data.get("module"), "variant": m.data.get("variant"), "folder": folder.name,
                         "file": name, "pass": rec.get("pass"), "sha256": rec.get("sha256"),
                         "size_bytes": rec.get("size_bytes"),
                         "parent": ({"file": rec["parent"].get("file"), "sha256": rec["parent"].get("sha256")}
                                    if rec.get("parent") else None),
                         "parity": {"passed": parity.get("passed") if isinstance(parity, dict) else None,
                                    "gates": gates} if parity else None,
                         "created_utc": rec.get("created_utc")})
    return rows


def _gate(step: Step, folder: Path, flavor: str | None) -> str:
    """The step's gate in a few words, from its record (the last file of its chain)."""
    names = step_files(step, flavor)
    if not names:
        return ""
    try:
        rec = Manifest.load(folder).get(names[-1]) or {}
    except FFExportError:
        return ""
    if step.engine:
        return "engine; no parity check: no TensorRT runtime ran it here"
    parity = rec.get("parity") or {}
    vs = parity.get("vs_parent") or parity
    gates = vs.get("gates") or []
    if not gates:
        return "passed" if parity.get("passed") else ""
    g = gates[0]
    return f"{g.get('metric')} {g.get('value'):.4g} {g.get('op')} {g.get('threshold')}" if isinstance(
        g.get("value"), (int, float)) else str(g.get("metric"))


Report = Callable[[Outcome], None]


def build(specs: Sequence, precisions: Sequence[str], options: BuildOptions, *, check: bool = False,
          jobs: int = 1, on_step: Report | None = None, progress: Callable[[str], None] | None = None) -> list[Outcome]:
    """Build (or with ``check``, only inspect) every step of the plan; returns an :class:`Outcome` per step.

    A failing step does not stop the others (a step whose chain failed is failed too, with the same reason);
    ``on_step`` is told of each finished step.  ``jobs`` > 1 builds modules in that many processes (the
    encoder first)."""
    from ..vocab import PRECISIONS

    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        from ..errors import InputSpecError

        raise InputSpecError(f"unknown precision {bad[0]!r}; valid: {', '.join(PRECISIONS)}")
    out = Path(options.out)
    index = Index(out)
    fps = Fingerprints(options, index.data.get("stat_cache"))
    engines = options.flavor is not None
    flavor = fps.flavor()[0] if engines else None
    if engines and flavor == "unavailable":
        from ..errors import RuntimeUnavailableError

        raise RuntimeUnavailableError(f"no TensorRT builder for engines: {fps.flavor()[1]}")
    steps = plan(specs, precisions, engines)
    enc = next((s for s in steps if s.spec.module == "encoder" and not s.engine), None)
    say = on_step or (lambda _o: None)
    outcomes: list[Outcome] = []
    todo: list[tuple[Step, str, str]] = []
    for step in steps:
        folder = artifact_dir(out, step.spec)
        fp = fps.of(step, enc)
        why = "forced" if options.force else index.why_stale(step, fp, folder, flavor, fps.parts[step.id])
        if not why:
            o = Outcome(step, "up to date", gate=_gate(step, folder, flavor))
            outcomes.append(o)
            say(o)
        elif check:
            o = Outcome(step, "stale", why=why, error=index.data["steps"].get(step.id, {}).get("error"))
            outcomes.append(o)
            say(o)
        else:
            todo.append((step, fp, why))
    if check or not todo:
        if not check:
            index.save({artifact_dir(out, s.spec) for s in steps}, fps.stat_cache)
        return outcomes

    folders = {artifact_dir(out, s.spec) for s in steps}

    def record(o: Outcome) -> None:
        index.record(o.step, fps.of(o.step, enc), artifact_dir(out, o.step.spec), flavor, o.error,
                     fps.parts[o.step.id])

    def finished(o: Outcome) -> None:  # recorded at once: an interrupted build keeps what it finished
        record(o)
        index.save(folders, fps.stat_cache)
        say(o)

    if jobs > 1:
        done = _build_parallel(todo, options, flavor, jobs, finished)
    else:
        done = []
        failed_chains: dict[str, str] = {}
        for step, fp, why in todo:
            o = _run_step(step, options, flavor, failed_chains, progress)
            done.append(o)
            finished(o)
    for o in done:  # again at the end: a later step may have remade a file an earlier one recorded
        record(o)
    outcomes += done
    index.save(folders, fps.stat_cache)
    order = {s.id: i for i, s in enumerate(steps)}
    return sorted(outcomes, key=lambda o: order[o.step.id])


def _run_step(step: Step, options: BuildOptions, flavor: str | None, failed_chains: dict,
              progress: Callable[[str], None] | None) -> Outcome:
    """Make one step (through the passes' own skipping); a failure is the outcome, not an exception."""
    from .optimize import Settings, optimize

    t0 = time.perf_counter()
    folder = artifact_dir(options.out, step.spec)
    chain = f"{step.spec.key}/{step.precision}"
    if step.engine and chain in failed_chains:
        return Outcome(step, "failed", error=f"its ONNX step failed: {failed_chains[chain]}")
    try:
        if step.engine:
            from .engines import build_module_engine

            build_module_engine(step.spec, step.precision, out=options.out, calib=options.calib,
                                flavor=options.flavor or "auto", force=options.force, progress=progress,
                                config_dir=options.config_dir)
        else:
            # FP32/FP16 are proven on the built-in faces, INT8 calibrated and proven on the calibration faces
            optimize(step.spec, step.precision, Settings(
                out=Path(options.out), config_dir=options.config_dir, force=options.force, progress=progress,
                calib=Path(options.calib) if step.precision == "int8" else None))
    except FFExportError as exc:
        failed_chains[chain] = str(exc)
        return Outcome(step, "failed", seconds=time.perf_counter() - t0, error=str(exc))
    return Outcome(step, "built", seconds=time.perf_counter() - t0, gate=_gate(step, folder, flavor))


def _module_worker(spec_ref: tuple, steps: list[tuple[str, bool]], options: BuildOptions,
                   flavor: str | None) -> list[tuple]:
    """One module's steps in a worker process (``--jobs``); returns (precision, engine, state, s, gate, error)."""
    from ..config import resolve_spec

    module, variant = spec_ref
    spec = resolve_spec(module, variant, directory=options.config_dir)
    failed: dict = {}
    res = []
    for precision, engine in steps:
        o = _run_step(Step(spec, precision, engine), options, flavor, failed, None)
        res.append((precision, engine, o.state, o.seconds, o.gate, o.error))
    return res


def _build_parallel(todo, options: BuildOptions, flavor: str | None, jobs: int, say: Report) -> list[Outcome]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    by_module: dict[str, list[Step]] = {}
    for step, _fp, _why in todo:
        by_module.setdefault(step.spec.key, []).append(step)
    groups = list(by_module.values())
    first = [g for g in groups if g[0].spec.module == "encoder"]  # the generator's proofs read its artifact
    rest = [g for g in groups if g[0].spec.module != "encoder"]
    done: list[Outcome] = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for wave in (first, rest):
            futures = {pool.submit(_module_worker, (g[0].spec.module, g[0].spec.variant),
                                   [(s.precision, s.engine) for s in g], options, flavor): g for g in wave}
            for fut in as_completed(futures):
                g = futures[fut]
                try:
                    rows = fut.result()
                except Exception as exc:  # the worker itself died: every step of its module failed
                    rows = [(s.precision, s.engine, "failed", 0.0, "", f"worker failed: {exc}") for s in g]
                for (precision, engine, state, secs, gate, error) in rows:
                    o = Outcome(Step(g[0].spec, precision, engine), state, secs, gate, error)
                    done.append(o)
                    say(o)
    return done


__all__ = ["Step", "Outcome", "BuildOptions", "plan", "build", "Fingerprints", "Index", "INDEX",
           "artifact_summaries", "step_files"]
