"""What a Hugging Face config.json may say, field by field: read once, checked once, before anything is
built from it.

Every field a family reads is declared here with its kind and the range a real model reaches; the
builders then trust what they read. A value of the wrong type or out of range is one error that names
the file, the field's path (``text_config.sliding_window``) and what it must be -- never a traceback
deep in the builder, and never a graph of a plausible-looking model the config does not describe.
The bounds are generous against published models (the widest hidden size is about 25,600; the
deepest decoder 126 layers; the largest vocabulary about 262,000; the most routed experts 384) and
keep a hostile file from building a graph that takes minutes or gigabytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from archcalc.errors import InputError

MAX_CONFIG_BYTES = 16 << 20  # a config.json is a few kilobytes; id2label tables make some 100 KiB
MAX_LAYERS = 1024  # the deepest published decoder has 126 layers; 1,000 analyse in seconds
MAX_WIDTH = 1 << 20  # hidden, intermediate and head widths
MAX_HEADS = 1 << 14
MAX_VOCAB = 1 << 23
MAX_EXPERTS = 1 << 14
MAX_POSITIONS = 1 << 26  # a position table's rows (context lengths of 10M tokens are published)
DTYPE_NAMES = ("float32", "float16", "bfloat16")
ATTENTION_KINDS = ("sliding_attention", "full_attention")


@dataclass(frozen=True)
class Rule:
    """A field's kind: ``check`` returns what is wrong with a value (None: nothing)."""

    check: Callable[[object], str | None]
    optional: bool = True  # null is allowed, and means the family's default


def _whole(low: int, high: int) -> Rule:
    def check(v: object) -> str | None:
        if not isinstance(v, int) or isinstance(v, bool):
            return f"a whole number from {low:,} to {high:,}"
        return None if low <= v <= high else f"a whole number from {low:,} to {high:,}"
    return Rule(check)


def _fraction() -> Rule:
    def check(v: object) -> str | None:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and 0 < v <= 1
        return None if ok else "a fraction in (0, 1]"
    return Rule(check)


def _flag() -> Rule:
    return Rule(lambda v: None if isinstance(v, bool) else "true or false")


def _positive() -> Rule:
    """A positive finite number (a scale or multiplier)."""
    def check(v: object) -> str | None:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        return None if ok else "a positive number"
    return Rule(check)


def _one_of(names: tuple[str, ...] | list[str]) -> Rule:
    return Rule(lambda v: None if isinstance(v, str) and v in names else "one of " + ", ".join(names))


def _list_of(item: Rule, longest: int) -> Rule:
    def check(v: object) -> str | None:
        if not isinstance(v, list) or len(v) > longest:
            return f"a list of at most {longest:,} entries"
        wrong = next((i for i, x in enumerate(v) if item.check(x)), None)
        if wrong is None:
            return None
        return f"a list whose every entry is {item.check(v[wrong])} (entry {wrong} is {_shown(v[wrong])})"
    return Rule(check)


def _activations() -> tuple[str, ...]:
    from archcalc.frontends.transformer_net import ACTIVATIONS

    return tuple(ACTIVATIONS)


POSITIVE = _whole(1, MAX_WIDTH)
COUNT = _whole(0, MAX_WIDTH)
FIELDS: dict[str, Rule] = {
    **{k: POSITIVE for k in ("hidden_size", "n_embd", "intermediate_size", "n_inner", "head_dim", "kv_lora_rank",
                             "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim",
                             "moe_intermediate_size", "ffn_dim", "word_embed_proj_dim", "ffn_hidden_size")},
    "sliding_window": _whole(0, MAX_POSITIONS),  # 0, as Qwen2-MoE's config writes it, is no window
    **{k: _whole(1, MAX_HEADS) for k in ("num_attention_heads", "n_head", "num_key_value_heads", "num_kv_heads")},
    "num_ln_in_parallel_attn": _whole(1, 2),
    **{k: _whole(1, MAX_LAYERS) for k in ("num_hidden_layers", "n_layer")},
    **{k: _whole(1, MAX_LAYERS) for k in ("decoder_sparse_step", "moe_layer_freq", "sliding_window_pattern")},
    **{k: _whole(0, MAX_LAYERS) for k in ("first_k_dense_replace", "max_window_layers")},
    **{k: _whole(0, MAX_EXPERTS) for k in ("num_local_experts", "num_experts", "n_routed_experts",
                                            "n_shared_experts")},
    "num_experts_per_tok": _whole(1, MAX_EXPERTS),
    "shared_expert_intermediate_size": COUNT,
    "vocab_size": _whole(1, MAX_VOCAB),
    "type_vocab_size": _whole(1, MAX_VOCAB),
    **{k: _whole(1, MAX_POSITIONS) for k in ("max_position_embeddings", "n_positions")},
    **{k: _flag() for k in ("use_sliding_window", "use_parallel_residual", "attention_bias", "qkv_bias",
                            "mlp_bias", "tie_word_embeddings", "use_bias", "enable_bias", "multi_query",
                            "do_layer_norm_before", "use_qk_norm", "qk_layernorm", "new_decoder_architecture",
                            "parallel_attn", "bias", "alibi")},
    **{k: _positive() for k in ("embedding_multiplier", "residual_multiplier", "logits_scaling", "logit_scale")},
    **{k: _fraction() for k in ("rotary_pct", "partial_rotary_factor")},
    **{k: _one_of(DTYPE_NAMES) for k in ("torch_dtype", "dtype")},
    "layer_types": _list_of(_one_of(ATTENTION_KINDS), MAX_LAYERS),
    "mlp_only_layers": _list_of(_whole(0, MAX_LAYERS - 1), MAX_LAYERS),
}
ACTIVATION_FIELDS = ("hidden_act", "hidden_activation", "activation_function", "activation")


def load(path: Path) -> object:
    """The file's JSON, bounded in size and depth (a byte-order mark is allowed, as in designs)."""
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise InputError(f"{path}: {size:,} bytes is not a config.json (they are kilobytes; archcalc reads up to "
                         f"{MAX_CONFIG_BYTES >> 20} MiB): give the model's config.json")
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except RecursionError:
        raise InputError(f"{path}: its JSON nests deeper than a config's: give the model's config.json") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: byte {exc.start} is not UTF-8: a config.json is UTF-8 text") from None
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); a Hugging Face config.json is expected") from None


def check(cfg: object, path: Path, where: str = "") -> dict:
    """``cfg`` as a config object whose every declared field holds a value of its kind."""
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: {where.rstrip('.') or 'the top level'} is {_json_kind(cfg)}, not an object: "
                         "a Hugging Face config.json is an object of fields")
    for key, rule in FIELDS.items():
        _field(cfg, key, rule, path, where)
    for key in ACTIVATION_FIELDS:
        _field(cfg, key, _one_of(_activations()), path, where)
    # A declared field set to null means the family's default, as transformers reads it: dropped, so
    # the builders' defaults apply (`"hidden_act": null` is silu, `"partial_rotary_factor": null` 1.0).
    return {k: v for k, v in cfg.items() if not (v is None and (k in FIELDS or k in ACTIVATION_FIELDS))}


def _field(cfg: dict, key: str, rule: Rule, path: Path, where: str) -> None:
    if key not in cfg or (cfg[key] is None and rule.optional):
        return
    wrong = rule.check(cfg[key])
    if wrong:
        raise InputError(f"{path}: {where}{key}: {_shown(cfg[key])} must be {wrong}; correct the config")


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {list: "an array", str: "a string", int: "a number", float: "a number"}.get(type(value), "a value")


def _shown(value: object) -> str:
    text = json.dumps(value, allow_nan=True)
    return text if len(text) <= 40 else text[:37] + "..."

