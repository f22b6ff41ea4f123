"""A decoder's sizes as a serving engine sees them, read from the walked graph: what its profile run
holds per token, whatever the graph came from (a config, a design, an ONNX export).

Each attention (``kv_cache.attentions``: the scores' product or ONNX's ``Attention``) is read back
from its query, key and value operands, through whatever reshapes, rotates or normalizes them, to
the first weighted products: its projections (Q, K and V; one fused matrix; latent attention's
up-projections), and forward from its output to the first weighted product, the output projection.
A feed-forward is a product whose input the graph computes, through element-wise ops alone, from
other products that all read one tensor: the down projection and its gate and up products (gated or
not, fused or not). ``com.microsoft.MoE`` is a layer's routed experts (``archcalc.ops.moe``); the
dense products beside it that read the same tensor are its shared experts. The LM head is the
product that writes a graph output (through element-wise ops: a soft cap) as wide as the token
embedding has rows. A rotary table is in the graph only where its builder said so (node metadata
``archcalc.rotary``: a config's); an export computes cos and sin from the positions it is fed, and a
design has none, so for those it is ``None``: not known, not zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from archcalc.analysis.kv_cache import Site, attentions
from archcalc.analysis.patterns import VIEWS, is_product
from archcalc.analysis.walk.results import LayerResult
from archcalc.dtypes import DTYPE_BYTES
from archcalc.errors import InputError
from archcalc.ir import ROTARY_KEY, Role, Shaped

MOE = "com.microsoft.MoE"


@dataclass(frozen=True)
class Attention:
    """One attention layer's widths per token."""

    qkv: int  # the products that make Q, K and V (each product once)
    out: int  # the output projection's input
    heads: int  # the keys' heads as stored (a latent cache, kv_cache.KVCache.latent, has one for all)
    head_dim: int  # the width Q K^T contracts


@dataclass(frozen=True)
class MLP:
    """A dense feed-forward's widths per token: its gate and up products together, and the
    intermediate its down projection reads."""

    up: int
    inner: int


@dataclass(frozen=True)
class Experts:
    """Routed experts (onnxruntime's MoE): each token goes to ``top_k`` of ``experts``; each
    expert's first matrix writes ``up``, its second reads ``inner`` and writes ``hidden``."""

    experts: int
    top_k: int
    up: int
    inner: int
    hidden: int


@dataclass(frozen=True)
class FeedForward:
    """What a layer's feed-forward runs on one tensor: dense MLPs (a shared expert is one) and experts."""

    mlps: tuple[MLP, ...]
    experts: tuple[Experts, ...]


@dataclass(frozen=True)
class DecoderSizes:
    hidden: int  # the residual stream's width (the output projection's)
    attentions: tuple[Attention, ...]
    feed_forwards: tuple[FeedForward, ...]
    vocab: int | None  # the LM head's width; None: the graph has no LM head (an encoder)
    dtype_bytes: int  # the bytes of one element of the model's activations
    rotary_bytes: int | None  # the rotary cos/sin tables a server keeps; None: not in the graph


def kv_heads(shaped: Shaped, results: list[LayerResult], batch: int) -> int:
    """The key/value heads of the graph's first attention as stored (0: no attention)."""
    site = next(attentions(shaped, results), None)
    return 0 if site is None else _Reader(shaped, results).attention(site, batch).heads


def decoder_sizes(shaped: Shaped, results: list[LayerResult], batch: int) -> DecoderSizes:
    """The sizes of the decoder ``shaped`` holds, ``batch`` its bound batch."""
    read = _Reader(shaped, results)
    sites = list(attentions(shaped, results))
    if not sites:
        raise InputError(f"{shaped.source}: no attention layers found: serving memory is for decoders")
    layers = tuple(read.attention(s, batch) for s in sites)
    # every attention product, its output projection included: no feed-forward reads from them
    projections = {p for s in sites for p in [*read.projections(s), read.output_projection(s)]}
    out = read.output_projection(sites[0])
    width = int(DTYPE_BYTES[shaped.tensors[results[out].layer.outputs[0]].dtype])
    return DecoderSizes(read.width(results[out].layer.outputs[0]), layers, read.feed_forwards(projections),
                        read.lm_head(projections), width, read.rotary_bytes(sites, width))


class _Reader:
    def __init__(self, shaped: Shaped, results: list[LayerResult]):
        self.shaped, self.results = shaped, results

    def width(self, name: str) -> int:
        return self.shaped.tensors[name].shape[-1]

    def weighted(self, at: int) -> bool:
        layer = self.results[at].layer
        return is_product(layer) and any(self._is(n, Role.WEIGHT) for n in layer.inputs[1:3] if n)

    def _is(self, name: str, role: Role) -> bool:
        """``name`` is, or views (an exporter's transposed weight), a tensor of ``role``."""
        return self.shaped.tensors[self._source(name)].role == role

    def experts(self, at: int) -> bool:
        layer = self.results[at].layer
        return f"{layer.domain}.{layer.op_type}" == MOE

    def stop(self, at: int) -> bool:
        return self.weighted(at) or self.experts(at)

    def _data(self, name: str) -> bool:
        t = self.shaped.tensors[name]
        return t.role in (Role.ACTIVATION, Role.OUTPUT) and t.dtype.startswith(("float", "bfloat"))

    def upstream(self, name: str) -> Iterator[int]:
        """The products (and expert layers) that ``name`` is computed from through other ops alone:
        back along floating-point activations (so never through a shape's arithmetic)."""
        todo, seen = [name], {name}
        while todo:
            at = self.shaped.producer(todo.pop())
            if at is None or self.results[at].folded:
                continue
            if self.stop(at):
                yield at
                continue
            for n in self.results[at].layer.inputs:
                if n and n not in seen and self._data(n):
                    seen.add(n)
                    todo.append(n)

    def projections(self, site: Site) -> list[int]:
        """The products an attention's Q, K and V come from, in graph order."""
        return sorted({p for name in (site.q, site.k, site.v) for p in self.upstream(name)})

    def output_projection(self, site: Site) -> int:
        """The first weighted product downstream of the attention's output."""
        todo, seen = [site.out], set()
        while todo:
            for j in sorted(self.shaped.consumers(todo.pop(0))):
                if j in seen:
                    continue
                seen.add(j)
                if self.weighted(j):
                    return j
                todo += [o for o in self.results[j].layer.outputs if o and self._data(o)]
        raise InputError(f"{self.shaped.source}: the attention at {site.layer.name} feeds no output "
                         "projection: its width cannot be read")

    def attention(self, site: Site, batch: int) -> Attention:
        qkv = sum(self.width(self.results[p].layer.outputs[0]) for p in self.projections(site))
        q = self.shaped.tensors[site.q].shape
        head_dim = q[-1] if site.layer.op_type != "Attention" or len(q) == 4 else \
            q[-1] // int(site.layer.attrs.get("q_num_heads", 1))
        stored = self._source(site.k)
        per_token = self.shaped.tensors[stored].numel // max(1, batch * site.keys)
        o_proj = self.results[self.output_projection(site)].layer
        return Attention(qkv, self.width(o_proj.inputs[0]), per_token // head_dim, head_dim)

    def _source(self, name: str) -> str:
        """Back from ``name`` through views, and a dequantization fused into its reader (its stored
        weight is what the product reads), to the tensor an op wrote."""
        while (at := self.shaped.producer(name)) is not None and (self.results[at].layer.op_type in VIEWS
                                                                   or self.results[at].out.stored):
            name = self.results[at].layer.inputs[0]
        return name

    def feed_forwards(self, attention: set[int]) -> tuple[FeedForward, ...]:
        """Each tensor's feed-forwards: down projections with their gate and up products, and experts."""
        mlps: dict[str, list[MLP]] = {}
        experts: dict[str, list[Experts]] = {}
        for at, res in enumerate(self.results):
            if res.folded or at in attention:
                continue
            if self.experts(at):
                experts.setdefault(res.layer.inputs[0], []).append(self._experts(at))
            elif self.weighted(at) and (found := self._down(at, attention)) is not None:
                mlps.setdefault(found[0], []).append(found[1])
        keys = dict.fromkeys([*mlps, *experts])
        return tuple(FeedForward(tuple(mlps.get(k, ())), tuple(experts.get(k, ()))) for k in keys)

    def _down(self, at: int, attention: set[int]) -> tuple[str, MLP] | None:
        """(the tensor its products read, the MLP) where product ``at`` is a down projection."""
        read, up = None, 0
        for p in self.upstream(self.results[at].layer.inputs[0]):
            layer = self.results[p].layer
            if p in attention or not self.weighted(p) or read not in (None, layer.inputs[0]):
                return None
            read, up = layer.inputs[0], up + self.width(layer.outputs[0])
        return None if read is None else (read, MLP(up, self.width(self.results[at].layer.inputs[0])))

    def _experts(self, at: int) -> Experts:
        layer = self.results[at].layer
        fc1, fc2 = (self.shaped.tensors[layer.inputs[i]].shape for i in (2, 4))
        return Experts(fc1[0], int(layer.attrs.get("k", 1)), fc1[1], fc2[2], fc2[1])

    def lm_head(self, taken: set[int]) -> int | None:
        """The vocabulary the LM head scores: the width of a product that writes a graph output
        (through element-wise ops: a soft cap) as wide as the token embedding has rows."""
        rows = {self.shaped.tensors[r.layer.inputs[0]].shape[0] for r in self.results
                if r.layer.op_type == "Gather" and self._is(r.layer.inputs[0], Role.WEIGHT)
                and self._is(r.layer.inputs[1], Role.INPUT)}
        for name in self.shaped.outputs:
            for at in self.upstream(name):
                width = self.width(self.results[at].layer.outputs[0])
                if at not in taken and self.weighted(at) and width in rows:
                    return width
        return None

    def rotary_bytes(self, sites: list[Site], width: int) -> int | None:
        """The rotary tables the attentions name (one per distinct shape, as vLLM's ``get_rope``
        shares them), or None where the graph names none."""
        tables = {s.layer.meta.get(ROTARY_KEY) for s in sites}
        if None in tables:
            return None
        return sum(int(p) * int(d) * width for p, d in (t.split("x") for t in tables if t))
