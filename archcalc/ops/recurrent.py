"""Recurrent layers: LSTM, GRU, RNN (and onnxruntime's DynamicQuantizeLSTM, the same LSTM over
int8 weights).

Cost in closed form, per direction, time step and batch row: each of the ``gates`` (LSTM 4, GRU 3,
RNN 1) is a product of the input with W (H x I) and of the previous hidden state with R (H x H),
so MACs = gates x H x (I + H), times sequence length x batch x directions. FLOPs add the bias adds
(two per gate and unit), the gate activations and the state updates per unit.
"""

from __future__ import annotations

from archcalc.ops.registry import Node, Out, rule

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1, "DynamicQuantizeLSTM": 4}
# Element-wise work per hidden unit and step besides the bias: LSTM's 3 sigmoids and 2 tanh, f*c,
# i*g, their sum and o*tanh(c); GRU's 2 sigmoids and tanh, r*h (or r*(Rh)), z*h, (1-z)*h~ and their
# sum; RNN's activation.
UPDATE_FLOPS = {"LSTM": 9, "GRU": 7, "RNN": 1, "DynamicQuantizeLSTM": 9}


def _sizes(n: Node, op: str) -> tuple[int, int, int, int, int]:
    """(directions, sequence length, batch, input size, hidden size), checked against W and R."""
    x = n.rank(0, 3)
    layout = int(n.attr("layout", 0))
    seq, batch, inputs = (x[1], x[0], x[2]) if layout else x
    directions = 2 if n.attr("direction", "forward") == "bidirectional" else 1
    w = n.rank(1, 3)
    gates = GATES[op]
    # DynamicQuantizeLSTM stores W as [dirs, I, 4H] (transposed); the others [dirs, gates*H, I].
    w_gates, w_inputs = (w[2], w[1]) if op == "DynamicQuantizeLSTM" else (w[1], w[2])
    hidden = int(n.attr("hidden_size", w_gates // gates))
    if w[0] != directions or w_gates != gates * hidden or w_inputs != inputs:
        raise n.error(f"W {list(w)} does not fit {directions} direction(s), {gates} gate(s) of hidden size "
                      f"{hidden} and input size {inputs}")
    return directions, seq, batch, inputs, hidden


@rule("LSTM", "GRU", "RNN", "com.microsoft.DynamicQuantizeLSTM")
def recurrent(n: Node) -> Out:
    """Out: Y [seq, dirs, batch, H] (layout 1: [batch, seq, dirs, H]), Y_h and Y_c [dirs, batch, H]
    (layout 1: [batch, dirs, H]); W, R and the peepholes are weights, B the bias; MACs in closed form
    (see the module); saves its input, outputs and each step's gates for backward."""
    op = n.layer.op_type
    directions, seq, batch, inputs, hidden = _sizes(n, op)
    layout = int(n.attr("layout", 0))
    y = (batch, seq, directions, hidden) if layout else (seq, directions, batch, hidden)
    state = (batch, directions, hidden) if layout else (directions, batch, hidden)
    shapes = [y, state, state][: n.n_outputs]
    gates = GATES[op]
    steps = directions * seq * batch
    macs = steps * gates * hidden * (inputs + hidden)
    peepholes = 6 if op != "RNN" and n.has(7) else 0  # three products and three adds
    flops = steps * hidden * (UPDATE_FLOPS[op] + (2 * gates if n.has(3) else 0) + peepholes)
    params = {1: "weight", 2: "weight", 3: "bias"}
    if op in ("LSTM", "DynamicQuantizeLSTM"):
        params[7] = "weight"  # peepholes
    if op == "DynamicQuantizeLSTM":
        params.update(dict.fromkeys(range(8, 12), "quant"))
    return Out(shapes, dtypes=[n.dtype(0)] * len(shapes), macs=macs, flops=flops, params=params, saves_inputs=(0,),
               saves_outputs=tuple(range(len(shapes))), saves_extra_bytes=4 * steps * gates * hidden)
