"""A Hugging Face ``config.json`` as a graph: the model it describes, with no weights and no torch.

The config names the architecture (``model_type``) and its sizes; this builds the forward graph the
transformers implementation runs -- embeddings, each decoder (or encoder) layer's norms, attention
projections, attention itself (eager: the scores are a tensor, as ``attn_implementation="eager"``
keeps them), the MLP, the final norm and the LM head -- as an ONNX model whose weights are declared
with their shapes and dtype but stored nowhere, so every analysis reads it as it reads an export.
Node names follow the module paths (``/model/layers.3/self_attn/q_proj/MatMul``), so the planner
finds the layers as units. Rotary position embeddings and the causal mask hold no parameters and
are left out of the graph (their element-wise cost is small beside the products; said so in the
README). Families: llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3 (its text model), phi3,
gpt2, gpt_neox, bert. A family not listed is refused by name.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from archcalc.errors import InputError

DTYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}
DECODERS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3")
FAMILIES = (*DECODERS, "gpt2", "gpt_neox", "bert")


def is_config(path: Path) -> bool:
    """A JSON file that names a transformers architecture."""
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        return "model_type" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


def read_config(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); a Hugging Face config.json is expected") from None
    if cfg.get("model_type") == "gemma3":  # the multimodal wrapper: its language model
        cfg = {
            **cfg.get("text_config", {}),
            "model_type": "gemma3_text",
            "torch_dtype": cfg.get("torch_dtype", cfg.get("dtype")),
        }
    if cfg.get("model_type") not in FAMILIES:
        raise InputError(
            f"{path}: model_type {cfg.get('model_type')!r} is not one archcalc builds from a config "
            f"(it builds {', '.join(FAMILIES)}); export the model to ONNX instead"
        )
    return cfg


class _Net:
    """An ONNX graph being built: nodes named by module path, weights declared and never stored."""

    def __init__(self, dtype: int):
        self.dtype, self.count = dtype, 0
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def w(self, name: str, dims: list[int]) -> str:
        t = TensorProto(name=name, data_type=self.dtype, dims=dims, data_location=TensorProto.EXTERNAL)
        t.external_data.add(key="location", value="weights-not-stored.bin")
        self.inits.append(t)
        return name

    def const(self, name: str, values: list[int]) -> str:
        self.inits.append(helper.make_tensor(name, TensorProto.INT64, [len(values)], values))
        return name

    def op(self, path: str, op: str, ins: list[str], outputs: int = 1, **attrs) -> list[str]:
        self.count += 1
        outs = [f"{path}/{op}_{self.count}_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op, ins, outs, name=f"{path}/{op}", **attrs))
        return outs

    def one(self, path: str, op: str, ins: list[str], **attrs) -> str:
        return self.op(path, op, ins, **attrs)[0]

    def linear(self, path: str, x: str, din: int, dout: int, bias: bool) -> str:
        y = self.one(path, "MatMul", [x, self.w(f"{path}.weight", [din, dout])])
        return self.one(path, "Add", [y, self.w(f"{path}.bias", [dout])]) if bias else y

    def norm(self, path: str, x: str, h: int, rms: bool, axis: int = -1) -> str:
        if rms:
            return self.one(path, "RMSNormalization", [x, self.w(f"{path}.weight", [h])], axis=axis)
        return self.one(
            path, "LayerNormalization", [x, self.w(f"{path}.weight", [h]), self.w(f"{path}.bias", [h])], axis=axis
        )


def _size(cfg: dict, *keys: str, default: int | None = None) -> int:
    """The first of ``keys`` the config gives, a positive whole number (else the one-line error)."""
    value = next((cfg[k] for k in keys if cfg.get(k) is not None), default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"config field {keys[0]}: {value!r} is not a positive whole number; the config needs it")
    return value


def _sizes(cfg: dict) -> dict:
    """The sizes every family's config gives under its own names."""
    h = _size(cfg, "hidden_size", "n_embd")
    a = _size(cfg, "num_attention_heads", "n_head")
    kv = _size(cfg, "num_key_value_heads", default=a)
    if a % kv:
        raise InputError(f"config: {a} attention heads do not group evenly over {kv} key/value heads")
    return {"h": h, "a": a, "kv": kv, "d": _size(cfg, "head_dim", default=h // a),
            "layers": _size(cfg, "num_hidden_layers", "n_layer"), "vocab": _size(cfg, "vocab_size"),
            "ffn": _size(cfg, "intermediate_size", "n_inner", default=4 * h)}


def _projections(net: _Net, path: str, x: str, z: dict, bias: bool, fused: bool) -> tuple[str, str, str]:
    """Q, K and V, each [b, s, heads x d]: three matrices, or one split in three (fused)."""
    h, a, kv, d = z["h"], z["a"], z["kv"], z["d"]
    if fused:
        qkv = net.linear(f"{path}/qkv_proj", x, h, (a + 2 * kv) * d, bias)
        sizes = net.const(f"{path}.split", [a * d, kv * d, kv * d])
        q, k, v = net.op(f"{path}/split", "Split", [qkv, sizes], 3, axis=-1)
        return q, k, v
    q, k, v = (net.linear(f"{path}/{p}_proj", x, h, n * d, bias) for p, n in (("q", a), ("k", kv), ("v", kv)))
    return q, k, v


def _attention(net: _Net, path: str, x: str, z: dict, qkv_bias: bool, out_bias: bool, fused: bool = False,
               qk_norm: bool = False) -> str:
    """Eager grouped-query attention: q [b, kv, g, s, d] against k [b, kv, 1, d, s], so a group of
    query heads shares its key and value head (MHA: g = 1; MQA: kv = 1) without copying them."""
    a, kv, d = z["a"], z["kv"], z["d"]
    q, k, v = _projections(net, path, x, z, qkv_bias, fused)
    q = net.one(f"{path}/q", "Reshape", [q, net.const(f"{path}.qshape", [0, 0, kv, a // kv, d])])
    k = net.one(f"{path}/k", "Reshape", [k, net.const(f"{path}.kshape", [0, 0, kv, d])])
    v = net.one(f"{path}/v", "Reshape", [v, net.const(f"{path}.vshape", [0, 0, kv, d])])
    if qk_norm:  # qwen3, gemma3: an RMSNorm over each head
        q, k = net.norm(f"{path}/q_norm", q, d, True), net.norm(f"{path}/k_norm", k, d, True)
    q = net.one(f"{path}/q", "Transpose", [q], perm=[0, 2, 3, 1, 4])
    axis = net.const(f"{path}.axis", [2])
    k = net.one(f"{path}/k", "Unsqueeze", [net.one(f"{path}/k", "Transpose", [k], perm=[0, 2, 3, 1]), axis])
    v = net.one(f"{path}/v", "Unsqueeze", [net.one(f"{path}/v", "Transpose", [v], perm=[0, 2, 1, 3]), axis])
    scale = f"{path}.scale"
    net.inits.append(helper.make_tensor(scale, net.dtype, [], [1 / math.sqrt(d)]))
    scores = net.one(f"{path}/attn", "Mul", [net.one(f"{path}/attn", "MatMul", [q, k]), scale])
    probs = net.one(f"{path}/attn", "Softmax", [scores], axis=-1)
    ctx = net.one(f"{path}/attn", "MatMul", [probs, v])
    ctx = net.one(f"{path}/attn", "Transpose", [ctx], perm=[0, 3, 1, 2, 4])
    ctx = net.one(f"{path}/attn", "Reshape", [ctx, net.const(f"{path}.merge", [0, 0, a * d])])
    return net.linear(f"{path}/o_proj", ctx, a * d, z["h"], out_bias)


ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_new": "tanh",
    "gelu_pytorch_tanh": "tanh",
    "gelu_fast": "tanh",
    "gelu_python": "gelu",
    "relu": "relu",
}


def _act(net: _Net, path: str, x: str, name: str) -> str:
    kind = ACTIVATIONS.get(name)
    if kind is None:
        raise InputError(f"activation {name!r}: not one archcalc builds ({', '.join(ACTIVATIONS)})")
    if kind == "silu":
        return net.one(path, "Mul", [x, net.one(path, "Sigmoid", [x])])
    if kind == "relu":
        return net.one(path, "Relu", [x])
    return net.one(path, "Gelu", [x], approximate="tanh" if kind == "tanh" else "none")


def _mlp(
    net: _Net,
    path: str,
    x: str,
    z: dict,
    act: str,
    gated: bool,
    bias: bool,
    fused: bool = False,
    names: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj"),
) -> str:
    h, f = z["h"], z["ffn"]
    if not gated:
        up = _act(net, f"{path}/act", net.linear(f"{path}/{names[1]}", x, h, f, bias), act)
        return net.linear(f"{path}/{names[2]}", up, f, h, bias)
    if fused:  # phi3: one matrix for gate and up
        gate, up = net.op(
            f"{path}/split",
            "Split",
            [net.linear(f"{path}/gate_up_proj", x, h, 2 * f, bias), net.const(f"{path}.split", [f, f])],
            2,
            axis=-1,
        )
    else:
        gate, up = (net.linear(f"{path}/{n}", x, h, f, bias) for n in names[:2])
    mixed = net.one(f"{path}/act", "Mul", [_act(net, f"{path}/act", gate, act), up])
    return net.linear(f"{path}/{names[2]}", mixed, f, h, bias)


def _decoder_layer(net: _Net, cfg: dict, z: dict, i: int, x: str) -> str:
    """llama, mistral, qwen2/3, gemma 1-3, phi3: pre-norm attention and gated MLP, RMSNorm."""
    t, path = cfg["model_type"], f"/model/layers.{i}"
    sandwich = t in ("gemma2", "gemma3_text")  # norms after attention and MLP too
    y = net.norm(f"{path}/input_layernorm", x, z["h"], True)
    y = _attention(
        net,
        f"{path}/self_attn",
        y,
        z,
        qkv_bias=cfg.get("attention_bias", t == "qwen2"),
        out_bias=cfg.get("attention_bias", False) and t != "qwen2",
        fused=t == "phi3",
        qk_norm=t in ("qwen3", "gemma3_text"),
    )
    if sandwich:
        y = net.norm(f"{path}/post_attention_layernorm", y, z["h"], True)
    x = net.one(path, "Add", [x, y])
    y = net.norm(
        f"{path}/{'pre_feedforward_layernorm' if sandwich else 'post_attention_layernorm'}", x, z["h"], True
    )
    act = cfg.get("hidden_activation") or cfg.get("hidden_act", "silu")
    y = _mlp(net, f"{path}/mlp", y, z, act, gated=True, bias=cfg.get("mlp_bias", False), fused=t == "phi3")
    if sandwich:
        y = net.norm(f"{path}/post_feedforward_layernorm", y, z["h"], True)
    return net.one(path, "Add", [x, y])


def _gpt2_layer(net: _Net, cfg: dict, z: dict, i: int, x: str) -> str:
    path = f"/transformer/h.{i}"
    y = _attention(
        net,
        f"{path}/attn",
        net.norm(f"{path}/ln_1", x, z["h"], False),
        z,
        qkv_bias=True,
        out_bias=True,
        fused=True,
    )
    x = net.one(path, "Add", [x, y])
    y = _mlp(
        net,
        f"{path}/mlp",
        net.norm(f"{path}/ln_2", x, z["h"], False),
        z,
        cfg.get("activation_function", "gelu_new"),
        gated=False,
        bias=True,
        names=("", "c_fc", "c_proj"),
    )
    return net.one(path, "Add", [x, y])


def _neox_layer(net: _Net, cfg: dict, z: dict, i: int, x: str) -> str:
    path = f"/gpt_neox/layers.{i}"
    attn = _attention(
        net,
        f"{path}/attention",
        net.norm(f"{path}/input_layernorm", x, z["h"], False),
        z,
        qkv_bias=cfg.get("attention_bias", True),
        out_bias=cfg.get("attention_bias", True),
        fused=True,
    )
    mlp_in = x if cfg.get("use_parallel_residual", True) else net.one(path, "Add", [x, attn])
    mlp = _mlp(
        net,
        f"{path}/mlp",
        net.norm(f"{path}/post_attention_layernorm", mlp_in, z["h"], False),
        z,
        cfg.get("hidden_act", "gelu"),
        gated=False,
        bias=True,
        names=("", "dense_h_to_4h", "dense_4h_to_h"),
    )
    if cfg.get("use_parallel_residual", True):
        return net.one(path, "Add", [net.one(path, "Add", [x, attn]), mlp])
    return net.one(path, "Add", [mlp_in, mlp])


def _bert_layer(net: _Net, cfg: dict, z: dict, i: int, x: str) -> str:
    """Post-norm: x = LN(x + attention(x)); x = LN(x + MLP(x))."""
    path = f"/bert/encoder/layer.{i}"
    y = _attention(net, f"{path}/attention", x, z, qkv_bias=True, out_bias=True)
    x = net.norm(f"{path}/attention/output/LayerNorm", net.one(path, "Add", [x, y]), z["h"], False)
    y = _mlp(
        net,
        path,
        x,
        z,
        cfg.get("hidden_act", "gelu"),
        gated=False,
        bias=True,
        names=("", "intermediate/dense", "output/dense"),
    )
    return net.norm(f"{path}/output/LayerNorm", net.one(path, "Add", [x, y]), z["h"], False)


TIED = {"gemma": True, "gemma2": True, "gemma3_text": True, "gpt2": True}  # else untied unless the config says


def config_model(cfg: dict) -> onnx.ModelProto:
    """The ONNX model ``cfg`` (a read config) describes; input ``input_ids`` [batch, sequence]."""
    name = cfg.get("torch_dtype") or cfg.get("dtype") or "float32"
    if name not in DTYPES:
        raise InputError(f"dtype {name!r} in the config: archcalc builds {', '.join(DTYPES)}")
    net, z, t = _Net(DTYPES[name]), _sizes(cfg), cfg["model_type"]
    ids = "input_ids"
    shape = net.one("/shape", "Shape", [ids])
    x = {
        "gpt2": "/transformer/wte.weight",
        "gpt_neox": "/gpt_neox/embed_in.weight",
        "bert": "/bert/embeddings/word_embeddings.weight",
    }.get(t, "/model/embed_tokens.weight")
    table = net.w(x, [z["vocab"], z["h"]])
    x = net.one("/embed", "Gather", [table, ids])
    if t in ("gpt2", "bert"):
        x = _positions(net, cfg, z, shape, x)
    layer = {"gpt2": _gpt2_layer, "gpt_neox": _neox_layer, "bert": _bert_layer}.get(t, _decoder_layer)
    for i in range(z["layers"]):
        x = layer(net, cfg, z, i, x)
    if t == "bert":
        first = net.one("/bert/pooler", "Gather", [x, net.const("/bert/pooler.first", [0])], axis=1)
        out = net.one("/bert/pooler", "Tanh", [net.linear("/bert/pooler/dense", first, z["h"], z["h"], True)])
        outputs = [(x, ["batch", "sequence", z["h"]]), (out, ["batch", 1, z["h"]])]
    else:
        final = {"gpt2": "/transformer/ln_f", "gpt_neox": "/gpt_neox/final_layer_norm"}.get(t, "/model/norm")
        x = net.norm(final, x, z["h"], t in DECODERS)
        outputs = [(_head(net, cfg, z, t, x, table, shape), ["batch", "sequence", z["vocab"]])]
    graph = helper.make_graph(
        net.nodes,
        t,
        [helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info(o, net.dtype, dims) for o, dims in outputs],
        net.inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def _positions(net: _Net, cfg: dict, z: dict, shape: str, x: str) -> str:
    """Learned positions (GPT-2, BERT) and BERT's token types (all type 0) and embedding norm."""
    gpt2 = cfg["model_type"] == "gpt2"
    path = "/transformer" if gpt2 else "/bert/embeddings"
    count = cfg.get("n_positions" if gpt2 else "max_position_embeddings", 512)
    length = net.one(path, "Gather", [shape, net.const(f"{path}.seq_axis", [1])], axis=0)
    zero, one = net.const(f"{path}.zero", [0]), net.const(f"{path}.one", [1])
    steps = net.one(
        path,
        "Range",
        [net.one(path, "Squeeze", [zero]), net.one(path, "Squeeze", [length]), net.one(path, "Squeeze", [one])],
    )
    pos = net.w(f"{path}/{'wpe' if gpt2 else 'position_embeddings'}.weight", [count, z["h"]])
    x = net.one(path, "Add", [x, net.one(path, "Gather", [pos, steps])])
    if gpt2:
        return x
    types = net.w(f"{path}/token_type_embeddings.weight", [cfg.get("type_vocab_size", 2), z["h"]])
    zeros = net.one(path, "ConstantOfShape", [shape], value=helper.make_tensor("v", TensorProto.INT64, [1], [0]))
    x = net.one(path, "Add", [x, net.one(path, "Gather", [types, zeros])])
    return net.norm(f"{path}/LayerNorm", x, z["h"], False)


def _head(net: _Net, cfg: dict, z: dict, t: str, x: str, table: str, shape: str) -> str:
    """The LM head: its own matrix, or (tied) the embedding table read transposed."""
    if not cfg.get("tie_word_embeddings", TIED.get(t, False)):
        name = "/gpt_neox/embed_out" if t == "gpt_neox" else "/lm_head"
        return net.linear(name, x, z["h"], z["vocab"], False)
    flat = net.one("/lm_head", "Reshape", [x, net.const("/lm_head.flat", [-1, z["h"]])])
    logits = net.one("/lm_head", "Gemm", [flat, table], transB=1)
    back = net.one("/lm_head", "Concat", [shape, net.const("/lm_head.vocab", [z["vocab"]])], axis=0)
    return net.one("/lm_head", "Reshape", [logits, back])
