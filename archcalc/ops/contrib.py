"""onnxruntime's fused transformer ops (com.microsoft), as its transformer optimizer and Optimum
exports write them; shapes from onnxruntime's ContribOperators.md.

Attention's cost is its parts': the input projection (where the op holds the QKV weight), the
scores Q K^T and the weighted sum A V as MACs, and the softmax at 3 flops per score (as Softmax).
The normalizations cost as LayerNormalization does (5 flops per element), plus one per element for
each fused add (the skip, the bias).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from archcalc.ops.attention import scores
from archcalc.ops.quantized import as_op
from archcalc.ops.registry import Node, Out, rule

MS = "com.microsoft."


@rule(MS + "Attention", MS + "QAttention")
def attention(n: Node) -> Out:
    """input [B, S, D] x weight [D, q + k + v] (+ bias) -> Q, K, V; output [B, S, v]; present
    [2, B, heads, past + S, head] with a past (input 4, QAttention's 8)."""
    x, w = n.rank(0, 3), n.rank(1, 2)
    batch, seq, width = x
    heads = int(n.required_attr("num_heads"))
    sizes = list(n.attr("qkv_hidden_sizes", None) or [w[1] // 3] * 3)
    if w[0] != width or sum(sizes) != w[1] or sizes[0] % heads or sizes[2] % heads:
        raise n.error(f"weight {list(w)} does not project width {width} to q, k, v sizes {sizes} "
                      f"over {heads} heads")
    past_at = 8 if n.layer.op_type == "QAttention" else 4
    past = n.shape(past_at)[3] if n.has(past_at) else 0
    keys = past + seq
    head, v_head = sizes[0] // heads, sizes[2] // heads
    macs, flops = scores(batch, heads, seq, keys, head, v_head)
    shapes = [(batch, seq, sizes[2]), (2, batch, heads, keys, head)][: n.n_outputs]
    params = {1: "weight", 2: "bias"}
    if n.layer.op_type == "QAttention":
        params.update(dict.fromkeys((3, 4, 6, 7), "quant"))
    return Out(shapes, dtypes=["float32" if n.layer.op_type == "QAttention" else n.dtype(0)] * len(shapes),
               macs=macs + batch * seq * width * w[1], flops=flops + (batch * seq * w[1] if n.has(2) else 0),
               params=params, saves_inputs=(0,))


@rule(MS + "MultiHeadAttention")
def multi_head_attention(n: Node) -> Out:
    """query [B, S, D] and key / value [B, L, D] (or [B, heads, L, head], as past and cross
    attention give them); output [B, S, Dv]; present key and value [B, heads, past + L, head]."""
    q = n.rank(0, 3)
    batch, seq, width = q
    heads = int(n.required_attr("num_heads"))
    head = width // heads
    if not n.has(1):  # packed QKV in the query is [B, S, heads, 3, head]: not this layout
        raise n.error("packs Q, K and V into the query, a layout archcalc does not size yet")
    k = n.shape(1)
    keys = k[2] if len(k) == 4 else k[1]
    v_width = (n.shape(2)[-1] * (heads if len(n.shape(2)) == 4 else 1)) if n.has(2) else width
    past = n.shape(6)[2] if n.has(6) and len(k) == 3 else 0
    macs, flops = scores(batch, heads, seq, past + keys, head, v_width // heads)
    present = (batch, heads, past + keys, head)
    shapes = [(batch, seq, v_width), present, (batch, heads, past + keys, v_width // heads)][: n.n_outputs]
    return Out(shapes, macs=macs, flops=flops + (batch * seq * 3 * width if n.has(3) else 0), params={3: "bias"},
               saves_inputs=(0, 1, 2))


@rule(MS + "GroupQueryAttention")
def group_query_attention(n: Node) -> Out:
    """query [B, S, heads x head] (or Q, K, V packed in it), key / value [B, S, kv_heads x head];
    output [B, S, heads x head]; present key / value [B, kv_heads, max(past buffer, total), head]."""
    q = n.rank(0, 3)
    batch, seq, width = q
    heads, kv_heads = int(n.required_attr("num_heads")), int(n.required_attr("kv_num_heads"))
    head = width // (heads + 2 * kv_heads) if not n.has(1) else width // heads
    total_given = n.value(6) if n.has(6) else None
    past = n.shape(3)[2] if n.has(3) else 0
    total = int(np.asarray(total_given).reshape(-1)[0]) if total_given is not None else past + seq
    present_len = max(past, total)
    macs, flops = scores(batch, heads, seq, total, head, head)
    present = (batch, kv_heads, present_len, head)
    shapes = [(batch, seq, heads * head), present, present][: n.n_outputs]
    return Out(shapes, macs=macs, flops=flops, saves_inputs=(0,), bound=total_given is None and n.has(6))


@rule(MS + "SkipLayerNormalization", MS + "SkipSimplifiedLayerNormalization")
def skip_layer_norm(n: Node) -> Out:
    """input + skip (+ bias), normalized: out, mean and inverse std [.., 1] (float), and the sum."""
    x = n.shape(0)
    n.broadcast(x, n.shape(1))
    simplified = n.layer.op_type.startswith("SkipSimplified")
    bias_at = 3 if simplified else 4
    stat = (*x[:-1], 1)
    shapes = [x, stat, stat, x][: n.n_outputs]
    dtypes = [n.dtype(0), "float32", "float32", n.dtype(0)][: n.n_outputs]
    params = {2: "weight", bias_at: "bias"} if simplified else {2: "weight", 3: "bias", 4: "bias"}
    adds = 1 + int(n.has(bias_at))
    return Out(shapes, dtypes=dtypes, flops=(5 + adds) * math.prod(x), params=params, saves_inputs=(0,),
               saves_extra_bytes=2 * 4 * math.prod(stat))


@rule(MS + "SimplifiedLayerNormalization")
def simplified_layer_norm(n: Node) -> Out:
    """RMS normalization over the axis onward: out, and the inverse std (float)."""
    x = n.shape(0)
    axis = n.axis(n.attr("axis", -1), len(x))
    stat = (*x[:axis], *[1] * (len(x) - axis))
    shapes = [x, stat][: n.n_outputs]
    return Out(shapes, dtypes=[n.dtype(0), "float32"][: n.n_outputs], flops=5 * math.prod(x),
               params={1: "weight"}, saves_inputs=(0,), saves_extra_bytes=4 * math.prod(stat))


@rule(MS + "EmbedLayerNormalization")
def embed_layer_norm(n: Node) -> Out:
    """Token, position (and segment) embeddings summed and normalized: out [B, S, H], mask index
    [B] int32, and the sum before normalization [B, S, H]."""
    ids = n.rank(0, 2)
    hidden = n.rank(2, 2)[1]
    out = (*ids, hidden)
    adds = 1 + int(n.has(4))
    shapes = [out, (ids[0],), out][: n.n_outputs]
    return Out(shapes, dtypes=[n.dtype(2), "int32", n.dtype(2)][: n.n_outputs],
               flops=(5 + adds) * math.prod(out), params={2: "weight", 3: "weight", 4: "weight", 5: "weight",
                                                          6: "bias"})


@rule(MS + "FastGelu", MS + "BiasGelu", MS + "Gelu", MS + "QuickGelu", MS + "BiasAdd")
def fused_activation(n: Node) -> Out:
    """Out: the input's shape; one flop per element for the activation and one for each add."""
    x = n.shape(0)
    op = n.layer.op_type
    adds = sum(n.has(i) for i in range(1, n.n_inputs))
    flops = (adds + (0 if op == "BiasAdd" else 1)) * math.prod(x)
    return Out([x], flops=flops, params={1: "bias"} if op != "Gelu" else {}, saves_inputs=(0,))


@rule(MS + "FusedMatMul")
def fused_matmul(n: Node) -> Out:
    """MatMul with either operand's last two dims transposed first (transA, transB), scaled by alpha."""
    a, b = list(n.rank(0, at_least=2)), list(n.rank(1, at_least=2))
    if n.attr("transA", 0):
        a[-2:] = a[-1], a[-2]
    if n.attr("transB", 0):
        b[-2:] = b[-1], b[-2]
    if a[-1] != b[-2]:
        raise n.error(f"operands {a} and {b} (as transposed) disagree on the inner dim")
    batch = n.broadcast(tuple(a[:-2]), tuple(b[:-2]))
    return Out([(*batch, a[-2], b[-1])], macs=math.prod(batch) * a[-2] * b[-1] * a[-1], saves_inputs=(0, 1))


@rule(MS + "FusedConv")
def fused_conv(n: Node) -> Out:
    """Conv with its activation (and an added Z) fused: one more flop per output for each."""
    out = as_op(n, "Conv", [0, 1, 2])
    extra = (1 + int(n.has(3))) * math.prod(out.shapes[0])
    return replace(out, flops=out.flops + extra)
