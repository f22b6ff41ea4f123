"""Mixture of experts, as onnxruntime's fused ``com.microsoft.MoE`` runs it (ContribOperators.md).

Each row (token) is routed to ``k`` of the experts by the router's probabilities; an expert is an MLP
fc2(act(fc1(x))), gated (SwiGLU: fc1 holds gate and up, or fc3 the up) or not. The cost is what a
token's ``k`` experts compute: a product per weight matrix, each expert's share of the weights being
one matrix of the stacked ``[experts, out, in]`` tensors. Which experts a token takes depends on the
data; how many does not, so the cost is exact whatever the routing.
"""

from __future__ import annotations

import math

from archcalc.dtypes import DTYPE_BYTES
from archcalc.ops.registry import Node, Out, rule

# Flops per element of the expert's intermediate for its activation: SwiGLU's sigmoid, product and
# gate product; a plain activation's one.
_ACTIVATION_FLOPS = {"swiglu": 4, "silu": 3, "gelu": 1, "relu": 1, "identity": 0}


@rule("com.microsoft.MoE")
def moe(n: Node) -> Out:
    """input [rows, hidden] or [B, S, hidden], router_probs [rows, experts]; output the input's shape."""
    x = n.rank(0, 2, 3)
    rows, hidden = math.prod(x[:-1]), x[-1]
    experts = n.rank(1, 2)[1]
    k = int(n.attr("k", 1))
    fc1, fc2 = n.rank(2, 3), n.rank(4, 3)
    fc3 = n.rank(6, 3) if n.has(6) else None
    act = n.attr("activation_type", "relu")
    if act not in _ACTIVATION_FLOPS:
        raise n.error(f"activation_type {act!r} is not one of {', '.join(_ACTIVATION_FLOPS)}")
    if not 1 <= k <= experts or fc1[0] != experts or fc2[0] != experts or hidden not in (fc1[2], fc2[1]):
        raise n.error(f"k={k}, experts {experts}, fc1 {list(fc1)}, fc2 {list(fc2)} do not fit input {list(x)}")
    inner = fc2[2]  # the intermediate each expert's fc2 reads
    per_row = fc1[1] * fc1[2] + fc2[1] * fc2[2] + (fc3[1] * fc3[2] if fc3 else 0)
    # Router softmax over the experts (3 flops each), each expert's activation and biases, and the
    # weighted sum of the k outputs.
    biases = sum(n.numel(i) // experts for i in (3, 5, 7) if n.has(i))
    flops = rows * (3 * experts + k * (_ACTIVATION_FLOPS[act] * inner + biases + 2 * hidden))
    width = int(DTYPE_BYTES[n.dtype(0)])
    return Out([x], macs=rows * k * per_row, flops=flops,
               params={2: "weight", 3: "bias", 4: "weight", 5: "bias", 6: "weight", 7: "bias"},
               # backward keeps each routed copy of a row and its expert's intermediates (fc1's output
               # and the activation's), as an eager MoE layer's autograd does
               saves_inputs=(0, 1), saves_extra_bytes=rows * k * (hidden + fc1[1] + inner) * width)
