"""The layers of each Hugging Face family as transformers arranges them, from the specs
``archcalc.frontends.hf_config`` reads: pre-norm decoders (llama and its descendants, the MoE and
latent-attention ones included), GPT-2, GPT-NeoX and BERT. Node names follow transformers' module
paths, so the planner finds each layer as a unit.
"""

from __future__ import annotations

from archcalc.errors import InputError
from archcalc.frontends import hf_quant
from archcalc.frontends.hf_config import (
    DECODERS,
    GPT2_LIKE,
    LAYER_NORM,
    PARALLEL,
    POST_NORM_ONLY,
    TIED,
    attention_spec,
    feed_forward,
    rotary,
    sizes,
    windows,
)
from archcalc.frontends.onnx_helpers import make_tensor, make_tensor_value_info
from archcalc.frontends.transformer_net import AttentionSpec, MLPSpec, MoESpec, Net, attention, mlp, moe, tied_head
from archcalc.onnx_proto import ModelProto, TensorProto

DTYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}


def _decoder_layer(net: Net, cfg: dict, z: dict, i: int, x: str, attn: AttentionSpec) -> str:
    """llama, mistral, mixtral, qwen2/3 (and MoE), gemma 1-3, phi3, deepseek_v2/3, granite: pre-norm
    attention and a gated MLP or experts, RMSNorm (gemma2/3: norms after each sublayer too; olmo2/3:
    after only); starcoder2: LayerNorm and a plain biased MLP; cohere and phi: one norm, attention and
    MLP side by side."""
    path, t = f"/model/layers.{i}", cfg["model_type"]
    rms, bias = t not in LAYER_NORM, LAYER_NORM.get(t, True)
    pre, post = t not in POST_NORM_ONLY, t in POST_NORM_ONLY or t in ("gemma2", "gemma3_text")
    normed = net.norm(f"{path}/input_layernorm", x, z["h"], rms, bias=bias) if pre else x
    y = attention(net, f"{path}/self_attn", normed, z["h"], attn, ("dense",) if t == "phi" else ())
    ff = feed_forward(cfg, z, i)
    if t in PARALLEL and isinstance(ff, MLPSpec):
        x = net.one(path, "Add", [x, y])
        return net.one(path, "Add", [x, mlp(net, f"{path}/mlp", normed, z["h"], ff)])
    if post:
        y = net.norm(f"{path}/post_attention_layernorm", y, z["h"], True)
    x = net.one(path, "Add", [x, _residual(net, cfg, path, y)])
    norm = "pre_feedforward_layernorm" if post else "post_attention_layernorm"
    y = net.norm(f"{path}/{norm}", x, z["h"], rms, bias=bias) if pre else x
    y = moe(net, f"{path}/mlp", y, z["h"], ff, _shared_name(cfg)) if isinstance(ff, MoESpec) else \
        mlp(net, f"{path}/mlp", y, z["h"], ff)
    if post:
        y = net.norm(f"{path}/post_feedforward_layernorm", y, z["h"], True)
    return net.one(path, "Add", [x, _residual(net, cfg, path, y)])


def _residual(net: Net, cfg: dict, path: str, y: str) -> str:
    """A sublayer's output as it joins the residual stream: granite scales it first
    (``residual + hidden_states * residual_multiplier``, transformers' GraniteDecoderLayer)."""
    if cfg["model_type"] != "granite":
        return y
    return net.scaled(path, y, float(cfg.get("residual_multiplier", 1.0)))


def _shared_name(cfg: dict) -> str:
    return "shared_expert" if cfg["model_type"] == "qwen2_moe" else "shared_experts"


def _gpt2_layer(net: Net, cfg: dict, z: dict, i: int, x: str, attn: AttentionSpec) -> str:
    path = f"/transformer/h.{i}"
    y = attention(net, f"{path}/attn", net.norm(f"{path}/ln_1", x, z["h"], False), z["h"], attn)
    x = net.one(path, "Add", [x, y])
    ff = MLPSpec(z["ffn"], cfg.get("activation_function", "gelu_new"), gated=False, bias=True,
                 names=("", "c_fc", "c_proj"))
    y = mlp(net, f"{path}/mlp", net.norm(f"{path}/ln_2", x, z["h"], False), z["h"], ff)
    return net.one(path, "Add", [x, y])


def _neox_layer(net: Net, cfg: dict, z: dict, i: int, x: str, attn: AttentionSpec) -> str:
    path = f"/gpt_neox/layers.{i}"
    y = attention(net, f"{path}/attention", net.norm(f"{path}/input_layernorm", x, z["h"], False), z["h"], attn)
    parallel = cfg.get("use_parallel_residual", True)
    mlp_in = x if parallel else net.one(path, "Add", [x, y])
    ff = MLPSpec(z["ffn"], cfg.get("hidden_act", "gelu"), gated=False, bias=True,
                 names=("", "dense_h_to_4h", "dense_4h_to_h"))
    out = mlp(net, f"{path}/mlp", net.norm(f"{path}/post_attention_layernorm", mlp_in, z["h"], False), z["h"], ff)
    return net.one(path, "Add", [net.one(path, "Add", [x, y]) if parallel else mlp_in, out])


def _opt_layer(net: Net, cfg: dict, z: dict, i: int, x: str, attn: AttentionSpec) -> str:
    """OPTDecoderLayer: attention and a plain fc1 / fc2 MLP, each with its LayerNorm before it
    (do_layer_norm_before, every OPT but the 350M) or after the residual add."""
    path, pre = f"/model/decoder/layers.{i}", cfg.get("do_layer_norm_before", True)
    normed = net.norm(f"{path}/self_attn_layer_norm", x, z["h"], False) if pre else x
    y = attention(net, f"{path}/self_attn", normed, z["h"], attn)
    x = net.one(path, "Add", [x, y])
    x = x if pre else net.norm(f"{path}/self_attn_layer_norm", x, z["h"], False)
    ff = MLPSpec(z["ffn"], cfg.get("activation_function", "relu"), gated=False, bias=cfg.get("enable_bias", True),
                 names=("", "fc1", "fc2"))
    y = mlp(net, path, net.norm(f"{path}/final_layer_norm", x, z["h"], False) if pre else x, z["h"], ff)
    x = net.one(path, "Add", [x, y])
    return x if pre else net.norm(f"{path}/final_layer_norm", x, z["h"], False)


def _falcon_layer(net: Net, cfg: dict, z: dict, i: int, x: str, attn: AttentionSpec) -> str:
    """FalconDecoderLayer: attention and MLP side by side (parallel_attn, every Falcon but RW) from
    one LayerNorm, or from two (ln_attn, ln_mlp: new_decoder_architecture's default); else in turn,
    each after its own norm."""
    path, bias = f"/transformer/h.{i}", cfg.get("bias", False)
    ff = MLPSpec(z["ffn"], cfg.get("activation", "gelu"), gated=False, bias=bias,
                 names=("", "dense_h_to_4h", "dense_4h_to_h"))
    if not cfg.get("parallel_attn", True):
        y = attention(net, f"{path}/self_attention", net.norm(f"{path}/input_layernorm", x, z["h"], False), z["h"],
                      attn, ("dense",))
        x = net.one(path, "Add", [x, y])
        y = mlp(net, f"{path}/mlp", net.norm(f"{path}/post_attention_layernorm", x, z["h"], False), z["h"], ff)
        return net.one(path, "Add", [x, y])
    if cfg.get("new_decoder_architecture") and cfg.get("num_ln_in_parallel_attn", 2) == 2:
        normed = net.norm(f"{path}/ln_attn", x, z["h"], False)
        mlp_in = net.norm(f"{path}/ln_mlp", x, z["h"], False)
    else:
        normed = mlp_in = net.norm(f"{path}/input_layernorm", x, z["h"], False)
    y = attention(net, f"{path}/self_attention", normed, z["h"], attn, ("dense",))
    out = net.one(path, "Add", [mlp(net, f"{path}/mlp", mlp_in, z["h"], ff), y])
    return net.one(path, "Add", [x, out])


def _bert_layer(net: Net, cfg: dict, z: dict, i: int, x: str, attn: AttentionSpec) -> str:
    """Post-norm: x = LN(x + attention(x)); x = LN(x + MLP(x))."""
    path = f"/bert/encoder/layer.{i}"
    y = attention(net, f"{path}/attention", x, z["h"], attn)
    x = net.norm(f"{path}/attention/output/LayerNorm", net.one(path, "Add", [x, y]), z["h"], False)
    ff = MLPSpec(z["ffn"], cfg.get("hidden_act", "gelu"), gated=False, bias=True,
                 names=("", "intermediate/dense", "output/dense"))
    return net.norm(f"{path}/output/LayerNorm", net.one(path, "Add", [x, mlp(net, path, x, z["h"], ff)]), z["h"],
                    False)


def _attention(cfg: dict, z: dict, window: int | None, kernel: str) -> AttentionSpec:
    t = cfg["model_type"]
    if t in DECODERS:
        return attention_spec(cfg, z, window, kernel)
    bias = cfg.get("attention_bias", True) if t == "gpt_neox" else cfg.get("enable_bias", True) if t == "opt" \
        else cfg.get("bias", False) if t == "falcon" else True
    return AttentionSpec(z["a"], z["kv"], z["d"], qkv_bias=bias, out_bias=bias, fused_qkv=t not in ("bert", "opt"),
                         kernel="eager" if t == "bert" else kernel, rotary=rotary(cfg, z["d"]))


def config_model(cfg: dict, kernel: str = "eager") -> ModelProto:
    """The ONNX model ``cfg`` (a read config) describes; input ``input_ids`` [batch, sequence].
    ``kernel``: the decoders' attention, eager (scores kept) or fused (flash attention)."""
    name = cfg.get("torch_dtype") or cfg.get("dtype") or "float32"
    if name not in DTYPES:
        raise InputError(f"dtype {name!r} in the config: archcalc builds {', '.join(DTYPES)}")
    net, z, t = Net(DTYPES[name], hf_quant.scheme(cfg, name)), sizes(cfg), cfg["model_type"]
    ids = "input_ids"
    shape = net.one("/shape", "Shape", [ids])
    width = cfg.get("word_embed_proj_dim") or z["h"] if t == "opt" else z["h"]  # OPT-350M: a narrower table
    table = net.w({"gpt2": "/transformer/wte.weight", "gpt_bigcode": "/transformer/wte.weight",
                   "gpt_neox": "/gpt_neox/embed_in.weight", "opt": "/model/decoder/embed_tokens.weight",
                   "falcon": "/transformer/word_embeddings.weight",
                   "bert": "/bert/embeddings/word_embeddings.weight"}.get(t, "/model/embed_tokens.weight"),
                  [z["vocab"], width])
    x = net.one("/embed", "Gather", [table, ids])
    if t == "opt":
        x = _opt_positions(net, cfg, z, shape, x, width)
    if t == "granite":  # GraniteModel: inputs_embeds * embedding_multiplier
        x = net.scaled("/embed", x, float(cfg.get("embedding_multiplier", 1.0)))
    if t in (*GPT2_LIKE, "bert"):
        x = _positions(net, cfg, z, shape, x)
    layer = {"gpt2": _gpt2_layer, "gpt_bigcode": _gpt2_layer, "gpt_neox": _neox_layer, "opt": _opt_layer,
             "falcon": _falcon_layer, "bert": _bert_layer}.get(t, _decoder_layer)
    for i, window in enumerate(windows(cfg, z["layers"])):
        x = layer(net, cfg, z, i, x, _attention(cfg, z, window, kernel))
    if t == "bert":
        first = net.one("/bert/pooler", "Gather", [x, net.const("/bert/pooler.first", [0])], axis=1)
        out = net.one("/bert/pooler", "Tanh", [net.linear("/bert/pooler/dense", first, z["h"], z["h"], True)])
        outputs = [(x, ["batch", "sequence", z["h"]]), (out, ["batch", 1, z["h"]])]
    else:
        outputs = [(_head(net, cfg, z, _final(net, cfg, z, x, width), table, shape, width),
                    ["batch", "sequence", z["vocab"]])]
    return net.model(t, [make_tensor_value_info(ids, TensorProto.INT64, ["batch", "sequence"])],
                     [make_tensor_value_info(o, net.dtype, dims) for o, dims in outputs])


FINAL_NORMS = {"gpt2": "/transformer/ln_f", "gpt_bigcode": "/transformer/ln_f",
               "opt": "/model/decoder/final_layer_norm", "gpt_neox": "/gpt_neox/final_layer_norm",
               "phi": "/model/final_layernorm", "falcon": "/transformer/ln_f"}


def _final(net: Net, cfg: dict, z: dict, x: str, width: int) -> str:
    """The last layer's output as the head reads it: the final norm (none in a post-norm OPT), and
    OPT's projection out to a narrower embedding table."""
    t = cfg["model_type"]
    if t != "opt" or (cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm")):
        x = net.norm(FINAL_NORMS.get(t, "/model/norm"), x, z["h"], t in DECODERS and t not in LAYER_NORM,
                     bias=LAYER_NORM.get(t, True))
    if t == "opt" and width != z["h"]:
        x = net.linear("/model/decoder/project_out", x, z["h"], width, False)
    return x


def _opt_positions(net: Net, cfg: dict, z: dict, shape: str, x: str, width: int) -> str:
    """OPT's learned positions (OPTLearnedPositionalEmbedding: max_position_embeddings + 2 rows, the
    first two an offset) added after the tokens are projected in where the table is narrower."""
    path = "/model/decoder"
    if width != z["h"]:
        x = net.linear(f"{path}/project_in", x, width, z["h"], False)
    rows = cfg.get("max_position_embeddings", 2048) + 2
    length = net.one(path, "Gather", [shape, net.const(f"{path}.seq_axis", [1])], axis=0)
    two, one = net.const(f"{path}.offset", [2]), net.const(f"{path}.one", [1])
    steps = net.one(path, "Range", [net.one(path, "Squeeze", [two]),
                                    net.one(path, "Squeeze", [net.one(path, "Add", [length, two])]),
                                    net.one(path, "Squeeze", [one])])
    pos = net.w(f"{path}/embed_positions.weight", [rows, z["h"]])
    return net.one(path, "Add", [x, net.one(path, "Gather", [pos, steps])])


def _positions(net: Net, cfg: dict, z: dict, shape: str, x: str) -> str:
    """Learned positions (GPT-2, BERT) and BERT's token types (all type 0) and embedding norm."""
    gpt2 = cfg["model_type"] in GPT2_LIKE
    path = "/transformer" if gpt2 else "/bert/embeddings"
    count = cfg.get("n_positions" if gpt2 else "max_position_embeddings", 512)
    length = net.one(path, "Gather", [shape, net.const(f"{path}.seq_axis", [1])], axis=0)
    zero, one = net.const(f"{path}.zero", [0]), net.const(f"{path}.one", [1])
    steps = net.one(path, "Range", [net.one(path, "Squeeze", [zero]), net.one(path, "Squeeze", [length]),
                                    net.one(path, "Squeeze", [one])])
    pos = net.w(f"{path}/{'wpe' if gpt2 else 'position_embeddings'}.weight", [count, z["h"]])
    x = net.one(path, "Add", [x, net.one(path, "Gather", [pos, steps])])
    if gpt2:
        return x
    types = net.w(f"{path}/token_type_embeddings.weight", [cfg.get("type_vocab_size", 2), z["h"]])
    zeros = net.one(path, "ConstantOfShape", [shape], value=make_tensor("v", TensorProto.INT64, [1], [0]))
    x = net.one(path, "Add", [x, net.one(path, "Gather", [types, zeros])])
    return net.norm(f"{path}/LayerNorm", x, z["h"], False)


def _head(net: Net, cfg: dict, z: dict, x: str, table: str, shape: str, width: int) -> str:
    """The LM head over ``width``-wide rows: its own matrix, or (tied) the embedding table read
    transposed."""
    t = cfg["model_type"]
    if not cfg.get("tie_word_embeddings", TIED.get(t, False)):
        head = net.linear("/gpt_neox/embed_out" if t == "gpt_neox" else "/lm_head", x, width, z["vocab"],
                          t == "phi")  # PhiForCausalLM's head has a bias
    else:
        head = tied_head(net, x, width, z["vocab"], table, shape)
    if t == "granite":  # GraniteForCausalLM: logits / logits_scaling, a tensor of its own
        head = net.scaled("/lm_head", head, float(cfg.get("logits_scaling", 1.0)), "Div")
    if t == "cohere":  # CohereForCausalLM: logits * logit_scale
        head = net.scaled("/lm_head", head, float(cfg.get("logit_scale", 1.0)))
    return net.trained_on(head)
