"""Transformer blocks as ONNX nodes: the one builder behind a Hugging Face config and the design
language's transformer terms, so both give the same graph for the same block.

Weights are declared with their shapes and dtype but stored nowhere (every analysis reads them as it
reads an export's); node names are module paths (``/model/layers.3/self_attn/q_proj/MatMul``), so the
planner finds the layers as units. Attention is eager (the scores a tensor, as transformers'
``attn_implementation="eager"`` keeps them) or fused (ONNX's ``Attention``, as flash attention runs
it: no scores kept). Rotary embeddings and the causal mask hold no parameters and are left out (their
element-wise cost is small beside the products). A sliding window is written on the attention's
scores node as metadata (``archcalc.window``): it bounds what the KV cache keeps, not any shape;
so is the rotary table a config implies (``archcalc.rotary``), which a server precomputes.
A mixture of experts is onnxruntime's ``com.microsoft.MoE`` (gate and up interleaved in one matrix,
as its CPU kernel runs them), its router a product before it (DeepSeek's score-correction bias, a
buffer of one number per expert that only steers the choice, is left out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from archcalc.errors import InputError
from archcalc.frontends.hf_quant import Scheme
from archcalc.frontends.onnx_helpers import make_model, make_node, make_opsetid, make_tensor
from archcalc.ir import FUSED_DEQUANT_KEY, LOSS_KEY, ROTARY_KEY, WINDOW_KEY
from archcalc.onnx_proto import ModelProto, NodeProto, TensorProto

ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh",
               "gelu_fast": "tanh", "gelu_python": "gelu", "relu": "relu"}


class Net:
    """An ONNX graph being built: nodes named by module path, weights declared and never stored.
    ``quant``: how a quantized checkpoint stores the linear layers' weights (None: at ``dtype``)."""

    def __init__(self, dtype: int, quant: Scheme | None = None):
        self.dtype, self.count, self.quant = dtype, 0, quant
        self.nodes: list[NodeProto] = []
        self.inits: list[TensorProto] = []

    def w(self, name: str, dims: list[int], dtype: int | None = None) -> str:
        t = TensorProto(name=name, data_type=self.dtype if dtype is None else dtype, dims=dims,
                        data_location=TensorProto.EXTERNAL)
        t.external_data.add(key="location", value="weights-not-stored.bin")
        self.inits.append(t)
        return name

    def matrix(self, path: str, k: int, n: int, experts: int = 0, parts: int = 1) -> str:
        """The weight a product at ``path`` reads: [K, N], or ``experts`` stacked as [E, N, K] (the MoE
        op's layout) of which each expert's is ``parts`` checkpoint matrices side by side (gate and
        up). Where the checkpoint stores it quantized, the stored values, scales, zero points and the
        format's extras, read by a DequantizeLinear the product's kernel fuses (FUSED_DEQUANT_KEY)."""
        name = f"{path}.weight" if not experts else path
        dims = [k, n] if not experts else [experts, n, k]
        module = path.strip("/").replace("/", ".")
        if self.quant is None or not self.quant.applies(module):
            return self.w(name, dims)
        q, lead = self.quant, [experts * parts] if experts else []
        each = q.scale_dims(k, n // parts)
        scale = lead + each if experts else each
        ins = [self.w(f"{name}_packed", dims, q.weight), self.w(f"{name}_scale", scale, q.scale),
               self.w(f"{name}_zero_point", scale, q.zero) if q.zero is not None else ""]
        for extra in q.extras:
            ins.append(self.w(f"{path}.{extra.name}", lead + ([k] if extra.dims == "K" else [int(extra.dims)]),
                              extra.dtype))
        node = self.op(path, "DequantizeLinear", ins)
        self.nodes[-1].metadata_props.add(key=FUSED_DEQUANT_KEY, value=q.method)
        return node[0]

    def const(self, name: str, values: list[int]) -> str:
        self.inits.append(make_tensor(name, TensorProto.INT64, [len(values)], values))
        return name

    def scaled(self, path: str, x: str, value: float, op: str = "Mul") -> str:
        """``x`` times (or, ``op`` "Div", over) a constant of the model's element type: a new tensor."""
        name = f"{path}.{op.lower()}_{self.count + 1}"
        self.inits.append(make_tensor(name, self.dtype, [], [value]))
        return self.one(path, op, [x, name])

    def op(self, path: str, op: str, ins: list[str], outputs: int = 1, domain: str = "", **attrs) -> list[str]:
        self.count += 1
        outs = [f"{path}/{op}_{self.count}_{k}" for k in range(outputs)]
        self.nodes.append(make_node(op, ins, outs, name=f"{path}/{op}", domain=domain or None, **attrs))
        return outs

    def one(self, path: str, op: str, ins: list[str], **attrs) -> str:
        return self.op(path, op, ins, **attrs)[0]

    def linear(self, path: str, x: str, din: int, dout: int, bias: bool) -> str:
        y = self.one(path, "MatMul", [x, self.matrix(path, din, dout)])
        return self.one(path, "Add", [y, self.w(f"{path}.bias", [dout])]) if bias else y

    def trained_on(self, logits: str) -> str:
        """Marks the node making ``logits`` as a language model's head: a training step takes the
        token-level cross-entropy over its output (see archcalc.analysis.memory.loss)."""
        node = next(n for n in reversed(self.nodes) if logits in n.output)
        node.metadata_props.add(key=LOSS_KEY, value="cross_entropy")
        return logits

    def norm(self, path: str, x: str, h: int, rms: bool, axis: int = -1, bias: bool = True) -> str:
        if rms:
            return self.one(path, "RMSNormalization", [x, self.w(f"{path}.weight", [h])], axis=axis)
        ins = [x, self.w(f"{path}.weight", [h])] + ([self.w(f"{path}.bias", [h])] if bias else [])
        return self.one(path, "LayerNormalization", ins, axis=axis)

    def model(self, name: str, inputs: list, outputs: list) -> ModelProto:
        # IR 10 and opset 23 (RMSNormalization, Attention): what onnxruntime 1.23 loads.
        return make_model(self.nodes, name, inputs, outputs, self.inits, ir_version=10, opsets=[
            make_opsetid("", 23), make_opsetid("com.microsoft", 1)])


@dataclass(frozen=True)
class Latent:
    """Multi-head latent attention (DeepSeek-V2/V3): keys and values up-projected from a latent."""

    q_rank: int | None  # None: queries projected directly
    kv_rank: int
    rope_dim: int  # the rotary part of each query and key head, shared by the heads in the key
    nope_dim: int
    v_dim: int


@dataclass(frozen=True)
class AttentionSpec:
    heads: int
    kv_heads: int
    head_dim: int
    qkv_bias: bool = False
    out_bias: bool = False
    fused_qkv: bool = False  # one matrix for Q, K and V, split after
    # Norms on the queries and keys: "head", an RMSNorm over each head (qwen3, gemma3); "head-ln", a
    # LayerNorm with a bias over each head (phi's qk_layernorm); "whole", an RMSNorm over all the
    # heads at once (olmo2, olmo3: weights as wide as the projection); "" none.
    qk_norm: str = ""
    window: int | None = None  # sliding-window attention: each query sees this many keys
    kernel: str = "eager"  # "eager" keeps the scores; "fused" (flash attention) does not
    latent: Latent | None = None
    rotary: tuple[int, int] | None = None  # (positions, dims) of the rotary table; None: not said


def _mark(node: NodeProto, a: AttentionSpec) -> None:
    """What the attention's shapes do not say, as node metadata: its window and its rotary table."""
    if a.window:
        node.metadata_props.add(key=WINDOW_KEY, value=str(a.window))
    if a.rotary is not None:
        node.metadata_props.add(key=ROTARY_KEY, value=f"{a.rotary[0]}x{a.rotary[1]}")


def _heads(net: Net, path: str, x: str, heads: int, d: int, name: str) -> str:
    """[b, s, heads x d] -> [b, heads, s, d]."""
    x = net.one(f"{path}/{name}", "Reshape", [x, net.const(f"{path}.{name}shape", [0, 0, heads, d])])
    return net.one(f"{path}/{name}", "Transpose", [x], perm=[0, 2, 1, 3])


def _projections(net: Net, path: str, x: str, h: int, a: AttentionSpec) -> tuple[str, str, str]:
    """Q, K and V, each [b, s, heads x d]: three matrices, or one split in three (fused)."""
    d = a.head_dim
    if a.fused_qkv:
        qkv = net.linear(f"{path}/qkv_proj", x, h, (a.heads + 2 * a.kv_heads) * d, a.qkv_bias)
        sizes = net.const(f"{path}.split", [a.heads * d, a.kv_heads * d, a.kv_heads * d])
        q, k, v = net.op(f"{path}/split", "Split", [qkv, sizes], 3, axis=-1)
        return q, k, v
    return tuple(net.linear(f"{path}/{p}_proj", x, h, n * d, a.qkv_bias)  # type: ignore[return-value]
                 for p, n in (("q", a.heads), ("k", a.kv_heads), ("v", a.kv_heads)))


def attention(net: Net, path: str, x: str, h: int, a: AttentionSpec, names: tuple[str, ...] = ()) -> str:
    """Self-attention of x [b, s, h], its output projection included."""
    if a.latent is not None:
        q, k, v = _latent_qkv(net, path, x, h, a, a.latent)
        heads, kv_heads, v_dim = a.heads, a.heads, a.latent.v_dim
    else:
        q, k, v = _projections(net, path, x, h, a)
        d, heads, kv_heads, v_dim = a.head_dim, a.heads, a.kv_heads, a.head_dim
        if a.qk_norm:
            name = "layernorm" if a.qk_norm == "head-ln" else "norm"  # transformers' module names
            q = _qk_norm(net, f"{path}/q_{name}", q, heads, d, a.qk_norm)
            k = _qk_norm(net, f"{path}/k_{name}", k, kv_heads, d, a.qk_norm)
        if a.kernel == "fused":
            # The fused kernels read Q, K, V as [b, s, heads x d] views and write the output as
            # (b, s, heads, d), returned transposed (PyTorch's flash and memory-efficient SDPA,
            # FlashAttention-2): transformers' transpose(1, 2).contiguous() then copies nothing and the
            # output projection reads the kernel's own output (tests/test_attention_kernels.py).
            out = net.one(f"{path}/attn", "Attention", [q, k, v], is_causal=1, q_num_heads=heads,
                          kv_num_heads=kv_heads)
            _mark(net.nodes[-1], a)
            return net.linear(f"{path}/{names[0] if names else 'o_proj'}", out, heads * v_dim, h, a.out_bias)
        q, k, v = (_heads(net, path, t, n, d, name) for t, n, name in ((q, heads, "q"), (k, kv_heads, "k"),
                                                                        (v, kv_heads, "v")))
    ctx = (_fused_core if a.kernel == "fused" else _eager_core)(net, path, q, k, v, a, heads, kv_heads)
    ctx = net.one(f"{path}/attn", "Transpose", [ctx], perm=[0, 2, 1, 3])
    ctx = net.one(f"{path}/attn", "Reshape", [ctx, net.const(f"{path}.merge", [0, 0, heads * v_dim])])
    return net.linear(f"{path}/{names[0] if names else 'o_proj'}", ctx, heads * v_dim, h, a.out_bias)


def _qk_norm(net: Net, path: str, x: str, heads: int, d: int, kind: str) -> str:
    """Queries or keys [b, s, heads x d] normalized as ``kind`` says (see AttentionSpec.qk_norm)."""
    if kind == "whole":
        return net.norm(path, x, heads * d, True)
    x = net.one(path, "Reshape", [x, net.const(f"{path}.heads", [0, 0, heads, d])])
    x = net.norm(path, x, d, kind == "head")
    return net.one(path, "Reshape", [x, net.const(f"{path}.flat", [0, 0, heads * d])])


def _eager_core(net: Net, path: str, q: str, k: str, v: str, a: AttentionSpec, heads: int, kv_heads: int) -> str:
    """softmax(Q K^T / sqrt(d)) V with the scores a tensor. Grouped-query attention as
    q [b, kv, g, s, d] against k [b, kv, 1, d, s], so a group of query heads shares its key and value
    head without copying them (MHA: g = 1; MQA: kv = 1)."""
    d = a.head_dim if a.latent is None else a.latent.nope_dim + a.latent.rope_dim
    group = heads // kv_heads
    q = net.one(f"{path}/q", "Reshape", [q, net.const(f"{path}.qgroups", [0, kv_heads, group, -1, d])])
    axis = net.const(f"{path}.axis", [2])
    k = net.one(f"{path}/k", "Unsqueeze", [net.one(f"{path}/k", "Transpose", [k], perm=[0, 1, 3, 2]), axis])
    v = net.one(f"{path}/v", "Unsqueeze", [v, axis])
    scale = f"{path}.scale"
    net.inits.append(make_tensor(scale, net.dtype, [], [1 / math.sqrt(d)]))
    product = net.one(f"{path}/attn", "MatMul", [q, k])
    _mark(net.nodes[-1], a)
    probs = net.one(f"{path}/attn", "Softmax", [net.one(f"{path}/attn", "Mul", [product, scale])], axis=-1)
    ctx = net.one(f"{path}/attn", "MatMul", [probs, v])  # [b, kv, g, s, dv]
    v_dim = a.head_dim if a.latent is None else a.latent.v_dim
    return net.one(f"{path}/attn", "Reshape", [ctx, net.const(f"{path}.ungroup", [0, heads, -1, v_dim])])


def _fused_core(net: Net, path: str, q: str, k: str, v: str, a: AttentionSpec, heads: int, kv_heads: int) -> str:
    """ONNX Attention (causal): what flash attention computes, the scores never kept."""
    out = net.one(f"{path}/attn", "Attention", [q, k, v], is_causal=1)
    _mark(net.nodes[-1], a)
    return out


def _latent_qkv(net: Net, path: str, x: str, h: int, a: AttentionSpec, m: Latent) -> tuple[str, str, str]:
    """DeepSeek's MLA as transformers runs it: q from a low-rank q (or directly), the latent and the
    shared rotary key from one down-projection, keys' and values' heads up-projected from the latent."""
    qk = m.nope_dim + m.rope_dim
    if m.q_rank is None:
        q = net.linear(f"{path}/q_proj", x, h, a.heads * qk, False)
    else:
        q = net.linear(f"{path}/q_a_proj", x, h, m.q_rank, a.qkv_bias)
        q = net.linear(f"{path}/q_b_proj", net.norm(f"{path}/q_a_layernorm", q, m.q_rank, True), m.q_rank,
                       a.heads * qk, False)
    down = net.linear(f"{path}/kv_a_proj_with_mqa", x, h, m.kv_rank + m.rope_dim, a.qkv_bias)
    latent, k_rope = net.op(f"{path}/kv_split", "Split", [down, net.const(f"{path}.kvsplit",
                                                                          [m.kv_rank, m.rope_dim])], 2, axis=-1)
    up = net.linear(f"{path}/kv_b_proj", net.norm(f"{path}/kv_a_layernorm", latent, m.kv_rank, True), m.kv_rank,
                    a.heads * (m.nope_dim + m.v_dim), False)
    up = _heads(net, path, up, a.heads, m.nope_dim + m.v_dim, "kv")
    k_nope, v = net.op(f"{path}/kv_heads", "Split", [up, net.const(f"{path}.nopev", [m.nope_dim, m.v_dim])], 2,
                       axis=-1)
    k_rope = _heads(net, path, k_rope, 1, m.rope_dim, "k_rope")  # one head, shared by all
    shape = net.one(f"{path}/k_rope", "Shape", [k_nope])
    wide = net.one(f"{path}/k_rope", "Concat", [net.one(f"{path}/k_rope", "Slice", [
        shape, net.const(f"{path}.s0", [0]), net.const(f"{path}.s3", [3])]), net.const(f"{path}.rope",
                                                                                        [m.rope_dim])], axis=0)
    k = net.one(f"{path}/k", "Concat", [k_nope, net.one(f"{path}/k_rope", "Expand", [k_rope, wide])], axis=-1)
    q = _heads(net, path, q, a.heads, qk, "q")
    return q, k, v


def _act(net: Net, path: str, x: str, name: str) -> str:
    kind = ACTIVATIONS.get(name)
    if kind is None:
        raise InputError(f"activation {name!r}: not one archcalc builds ({', '.join(ACTIVATIONS)})")
    if kind == "silu":
        return net.one(path, "Mul", [x, net.one(path, "Sigmoid", [x])])
    if kind == "relu":
        return net.one(path, "Relu", [x])
    return net.one(path, "Gelu", [x], approximate="tanh" if kind == "tanh" else "none")


@dataclass(frozen=True)
class MLPSpec:
    ffn: int
    act: str = "silu"
    gated: bool = True  # SwiGLU / GeGLU: act(gate) x up
    bias: bool = False
    fused: bool = False  # one matrix for gate and up (phi3)
    names: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj")


def mlp(net: Net, path: str, x: str, h: int, m: MLPSpec) -> str:
    f = m.ffn
    if not m.gated:
        up = _act(net, f"{path}/act", net.linear(f"{path}/{m.names[1]}", x, h, f, m.bias), m.act)
        return net.linear(f"{path}/{m.names[2]}", up, f, h, m.bias)
    if m.fused:
        both = net.linear(f"{path}/gate_up_proj", x, h, 2 * f, m.bias)
        gate, up = net.op(f"{path}/split", "Split", [both, net.const(f"{path}.split", [f, f])], 2, axis=-1)
    else:
        gate, up = (net.linear(f"{path}/{n}", x, h, f, m.bias) for n in m.names[:2])
    mixed = net.one(f"{path}/act", "Mul", [_act(net, f"{path}/act", gate, m.act), up])
    return net.linear(f"{path}/{m.names[2]}", mixed, f, h, m.bias)


def tied_head(net: Net, x: str, h: int, vocab: int, table: str, shape: str) -> str:
    """The LM head that reads the embedding ``table`` [vocab, h] transposed (no weight of its own);
    ``shape`` is the input ids' shape, [batch, sequence]."""
    flat = net.one("/lm_head", "Reshape", [x, net.const("/lm_head.flat", [-1, h])])
    logits = net.one("/lm_head", "Gemm", [flat, table], transB=1)
    back = net.one("/lm_head", "Concat", [shape, net.const("/lm_head.vocab", [vocab])], axis=0)
    return net.one("/lm_head", "Reshape", [logits, back])


@dataclass(frozen=True)
class MoESpec:
    experts: int
    top_k: int
    ffn: int  # each expert's gated MLP width
    shared_ffn: int = 0  # shared experts' width in all (0: none)
    shared_gate: bool = False  # qwen2_moe: a sigmoid gate on the shared expert
    act: str = "silu"


def moe(net: Net, path: str, x: str, h: int, m: MoESpec, shared_name: str = "shared_experts") -> str:
    """Routed experts (each token through ``top_k`` of them) plus any shared expert every token takes."""
    if m.act not in ("silu", "swish"):
        raise InputError(f"expert activation {m.act!r}: archcalc builds SwiGLU experts only")
    flat = net.one(path, "Reshape", [x, net.const(f"{path}.rows", [-1, h])])
    logits = net.linear(f"{path}/gate", flat, h, m.experts, False)
    routed = net.one(f"{path}/experts", "MoE", [
        flat, logits, net.matrix(f"{path}/experts.gate_up_proj", h, 2 * m.ffn, m.experts, parts=2), "",
        net.matrix(f"{path}/experts.down_proj", m.ffn, h, m.experts)], domain="com.microsoft", k=m.top_k,
        activation_type="swiglu", swiglu_fusion=1, normalize_routing_weights=1)
    if m.shared_ffn:
        shared = mlp(net, f"{path}/{shared_name}", flat, h, MLPSpec(m.shared_ffn, m.act))
        if m.shared_gate:
            gate = net.one(f"{path}/shared_expert_gate", "Sigmoid", [
                net.linear(f"{path}/shared_expert_gate", flat, h, 1, False)])
            shared = net.one(f"{path}/shared_expert_gate", "Mul", [shared, gate])
        routed = net.one(path, "Add", [routed, shared])
    shape = net.one(path, "Shape", [x])
    return net.one(path, "Reshape", [routed, shape])


def with_random_weights(model: ModelProto, seed: int = 0, scale: float = 0.02) -> ModelProto:
    """A copy of a ``Net`` model whose declared weights hold values, so onnxruntime runs it: small
    random matrices, norm scales of 1 (the only 1-D ``.weight``), biases of 0. Its outputs mean nothing.
    Node names repeated within a module (two Reshapes in one path) get ``_2``, ``_3``: onnxruntime
    wants them unique."""
    import numpy as np
    import onnx  # only to run a design: its weights through onnx's own helpers
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, t in enumerate(out.graph.initializer):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        dims, dtype = list(t.dims), helper.tensor_dtype_to_np_dtype(t.data_type)
        if t.name.endswith(".bias"):
            data = np.zeros(dims, dtype)
        elif t.name.endswith(".weight") and len(dims) == 1:
            data = np.ones(dims, dtype)
        else:  # drawn as float32 and scaled in place: a float64 draw doubles the peak of a large design
            data = rng.standard_normal(dims, np.float32)
            data *= np.float32(scale)
        out.graph.initializer[i].CopyFrom(numpy_helper.from_array(data.astype(dtype, copy=False), t.name))
    seen: dict[str, int] = {}
    for node in out.graph.node:
        seen[node.name] = seen.get(node.name, 0) + 1
        if seen[node.name] > 1:
            node.name = f"{node.name}_{seen[node.name]}"
    return out
