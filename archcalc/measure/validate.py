"""Run the graph in onnxruntime and set what it measured beside what archcalc estimated.

Channels, each its own figure:
- shapes: every intermediate tensor exposed as an output, its executed shape and dtype compared;
- per node: the profiler's output bytes and time, against each layer's activation bytes and FLOPs;
- peak (profiler): with the arena on, the largest ``mem_bytes_requested_in_use`` the profiler saw,
  above what was in use before the first node -- malloc-free and repeatable. A first run allocates
  buffer by buffer; a second holds the memory-pattern block laid out from the first;
- peak (process): a fresh child process per measurement, started from a small launcher (a child
  inherits its parent's high-water mark), arena off, one thread, glibc told to return freed
  buffers (MALLOC_MMAP_THRESHOLD_); the rise of VmHWM over a run after /proc/self/clear_refs
  reset it. Three runs: the first, and the largest. Linux only; elsewhere this channel is skipped.
- CUDA (archcalc.measure.cuda): where a GPU is usable, NVML's figure for a fresh child process:
  the context, the weights on the device and the run peak.
The shapes are checked on the provider the session really used (CUDA when usable); the profiler
and process channels always measure the CPU provider, whose arena and heap they read.
Both graph-optimization levels are measured: "disable" runs the graph as written (what the estimate
describes, and what it is judged against); "all" runs what users deploy.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from archcalc.analysis.estimate import Estimate, analyse
from archcalc.errors import InputError, ValidationError
from archcalc.measure.child import LEVELS, run_child
from archcalc.measure.cuda import CudaPeak, cuda_peak, providers


@dataclass(frozen=True)
class Mismatch:
    tensor: str
    node: str
    estimated: str
    executed: str


@dataclass(frozen=True)
class NodeMeasure:
    layer: str
    op: str
    estimated_bytes: int
    measured_bytes: int
    microseconds: int
    flops: int
    bound: bool = False  # the estimate is an upper bound (sizes that depend on the data)

    @property
    def agrees(self) -> bool:
        """The estimate equals the measurement, or holds it where it is a bound."""
        equal = self.estimated_bytes == self.measured_bytes
        return equal or (self.bound and self.estimated_bytes >= self.measured_bytes)

    @property
    def flops_per_second(self) -> float:
        return self.flops / (self.microseconds * 1e-6) if self.microseconds else 0.0


@dataclass(frozen=True)
class PeakMeasure:
    level: str
    load_peak: int  # VmHWM while the inputs were read and the session built, above the launcher's baseline
    resident_after_load: int  # the inputs, the weights and the runtime's own memory
    run_peak: int  # the rise of VmHWM over a run
    runs: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Validation:
    """What was run and measured. ``provider`` is the one the session really used."""

    provider: str
    checked_tensors: int
    mismatches: list[Mismatch]
    nodes: list[NodeMeasure]
    profiler_peak: int | None  # the first run's
    process_peaks: list[PeakMeasure]
    estimate: Estimate
    optimizer_changes: dict[str, int] = field(default_factory=dict)  # op -> count after - before
    cuda_peaks: list[CudaPeak] = field(default_factory=list)
    profiler_peak_later: int | None = None  # a second run's: the memory-pattern block and the outputs

    def to_dict(self) -> dict:
        """What was run and measured, as plain data (the estimate itself is left out: see its own)."""
        return {"provider": self.provider, "checked_tensors": self.checked_tensors,
                "mismatches": [asdict(m) for m in self.mismatches],
                "nodes": [{**asdict(n), "flops_per_second": n.flops_per_second} for n in self.nodes],
                "profiler_peak": self.profiler_peak, "profiler_peak_later": self.profiler_peak_later,
                "process_peaks": [asdict(p) for p in self.process_peaks],
                "cuda_peaks": [asdict(g) for g in self.cuda_peaks], "optimizer_changes": self.optimizer_changes}


def _model_with_weights(source) -> tuple[onnx.ModelProto, Path]:
    import onnx

    from archcalc.frontends.onnx_import import import_onnx
    from archcalc.frontends.sources import resolve

    path = resolve(source)
    import_onnx(path)  # the structure first: a corrupt file gets its precise error, not "no weights"
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise InputError(f"{path}: cannot load the weights to run it ({str(exc).splitlines()[0][:120]}): "
                         "validation needs the model with its weights, not a structure-only copy") from None
    for i, node in enumerate(model.graph.node):  # name every node as the estimate does
        node.name = node.name or f"{node.op_type}_{i}"
    return model, path


def feeds(est: Estimate, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the estimated shapes; integer inputs stay inside the table they index."""
    rng = np.random.default_rng(seed)
    g = est.graph
    out = {}
    for name in g.inputs:
        t = g.tensors[name]
        if t.dtype.startswith(("float", "bfloat")):
            out[name] = rng.standard_normal(t.shape).astype(np.float32 if t.dtype == "bfloat16" else t.dtype)
            continue
        high = 2  # a mask or a flag, unless the input indexes a table
        for i in g.consumers(name):
            layer = g.layers[i]
            if layer.op_type == "Gather" and layer.inputs[1] == name:
                high = g.tensors[layer.inputs[0]].shape[layer.attrs.get("axis", 0)]
        out[name] = rng.integers(0, high, t.shape).astype(t.dtype if t.dtype != "bool" else np.bool_)
    return out


def _session(model_bytes: bytes, level: str, profile: bool = False, arena: bool = True, cpu_only: bool = False):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    opts.enable_profiling = profile
    opts.profile_file_prefix = os.path.join(tempfile.gettempdir(), "archcalc_profile")  # not in the cwd
    opts.enable_cpu_mem_arena = arena
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4  # its failures are reported as archcalc's one-line error, not logged
    try:
        return ort.InferenceSession(model_bytes, opts, providers=providers(cpu_only))
    except Exception as exc:  # onnxruntime's own refusal: the model cannot be run, so nothing is measured
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        reason = reason.split(" : ")[-1].rsplit(") ", 1)[-1]  # its message, without the C++ location
        raise ValidationError(f"onnxruntime cannot run it ({reason[:300]}): nothing was measured") from None


def every_output(model):
    """A copy of ``model`` whose graph returns every main-graph node output as well (untyped: the
    runtime takes the type it infers), so one run shows each tensor's executed shape."""
    import onnx

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    known = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for o in node.output:
            if o and o not in known:
                exposed.graph.output.append(onnx.ValueInfoProto(name=o))
                known.add(o)
    return exposed


def check_shapes(model, est: Estimate, inputs: dict) -> tuple[int, list[Mismatch], str]:
    """Run with every node output exposed; compare each executed shape and dtype with the estimate."""
    exposed = every_output(model)
    producer = {o: node.name for node in model.graph.node for o in node.output}
    sess = _session(exposed.SerializeToString(), "disable")
    names = [o.name for o in sess.get_outputs()]
    mismatches = []
    try:
        values = sess.run(names, inputs)
    except Exception as exc:  # the model refuses the inputs archcalc made up (a value it branches on)
        reason = str(exc).splitlines()[0].split(" : ")[-1] if str(exc) else type(exc).__name__
        raise ValidationError(f"onnxruntime failed running it on random inputs ({reason[:300]}): "
                              "nothing was measured") from None
    for name, value in zip(names, values):
        t = est.graph.tensors.get(name)
        if not isinstance(value, np.ndarray) or (t is not None and (not t.known or t.seq is not None)):
            continue  # a sequence or map, or a tensor the estimate says it cannot size
        if t is not None and t.bound and t.dtype == str(value.dtype) and len(t.shape) == value.ndim \
                and all(a >= b for a, b in zip(t.shape, value.shape)):
            continue  # a data-dependent size within its bound
        got = f"{list(value.shape)} {value.dtype}"
        want = f"{list(t.shape)} {t.dtype}" if t is not None else "(no tensor)"
        if got != want:
            mismatches.append(Mismatch(name, producer.get(name, ""), want, got))
    return len(names), mismatches, sess.get_providers()[0]


def profile_nodes(model, est: Estimate, inputs: dict) -> tuple[list[NodeMeasure], int | None, int | None]:
    """Per-node output bytes and time, and the arena's requested-bytes peak, from the profiler: of a
    first run (buffers allocated one by one) and of a second (onnxruntime's memory-pattern block)."""
    sess = _session(model.SerializeToString(), "disable", profile=True, cpu_only=True)
    sess.run(None, inputs)
    sess.run(None, inputs)
    path = sess.end_profiling()
    events = [e for e in json.loads(Path(path).read_text()) if e.get("cat") == "Node"
              and e.get("name", "").endswith("_kernel_time")]
    Path(path).unlink(missing_ok=True)
    half = len(events) // 2  # the same nodes run twice
    rows = {r.name: r for r in est.layers_list}
    nodes = []
    for e in events[:half]:
        args = e.get("args", {})
        layer = e["name"].removesuffix("_kernel_time")
        if layer in rows and rows[layer].status != "unknown":
            r = rows[layer]
            nodes.append(NodeMeasure(layer, r.op_type, r.activation_bytes, int(args.get("output_size", 0)),
                                     int(e.get("dur", 0)), r.flops, r.status == "bound"))
    in_use = [(int(e["args"]["mem_bytes_requested_in_use"]), int(e["args"].get("mem_requested_in_use_delta", 0)))
              for e in events if "mem_bytes_requested_in_use" in e.get("args", {})]
    if len(in_use) != len(events) or not half:
        return nodes, None, None
    before = in_use[0][0] - in_use[0][1]
    first = max(v for v, _ in in_use[:half]) - before
    later = max(v for v, _ in in_use[half:]) - before
    return nodes, first, later


CHILD = r"""
import json, sys, numpy as np
def status(key):
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith(key)).split()[1]) * 1024
def reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
model, feeds, level, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import onnxruntime as ort
base = status("VmRSS"); reset()
inputs = dict(np.load(feeds))
opts = ort.SessionOptions()
opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
opts.enable_cpu_mem_arena = False; opts.intra_op_num_threads = 1; opts.log_severity_level = 3
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
out = {"load_peak": status("VmHWM") - base, "resident_after_load": status("VmRSS") - base, "runs": []}
for _ in range(runs):
    before = status("VmRSS"); reset()
    sess.run(None, inputs)
    out["runs"].append(status("VmHWM") - before)
print(json.dumps(out))
"""


def process_peak(model_path: Path, inputs: dict, level: str, runs: int = 3) -> PeakMeasure | None:
    """The peak in a fresh child process (Linux: needs /proc/self/clear_refs)."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    data = run_child(CHILD, model_path, inputs, level, runs,
                     {"MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}, "onnxruntime run")
    return PeakMeasure(level, data["load_peak"], data["resident_after_load"], max(data["runs"]), data["runs"])


def optimizer_changes(model) -> dict[str, int]:
    """How ORT_ENABLE_ALL rewrites the graph: each op type's count after minus before (fusions show as
    ops that vanish, layout changes as com.microsoft.nchwc ops and Reorder buffers that appear)."""
    from collections import Counter

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        optimized = onnx.load(opts.optimized_model_filepath, load_external_data=False)
    before = Counter(n.op_type for n in model.graph.node)
    after = Counter((f"{n.domain}." if n.domain else "") + n.op_type for n in optimized.graph.node)
    return {op: after[op] - before[op] for op in sorted(set(before) | set(after)) if after[op] != before[op]}


def validate(source, batch=None, dims=None, inputs=None, levels=("disable", "all"), progress=None) -> Validation:
    """Estimate ``source``, run it in onnxruntime, and measure every channel."""
    from archcalc.frontends.onnx_import import import_onnx

    step = progress or (lambda _msg: None)
    step("loading the model with its weights")
    model, path = _model_with_weights(source)
    graph = import_onnx(model)
    graph.source = str(path)
    est = analyse(graph, batch, dims, inputs)
    feed = feeds(est)
    step("checking every tensor's shape")
    try:
        checked, mismatches, provider = check_shapes(model, est, feed)
    except ValidationError as exc:
        raise ValidationError(f"{path}: {exc}") from None
    step("profiling each node")
    nodes, profiler_peak, profiler_later = profile_nodes(model, est, feed)
    changes = {}
    if "all" in levels:
        step("recording what onnxruntime's optimizer changes")
        changes = optimizer_changes(model)
    peaks, gpu = [], []
    with tempfile.TemporaryDirectory() as tmp:
        runnable = Path(tmp) / "model.onnx"
        _save_for_child(model, runnable)
        for level in levels:
            step(f"measuring the process peak (optimizations {level})")
            measured = process_peak(runnable, feed, level)
            if measured:
                peaks.append(measured)
            if provider == "CUDAExecutionProvider":
                step(f"measuring GPU memory with NVML (optimizations {level})")
                on_gpu = cuda_peak(runnable, feed, level)
                if on_gpu:
                    gpu.append(on_gpu)
    return Validation(provider, checked, mismatches, nodes, profiler_peak, peaks, est, changes, gpu,
                      profiler_later)


def _save_for_child(model, path: Path) -> None:
    import onnx

    large = model.ByteSize() > (1 << 31) - (1 << 20)
    onnx.save(model, str(path), save_as_external_data=large, location="weights.bin" if large else None)

