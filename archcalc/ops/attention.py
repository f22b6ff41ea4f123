"""ONNX's own attention ops (opset 23): Attention and RotaryEmbedding.

Cost as for onnxruntime's fused attention (``archcalc.ops.contrib``): the scores Q K^T and the
weighted sum A V as MACs, the softmax at 3 flops per score; no projections (the op takes Q, K, V).
"""

from __future__ import annotations

import math

from archcalc.ops.registry import Node, Out, rule


def scores(batch: int, heads: int, queries: int, keys: int, head: int, v_head: int) -> tuple[int, int]:
    """(MACs, flops) of softmax(Q K^T) V for one attention: QK^T and AV, and the softmax."""
    macs = batch * heads * queries * keys * (head + v_head)
    return macs, 3 * batch * heads * queries * keys


def _heads(n: Node, i: int, attr: str) -> tuple[int, int, int]:
    """(heads, sequence, head size) of Q, K or V, 4-D [B, heads, S, head] or 3-D [B, S, heads x head]."""
    shape = n.rank(i, 3, 4)
    if len(shape) == 4:
        return shape[1], shape[2], shape[3]
    heads = int(n.required_attr(attr))
    if shape[2] % heads:
        raise n.error(f"input {i} {list(shape)} does not split into {attr}={heads} heads")
    return heads, shape[1], shape[2] // heads


@rule("Attention")
def attention(n: Node) -> Out:
    """Y [B, q_heads, S, v_head] (3-D in: [B, S, q_heads x v_head]); present key and value
    [B, kv_heads, past + L, head]; the scores [B, q_heads, S, past + L]."""
    batch = n.shape(0)[0]
    q_heads, queries, head = _heads(n, 0, "q_num_heads")
    kv_heads, keys, _ = _heads(n, 1, "kv_num_heads")
    _, _, v_head = _heads(n, 2, "kv_num_heads")
    past = n.shape(4)[2] if n.has(4) else 0
    total = past + keys
    y: tuple[int, ...] = (batch, q_heads, queries, v_head) if len(n.shape(0)) == 4 else \
        (batch, queries, q_heads * v_head)
    shapes: list[tuple[int, ...]] = [y, (batch, kv_heads, total, head), (batch, kv_heads, total, v_head),
              (batch, q_heads, queries, total)][: n.n_outputs]
    macs, flops = scores(batch, q_heads, queries, total, head, v_head)
    # Trained as flash attention is (PyTorch's _scaled_dot_product_flash_attention, and
    # FlashAttention-2's ctx.save_for_backward): Q, K, V, the output, and the softmax's log-sum-exp,
    # one float32 a query row a head -- never the scores. Checked against PyTorch's saved tensors
    # (tests/test_attention_saved.py).
    lse = 4 * batch * q_heads * queries
    return Out(shapes, macs=macs, flops=flops + (math.prod(shapes[-1]) if n.has(3) else 0),
               saves_inputs=(0, 1, 2), saves_outputs=(0,), saves_extra_bytes=lse)


@rule("RotaryEmbedding", "com.microsoft.RotaryEmbedding")
def rotary_embedding(n: Node) -> Out:
    """Out: the input's shape; 3 flops per element (two products and a sum)."""
    return Out([n.shape(0)], flops=3 * n.numel(0))
