"""Activation memory by tensor liveness over the execution order.

A buffer is allocated when its layer runs (while that layer's inputs are still alive) and freed
after its last reader; graph outputs live to the end. Views (Reshape, Flatten, Squeeze, Unsqueeze,
Identity, inference Dropout) share their input's buffer instead of adding one. Graph inputs are
held by the caller and reported apart, not in the activation peak.
"""

from __future__ import annotations

from dataclasses import dataclass

from archcalc.infer import LayerResult
from archcalc.ir import Graph, Role

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


def buffers(graph: Graph, results: list[LayerResult], float_dtype: str | None = None) -> list[Buffer]:
    """The activation buffers of a shaped graph, views folded into the buffer they look at."""
    owner = {name: name for name in graph.inputs}  # tensor -> the tensor whose buffer it uses
    span: dict[str, list[int]] = {}
    last = len(results) - 1
    for i, res in enumerate(results):
        if res.folded:
            continue
        for name in res.layer.inputs:
            if owner.get(name) in span:
                span[owner[name]][1] = i
        for j, name in enumerate(res.layer.outputs):
            t = graph.tensors.get(name) if name else None
            if t is None or t.role not in RUNTIME_ROLES:
                continue
            src = res.layer.inputs[0] if res.out.alias and j == 0 and res.layer.inputs else None
            if src in owner:
                owner[name] = owner[src]
            else:
                owner[name] = name
                span[name] = [i, i]
            if t.role is Role.OUTPUT and owner[name] in span:
                span[owner[name]][1] = last
    return [Buffer(name, graph.tensors[name].nbytes(float_dtype), s, e) for name, (s, e) in span.items()]


def activation_peak(graph: Graph, results: list[LayerResult], float_dtype: str | None = None) -> Peak:
    """The maximum over layers of the bytes of the buffers alive while that layer runs."""
    delta = [0] * (len(results) + 1)
    for b in buffers(graph, results, float_dtype):
        delta[b.start] += b.nbytes
        delta[b.end + 1] -= b.nbytes
    best, at, live = 0, 0, 0
    for i in range(len(results)):
        live += delta[i]
        if live > best:
            best, at = live, i
    name = results[at].layer.name if results else ""
    return Peak(best, at, name)
