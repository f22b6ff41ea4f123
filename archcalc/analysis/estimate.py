"""The estimate: per-layer costs and the model's totals, as typed records.

Presentation lives in ``report``; this module only counts. Conventions are in ``conventions``.
"""

from __future__ import annotations

import contextlib
import gc
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

from archcalc.analysis import runtimes
from archcalc.analysis.infer import LayerResult, bind_inputs, infer
from archcalc.analysis.memory import RUNTIME_ROLES, InferenceMemory, activation_peak, inference_memory, input_bytes
from archcalc.analysis.receptive import receptive_fields
from archcalc.analysis.training import TrainingMemory, saved_by_layer, training_memory
from archcalc.dtypes import FLOAT_DTYPES, MIXED, PRECISIONS
from archcalc.errors import InputError
from archcalc.ir import Graph, Role


@dataclass
class LayerCost:
    """One executed layer. Element counts, not bytes, except ``activation_bytes``."""

    index: int
    name: str
    op_type: str
    output: str
    shape: tuple[int, ...]
    activations: int  # elements of every tensor the layer writes
    activation_bytes: int
    weights: int
    biases: int
    buffers: int
    macs: int
    flops: int  # 2 x MACs plus the layer's other floating-point ops
    has_rule: bool
    receptive_field: int = 1  # input pixels one output element sees (first spatial axis)
    effective_stride: int = 1  # input pixels between neighbouring outputs

    @property
    def params(self) -> int:
        return self.weights + self.biases


@dataclass
class Totals:
    """The model's totals; field names are the JSON contract (see docs/json.md)."""

    params: int  # per layer: an initializer shared by k layers counts k times
    params_stored: int  # each distinct initializer once: what memory holds
    buffers: int
    param_bytes: int  # stored parameters and buffers, at the priced dtype
    input_bytes: int
    activation_elements: int  # graph inputs + every tensor a layer writes (views included)
    activation_bytes: int
    peak_activation_bytes: int  # largest set of live activation buffers (in-place reuse)
    peak_bytes: int  # param_bytes + input_bytes + peak_activation_bytes
    peak_layer: str
    macs: int
    flops: int
    shared_initializers: list[str] = field(default_factory=list)
    unsupported_ops: dict[str, int] = field(default_factory=dict)  # op type -> layers with no cost rule


@dataclass
class Estimate:
    """What ``archcalc.estimate`` returns: the shaped graph, its layer costs and totals."""

    graph: Graph
    layers_list: list[LayerCost]
    totals: Totals
    batch: int
    dtype: str | None
    results: list[LayerResult] = field(repr=False, default_factory=list)
    param_roles: dict[int, dict[str, str]] = field(repr=False, default_factory=dict)

    @property
    def float_dtype(self) -> str | None:
        return PRECISIONS.get(self.dtype) if self.dtype else None

    def inference_memory(self, runtime: str = "onnxruntime-cpu", overhead: int | None = None,
                         workspace: bool = False) -> InferenceMemory:
        """Inference memory terms under ``runtime`` (see ``archcalc.analysis.runtimes``)."""
        rt = runtimes.runtime(runtime, overhead)
        return inference_memory(self.graph, self.results, self.totals.param_bytes,
                                self.totals.activation_bytes, rt, self.float_dtype, workspace)

    def training_memory(self, optimizer: str = "sgd", impl: str = "foreach") -> TrainingMemory:
        """One training step's memory with ``optimizer``; ``impl``: PyTorch's "foreach" (CUDA's
        default) or per-tensor "single" (CPU's) optimizer implementation (see ``archcalc.analysis.training``)."""
        return training_memory(self.graph, self.results, self.param_roles, self.totals.activation_bytes,
                               optimizer, self.float_dtype, mixed=self.dtype in MIXED, impl=impl)

    def saved_by_layer(self) -> dict[str, int]:
        return saved_by_layer(self.graph, self.results, self.float_dtype)

    @cached_property
    def layers(self):
        """The per-layer table as a pandas DataFrame, in execution order."""
        from archcalc.render.text import layers_frame

        return layers_frame(self)

    def to_dict(self) -> dict:
        from archcalc.render.text import estimate_dict

        return estimate_dict(self)


def _param_roles(graph: Graph, results: list[LayerResult]) -> dict[int, dict[str, str]]:
    """For each executed layer, its parameter inputs and their roles (weight / bias / buffer).

    A rule names its parameter inputs; any other non-scalar float initializer a layer reads is a
    weight too (a MatMul's matrix, a positional embedding added in). Integer and scalar constants
    are never parameters.
    """
    roles: dict[int, dict[str, str]] = {}
    for i, res in enumerate(results):
        if res.folded:
            continue
        mine = {}
        for j, name in enumerate(res.layer.inputs):
            t = graph.tensors.get(name) if name else None
            if t is None or t.role not in (Role.WEIGHT, Role.BUFFER) or t.dtype not in FLOAT_DTYPES:
                continue
            role = res.out.params.get(j) or ("weight" if t.numel > 1 else None)
            if role:
                mine[t.alias_of or name] = role
        roles[i] = mine
    return roles


def _settle_roles(graph: Graph, roles: dict[int, dict[str, str]]) -> None:
    """Initializers no layer reads as a parameter are constants; running statistics are buffers."""
    used = {name: role for mine in roles.values() for name, role in mine.items()}
    for t in graph.tensors.values():
        if t.role in (Role.WEIGHT, Role.BUFFER):
            role = used.get(t.alias_of or t.name)
            t.role = Role.BUFFER if role == "buffer" else Role.WEIGHT if role else Role.CONSTANT


def _layer_costs(graph: Graph, results: list[LayerResult], roles, float_dtype) -> list[LayerCost]:
    fields = receptive_fields(graph, results)
    rows = []
    for i, res in enumerate(results):
        if res.folded:
            continue
        outs = [graph.tensors[o] for o in res.layer.outputs if o and graph.tensors[o].role in RUNTIME_ROLES]
        by_role = Counter()
        for name, role in roles[i].items():
            by_role[role] += graph.tensors[name].numel
        first = graph.tensors[res.layer.outputs[0]]
        rows.append(LayerCost(
            index=i, name=res.layer.name, op_type=res.layer.op_type, output=first.name,
            shape=first.shape, activations=sum(t.numel for t in outs),
            activation_bytes=sum(t.nbytes(float_dtype) for t in outs),
            weights=by_role["weight"], biases=by_role["bias"], buffers=by_role["buffer"],
            macs=res.out.macs, flops=2 * res.out.macs + res.out.flops, has_rule=res.has_rule,
            receptive_field=fields.get(first.name, (1, 1))[0], effective_stride=fields.get(first.name, (1, 1))[1],
        ))
    return rows


def _totals(graph: Graph, results, rows: list[LayerCost], roles, float_dtype) -> Totals:
    stored = [t for t in graph.tensors.values() if t.role in (Role.WEIGHT, Role.BUFFER) and not t.alias_of]
    readers = Counter(name for mine in roles.values() for name, role in mine.items() if role != "buffer")
    inputs = [graph.tensors[n] for n in graph.inputs]
    peak = activation_peak(graph, results, float_dtype)
    param_bytes = sum(t.nbytes(float_dtype) for t in stored)
    in_bytes = input_bytes(graph, float_dtype)
    return Totals(
        params=sum(r.params for r in rows),
        params_stored=sum(t.numel for t in stored if t.role is Role.WEIGHT),
        buffers=sum(t.numel for t in stored if t.role is Role.BUFFER),
        param_bytes=param_bytes,
        input_bytes=in_bytes,
        activation_elements=sum(t.numel for t in inputs) + sum(r.activations for r in rows),
        activation_bytes=in_bytes + sum(r.activation_bytes for r in rows),
        peak_activation_bytes=peak.bytes,
        peak_bytes=param_bytes + in_bytes + peak.bytes,
        peak_layer=peak.layer_name,
        macs=sum(r.macs for r in rows),
        flops=sum(r.flops for r in rows),
        shared_initializers=sorted(n for n, k in readers.items() if k > 1),
        unsupported_ops=dict(Counter(r.op_type for r in rows if not r.has_rule)),
    )


def analyse(graph: Graph, batch: int | None = None, dims: dict[str, int] | None = None,
            inputs: dict[str, str | tuple[int, ...]] | None = None, dtype: str | None = None) -> Estimate:
    """Bind, shape and cost ``graph`` (from any front end)."""
    if dtype is not None and dtype not in PRECISIONS:
        raise InputError(f"--dtype {dtype}: choose one of {', '.join(PRECISIONS)}")
    float_dtype = PRECISIONS.get(dtype) if dtype else None
    bind_inputs(graph, batch, dims, inputs)
    results = infer(graph)
    roles = _param_roles(graph, results)
    _settle_roles(graph, roles)
    rows = _layer_costs(graph, results, roles, float_dtype)
    totals = _totals(graph, results, rows, roles, float_dtype)
    return Estimate(graph, rows, totals, batch or 1, dtype, results, roles)


def estimate(source, batch: int | None = None, dims: dict[str, int] | None = None,
             inputs: dict[str, str | tuple[int, ...]] | None = None, dtype: str | None = None) -> Estimate:
    """Estimate an ONNX model: a path, an ``onnx.ModelProto``, or the name of a zoo model.

    ``batch`` binds each input's symbolic first dim (default 1); ``dims`` binds named symbolic dims;
    ``inputs`` sets whole input shapes (``{"x": "1x3x224x224"}``); ``dtype`` (fp32, fp16, bf16,
    int8) re-prices floating-point tensors.
    """
    from archcalc.frontends.sources import load_graph

    with _collector_paused():
        return analyse(load_graph(source), batch, dims, inputs, dtype)


@contextlib.contextmanager
def _collector_paused():
    """Building a graph allocates many small objects and frees none, so the cyclic garbage
    collector's passes find nothing while their cost grows with the heap: 30% of the time of a
    20,000-node graph. Paused while the estimate is built, restored after."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()

