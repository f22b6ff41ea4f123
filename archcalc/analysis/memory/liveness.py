"""Activation memory by buffer liveness over the execution order, and the inference memory terms.

A buffer is allocated when its layer runs (while that layer's inputs are still alive) and freed
after its last reader; graph outputs live to the end and own their buffer. Views (Reshape, Flatten,
Squeeze, Unsqueeze, Identity) share their input's buffer. With ``inplace``, an op its rule marks
``inplace`` (the kernels onnxruntime lets overwrite an input, see archcalc.ops.elementwise)
writes into an input buffer of its own size that dies at that op. Graph inputs are held by the
caller and reported apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from archcalc.analysis.memory import terms
from archcalc.analysis.memory.runtimes import Runtime
from archcalc.analysis.walk.infer import LayerResult
from archcalc.analysis.walk.results import derived, last_readers, ran
from archcalc.dtypes import DTYPE_BYTES
from archcalc.ir import Role, Shaped

RUNTIME_ROLES = (Role.ACTIVATION, Role.OUTPUT)


@dataclass(frozen=True)
class Peak:
    """The largest set of live activation buffers: its bytes and the layer it falls at."""

    bytes: int
    layer_index: int
    layer_name: str


@dataclass(frozen=True)
class Buffer:
    """One storage: the tensor that owns it, its bytes, and the first and last layer it lives in."""

    tensor: str
    nbytes: int
    start: int
    end: int


def input_bytes(graph: Shaped, float_dtype: str | None = None) -> int:
    """Bytes of the graph inputs, which the caller holds for the whole run."""
    return sum(graph.tensors[n].nbytes(float_dtype) for n in graph.inputs)


def _last_uses(graph: Shaped, results: list[LayerResult]) -> dict[str, int]:
    """Each tensor's last use: its last reader, and for a graph output the end (the caller keeps it)."""

    def make() -> dict[str, int]:
        return {**last_readers(graph, results), **dict.fromkeys(graph.outputs, len(results) - 1)}

    return derived(graph, results, "last uses", make)


def buffer_owners(graph: Shaped, results: list[LayerResult], inplace: bool = True,
                  float_dtype: str | None = None, reuse: dict[str, tuple] | None = None,
                  keep: frozenset[str] = frozenset(), output_views: bool = False) -> dict[str, str]:
    """For every runtime tensor (and graph input), the tensor whose buffer it is written into.

    ``keep``: tensors that must outlive their last reader (saved for backward in training); no op
    writes over their buffer in place, as PyTorch's autograd forbids.

    ``output_views``: a graph output made by a view shares its input's buffer, as a PyTorch model's
    returned ``logits.view(...)`` does; onnxruntime instead hands each output to the caller in a
    buffer of its own (the default).

    ``reuse`` (the static shapes a planner knows, see ``Graph.static_shapes``): a new output takes
    the dead buffer freed last whose statically known shape and element size equal its own, as
    onnxruntime's planner does. That buffer is then never released in between, so it stays in use
    across the gap. Shapes the planner cannot prove equal (unknown dims) are never reused.
    """
    last = _last_uses(graph, results)
    owner = {name: name for name in graph.inputs}
    end: dict[str, int] = {}  # owner -> last layer that reads any tensor in its buffer
    free = _FreeList(graph, reuse or {})  # dead buffers, the most recently freed first
    kept: set[str] = set()  # buffers that hold a tensor in ``keep``
    for i in ran(graph, results):
        res = results[i]
        for j, name in enumerate(res.layer.outputs):
            t = graph.tensors.get(name) if name else None
            if t is None or t.role not in RUNTIME_ROLES:
                continue
            src = _shared_input(graph, res, j, i, owner, end, inplace, float_dtype, kept, reuse, output_views)
            dead = None
            if not src and reuse is not None and name not in graph.outputs:
                dead = free.take_like(name)
            owner[name] = owner[src] if src else dead or name
            end[owner[name]] = max(end.get(owner[name], i), last.get(name, i))
            if name in keep:
                kept.add(owner[name])
        if reuse is not None:
            _release(graph, res, i, owner, end, free)
    return owner


def _release(graph: Shaped, res: LayerResult, i: int, owner: dict[str, str], end: dict[str, int],
             free: _FreeList) -> None:
    """onnxruntime's planner pushes each buffer that dies at layer ``i`` to the front of its free
    list, inputs first in their order, then outputs: the last one pushed is reused first."""
    for n in [*res.layer.inputs, *res.layer.outputs]:
        o = owner.get(n)
        if o is not None and end.get(o) == i and o not in graph.inputs:
            free.push(o)


class _FreeList:
    """onnxruntime's list of dead buffers, the most recently freed first, indexed by what a new
    buffer must match to take one: its statically known shape and element size. onnxruntime compares
    element sizes, not types (a float buffer may hold an int32 of its shape), but never reuses across
    strings, which are constructed in place. Indexed so that a graph of thousands of layers is
    planned in linear time (a plain list made a 1,000-layer decoder take 10 s here)."""

    def __init__(self, graph: Shaped, static: dict[str, tuple]):
        self.graph, self.static = graph, static
        self.members: set[str] = set()
        self.stacks: dict[tuple, list[str]] = {}  # per key, the most recently freed last

    def _key(self, name: str) -> tuple | None:
        shape = self.static.get(name)
        if not shape or None in shape:
            return None  # a shape the planner cannot prove equal is never reused
        dtype = self.graph.tensors[name].dtype
        return shape, DTYPE_BYTES[dtype], dtype == "string"

    def push(self, owner: str) -> None:
        if owner in self.members:
            return  # already on the list: it keeps its place
        self.members.add(owner)
        key = self._key(owner)
        if key is not None:
            self.stacks.setdefault(key, []).append(owner)

    def take_like(self, name: str) -> str | None:
        """The buffer freed last that ``name`` fits, taken off the list."""
        key = self._key(name)
        stack = self.stacks.get(key) if key is not None else None
        if not stack:
            return None
        owner = stack.pop()
        self.members.discard(owner)
        return owner


def _shared_input(graph, res, j, i, owner, end, inplace, float_dtype, kept, static=None,
                  output_views=False) -> str | None:
    """The input whose buffer output ``j`` of layer ``i`` reuses, if any. With ``static`` (a
    planner's shapes), in place also needs both shapes statically known and equal, as onnxruntime's
    planner asks before it lets a kernel write over its input."""
    if j != 0 or not res.layer.inputs:
        return None
    if res.layer.outputs[0] in graph.outputs and not (output_views and res.out.alias):
        return None  # a graph output gets a buffer of its own, handed to the caller (a view copies)
    if res.out.alias:
        src = res.layer.inputs[0]
        return src if src in owner else None
    if not (inplace and res.out.inplace):
        return None
    out = res.layer.outputs[0]
    size = graph.tensors[out].nbytes(float_dtype)
    for name in res.layer.inputs:
        o = owner.get(name)
        if (o is not None and o not in graph.inputs and end.get(o) == i and o not in graph.outputs
                and o not in kept and graph.tensors[o].nbytes(float_dtype) == size
                and (static is None or _statically_equal(static, name, out))):
            return name
    return None


def _statically_equal(static: dict[str, tuple], a: str, b: str) -> bool:
    shape = static.get(a)
    return shape is not None and bool(shape) and None not in shape and static.get(b) == shape


def buffers(graph: Shaped, results: list[LayerResult], float_dtype: str | None = None,
            inplace: bool = True, rounding: Callable[[int], int] = int,
            reuse: dict[str, tuple] | None = None, keep: frozenset[str] = frozenset(),
            owner: dict[str, str] | None = None) -> list[Buffer]:
    """The activation buffers of a shaped graph, each with its lifetime in layer positions.
    ``owner``: the buffer owners, where the caller has them already (see ``buffer_owners``)."""
    owner = owner or buffer_owners(graph, results, inplace, float_dtype, reuse, keep)
    last = _last_uses(graph, results)
    span: dict[str, list[int]] = {}
    size: dict[str, int] = {}
    for i in ran(graph, results):
        res = results[i]
        for k in range(res.out.function_temporaries):  # allocated before the output, freed after
            temp = f"{res.layer.outputs[0]}#{k}"
            span[temp], size[temp] = [i, i], graph.tensors[res.layer.outputs[0]].nbytes(float_dtype)
        for name in res.layer.outputs:
            o = owner.get(name)
            if o is None or o in graph.inputs:
                continue
            s = span.setdefault(o, [i, i])
            s[1] = max(s[1], last.get(name, i))
    return [Buffer(o, rounding(size[o] if o in size else graph.tensors[o].nbytes(float_dtype)), s, e)
            for o, (s, e) in span.items()]


def live_bytes(bufs: list[Buffer], layers: int) -> list[int]:
    """Bytes of ``bufs`` alive while each of ``layers`` positions runs."""
    delta = [0] * (layers + 1)
    for b in bufs:
        delta[b.start] += b.nbytes
        delta[b.end + 1] -= b.nbytes
    live, out = 0, []
    for i in range(layers):
        live += delta[i]
        out.append(live)
    return out


def timeline(graph: Shaped, results: list[LayerResult], float_dtype: str | None = None,
             inplace: bool = True, rounding: Callable[[int], int] = int,
             reuse: dict[str, tuple] | None = None) -> list[int]:
    """Bytes of the activation buffers alive while each layer of ``results`` runs."""
    return live_bytes(buffers(graph, results, float_dtype, inplace, rounding, reuse), len(results))


def _peak_of(live: list[int], results: list[LayerResult]) -> Peak:
    at = max(range(len(live)), key=live.__getitem__) if live else 0
    return Peak(live[at] if live else 0, at, results[at].layer.name if results else "")


def activation_peak(graph: Shaped, results: list[LayerResult], float_dtype: str | None = None,
                    inplace: bool = True, rounding: Callable[[int], int] = int,
                    reuse: dict[str, tuple] | None = None) -> Peak:
    """The maximum over layers of the bytes of the buffers alive while that layer runs."""
    return _peak_of(timeline(graph, results, float_dtype, inplace, rounding, reuse), results)


PATTERN_ALIGNMENT = 64  # onnxruntime's kAllocAlignment: each traced size is rounded up to it


def pattern_peak(graph: Shaped, bufs: list[Buffer]) -> int:
    """The block onnxruntime's memory pattern holds in every run after the first, plus the graph
    outputs (allocated apart, since the caller keeps them).

    The first run traces each planned buffer's allocation and release in order; its
    MemPatternPlanner (onnxruntime 1.31) gives each new buffer the best-fitting gap between the live
    ones sorted by offset, or above the highest one up to the block's size so far, else the end of
    the highest one. The block is the largest offset + size reached, and
    fragmentation can make it larger than the first run's peak -- by 28% on GPT-2 at batch 8.
    """
    outputs = set(graph.outputs)
    planned = [b for b in bufs if b.tensor not in outputs]
    alloc_at: dict[int, list[Buffer]] = {}
    free_at: dict[int, list[Buffer]] = {}
    for b in planned:
        alloc_at.setdefault(b.start, []).append(b)
        free_at.setdefault(b.end, []).append(b)
    live: list[tuple[int, int, str]] = []  # (offset, size, owner), sorted by offset
    block = 0
    for i in sorted(set(alloc_at) | set(free_at)):
        for b in alloc_at.get(i, ()):
            size = -(-b.nbytes // PATTERN_ALIGNMENT) * PATTERN_ALIGNMENT
            if not size:
                continue
            best = _best_fit(live, block, size)
            block = max(block, best + size)
            where = next((k for k, (offset, length, _) in enumerate(live)
                          if offset > best or (offset == best and length >= size)), len(live))
            live.insert(where, (best, size, b.tensor))
        for b in free_at.get(i, ()):
            live = [x for x in live if x[2] != b.tensor]
    return block + sum(b.nbytes for b in bufs if b.tensor in outputs)


def _best_fit(live: list[tuple[int, int, str]], block: int, size: int) -> int:
    """The offset MemPatternPlanner gives a new buffer of ``size``: the best-fitting gap between the
    ``live`` buffers (sorted by offset), or above the highest one up to the ``block`` so far, else the
    end of the highest one."""
    best, waste, current = None, None, 0
    for offset, length, _ in live:
        gap = offset - current
        if gap >= size and (waste is None or gap - size < waste):
            waste, best = gap - size, current
        current = max(current, offset + length)
    # The space above the highest live buffer, up to the block's size so far, is a gap too.
    if block - current >= size and (waste is None or block - current - size < waste):
        best = current
    return current if best is None else best


def workspace_bytes(graph: Shaped, results: list[LayerResult], float_dtype: str | None = None) -> tuple[int, str]:
    """The largest per-op scratch buffer (max, not sum: one op runs at a time) and its layer."""
    best, where = 0, ""
    for res in (results[i] for i in ran(graph, results)):
        if not res.out.workspace:
            continue
        dtype = float_dtype or graph.tensors[res.layer.inputs[0]].dtype
        size = int(res.out.workspace * DTYPE_BYTES[dtype])
        if size > best:
            best, where = size, res.layer.name
    return best, where


def runtime_reuse(graph: Shaped, runtime: Runtime) -> dict[str, tuple] | None:
    """The static shapes that let ``runtime`` hand a dead buffer to a new output, or None."""
    if not runtime.reuse_freed:
        return None
    return graph.static_shapes()


@dataclass(frozen=True)
class InferenceMemory:
    """Inference memory, each term on its own (bytes). ``total`` is the process's expected peak."""

    weights: int  # stored parameters and buffers
    inputs: int  # graph inputs, held by the caller
    activation_peak: int  # in-place liveness: the estimate (a first run)
    activation_peak_layer: str
    pattern_peak: int  # runs after the first under onnxruntime's memory pattern (0 where none)
    activation_peak_plain: int  # liveness without in-place reuse
    activation_sum: int  # every activation at once: the CS231n notes' figure, an upper bound
    workspace: int  # largest per-op scratch (0 unless requested)
    workspace_layer: str
    runtime: int  # the runtime's own constant
    runtime_name: str
    load_peak: int  # while loading: the serialized model and the tensors built from it

    @property
    def activations_held(self) -> int:
        """The activation bytes the process reaches over repeated runs."""
        return max(self.activation_peak, self.pattern_peak)

    @property
    def tensors_peak(self) -> int:
        """Weights + inputs + the activations held: the inference peak of the tensors alone."""
        return self.weights + self.inputs + self.activations_held

    @property
    def steady(self) -> int:
        return self.tensors_peak + self.workspace + self.runtime

    @property
    def total(self) -> int:
        """What the process holds at most: the steady state, or the load peak where larger."""
        return max(self.steady, self.load_peak)

    def to_dict(self) -> dict:
        """Every term, and the derived figures, as plain data (the JSON contract's ``memory.inference``)."""
        return {**asdict(self), "activations_held": self.activations_held, "tensors_peak": self.tensors_peak,
                "steady": self.steady,
                "total": self.total}

    def terms(self) -> dict[str, int]:
        """The terms ``total`` adds up, by name (bytes)."""
        out = {terms.WEIGHTS: self.weights, terms.INPUTS: self.inputs,
               terms.ACTIVATION_PEAK: self.activations_held, terms.WORKSPACE: self.workspace,
               terms.RUNTIME: self.runtime}
        if self.load_peak > self.steady:
            out[terms.LOAD_TRANSIENT] = self.load_peak - self.steady
        return {k: v for k, v in out.items() if v or k != terms.WORKSPACE}


def inference_memory(graph: Shaped, results: list[LayerResult], weights: int, activation_sum: int,
                     runtime: Runtime, float_dtype: str | None = None, workspace: bool = False) -> InferenceMemory:
    """The inference terms of a shaped graph under ``runtime``'s order, allocator and constant."""
    from archcalc.analysis.memory.schedule import ORDERS

    results = ORDERS[runtime.order](graph, results)
    reuse = runtime_reuse(graph, runtime)
    bufs = buffers(graph, results, float_dtype, True, runtime.round, reuse)
    peak = _peak_of(live_bytes(bufs, len(results)), results)
    plain = activation_peak(graph, results, float_dtype, False, runtime.round, reuse)
    ws, ws_layer = workspace_bytes(graph, results, float_dtype) if workspace else (0, "")
    inputs = input_bytes(graph, float_dtype)
    pattern = pattern_peak(graph, bufs) if runtime.mem_pattern else 0
    return InferenceMemory(
        weights=weights, inputs=inputs, activation_peak=runtime.reserve(peak.bytes),
        activation_peak_layer=peak.layer_name, pattern_peak=runtime.reserve(pattern),
        activation_peak_plain=runtime.reserve(plain.bytes),
        activation_sum=activation_sum, workspace=ws, workspace_layer=ws_layer, runtime=runtime.overhead,
        runtime_name=runtime.name,
        # Loading holds the serialized weights and the tensors made from them at once.
        load_peak=2 * weights + runtime.overhead,
    )
