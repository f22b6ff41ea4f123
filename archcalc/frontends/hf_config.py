"""A Hugging Face ``config.json`` as a graph: the model it describes, with no weights and no torch.

The config names the architecture (``model_type``) and its sizes under each family's own field
names; this reads them into the block specs of ``archcalc.frontends.transformer_net`` and builds the
forward graph the transformers implementation runs (``archcalc.frontends.hf_layers``: embeddings,
each layer's norms, attention and MLP or experts, the final norm and the LM head). Families: those
in ``FAMILIES`` below (llama and its descendants, the MoE ones, DeepSeek-V2/V3's latent attention, gemma 1-3,
phi 1-3, olmo 2-3, granite, cohere, starcoder 1-2, gpt2, opt, gpt_neox, falcon, bert). A family not listed
is refused by name.
"""

from __future__ import annotations

from pathlib import Path

from archcalc.errors import InputError
from archcalc.frontends import hf_quant, hf_schema
from archcalc.frontends.transformer_net import AttentionSpec, Latent, MLPSpec, MoESpec

DECODERS = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
            "gemma3_text", "phi3", "deepseek_v2", "deepseek_v3", "granite", "starcoder2", "cohere", "olmo2",
            "olmo3", "phi")
# Decoders whose norms are LayerNorm (the rest: RMSNorm): with a bias or (cohere's) without
LAYER_NORM = {"starcoder2": True, "cohere": False, "phi": True}
# Decoders whose attention and MLP read the same normed input side by side, summed into the residual
PARALLEL = ("cohere", "phi")
POST_NORM_ONLY = ("olmo2", "olmo3")  # a norm after each sublayer, none before
LATENT = ("deepseek_v2", "deepseek_v3")  # multi-head latent attention, DeepSeek's routed and shared experts
# Norms on the queries and keys (transformer_net.AttentionSpec.qk_norm); phi's only with qk_layernorm
QK_NORMS = {"qwen3": "head", "qwen3_moe": "head", "gemma3_text": "head", "olmo2": "whole", "olmo3": "whole"}
GPT2_LIKE = ("gpt2", "gpt_bigcode")  # GPT-2's layers and learned positions (gpt_bigcode: one key/value head)
FAMILIES = (*DECODERS, *GPT2_LIKE, "opt", "gpt_neox", "falcon", "bert")
TIED = {"gemma": True, "gemma2": True, "gemma3_text": True, "gpt2": True, "gpt_bigcode": True,
        "opt": True, "cohere": True, "falcon": True}  # else untied unless the config says
LEARNED_POSITIONS = (*GPT2_LIKE, "opt", "bert")  # a position table, no rotary


def is_config(path: Path) -> bool:
    """A JSON file that names a transformers architecture."""
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        cfg = hf_schema.load(path)
    except (OSError, InputError):
        return path.stat().st_size > hf_schema.MAX_CONFIG_BYTES  # too large to be one: read_config says so
    return isinstance(cfg, dict) and "model_type" in cfg


def read_config(path: Path) -> dict:
    """The config at ``path``, every field checked (``hf_schema``) and the model it describes known to
    build: an error names the file and the field."""
    cfg = hf_schema.check(hf_schema.load(path), path)
    if cfg.get("model_type") == "gemma3":  # the multimodal wrapper: its language model
        cfg = {
            **hf_schema.check(cfg.get("text_config", {}), path, "text_config."),
            "model_type": "gemma3_text",
            "torch_dtype": cfg.get("torch_dtype", cfg.get("dtype")),
        }
    if cfg.get("model_type") not in FAMILIES:
        raise InputError(
            f"{path}: model_type {cfg.get('model_type')!r} is not one archcalc builds from a config "
            f"(it builds {', '.join(FAMILIES)}); export the model to ONNX instead"
        )
    try:  # each layer's specs, as the builder will ask for them: what the fields say of each other
        z = sizes(cfg)
        windows(cfg, z["layers"])
        attention_spec(cfg, z, None, "eager")
        for i in range(z["layers"]):
            feed_forward(cfg, z, i)
        hf_quant.scheme(cfg, cfg.get("torch_dtype") or cfg.get("dtype") or "float32")
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return cfg


def size(cfg: dict, *keys: str, default: int | None = None) -> int:
    """The first of ``keys`` the config gives, a positive whole number (else the one-line error)."""
    value = next((cfg[k] for k in keys if cfg.get(k) is not None), default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{keys[0]}: {value!r} is not a positive whole number; the config needs it")
    return value


def sizes(cfg: dict) -> dict:
    """The sizes every family's config gives under its own names."""
    h = size(cfg, "hidden_size", "n_embd")
    a = size(cfg, "num_attention_heads", "n_head")
    # GPTBigCode's multi-query attention (its default): one key/value head beside the queries
    kv = _kv_heads(cfg, a)
    if a % kv:
        raise InputError(f"num_key_value_heads: {a} attention heads do not group evenly over {kv} key/value "
                         "heads; it must divide num_attention_heads")
    if h < a and cfg.get("head_dim") is None:
        raise InputError(f"hidden_size: {h} is narrower than its {a} heads (heads of width 0); correct it or "
                         "give head_dim")
    return {"h": h, "a": a, "kv": kv, "d": size(cfg, "head_dim", default=h // a),
            "layers": size(cfg, "num_hidden_layers", "n_layer"), "vocab": size(cfg, "vocab_size"),
            "ffn": size(cfg, "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size", default=4 * h)}


def _kv_heads(cfg: dict, heads: int) -> int:
    """Key/value heads: the config's count, or one where a family's multi-query default says so
    (GPTBigCode's; Falcon's, whose new_decoder_architecture reads num_kv_heads instead)."""
    t = cfg.get("model_type")
    if t == "falcon":
        if cfg.get("new_decoder_architecture"):
            if not cfg.get("parallel_attn", True):
                raise InputError("new_decoder_architecture: Falcon's new layers run attention and MLP side by "
                                 "side; with parallel_attn false transformers builds no norm for them: set one of "
                                 "the two")
            return size(cfg, "num_kv_heads", default=heads)
        return 1 if cfg.get("multi_query", True) else heads
    multi_query = t == "gpt_bigcode" and cfg.get("multi_query", True)
    return size(cfg, "num_key_value_heads", default=1 if multi_query else heads)


def windows(cfg: dict, layers: int) -> list[int | None]:
    """Each layer's sliding window (None: it attends to every earlier token), as transformers sets
    ``layer_types``: given in the config, else the family's pattern."""
    t, window = cfg["model_type"], cfg.get("sliding_window")
    if t in ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe") and not cfg.get("use_sliding_window"):
        window = None
    if not window:
        return [None] * layers
    types = cfg.get("layer_types")
    if types is None:
        if t == "gemma2":
            types = ["sliding_attention" if i % 2 == 0 else "full" for i in range(layers)]
        elif t == "gemma3_text":
            every = cfg.get("sliding_window_pattern", 6)
            types = ["sliding_attention" if (i + 1) % every else "full" for i in range(layers)]
        elif t == "olmo3":  # Olmo3Config: every fourth layer full
            types = ["sliding_attention" if (i + 1) % 4 else "full" for i in range(layers)]
        elif t.startswith("qwen"):
            first = cfg.get("max_window_layers", 0)
            types = ["sliding_attention" if i >= first else "full" for i in range(layers)]
        else:
            types = ["sliding_attention"] * layers
    if len(types) != layers:
        raise InputError(f"layer_types: lists {len(types)} layers for num_hidden_layers {layers}; give one "
                         "entry a layer")
    return [window if kind == "sliding_attention" else None for kind in types]


def attention_spec(cfg: dict, z: dict, window: int | None, kernel: str) -> AttentionSpec:
    """The attention of a decoder layer of ``cfg``'s family."""
    t = cfg["model_type"]
    if t == "cohere" and cfg.get("use_qk_norm"):
        raise InputError("use_qk_norm: cohere's per-head query and key norms are not modelled; export the model "
                         "to ONNX instead")
    bias = cfg.get("use_bias", True) if t == "starcoder2" else t == "phi" or cfg.get("attention_bias", False)
    qkv_bias = cfg.get("qkv_bias", bias or t == "qwen2")
    latent = None
    if t in LATENT:
        latent = Latent(q_rank=cfg.get("q_lora_rank"), kv_rank=size(cfg, "kv_lora_rank"),
                        rope_dim=size(cfg, "qk_rope_head_dim"), nope_dim=size(cfg, "qk_nope_head_dim"),
                        v_dim=size(cfg, "v_head_dim"))
    return AttentionSpec(z["a"], z["kv"] if latent is None else z["a"], z["d"], qkv_bias=qkv_bias,
                         out_bias=bias and t not in ("qwen2", "qwen2_moe"), fused_qkv=t == "phi3",
                         qk_norm="head-ln" if t == "phi" and cfg.get("qk_layernorm") else QK_NORMS.get(t, ""),
                         window=window, kernel=kernel,
                         latent=latent, rotary=rotary(cfg, z["d"], latent))


def _experts(cfg: dict) -> int:
    return next((cfg[k] for k in ("num_local_experts", "num_experts", "n_routed_experts") if cfg.get(k)), 0)


def feed_forward(cfg: dict, z: dict, i: int) -> MLPSpec | MoESpec:
    """Layer ``i``'s MLP, or its experts where the family routes that layer."""
    t = cfg["model_type"]
    act = cfg.get("hidden_activation") or cfg.get("hidden_act", "silu")
    if t == "starcoder2":  # Starcoder2MLP: c_fc, the activation, c_proj; biased unless use_bias is false
        return MLPSpec(z["ffn"], act, gated=False, bias=cfg.get("use_bias", True), names=("", "c_fc", "c_proj"))
    if t == "phi":  # PhiMLP: fc1, the activation, fc2, both biased
        return MLPSpec(z["ffn"], act, gated=False, bias=True, names=("", "fc1", "fc2"))
    dense = MLPSpec(z["ffn"], act, fused=t == "phi3", bias=cfg.get("mlp_bias", False))
    experts = _experts(cfg) if t in ("mixtral", "qwen2_moe", "qwen3_moe", *LATENT) else 0
    if not experts:
        return dense
    if t in LATENT:
        if i < cfg.get("first_k_dense_replace", 0) or i % cfg.get("moe_layer_freq", 1):
            return dense
        width = size(cfg, "moe_intermediate_size")
        return MoESpec(experts, size(cfg, "num_experts_per_tok"), width,
                       shared_ffn=width * cfg.get("n_shared_experts", 0), act=act)
    if t != "mixtral" and (i in cfg.get("mlp_only_layers", []) or (i + 1) % cfg.get("decoder_sparse_step", 1)):
        return dense
    width = z["ffn"] if t == "mixtral" else size(cfg, "moe_intermediate_size")
    shared = cfg.get("shared_expert_intermediate_size", 0) if t == "qwen2_moe" else 0
    return MoESpec(experts, size(cfg, "num_experts_per_tok"), width, shared_ffn=shared,
                   shared_gate=bool(shared), act=act)


def rotary(cfg: dict, head_dim: int, latent: Latent | None = None) -> tuple[int, int]:
    """(positions, dims) of the rotary cos/sin table a server precomputes (vLLM's ``get_rope``: one
    row of ``rotary_dim`` per position up to max_position_embeddings); 0 dims for learned positions."""
    t = cfg["model_type"]
    if t == "falcon" and cfg.get("alibi"):  # ALiBi's slopes bias the scores: no table
        return cfg.get("max_position_embeddings", 0), 0
    default = 0.5 if t == "phi" else 1.0  # PhiConfig's default share
    share = cfg.get("rotary_pct", cfg.get("partial_rotary_factor", default))
    dims = 0 if t in LEARNED_POSITIONS else latent.rope_dim if latent else int(head_dim * share)
    return cfg.get("max_position_embeddings", 0), dims


def hyperparameters(cfg: dict) -> dict:
    """A transformer's hyperparameters as Megatron-LM's arguments name them (the fields of
    ``analysis.plan.megatron.Transformer``): what its own memory estimate reads."""
    t = cfg["model_type"]
    if t in LATENT or cfg.get("num_nextn_predict_layers"):
        raise InputError(f"Megatron-LM's estimate for {t}: latent attention and multi-token prediction are "
                         "not modelled here")
    z = sizes(cfg)
    specs = [feed_forward(cfg, z, i) for i in range(z["layers"])]
    moe = next((s for s in specs if isinstance(s, MoESpec)), None)
    act = cfg.get("hidden_activation") or cfg.get("hidden_act", "silu")
    plain = t in (*LEARNED_POSITIONS, "gpt_neox", "falcon")
    return {"layers": z["layers"], "hidden": z["h"], "heads": z["a"], "groups": z["kv"], "head_dim": z["d"],
            "ffn": z["ffn"], "vocab": z["vocab"], "swiglu": not plain and act in ("silu", "swish"),
            "rms": not plain and t not in LAYER_NORM,
            "untied": not cfg.get("tie_word_embeddings", TIED.get(t, False)),
            "experts": moe.experts if moe else 0, "expert_ffn": moe.ffn if moe else 0,
            "top_k": moe.top_k if moe else 0, "shared_ffn": moe.shared_ffn if moe else 0,
            "shared_gate": bool(moe and moe.shared_gate),
            "moe_layers": tuple(isinstance(s, MoESpec) for s in specs)}


def with_layers(cfg: dict, layers: int) -> dict:
    """``cfg`` with ``layers`` layers of the same widths: each per-layer list (``layer_types``) repeated
    in its pattern, layer indices past the end (``mlp_only_layers``) dropped."""
    key = "n_layer" if "n_layer" in cfg and "num_hidden_layers" not in cfg else "num_hidden_layers"
    out = {**cfg, key: layers}
    if isinstance(cfg.get("layer_types"), list) and cfg["layer_types"]:
        types = cfg["layer_types"]
        out["layer_types"] = [types[i % len(types)] for i in range(layers)]
    if isinstance(cfg.get("mlp_only_layers"), list):
        out["mlp_only_layers"] = [i for i in cfg["mlp_only_layers"] if i < layers]
    return out
