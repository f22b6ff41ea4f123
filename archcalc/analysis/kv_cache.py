"""The KV cache a decoder keeps per token, read from the graph: what serving memory grows with.

Each attention layer multiplies the queries by the keys (``scores = Q K^T``) and the probabilities
by the values -- as two products (eager) or inside one fused op (ONNX ``Attention``); a server keeps
those keys and values for every token of every sequence. The bytes per token are the key and value
operands' bytes over the batch and the key length, taken before any copy made to share them (an
``Expand`` of grouped-query attention's key/value heads, or of latent attention's one rotary key head,
is walked back to what is stored) and summed over the parts a ``Concat`` joins (a past and the new
tokens; a key's rotary and plain halves). Where keys and values are both up-projected by one matrix
from a narrower latent (DeepSeek's multi-head latent attention), the latent is what is cached, as
vLLM, SGLang and transformers cache it; ``expanded_bytes_per_token`` is the keys and values
themselves. So MHA, GQA, MQA, MLA, head dims other than hidden / heads and per-layer head counts
come out of the graph as built, without a formula per variant. A layer's sliding window (node
metadata ``archcalc.window``) bounds how many tokens it keeps. ``dtype`` prices the cache in another
element type (fp8, int8) than the model computes in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from archcalc.analysis.patterns import FUSED_ATTENTION, SPLITS, TOKEN_NORMS, VIEWS, attention_core, values_product
from archcalc.analysis.walk.infer import LayerResult
from archcalc.dtypes import DTYPE_BYTES
from archcalc.ir import WINDOW_KEY, Layer, Role, Shaped


@dataclass(frozen=True)
class LayerKV:
    """One attention layer's cache: bytes a token adds, and how many tokens it keeps."""

    bytes_per_token: int
    expanded_bytes_per_token: int  # the keys and values themselves (differs from the above for a latent)
    window: int | None  # a sliding window keeps the last ``window`` tokens; None keeps them all


@dataclass(frozen=True)
class KVCache:
    """The cache of ``layers``, priced in ``dtype`` (None: the graph's own element type)."""

    layers: tuple[LayerKV, ...]
    dtype: str | None

    @property
    def bytes_per_token(self) -> int:
        return sum(layer.bytes_per_token for layer in self.layers)

    @property
    def expanded_bytes_per_token(self) -> int:
        return sum(layer.expanded_bytes_per_token for layer in self.layers)

    @property
    def latent(self) -> bool:
        return self.bytes_per_token != self.expanded_bytes_per_token

    @property
    def windowed(self) -> int:
        return sum(layer.window is not None for layer in self.layers)

    def sequence_bytes(self, tokens: int) -> int:
        """What one sequence of ``tokens`` holds: each layer keeps at most its window."""
        return sum(layer.bytes_per_token * min(tokens, layer.window or tokens) for layer in self.layers)


def kv_dict(kv: KVCache) -> dict:
    """The JSON contract's ``kv_cache`` (docs/json.md)."""
    return {"bytes_per_token": kv.bytes_per_token, "layers": len(kv.layers),
            "expanded_bytes_per_token": kv.expanded_bytes_per_token,
            "windows": [layer.window for layer in kv.layers]}


class _Walk:
    def __init__(self, shaped: Shaped, results: list[LayerResult]):
        self.shaped, self.results = shaped, results

    def layer(self, name: str):
        at = self.shaped.producer(name)
        return None if at is None else self.results[at].layer

    def numel(self, names) -> int:
        return sum(self.shaped.tensors[n].numel for n in names)

    def parts(self, name: str) -> list[str]:
        """The tensors stored for ``name``: the smallest on its chain of views, a Concat's parts each."""
        layer = self.layer(name)
        if layer is None or not layer.inputs:
            return [name]
        if layer.op_type == "Concat":
            if any(self.shaped.tensors[i].role == Role.INPUT for i in layer.inputs if i):
                return [name]  # a past fed in, joined by the new tokens: the cache, as it is laid out
            return [p for i in layer.inputs if i for p in self.parts(i)]
        if layer.op_type == "ScatterND":  # parts written into a blank (an exporter's concat): the parts
            data = self.layer(layer.inputs[0])
            blank = data is not None and data.op_type == "ConstantOfShape"
            return ([] if blank else self.parts(layer.inputs[0])) + self.parts(layer.inputs[2])
        if layer.op_type in VIEWS:
            inner = self.parts(layer.inputs[0])
            return inner if self.numel(inner) <= self.numel([name]) else [name]
        return [name]

    def source(self, name: str, through: frozenset[str]) -> str:
        """Back from ``name`` through ``through`` ops to the tensor another op wrote."""
        while (layer := self.layer(name)) is not None and layer.inputs and layer.op_type in through:
            name = layer.inputs[0]
        return name

    def feeds(self, src: str, name: str) -> bool:
        """Whether ``src`` is among what ``name`` is computed from, short of any other product (the
        query of a fused QKV projection comes from the same product as its keys and values)."""
        todo, seen = [name], set()
        while todo:
            n = todo.pop()
            if n == src:
                return True
            layer = self.layer(n)
            if n in seen or layer is None or layer.op_type in ("MatMul", "Gemm"):
                continue
            seen.add(n)
            todo += [i for i in layer.inputs if i and self.shaped.tensors[i].role == Role.ACTIVATION]
        return False

    def latent(self, keys: list[str], values: list[str], query: str) -> list[str]:
        """The parts to cache: keys' and values' parts that one weight matrix up-projects from a
        narrower tensor are replaced by that tensor (once) -- unless that product also makes the
        query: a fused QKV projection (Phi-3's qkv_proj, GPT-2's c_attn) caches its keys and values."""
        groups: dict[str, list[str]] = {}
        for p in keys + values:
            groups.setdefault(self.source(p, SPLITS), []).append(p)
        out = []
        for src, members in groups.items():
            up = self.layer(src)
            shared = any(m in keys for m in members) and any(m in values for m in members)
            if shared and up is not None and up.op_type == "MatMul" and not self.feeds(src, query) and \
                    self.shaped.tensors[up.inputs[1]].role == Role.WEIGHT:
                narrow = self.parts(self.source(up.inputs[0], VIEWS | TOKEN_NORMS))
                if self.numel(narrow) < self.numel(members):
                    out += narrow
                    continue
            out += members
        return list(dict.fromkeys(out))


def kv_cache(shaped: Shaped, results: list[LayerResult], batch: int, dtype: str | None = None) -> KVCache | None:
    """The cache per token of the attention layers ``results`` hold (None: the graph has none)."""
    walk = _Walk(shaped, results)
    layers = []
    for q, k, v, keys, layer, _ in attentions(shaped, results):
        if not keys:
            continue
        kparts, vparts = walk.parts(k), walk.parts(v)
        cached = walk.latent(kparts, vparts, q)

        tokens = batch * keys
        window = layer.meta.get(WINDOW_KEY)
        layers.append(LayerKV(_bytes(shaped, cached, dtype) // tokens,
                              _bytes(shaped, list(dict.fromkeys(kparts + vparts)), dtype) // tokens,
                              int(window) if window else None))
    return KVCache(tuple(layers), dtype) if layers else None


def _bytes(shaped: Shaped, names: list[str], dtype: str | None) -> int:
    return int(sum(shaped.tensors[n].numel * DTYPE_BYTES[dtype] if dtype else shaped.tensors[n].nbytes()
                   for n in names))


class Site(NamedTuple):
    """One attention as the graph holds it: its query, key and value operands, how many keys each
    query sees, the layer that reads the keys (the scores' product, or the fused op) and the tensor
    that carries the attention's output (before the output projection)."""

    q: str
    k: str
    v: str
    keys: int
    layer: Layer
    out: str


def attentions(shaped: Shaped, results: list[LayerResult]) -> Iterator[Site]:
    """Each attention of the graph, in graph order."""
    _, _, core = attention_core(shaped, results)
    for i, res in enumerate(results):
        layer = res.layer
        if layer.op_type in FUSED_ATTENTION and not layer.domain:
            k = shaped.tensors[layer.inputs[1]]
            q, k_name, v = layer.inputs[:3]
            yield Site(q, k_name, v, k.shape[2 if len(k.shape) == 4 else 1], layer, layer.outputs[0])
        elif i in core and layer.op_type == "MatMul":  # the scores' product, Q K^T
            v_product = values_product(shaped, results, layer.outputs[0])
            if v_product is not None:
                keys = shaped.tensors[layer.outputs[0]].shape[-1]
                values = results[v_product].layer
                yield Site(layer.inputs[0], layer.inputs[1], values.inputs[1], keys, layer, values.outputs[0])
