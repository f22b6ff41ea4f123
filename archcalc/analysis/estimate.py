"""The estimate: per-layer costs and the model's totals, as typed records.

Presentation lives in ``archcalc.render``; this module only counts. Conventions are in
``archcalc.conventions``. Loading a model is the API's (``archcalc.api``): this takes a graph.
"""

from __future__ import annotations

import html
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from archcalc.analysis.kv_cache import KVCache, kv_cache, kv_dict
from archcalc.analysis.memory import runtimes
from archcalc.analysis.memory.liveness import RUNTIME_ROLES, InferenceMemory, inference_memory, input_bytes
from archcalc.analysis.memory.training import TrainingMemory, saved_by_layer, training_memory
from archcalc.analysis.receptive import receptive_fields
from archcalc.analysis.records import LayerCost, SharedWeight, Totals, estimate_dict, layers_frame
from archcalc.analysis.walk.infer import LayerResult, batch_like, bind_inputs, infer
from archcalc.conventions import DEFAULT_OPTIMIZER
from archcalc.dtypes import MIXED, PRECISIONS, WEIGHT_DTYPES
from archcalc.errors import InputError
from archcalc.ir import Graph, Role, Shaped

DEFAULT_RUNTIME = "onnxruntime-cpu"  # whose planner the headline activation peak follows
TRAINING_RUNTIME = "pytorch-cuda"  # the engine a training step's total is priced for by default


@dataclass(frozen=True)
class Estimate:
    """What ``archcalc.estimate`` returns: the shaped graph, its layer costs and totals.

    ``peak_activation_bytes`` is the headline activation figure: what the default runtime holds.
    """

    graph: Shaped
    layers_list: list[LayerCost]
    totals: Totals
    batch: int
    dtype: str | None
    results: list[LayerResult] = field(repr=False, default_factory=list)
    param_roles: dict[int, dict[str, str]] = field(repr=False, default_factory=dict)
    _memo: dict = field(repr=False, compare=False, default_factory=dict)

    @property
    def float_dtype(self) -> str | None:
        return PRECISIONS.get(self.dtype) if self.dtype else None

    def inference_memory(self, runtime: str = DEFAULT_RUNTIME, overhead: int | None = None,
                         workspace: bool = False) -> InferenceMemory:
        """Inference memory terms under ``runtime`` (see ``archcalc.analysis.memory.runtimes``), computed once."""
        key = ("inference", runtime, overhead, workspace)
        if key not in self._memo:
            rt = runtimes.runtime(runtime, overhead)
            self._memo[key] = inference_memory(self.graph, self.results, self.totals.param_bytes,
                                               self.totals.activation_bytes, rt, self.float_dtype, workspace)
        return self._memo[key]

    def training_memory(self, optimizer: str = DEFAULT_OPTIMIZER, impl: str | None = None,
                        runtime: str = TRAINING_RUNTIME, overhead: int | None = None,
                        device: str = "cuda") -> TrainingMemory:
        """One training step's memory with ``optimizer`` under ``runtime``, with PyTorch's defaults on
        ``device`` ("cuda" or "cpu"); ``impl`` overrides its optimizer implementation: "foreach"
        (CUDA's default) or per-tensor "single" (CPU's) (see ``archcalc.analysis.memory.training``)."""
        key = ("training", optimizer, impl, runtime, overhead, device)
        self.graph.graph.trainable()
        if key not in self._memo:
            rt = runtimes.runtime(runtime, overhead)
            self._memo[key] = training_memory(self.graph, self.results, self.param_roles,
                                              self.totals.activation_bytes, optimizer, self.float_dtype,
                                              mixed=self.dtype in MIXED, impl=impl, runtime=rt, device=device)
        return self._memo[key]

    @property
    def peak_activation_bytes(self) -> int:
        """The headline: the activation bytes the default runtime holds (its first run or, where
        larger, the memory-pattern block of the runs after it)."""
        return self.inference_memory().activations_held

    def kv_cache(self, dtype: str | None = None) -> KVCache | None:
        """Keys and values per token of the attention layers (see ``archcalc.analysis.kv_cache``), in
        ``dtype`` (--kv-dtype) or else at the width the model computes in: ``--dtype`` or a config's
        own (an fp32 design estimated in fp16 caches 2 bytes a value, not 4)."""
        dtype = dtype or self.float_dtype
        key = ("kv", dtype)
        if key not in self._memo:
            self._memo[key] = kv_cache(self.graph, self.results, self.batch, dtype)
        return self._memo[key]

    def saved_by_layer(self, device: str = "cuda") -> dict[str, int]:
        return saved_by_layer(self.graph, self.results, self.float_dtype, device)

    @cached_property
    def layers(self):
        """The per-layer table as a pandas DataFrame, in execution order."""
        return layers_frame(self.layers_list)

    def to_dict(self) -> dict:
        """The JSON contract (docs/json.md)."""
        im = self.inference_memory()
        kv = self.kv_cache()
        return {**estimate_dict(self.graph, self.layers_list, self.totals, im, self.batch, self.dtype),
                "kv_cache": kv_dict(kv) if kv else None}

    def _repr_html_(self) -> str:
        """A notebook shows the per-layer table and the headline totals."""
        t = self.totals
        head = (f"<p><b>{html.escape(self.graph.name)}</b>, batch {self.batch}: {t.params:,} parameters, "
                f"{t.macs:,} MACs, activation peak {self.peak_activation_bytes:,} bytes</p>")
        return head + self.layers._repr_html_()


def _param_roles(graph: Shaped, results: list[LayerResult]) -> dict[int, dict[str, str]]:
    """For each executed layer, its parameter inputs and their roles (weight / bias / buffer / quant).

    A rule names its parameter inputs (of any dtype: a QLinearConv's int32 bias); any other
    non-scalar stored tensor of a weight dtype (floats, and int8 / int4 for quantized weights) a layer
    reads is a weight too (a MatMul's matrix, a positional embedding added in) -- unless the rule read
    its values to size the output (a Resize's scales). Wider integers and scalars are never parameters.
    """
    roles: dict[int, dict[str, str]] = {}
    for i, res in enumerate(results):
        if res.folded and res.status != "not taken":
            continue
        mine: dict[str, str] = {}
        for j, name in enumerate(res.layer.inputs):
            t = graph.tensors.get(name) if name else None
            if t is None or j in res.out.shape_inputs:
                continue
            role = res.out.params.get(j)
            if role is None and t.dtype in WEIGHT_DTYPES and t.numel > 1:
                role = "weight"
            if not role:
                continue
            for stored, own in _stored_sources(graph, results, name, declared=j in res.out.params):
                mine[stored] = own or role
        roles[i] = mine
    return roles


def _stored_sources(graph: Shaped, results: list[LayerResult], name: str,
                    declared: bool = False) -> list[tuple[str, str | None]]:
    """The stored tensors a layer input comes from, each with the role the folding op gave it (None:
    the reader's): itself (or the weight it views), or -- for a value folded at load time from stored
    weights (a Slice of a Constant, a DequantizeLinear of int8 weights) -- the stored tensors it was
    computed from, which the runtime keeps (a dequantized weight's scale stays a scale). ``declared``:
    the reader's rule names this input a parameter, so even one element is one (a one-output bias)."""
    t = graph.tensors[name]
    if t.role in (Role.WEIGHT, Role.BUFFER):
        return [(t.alias_of or name, None)]
    if t.role is not Role.CONSTANT or t.dtype not in WEIGHT_DTYPES or (t.numel <= 1 and not declared):
        return []
    found: list[tuple[str, str | None]] = []
    todo, seen = [name], set()
    while todo:
        at = graph.producer(todo.pop())
        if at is None or at in seen or not results[at].folded:
            continue
        seen.add(at)
        folded = results[at]
        for j, src in enumerate(folded.layer.inputs):
            s = graph.tensors.get(src) if src else None
            own = folded.out.params.get(j)
            if s is None or (s.dtype not in WEIGHT_DTYPES and own is None) or (s.numel <= 1 and own is None):
                continue
            if s.role in (Role.WEIGHT, Role.BUFFER):
                found.append((s.alias_of or src, own if own in ("quant", "bias") else None))
            elif s.role is Role.CONSTANT:
                todo.append(src)
    return found


def _settle_roles(graph: Shaped, roles: dict[int, dict[str, str]]) -> dict[str, str]:
    """Initializers no layer reads as a parameter are constants; running statistics and quantization
    parameters are buffers (stored, not trained). Returns each stored tensor's role by name."""
    used: dict[str, str] = {}
    for mine in roles.values():
        for name, role in mine.items():
            # A tensor one layer reads as a weight and another as a scale (a shared zero point) is
            # whatever role ranks first: a trained weight outranks the rest.
            if name not in used or RANK[role] < RANK[used[name]]:
                used[name] = role
    for t in graph.tensors.values():
        if t.role in (Role.WEIGHT, Role.BUFFER):
            settled = used.get(t.alias_of or t.name)
            t.role = Role.BUFFER if settled in ("buffer", "quant") else Role.WEIGHT if settled else Role.CONSTANT
    return used


RANK = {"weight": 0, "bias": 1, "buffer": 2, "quant": 3}


def _layer_costs(graph: Shaped, results: list[LayerResult], roles, float_dtype) -> list[LayerCost]:
    fields = receptive_fields(graph, results)
    rows = []
    for i, res in enumerate(results):
        if res.folded:
            continue
        outs = [graph.tensors[o] for o in res.layer.outputs if o and graph.tensors[o].role in RUNTIME_ROLES]
        by_role: Counter[str] = Counter()
        for name, role in roles[i].items():
            by_role[role] += graph.tensors[name].numel
        # The first output the node gives (an optional first one may be omitted, as LSTM's Y).
        given = next((o for o in res.layer.outputs if o), None)
        first_name, first_shape = (given, graph.tensors[given].shape) if given else ("", ())
        rows.append(LayerCost(
            index=i, name=res.layer.name, op_type=res.layer.op_type, output=first_name,
            shape=first_shape, activations=sum(t.numel for t in outs),
            activation_bytes=sum(t.nbytes(float_dtype) for t in outs),
            weights=by_role["weight"], biases=by_role["bias"], buffers=by_role["buffer"],
            macs=res.out.macs * res.repeat, flops=(2 * res.out.macs + res.out.flops) * res.repeat,
            has_rule=res.has_rule,
            status=res.status, reason=res.reason,
            receptive_field=fields.get(first_name, (1, 1))[0], effective_stride=fields.get(first_name, (1, 1))[1],
        ))
    return rows


def _shared(graph: Shaped, readers: Counter) -> tuple[SharedWeight, ...]:
    """The stored weights several layers read, each classed as tied or merged by its values."""
    out = []
    for name in sorted(n for n, k in readers.items() if k > 1):
        values = graph.graph.stored_value(name) if graph.graph.stored_value else None
        kind = "unknown" if values is None else \
            "merged" if values.size and bool(np.all(values == values.flat[0])) else "tied"
        out.append(SharedWeight(name, readers[name], graph.tensors[name].numel, kind))
    return tuple(out)


def _totals(graph: Shaped, rows: list[LayerCost], roles, float_dtype, used: dict[str, str]) -> Totals:
    stored = [t for t in graph.tensors.values() if t.role in (Role.WEIGHT, Role.BUFFER) and not t.alias_of]
    readers = Counter(name for mine in roles.values() for name, role in mine.items() if role != "buffer")
    inputs = [graph.tensors[n] for n in graph.inputs]
    in_bytes = input_bytes(graph, float_dtype)
    return Totals(
        params=sum(t.numel for t in stored if t.role is Role.WEIGHT),
        params_per_layer=sum(r.params for r in rows),
        buffers=sum(t.numel for t in stored if used.get(t.name) == "buffer"),
        quant_params=sum(t.numel for t in stored if used.get(t.name) == "quant"),
        # --dtype prices the model's tensors; a quantizer's scales stay as the checkpoint stores them
        param_bytes=sum(t.nbytes(None if used.get(t.name) == "quant" else float_dtype) for t in stored),
        input_bytes=in_bytes,
        activation_elements=sum(t.numel for t in inputs) + sum(r.activations for r in rows),
        activation_bytes=in_bytes + sum(r.activation_bytes for r in rows),
        macs=sum(r.macs for r in rows),
        flops=sum(r.flops for r in rows),
        shared=_shared(graph, readers),
        unsupported_ops=dict(Counter(r.op_type for r in rows if not r.has_rule and r.status != "unknown")),
        unknown={r.name: r.reason for r in rows if r.status == "unknown"},
        bounded_layers=sum(r.status == "bound" for r in rows),
    )


def analyse(graph: Graph, batch: int | None = None, dims: dict[str, int] | None = None,
            inputs: dict[str, str | tuple[int, ...]] | None = None, dtype: str | None = None,
            strict: bool = False) -> Estimate:
    """Bind, shape and cost ``graph`` (from any front end); ``strict``: a node that cannot be sized
    before running is an error rather than unknown."""
    if dtype is not None and dtype not in PRECISIONS:
        raise InputError(f"--dtype {dtype}: choose one of {', '.join(PRECISIONS)}")
    dtype = dtype or graph.default_dtype
    float_dtype = PRECISIONS.get(dtype) if dtype else None
    bound = bind_inputs(graph, batch, dims, inputs)
    shaped, results = infer(graph, bound, strict, dims)
    roles = _param_roles(shaped, results)
    used = _settle_roles(shaped, roles)
    rows = _layer_costs(shaped, results, roles, float_dtype)
    totals = _totals(shaped, rows, roles, float_dtype, used)
    return Estimate(shaped, rows, totals, _batch_label(graph, bound, batch), dtype, results, roles)


def _batch_label(graph: Graph, bound: dict[str, tuple[int, ...]], batch: int | None) -> int:
    """The batch the estimate is for: the size bound (by --batch, --dim or --input) to the first
    batch-like symbolic dim of the inputs; ``batch`` (or 1) where no input has one -- a fixed
    [3, H, W] image is not a batch of 3."""
    for name in graph.inputs:
        shape = graph.tensors[name].shape or ()
        for i, d in enumerate(shape):
            if isinstance(d, str) and batch_like(d, i) and name in bound and i < len(bound[name]):
                return bound[name][i]
    return batch or 1


class Estimates:
    """One graph's estimates under one binding (dims, inputs, dtype), one per batch, shared by every
    question asked of it: an estimate depends on neither the GPU nor the mode, so a fit table, a
    sweep and the largest-batch searches of every card and mode read the same analyses. The most
    recent ``keep`` batches are kept (a search revisits the batches near its answer)."""

    def __init__(self, graph: Graph, dims: dict[str, int] | None = None,
                 inputs: dict[str, str | tuple[int, ...]] | None = None, dtype: str | None = None, keep: int = 32):
        self.graph, self.dims, self.inputs, self.dtype, self.keep = graph, dims, inputs, dtype, keep
        self._by_batch: OrderedDict[int, Estimate] = OrderedDict()

    def at(self, batch: int) -> Estimate:
        if batch in self._by_batch:
            self._by_batch.move_to_end(batch)
        else:
            self._by_batch[batch] = analyse(self.graph, batch, self.dims, self.inputs, self.dtype)
            if len(self._by_batch) > self.keep:
                self._by_batch.popitem(last=False)
        return self._by_batch[batch]
