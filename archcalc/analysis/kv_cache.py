"""The KV cache a decoder keeps per token, read from the graph: what serving memory grows with.

Each attention layer multiplies the queries by the keys (``scores = Q K^T``) and the probabilities
by the values; a server keeps those keys and values for every token of every sequence. The bytes
per token are the key and value operands' bytes over the batch and the key length (the scores'
last axis), taken before any copy made to share them across query heads (an ``Expand`` of
grouped-query attention's key/value heads is walked back to the heads stored). So grouped-query,
multi-query and multi-head attention, head dims other than hidden / heads, and per-layer head
counts come out of the graph as built, without a formula per variant. ``dtype`` prices the cache
in another element type (fp8, int8) than the model computes in.
"""

from __future__ import annotations

from dataclasses import dataclass

from archcalc.analysis.checkpointing import attention_core
from archcalc.analysis.infer import LayerResult
from archcalc.dtypes import DTYPE_BYTES
from archcalc.ir import Shaped

# Ops a stored key or value passes through on its way into the product: they view, reorder or copy
# it, and hold no more distinct values than what they read.
VIEWS = frozenset({"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Identity", "Cast", "Tile"})


@dataclass(frozen=True)
class KVCache:
    """Bytes a token adds to the cache, over ``layers`` attention layers."""

    bytes_per_token: int
    layers: int
    dtype: str | None  # the element type priced (None: the graph's own)


def _stored(shaped: Shaped, results: list[LayerResult], name: str) -> str:
    """The smallest tensor on the chain of views that ends at ``name``: what is cached."""
    best = name
    while True:
        at = shaped.producer(name)
        if at is None or results[at].layer.op_type not in VIEWS or not results[at].layer.inputs:
            return best
        name = results[at].layer.inputs[0]
        if shaped.tensors[name].numel and shaped.tensors[name].numel < shaped.tensors[best].numel:
            best = name


def kv_cache(shaped: Shaped, results: list[LayerResult], batch: int, dtype: str | None = None) -> KVCache | None:
    """The cache per token of the attention layers ``results`` hold (None: the graph has none)."""
    _, _, core = attention_core(shaped, results)
    total, layers = 0, 0
    for i in sorted(core):  # the core's products are the scores' (Q K^T), one per attention layer
        layer = results[i].layer
        if layer.op_type != "MatMul":
            continue
        scores = shaped.tensors[layer.outputs[0]]
        keys = scores.shape[-1]
        k = shaped.tensors[_stored(shaped, results, layer.inputs[1])]
        v_product = _values_product(shaped, results, layer.outputs[0])
        if v_product is None or not keys:
            continue
        v = shaped.tensors[_stored(shaped, results, results[v_product].layer.inputs[1])]
        width = DTYPE_BYTES[dtype] if dtype else None
        size = sum(t.numel * width if width else t.nbytes() for t in (k, v))
        total += int(size // (batch * keys))
        layers += 1
    return KVCache(total, layers, dtype) if layers else None


def _values_product(shaped: Shaped, results: list[LayerResult], scores: str) -> int | None:
    """The product of the probabilities with the values, downstream of ``scores``."""
    todo, seen = [scores], set()
    while todo:
        name = todo.pop()
        for j in shaped.consumers(name):
            if j in seen:
                continue
            seen.add(j)
            layer = results[j].layer
            if layer.op_type == "MatMul" and layer.inputs[0] == name:
                return j
            if layer.op_type in ("Mul", "Div", "Add", "Softmax", "Cast", "Dropout", "Where"):
                todo.extend(o for o in layer.outputs[:1] if o)
    return None
