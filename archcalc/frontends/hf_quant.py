"""A config's ``quantization_config``: how the checkpoint stores each linear layer's weight, so a
quantized model is priced at the bytes it loads, not at its config's dtype.

Each format is read into one ``Scheme``: the stored weight's element type (at its logical shape,
so the parameter count stays the model's), its scales (per tensor, per output channel, per group
of inputs, or per 2-D block), zero points, and the bookkeeping tensors the format adds per layer
(GPTQ's group index, compressed-tensors' packed shape, a static input scale). The layouts are the
ones vLLM's loaders create for the checkpoint's tensors (vllm/model_executor/layers/quantization/
awq.py, gptq.py, fp8.py ``create_weights``; compressed_tensors/schemes/*), which are the
checkpoint's own: 4-bit values packed eight to an int32 hold K x N / 2 bytes, zero points
likewise. Routers, embeddings and the LM head are never quantized (vLLM builds MoE gates with
``quant_config=None``; every format here leaves ``lm_head`` out); a format's skip list
(``modules_to_not_convert``, ``ignore``) is honoured by module name.

Formats: ``fp8`` (per tensor, or per block with ``weight_block_size``; a static input scale),
``compressed-tensors`` (pack-quantized, float-quantized and int-quantized; tensor, channel, group
and block strategies; asymmetric zero points; group activation order), ``awq`` (GEMM layout) and
``gptq`` (2, 4 and 8 bits). Others -- bitsandbytes' absmax blocks, MXFP4, HQQ, EETQ, GGUF-in-config --
are refused by name, never priced at the config's dtype.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from archcalc.errors import InputError
from archcalc.onnx_proto import TensorProto

BITS = {2: TensorProto.INT2, 4: TensorProto.INT4, 8: TensorProto.INT8}
SCALE_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}
READ = ("fp8", "compressed-tensors", "awq", "gptq")


@dataclass(frozen=True)
class Extra:
    """A per-layer tensor a format stores beside weights and scales."""

    name: str
    dtype: int
    dims: str  # "K": one per input row (a group index); "2": a shape; "1": one number


@dataclass(frozen=True)
class Scheme:
    """How a checkpoint stores a linear layer's weight [K inputs x N outputs]."""

    method: str
    weight: int  # TensorProto element type of the stored values
    strategy: str  # "tensor" | "channel" | "group" | "block"
    scale: int  # the scales' element type
    group: int = 0  # inputs per scale ("group")
    block: tuple[int, int] = (0, 0)  # (outputs, inputs) per scale ("block")
    zero: int | None = None  # the zero points' element type (asymmetric), None: symmetric
    extras: tuple[Extra, ...] = ()
    skip: tuple[str, ...] = ()  # module names (or "re:" patterns) left unquantized

    def applies(self, module: str) -> bool:
        """Whether the linear at ``module`` (a transformers module name, ``model.layers.0.mlp.up_proj``)
        is stored quantized."""
        if module == "lm_head" or module.endswith(("mlp.gate", "shared_expert_gate", "block_sparse_moe.gate")):
            return False
        for rule in self.skip:
            if rule.startswith("re:") and re.match(rule[3:], module):
                return False
            if not rule.startswith("re:") and (module == rule or module.endswith("." + rule)
                                                or f".{rule}." in f".{module}."):
                return False
        return True

    def scale_dims(self, k: int, n: int) -> list[int]:
        """The scales of one [K x N] weight, in the weight's orientation."""
        if self.strategy == "tensor":
            return [1]
        if self.strategy == "channel":
            return [n]
        if self.strategy == "group":
            return [math.ceil(k / self.group), n]
        return [math.ceil(k / self.block[1]), math.ceil(n / self.block[0])]


def method(cfg: dict) -> str:
    """The checkpoint's quantization format as its config names it ("" where it is not quantized)."""
    q = cfg.get("quantization_config")
    return str(q.get("quant_method", "")) if isinstance(q, dict) else ""


def scheme(cfg: dict, dtype: str) -> Scheme | None:
    """The ``quantization_config`` of ``cfg`` as a Scheme (None: not quantized); ``dtype``: the
    config's torch_dtype, which scales are stored in where the format does not say."""
    q = cfg.get("quantization_config")
    if q is None:
        return None
    if not isinstance(q, dict):
        raise InputError("quantization_config: must be an object (the checkpoint's quantizer settings)")
    if method(cfg) not in READ:
        raise InputError(f"quantization_config.quant_method: {q.get('quant_method')!r} checkpoints are not priced "
                         f"yet (archcalc reads {', '.join(READ)}); without quantization_config the model is "
                         "priced at its dtype")
    read = {"fp8": _fp8, "compressed-tensors": _compressed, "awq": _awq, "gptq": _gptq}[method(cfg)]
    return read(q, SCALE_TYPES[dtype])


def _fp8(q: dict, _: int) -> Scheme:
    """transformers' FineGrainedFP8 / DeepSeek's layout: fp8 weights with float32 ``weight_scale_inv``
    per block (``weight_block_size``) or one ``weight_scale`` per tensor (vLLM fp8.py)."""
    extras = (Extra("input_scale", TensorProto.FLOAT, "1"),) if q.get("activation_scheme") == "static" else ()
    common = {"method": "fp8", "weight": TensorProto.FLOAT8E4M3FN, "scale": TensorProto.FLOAT, "extras": extras,
              "skip": _names(q, "modules_to_not_convert")}
    if q.get("weight_block_size") is None:
        return Scheme(strategy="tensor", **common)
    return Scheme(strategy="block", block=_block(q, "weight_block_size"), **common)


def _awq(q: dict, scale: int) -> Scheme:
    """AutoAWQ's GEMM layout: qweight [K, N/8] and qzeros [K/g, N/8] int32, scales [K/g, N]."""
    bits, version = q.get("bits", q.get("w_bit", 4)), str(q.get("version", "gemm")).lower()
    if bits != 4 or version != "gemm":
        raise InputError(f"quantization_config: AWQ bits {bits!r}, version {version!r}: archcalc reads 4-bit GEMM "
                         "checkpoints (what vLLM's awq and awq_marlin load)")
    return Scheme("awq", TensorProto.UINT4, "group", scale, group=_group(q, "group_size", "q_group_size"),
                  zero=TensorProto.UINT4 if q.get("zero_point", True) else None,
                  skip=_names(q, "modules_to_not_convert"))


def _gptq(q: dict, scale: int) -> Scheme:
    """AutoGPTQ's layout: qweight [K x bits / 32, N], qzeros [K/g, N x bits / 32] int32, scales [K/g, N],
    g_idx [K] int32 (stored with or without act-order; group_size -1: one group)."""
    bits = q.get("bits")
    if q.get("lm_head"):  # GPTQModel's quantized head (vLLM's lm_head_quantized)
        raise InputError("quantization_config.lm_head: a GPTQ-quantized LM head is not priced yet; archcalc reads "
                         "checkpoints whose head stays at the model's dtype")
    if bits not in BITS:
        raise InputError(f"quantization_config.bits: {bits!r}; archcalc reads GPTQ checkpoints of 2, 4 or 8 bits")
    group = q.get("group_size", 128)
    strategy = "channel" if group == -1 else "group"
    return Scheme("gptq", BITS[bits], strategy, scale, group=0 if group == -1 else _group(q, "group_size"),
                  zero=BITS[bits], extras=(Extra("g_idx", TensorProto.INT32, "K"),),
                  skip=_names(q, "modules_to_not_convert"))


def _compressed(q: dict, scale: int) -> Scheme:
    """compressed-tensors (llm-compressor's checkpoints): one config group over the Linear layers."""
    fmt, groups = q.get("format"), q.get("config_groups")
    if fmt not in ("pack-quantized", "float-quantized", "int-quantized"):
        raise InputError(f"quantization_config.format: {fmt!r}; archcalc reads pack-quantized, float-quantized "
                         "and int-quantized compressed-tensors checkpoints")
    if not isinstance(groups, dict) or len(groups) != 1:
        raise InputError("quantization_config.config_groups: archcalc reads one group (its targets Linear)")
    group = next(iter(groups.values()))
    w = group.get("weights") if isinstance(group, dict) else None
    if not isinstance(w, dict) or group.get("targets") != ["Linear"]:
        raise InputError("quantization_config.config_groups: a group of weights targeting [\"Linear\"] is what "
                         "archcalc reads")
    bits, kind, strategy = w.get("num_bits"), w.get("type", "int"), w.get("strategy", "tensor")
    if (kind, bits) not in (("int", 4), ("int", 8), ("float", 8)) or (fmt == "pack-quantized") != (bits == 4):
        raise InputError(f"quantization_config: {kind} weights of {bits} bits in {fmt}: archcalc reads int4 "
                         "packed, int8 and fp8")
    if strategy not in ("tensor", "channel", "group", "block"):
        raise InputError(f"quantization_config weights.strategy: {strategy!r} is not one archcalc reads")
    weight = TensorProto.FLOAT8E4M3FN if kind == "float" else BITS[4 if bits == 4 else 8]
    extras = [Extra("weight_shape", TensorProto.INT64, "2")] if fmt == "pack-quantized" else []
    if w.get("actorder") == "group":
        extras.append(Extra("weight_g_idx", TensorProto.INT32, "K"))
    act = group.get("input_activations")
    if isinstance(act, dict) and not act.get("dynamic", False):
        extras.append(Extra("input_scale", scale, "1"))
    block = _block(w, "block_structure") if strategy == "block" else (0, 0)
    group_size = _group(w, "group_size") if strategy == "group" else 0
    return Scheme("compressed-tensors", weight, strategy, scale, group=group_size, block=block,
                  zero=None if w.get("symmetric", True) else weight, extras=tuple(extras),
                  skip=_names(q, "ignore"))


def _group(q: dict, *keys: str) -> int:
    value = next((q[k] for k in keys if k in q), 128)
    if not _positive(value):
        raise InputError(f"quantization_config.{keys[0]}: {value!r} must be a positive whole number")
    return value


def _block(q: dict, key: str) -> tuple[int, int]:
    """A 2-D block's (outputs, inputs)."""
    block = q.get(key)
    if not (isinstance(block, list) and len(block) == 2 and all(_positive(b) for b in block)):
        raise InputError(f"quantization_config.{key}: {block!r} must be two positive whole numbers")
    return block[0], block[1]


def _positive(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _names(q: dict, key: str) -> tuple[str, ...]:
    names = q.get(key) or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(f"quantization_config.{key}: must be a list of module names")
    return tuple(names)
