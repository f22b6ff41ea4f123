"""Graphs for the planner's tests, built with onnx.helper: weights are declared, never stored
(external data that is never read), so a 1T-parameter model costs nothing to build."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

FP16, FP32 = TensorProto.FLOAT16, TensorProto.FLOAT


def declared(name: str, dims: list[int], dtype: int = FP16) -> onnx.TensorProto:
    """An initializer with its shape only: its data lies in an external file that is never opened."""
    t = onnx.TensorProto(name=name, data_type=dtype, dims=dims)
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="absent.bin")
    return t


def one_matrix(params: int) -> onnx.ModelProto:
    """x[N, k] @ W[k, params / k]: a model whose only weights are ``params`` elements."""
    k = 1000 if params % 1000 == 0 else 1
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="/fc/MatMul")],
        "one",
        [helper.make_tensor_value_info("x", FP16, ["N", k])],
        [helper.make_tensor_value_info("y", FP16, ["N", params // k])],
        [declared("W", [k, params // k])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])


class _Block:
    """Nodes and weights of one layer, named under its module path ``prefix``."""

    def __init__(self, prefix: str, nodes: list, inits: list, dtype: int, dropout: bool):
        self.p, self.nodes, self.inits, self.dtype, self.dropout = prefix, nodes, inits, dtype, dropout

    def w(self, name: str, dims: list[int]) -> str:
        self.inits.append(declared(f"{self.p}.{name}", dims, self.dtype))
        return f"{self.p}.{name}"

    def node(self, op: str, ins: list[str], outs: list[str], **kw) -> str:
        self.nodes.append(
            helper.make_node(op, ins, [f"{self.p}/{o}" for o in outs], name=f"{self.p}/{outs[0]}/{op}", **kw)
        )
        return f"{self.p}/{outs[0]}"

    def drop(self, y: str, tag: str) -> str:
        if not self.dropout:
            return y
        return self.node("Dropout", [y, "ratio", "train"], [tag, f"{tag}_mask"])


def gpt_layers(
    layers: int, s: int, h: int, a: int, dtype: int = FP16, dropout: bool = True, vocab: int | None = None
) -> onnx.ModelProto:
    """Megatron-LM's GPT layer (Korthikanti et al. 2022, figure 2, section 4.1): pre-LN, fused QKV,
    scaled softmax attention with dropout, a 4h GeLU MLP, dropout before each residual add. Input
    [batch, s, h]; node names /layers.N/... as PyTorch's exporter writes module paths. With ``vocab``,
    a whole decoder: token ids in, an embedding, the layers, a final norm and an untied LM head."""
    d = h // a
    nodes: list = []
    inits = [
        helper.make_tensor("scale", dtype, [], [1.0 / np.sqrt(d)]),
        helper.make_tensor("ratio", FP32, [], [0.1]),
        helper.make_tensor("heads", TensorProto.INT64, [4], [0, 0, a, d]),
        helper.make_tensor("merge", TensorProto.INT64, [3], [0, 0, h]),
        helper.make_tensor("train", TensorProto.BOOL, [], [True]),
    ]
    x, inp, out_shape = "x", helper.make_tensor_value_info("x", dtype, ["batch", s, h]), ["batch", s, h]
    if vocab:
        embed = _Block("/embed", nodes, inits, dtype, dropout)
        inp = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", s])
        x = embed.node("Gather", [embed.w("wte", [vocab, h]), "ids"], ["x"])
    for n in range(layers):
        x = _gpt_layer(_Block(f"/layers.{n}", nodes, inits, dtype, dropout), x, h)
    if vocab:
        head = _Block("/head", nodes, inits, dtype, dropout)
        x = head.node("LayerNormalization", [x, head.w("ln.g", [h]), head.w("ln.b", [h])], ["ln"], axis=-1)
        x = head.node("MatMul", [x, head.w("lm", [h, vocab])], ["logits"])
        out_shape = ["batch", s, vocab]
    g = helper.make_graph(nodes, "gpt", [inp], [helper.make_tensor_value_info(x, dtype, out_shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])


def _gpt_layer(b: _Block, x: str, h: int) -> str:
    ln1 = b.node("LayerNormalization", [x, b.w("ln1.g", [h]), b.w("ln1.b", [h])], ["ln1"], axis=-1)
    qkv = b.node(
        "Add", [b.node("MatMul", [ln1, b.w("qkv.w", [h, 3 * h])], ["qkv_mm"]), b.w("qkv.b", [3 * h])], ["qkv"]
    )
    b.nodes.append(
        helper.make_node(
            "Split",
            [qkv],
            [f"{b.p}/q0", f"{b.p}/k0", f"{b.p}/v0"],
            axis=-1,
            num_outputs=3,
            name=f"{b.p}/split/Split",
        )
    )
    q, k, v = (
        b.node("Transpose", [b.node("Reshape", [f"{b.p}/{t}0", "heads"], [f"{t}r"])], [f"{t}t"], perm=[0, 2, 1, 3])
        for t in "qkv"
    )
    kt = b.node("Transpose", [k], ["kT"], perm=[0, 1, 3, 2])
    scores = b.node("Mul", [b.node("MatMul", [q, kt], ["qk"]), "scale"], ["scores"])
    probs = b.drop(b.node("Softmax", [scores], ["probs"], axis=-1), "attn_drop")
    ctx = b.node(
        "Reshape",
        [b.node("Transpose", [b.node("MatMul", [probs, v], ["ctx"])], ["ctxt"], perm=[0, 2, 1, 3]), "merge"],
        ["ctxr"],
    )
    proj = b.node(
        "Add", [b.node("MatMul", [ctx, b.w("proj.w", [h, h])], ["proj_mm"]), b.w("proj.b", [h])], ["proj"]
    )
    x1 = b.node("Add", [x, b.drop(proj, "proj_drop")], ["res1"])
    ln2 = b.node("LayerNormalization", [x1, b.w("ln2.g", [h]), b.w("ln2.b", [h])], ["ln2"], axis=-1)
    fc1 = b.node(
        "Add", [b.node("MatMul", [ln2, b.w("fc1.w", [h, 4 * h])], ["fc1_mm"]), b.w("fc1.b", [4 * h])], ["fc1"]
    )
    gelu = b.node("Gelu", [fc1], ["gelu"])
    fc2 = b.node(
        "Add", [b.node("MatMul", [gelu, b.w("fc2.w", [4 * h, h])], ["fc2_mm"]), b.w("fc2.b", [h])], ["fc2"]
    )
    return b.node("Add", [x1, b.drop(fc2, "fc2_drop")], ["res2"])
