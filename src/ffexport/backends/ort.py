"""onnxruntime runner: CPU, or CUDA with IO binding on torch tensors (no host round trip)."""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

from .._lazy import require
from ..errors import ConfigError, ModelLoadError, RuntimeUnavailableError
from .base import Runner

_ORT_TO_TORCH = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}


_WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _graph_facts(path: str | Path) -> dict:
    """What the runner decides from the graph, read in one load: ``size`` (file plus the external data its
    initializers point to), ``convs`` (has convolutions), ``dynamic_spatial`` (an input has a symbolic
    axis besides the batch: MTCNN's P-Net, the blender), ``qdq`` (has QuantizeLinear or DequantizeLinear),
    ``fp16_math`` (a convolution or matrix product takes FP16 weights: an FP16 artifact)."""
    onnx = require("onnx")
    path = Path(path)
    facts = {"size": path.stat().st_size if path.is_file() else 0, "convs": False, "dynamic_spatial": False,
             "qdq": False, "fp16_math": False}
    try:
        g = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # unreadable: the session reports it in one line
        return facts
    facts["size"] += sum(int(kv.value) for init in g.initializer for kv in init.external_data if kv.key == "length")
    facts["convs"] = any(n.op_type in ("Conv", "ConvTranspose", "QLinearConv") for n in g.node)
    facts["qdq"] = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g.node)
    inits = {i.name for i in g.initializer}
    # an FP16 artifact's convolutions and matrix products take FP16 weights (an FP32 or a Q/DQ one's take FP32
    # weights, or DequantizeLinear's output)
    half = {i.name for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    facts["fp16_math"] = any(n.op_type in _WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in half for n in g.node)
    facts["dynamic_spatial"] = any(d.dim_param and i > 0 for vi in g.input if vi.name not in inits
                                   for i, d in enumerate(vi.type.tensor_type.shape.dim))
    return facts


_LOGGER_SET = False


def _quiet_default_logger(ort) -> None:
    """onnxruntime's process-wide logger prints recoverable events as errors (cuDNN frontend plans it
    then replaces, provider notices); failures still raise, and ffexport reports those in one line.
    FFEXPORT_ORT_LOG_SEVERITY (0 verbose .. 4 fatal, default 4) sets it."""
    global _LOGGER_SET
    if not _LOGGER_SET:
        import os

        level = os.environ.get("FFEXPORT_ORT_LOG_SEVERITY", "4")
        ort.set_default_logger_severity(int(level) if level.isdigit() and int(level) <= 4 else 4)
        _LOGGER_SET = True


CUDA_OPTIONS_ENV = "FFEXPORT_ORT_CUDA_OPTIONS"
# the CUDA provider options a session's caller owns (the device, the stream it orders with torch, graph capture)
_OWNED_CUDA_OPTIONS = ("device_id", "user_compute_stream", "has_user_compute_stream", "enable_cuda_graph")


def user_cuda_options() -> dict[str, str]:
    """CUDA provider options set by the user in ``$FFEXPORT_ORT_CUDA_OPTIONS`` (``key=value`` pairs, comma-separated,
    e.g. ``use_tf32=0,cudnn_conv_algo_search=HEURISTIC``), over ffexport's own (:func:`cuda_options`).  An
    option onnxruntime does not know makes the session fail to load, in one line."""
    import os

    text = os.environ.get(CUDA_OPTIONS_ENV, "").strip()
    opts: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (x.strip() for x in part.partition("="))
        if not sep or not key or not value:
            raise ConfigError(f"${CUDA_OPTIONS_ENV}: {part!r} is not key=value; "
                              "e.g. FFEXPORT_ORT_CUDA_OPTIONS=use_tf32=0,prefer_nhwc=1")
        if key in _OWNED_CUDA_OPTIONS:
            raise ConfigError(f"${CUDA_OPTIONS_ENV}: {key} is set by ffexport itself (the device, its stream "
                              "and CUDA graphs follow --device and the pipeline); remove it")
        opts[key] = value
    return opts


HOST_SYNC_ENV = "FFEXPORT_ORT_HOST_SYNC"


def user_host_sync() -> bool:
    """Whether ``$FFEXPORT_ORT_HOST_SYNC=1`` asks onnxruntime to synchronise the host after every CUDA run."""
    import os

    return os.environ.get(HOST_SYNC_ENV, "").strip() == "1"


def cuda_run_options(ort, host_sync: bool | None = None):
    """The run options of :class:`OrtRunner`'s CUDA runs: onnxruntime does not synchronise the host with the device at
    the end of a run (its run option ``disable_synchronize_execution_providers``).  The runner orders its stream
    with torch's by CUDA events, so whatever reads the outputs (torch's kernels, a copy to the host) waits for them
    on the device, while the host queues the next stage meanwhile.  ``$FFEXPORT_ORT_HOST_SYNC=1`` restores
    onnxruntime's synchronisation (to compare); ``host_sync`` given: that instead of the variable."""
    opts = ort.RunOptions()
    if not (user_host_sync() if host_sync is None else host_sync):
        opts.add_run_config_entry("disable_synchronize_execution_providers", "1")
    return opts


def cuda_options(path: str | Path, device: str = "cuda", stream: int | None = None,
                 dynamic_spatial: bool | None = None, cuda_graph: bool = False,
                 facts: dict | None = None) -> dict[str, str]:
    """The CUDA provider options of a session of ``path`` on ``device`` (see :func:`ort_session`), with the user's
    ``$FFEXPORT_ORT_CUDA_OPTIONS`` over ffexport's defaults: ``use_tf32`` 0 for an FP32 or Q/DQ model, 1 for one
    whose convolutions or matrix products take FP16 weights; cuDNN's exhaustive algorithm search, or its heuristic
    choice for models with dynamic spatial axes.  ``facts``: :func:`_graph_facts` of ``path``, when read already."""
    facts = _graph_facts(path) if facts is None else facts
    dev_id = int(device.split(":")[1]) if ":" in device else 0
    opts = {"device_id": str(dev_id), "use_tf32": "1" if facts["fp16_math"] else "0",
            "cudnn_conv_algo_search": "HEURISTIC" if (
                facts["dynamic_spatial"] if dynamic_spatial is None else dynamic_spatial) else "EXHAUSTIVE"}
    opts.update(user_cuda_options())
    if stream is not None:
        opts["user_compute_stream"] = str(stream)
    if cuda_graph:
        opts["enable_cuda_graph"] = "1"
    return opts


def ort_session(path: str | Path, device: str = "cpu", threads: int = 0, stream: int | None = None,
                dynamic_spatial: bool | None = None, qdq_reference: bool = False, cuda_graph: bool = False,
                facts: dict | None = None):
    """An InferenceSession on ``device`` ('cpu' or 'cuda[:N]'), with a one-line error if it cannot load.

    ``qdq_reference``: run a Q/DQ model as the ONNX operators define it (QuantizeLinear and
    DequantizeLinear as separate ops, the float op between them), with no graph optimisation.  That is
    the artifact's own arithmetic, the same on every machine (and what TensorRT's integer kernels
    compute, with exact int32 accumulation).  The default fuses Q/DQ into onnxruntime's integer
    kernels, whose results depend on the CPU: on x86 without VNNI (AVX2, AVX-512F) they multiply
    u8 x s8 with VPMADDUBSW, which saturates 16-bit pair sums of full-range INT8 weights.

    CUDA (:func:`cuda_options`): TF32 is off for an FP32 or Q/DQ model (an FP32 artifact computes in FP32, as
    its parity record says) and on for an FP16 one: onnxruntime's
    ``use_tf32=0`` also puts cuDNN's FP16 convolutions in FMA math mode, which rules out tensor cores (the
    FP16 inswapper on an H200: 19.0 ms at batch 1 with it, 3.2 ms without; benchmarks/NOTES.md, session 13).
    Models whose spatial axes are dynamic use cuDNN's heuristic algorithm choice, because the default
    exhaustive search re-benchmarks every new input shape (an image pyramid would be re-tuned on every frame
    size).  ``facts``: :func:`_graph_facts` of ``path``, when read already.
    ``cuda_graph`` (CUDA only): the session captures its first runs as a CUDA graph and replays it (the CUDA
    provider's ``enable_cuda_graph``); its caller must bind the same device buffers, of the same shapes, on every
    run (:class:`OrtRunner` with ``cuda_graph=True`` does).  onnxruntime refuses such a session when a node of
    the model would run on the CPU.
    CPU: worker threads do not spin-wait after a call, so they leave the cores to torch between stages.
    """
    ort = require("onnxruntime", "running ONNX models")
    _quiet_default_logger(ort)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if qdq_reference
                                     else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeUnavailableError(
                f"onnxruntime {ort.__version__} here has no CUDA provider (providers: {ort.get_available_providers()}); "
                "install onnxruntime-gpu: pip install 'ffexport[gpu]'")
        cuda_opts = cuda_options(path, device, stream, dynamic_spatial, cuda_graph, facts)
        providers = [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"onnxruntime cannot load {path}: {first}") from exc
    if device.startswith("cuda") and "CUDAExecutionProvider" not in sess.get_providers():
        raise RuntimeUnavailableError(f"onnxruntime could not start the CUDA provider for {path} "
                                      f"(got {sess.get_providers()}): check the CUDA and cuDNN libraries")
    return sess


SHAPE_SESSIONS = 16  # sessions kept per small model on CUDA, one per input shape (see OrtRunner)
SMALL_MODEL_BYTES = 64 << 20
GRAPH_SESSIONS = 8  # CUDA-graph sessions kept per runner, one per input shape (see OrtRunner)


class _GraphSlot:
    """One input shape's CUDA-graph session and the device buffers bound to it for every run."""

    def __init__(self, sess, binding, inputs: dict, outputs: dict):
        self.sess = sess
        self.binding = binding
        self.inputs = inputs  # name -> torch tensor the graph reads
        self.outputs = outputs  # name -> torch tensor the graph writes
        self.runs = 0


class OrtRunner(Runner):
    """Runs an ONNX file. On CUDA, torch tensors are bound in place with IO binding and
    outputs are written straight into torch tensors on the same device.

    CUDA ordering: onnxruntime runs on a stream of its own (one per runner) that first waits for
    the caller's current torch stream, so kernels torch has queued to produce the inputs finish
    before onnxruntime reads them, and torch's later work waits for onnxruntime's.  (torch's default
    stream is the legacy stream, handle 0, which onnxruntime cannot share: without this ordering it
    reads inputs that are still being written.)

    Shapes: onnxruntime's CUDA kernels keep their tuned state for the last input shape only, so a
    session fed a new shape on every call re-plans every call (an image pyramid, a batch of
    candidates that changes per frame: 5-40 ms a call instead of 0.2 ms; measured by
    benchmarks/ort_shape_overhead.py).  On CUDA a convolutional model of at most 64 MB with dynamic
    axes therefore gives every input shape that comes back a session of its own, up to ``shape_sessions``
    (default 16) kept, least recently used dropped.  Larger models keep one session (each session
    holds its own copy of the weights on the GPU); the pipeline feeds those batches of a few sizes
    (powers of two, :class:`ffexport.pipeline.stages.Stage`), each size a CUDA-graph session of its own
    (below) made before frames wait, so a frame with a second face does not re-plan a 500 MB model
    (benchmarks/ort_shape_overhead.py --big measures a re-plan).

    CUDA graphs (``cuda_graph=True``, opt-in, CUDA only; ignored on the CPU): an input shape seen a second
    time gets a session of its own created with the CUDA provider's ``enable_cuda_graph``, and device buffers
    of that shape bound to it once; each call copies the inputs into those buffers, replays the graph
    onnxruntime captured on its first runs, and returns copies of the output buffers (the next call
    overwrites them).  One session, with its own copy of the weights on the GPU, per shape, at most
    ``graph_sessions`` (default 8) kept, least recently used dropped: the caller keeps the shapes few, e.g.
    batches padded to powers of two.  A shape's first call runs the ordinary way and tells the output shapes.
    When onnxruntime refuses the graph session (a node placed on the CPU) or its first run fails, the runner
    goes on without graphs and says why in :meth:`describe` (``cuda_graph``).  One thread per runner: a
    graph session may not run from two threads at once.

    No host synchronisation (:func:`cuda_run_options`): a CUDA run returns once its kernels are queued.  Outputs
    whose shape the inputs' named axes do not tell (MTCNN's P-Net maps) are allocated by onnxruntime on their
    input shapes' first run; later runs of those shapes bind torch tensors of the shapes it gave, so the whole
    run is queued on the device and can be captured in a caller's CUDA graph (the MTCNN cascade's).  A model whose
    output shapes depend on the input values (a run fails on the remembered shapes) stops remembering them.  The
    sessions that ran while a caller captured a CUDA graph are kept for the runner's life: the graph replays
    kernels on their memory.
    """

    backend = "ort"

    def __init__(self, path: str | Path, spec=None, device: str = "cpu", threads: int = 0, name: str = "",
                 shape_sessions: int | None = None, qdq_reference: bool = False, cuda_graph: bool = False,
                 graph_sessions: int = GRAPH_SESSIONS):
        super().__init__(name or Path(path).name, device, spec)
        self.path = Path(path)
        self.qdq_reference = qdq_reference  # see ort_session: Q/DQ as defined, not fused integer kernels
        self.threads = threads
        self.sess = None
        self.shape_sessions = shape_sessions
        self._sessions: "OrderedDict[tuple, object]" = OrderedDict()
        self._seen: "OrderedDict[tuple, None]" = OrderedDict()
        self._stream = None
        self.convolutional = False
        self.cuda_graph = bool(cuda_graph)
        self.graph_sessions = max(1, int(graph_sessions))
        self._graphs: "OrderedDict[tuple, _GraphSlot]" = OrderedDict()
        self._graph_off = ""  # why graphs stopped being used ("" while they are)
        self._run_opts = None  # CUDA runs' RunOptions (cuda_run_options)
        self._host_sync = False  # whether they let onnxruntime synchronise the host ($FFEXPORT_ORT_HOST_SYNC=1)
        # input shapes -> output name -> shape, from a run of those shapes: what a graph session of them binds, and
        # the outputs later runs bind as torch tensors where the inputs' named axes do not tell their shape
        self._out_shapes: "OrderedDict[tuple, dict]" = OrderedDict()
        self._remember_shapes = True  # False once a run failed on remembered output shapes
        self._captured: dict[int, object] = {}  # sessions that ran inside a caller's CUDA graph capture

    def activate_impl(self) -> None:
        torch = require("torch")
        t0 = time.perf_counter()
        cuda = self.device.startswith("cuda")
        self._facts = _graph_facts(self.path)  # read once: every per-shape session reuses it
        if cuda:
            dev = torch.device(self.device)
            self._stream = torch.cuda.Stream(device=dev)
            self._host_sync = user_host_sync()
            self._run_opts = cuda_run_options(require("onnxruntime", "running ONNX models"), self._host_sync)
        self.sess = self._new_session()
        self.load_time_s = time.perf_counter() - t0
        ins, outs = self.sess.get_inputs(), self.sess.get_outputs()
        self.input_names = [i.name for i in ins]
        self.output_names = [o.name for o in outs]
        self.input_shapes = {i.name: [d if isinstance(d, int) else None for d in i.shape] for i in ins}
        self._in_dtype = {i.name: getattr(torch, _ORT_TO_TORCH.get(i.type, "float32")) for i in ins}
        self._out_dtype = {o.name: getattr(torch, _ORT_TO_TORCH.get(o.type, "float32")) for o in outs}
        self._in_dims = {i.name: list(i.shape) for i in ins}
        self._out_dims = {o.name: list(o.shape) for o in outs}
        dynamic = any(not isinstance(d, int) for dims in self._in_dims.values() for d in dims)
        self.convolutional = self._facts["convs"]
        if self.shape_sessions is None:
            small = self._facts["size"] <= SMALL_MODEL_BYTES
            self.shape_sessions = SHAPE_SESSIONS if (cuda and dynamic and self.convolutional and small) else 1
        self._sessions.clear()
        self._seen.clear()
        self._graphs.clear()
        self._graph_off = ""
        self._out_shapes.clear()
        self._remember_shapes = True
        self._captured.clear()

    def _new_session(self, cuda_graph: bool = False):
        stream = self._stream.cuda_stream if self._stream is not None else None
        return ort_session(self.path, self.device, self.threads, stream,  # facts: the graph read once
                           qdq_reference=self.qdq_reference and self._facts["qdq"], cuda_graph=cuda_graph,
                           facts=self._facts)

    @property
    def _graphs_on(self) -> bool:
        return self.cuda_graph and self.device.startswith("cuda") and not self._graph_off

    def _session_for(self, key: tuple):
        """The session for inputs of shape ``key``: a shape seen before gets a session of its own (up to
        ``shape_sessions``, least recently used dropped); a shape seen once runs on the shared one,
        so shapes that never repeat (a paste box per face) cost no session."""
        if (self.shape_sessions or 1) <= 1:
            return self.sess
        sess = self._sessions.get(key)
        if sess is not None:
            self._sessions.move_to_end(key)
            return sess
        if key not in self._seen:
            self._seen[key] = None
            while len(self._seen) > 16 * self.shape_sessions:
                self._seen.popitem(last=False)
            return self.sess
        sess = self._sessions[key] = self._new_session()
        if len(self._sessions) > self.shape_sessions:
            self._sessions.popitem(last=False)
        return sess

    def _cast(self, name, t):
        want = self._in_dtype[name]
        return t if t.dtype == want else t.to(want)

    def infer_impl(self, feeds: Mapping[str, "object"]) -> dict:
        if self.device.startswith("cuda"):
            return self._infer_cuda(feeds)
        torch = require("torch")
        arrays = {n: self._cast(n, t).detach().cpu().contiguous().numpy() for n, t in feeds.items()}
        sess = self._session_for(tuple(tuple(arrays[n].shape) for n in self.input_names))
        outs = sess.run(self.output_names, arrays)
        return {n: torch.from_numpy(o) for n, o in zip(self.output_names, outs)}

    def _output_shapes(self, feeds) -> dict[str, list[int] | None]:
        """Each output's shape, its symbolic dims resolved from the inputs' dims of the same name; None for an
        output with a dim the inputs do not name."""
        sizes: dict[str, int] = {}
        for n, dims in self._in_dims.items():
            for d, s in zip(dims, feeds[n].shape):
                if isinstance(d, str):
                    sizes[d] = int(s)
        out = {}
        for name in self.output_names:
            dims = self._out_dims[name]
            known = all(isinstance(d, int) or d in sizes for d in dims)
            out[name] = [d if isinstance(d, int) else sizes[d] for d in dims] if known else None
        return out

    def _infer_cuda(self, feeds) -> dict:
        torch = require("torch")
        dev = torch.device(self.device)
        key = tuple(tuple(int(d) for d in feeds[n].shape) for n in self.input_names)
        if self._graphs_on:
            slot = self._graph_for(key, dev)
            if slot is not None:
                outs = self._replay(slot, feeds, dev)
                if outs is not None:
                    return outs
        return self._run_bound(feeds, dev, key)

    def _graph_for(self, key: tuple, dev) -> "_GraphSlot | None":
        """The CUDA-graph session of input shapes ``key``: made on the shapes' second call (the first told the
        output shapes), None before that or when onnxruntime refuses one (graphs then stay off)."""
        torch = require("torch")
        slot = self._graphs.get(key)
        if slot is not None:
            self._graphs.move_to_end(key)
            return slot
        out_shapes = self._out_shapes.get(key)
        if out_shapes is None:
            return None
        try:
            sess = self._new_session(cuda_graph=True)
        except (ModelLoadError, RuntimeUnavailableError) as exc:
            self._graph_off = f"onnxruntime refused a CUDA-graph session: {exc}"[:300]
            return None
        ins = {n: torch.empty(shape, dtype=self._in_dtype[n], device=dev)
               for n, shape in zip(self.input_names, key)}
        outs = {n: torch.empty(out_shapes[n], dtype=self._out_dtype[n], device=dev) for n in self.output_names}
        binding = sess.io_binding()
        for n, t in ins.items():
            binding.bind_input(n, "cuda", dev.index or 0, _np_dtype(t.dtype), list(t.shape), t.data_ptr())
        for n, t in outs.items():
            binding.bind_output(n, "cuda", dev.index or 0, _np_dtype(t.dtype), list(t.shape), t.data_ptr())
        for t in (*ins.values(), *outs.values()):
            t.record_stream(self._stream)  # freed (slot dropped) only after onnxruntime's last use
        slot = self._graphs[key] = _GraphSlot(sess, binding, ins, outs)
        while len(self._graphs) > self.graph_sessions:
            self._graphs.popitem(last=False)
        return slot

    def _replay(self, slot: "_GraphSlot", feeds, dev) -> dict | None:
        """Copy ``feeds`` into the slot's input buffers, run its graph, return copies of its outputs; None
        (graphs turned off) when the first run, which captures the graph, fails."""
        torch = require("torch")
        caller = torch.cuda.current_stream(dev)
        for n in self.input_names:
            slot.inputs[n].copy_(feeds[n], non_blocking=True)  # on the caller's stream: ordered after its producers
        stream = self._stream
        stream.wait_stream(caller)
        try:
            slot.sess.run_with_iobinding(slot.binding, self._run_opts)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            if slot.runs:
                raise
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            self._graph_off = f"the first CUDA-graph run failed: {first}"
            self._graphs.clear()
            caller.wait_stream(stream)
            return None
        slot.runs += 1
        caller.wait_stream(stream)
        # copies on the caller's stream: the next replay (which waits for that stream) overwrites the buffers
        return {n: slot.outputs[n].clone() for n in self.output_names}

    def _run_bound(self, feeds, dev, key: tuple) -> dict:
        """One run with IO binding on torch tensors (a session per recurring shape for small models)."""
        torch = require("torch")
        caller = torch.cuda.current_stream(dev)
        inputs = {n: self._cast(n, feeds[n].to(dev, non_blocking=True)).contiguous() for n in self.input_names}
        sess = self._session_for(key)
        if torch.cuda.is_current_stream_capturing():
            self._captured[id(sess)] = sess  # a caller's graph will replay kernels on this session's memory
        shapes = self._output_shapes(inputs)  # None: the inputs do not tell
        remembered = self._out_shapes.get(key, {}) if self._remember_shapes else {}
        guessed = {n: list(remembered[n]) for n, shape in shapes.items() if shape is None and n in remembered}
        try:
            outs, late = self._bind_and_run(sess, inputs, dev, caller, {**shapes, **guessed})
        except Exception:  # noqa: BLE001 - onnxruntime raises its own exception types
            if not guessed:
                raise
            # outputs whose shape depends on the input values: let onnxruntime allocate them from now on
            self._remember_shapes = False
            self._out_shapes.clear()
            outs, late = self._bind_and_run(sess, inputs, dev, caller, shapes)
        if (late and self._remember_shapes) or self._graphs_on:
            self._out_shapes[key] = {n: tuple(o.shape) for n, o in outs.items()}
            while len(self._out_shapes) > 16 * self.graph_sessions:
                self._out_shapes.popitem(last=False)
        return {n: outs[n] for n in self.output_names}

    def _bind_and_run(self, sess, inputs: dict, dev, caller, shapes: dict) -> tuple[dict, list]:
        """Bind ``inputs`` and the outputs (torch tensors of ``shapes[name]``; onnxruntime's own allocation where it
        is None, returned as ``late``) and queue the run on the runner's stream, ordered after the caller's stream
        and before its later work."""
        torch = require("torch")
        binding = sess.io_binding()
        for n, t in inputs.items():
            binding.bind_input(n, "cuda", dev.index or 0, _np_dtype(t.dtype), list(t.shape), t.data_ptr())
        outs: dict = {}
        late = []
        for n in self.output_names:
            shape = shapes[n]
            if shape is None:
                binding.bind_output(n, "cuda", dev.index or 0)
                late.append(n)
                continue
            o = torch.empty(shape, dtype=self._out_dtype[n], device=dev)
            binding.bind_output(n, "cuda", dev.index or 0, _np_dtype(o.dtype), shape, o.data_ptr())
            outs[n] = o
        stream = self._stream
        stream.wait_stream(caller)  # what torch queued to produce the inputs runs first
        for t in (*inputs.values(), *outs.values()):
            t.record_stream(stream)  # the allocator may not hand this memory out before onnxruntime is done
        sess.run_with_iobinding(binding, self._run_opts)
        caller.wait_stream(stream)
        if late:  # shapes not derivable from the inputs: ORT allocated them on the device; take them over
            values = dict(zip(self.output_names, binding.get_outputs()))
            for n in late:
                outs[n] = _ortvalue_to_torch(values[n], dev)
        return outs, late

    def deactivate_impl(self) -> None:
        self.sess = None
        self._sessions.clear()
        self._seen.clear()
        self._graphs.clear()
        self._out_shapes.clear()
        self._captured.clear()
        self._stream = None
        self._run_opts = None

    def describe(self) -> dict:
        d = super().describe()
        if self.sess is not None:
            d["providers"] = self.sess.get_providers()
            users = user_cuda_options() if self.device.startswith("cuda") else {}
            if users:
                d["cuda_options"] = f"${CUDA_OPTIONS_ENV}: " + ",".join(f"{k}={v}" for k, v in users.items())
            if self._run_opts is not None and self._host_sync:
                d["host_sync"] = f"on (${HOST_SYNC_ENV}=1)"
            if (self.shape_sessions or 1) > 1:
                d["shape_sessions"] = f"{len(self._sessions)} of at most {self.shape_sessions}"
        if self.cuda_graph:
            if not self.device.startswith("cuda"):
                d["cuda_graph"] = "off: CUDA only (this runner is on the CPU)"
            elif self._graph_off:
                d["cuda_graph"] = f"off: {self._graph_off}"
            else:
                d["cuda_graph"] = f"on: {len(self._graphs)} input shapes captured (at most {self.graph_sessions})"
        return d


def _model_facts(path: Path) -> tuple[int, bool]:
    """(bytes of the model file plus the external data its initializers point to, whether it has convolutions)."""
    facts = _graph_facts(path)
    return facts["size"], facts["convs"]


def _ortvalue_to_torch(value, dev):
    """Zero-copy via DLPack (the pybind OrtValue implements it); a host copy only as a last resort."""
    torch = require("torch")
    c = value._get_c_value() if hasattr(value, "_get_c_value") else value
    if hasattr(c, "__dlpack__"):
        try:
            return torch.from_dlpack(c)
        except (RuntimeError, TypeError, BufferError):
            pass
    return torch.from_numpy(value.numpy()).to(dev)


def _np_dtype(torch_dtype):
    import numpy as np

    return {"torch.float32": np.float32, "torch.float16": np.float16, "torch.int64": np.int64,
            "torch.int32": np.int32, "torch.uint8": np.uint8, "torch.int8": np.int8,
            "torch.bool": np.bool_, "torch.float64": np.float64}[str(torch_dtype)]
