"""Megatron-LM's own memory estimate, as its function computes it: a labelled compatibility mode.

``megatron/training/theoretical_memory_usage.py`` (``report_theoretical_memory``) prices one GPU
of a run from the transformer's hyperparameters alone: the most loaded pipeline stage's parameters
at 18 bytes each (bf16 weights, fp32 main gradients, fp32 main weights and Adam state), or
6 + 12 / dp with the distributed optimizer, experts' at their own data-parallel degree; and
activations by Korthikanti et al. 2022's Table 2 -- with sequence parallelism and selective
recompute, s b h (18 + 4 ffn / h) bytes a layer, plus the embedding's input and dropout for every
in-flight micro-batch, the output layer and loss on a single stage, all over the tensor-parallel
degree; otherwise s b h (10 + 24 / t) a layer and the logits, 5% added. It reads no graph:
archcalc's own account (``gpu_memory``) prices the ops the model runs; this sets Megatron's figure
beside it (MB are MiB, as Megatron divides by 1024 x 1024). Built from a config, as Megatron's
arguments are (``frontends.hf_config.hyperparameters``): GQA, SwiGLU, RMSNorm, tied or untied
embeddings, MoE (experts, their width, top-k, shared experts, the dense layers); latent attention
(MLA) and multi-token prediction are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MB = 1024 * 1024
VOCAB_DIVISIBLE_BY = 128  # --make-vocab-size-divisible-by's default (megatron/training/arguments.py)


@dataclass(frozen=True)
class Transformer:
    """The hyperparameters Megatron's estimator reads (its argument names, in short)."""

    layers: int
    hidden: int
    heads: int
    groups: int  # key/value heads (--num-query-groups)
    head_dim: int  # --kv-channels
    ffn: int
    vocab: int
    swiglu: bool
    rms: bool
    untied: bool
    experts: int = 0
    expert_ffn: int = 0
    top_k: int = 0
    shared_ffn: int = 0
    shared_gate: bool = False
    moe_layers: tuple[bool, ...] = ()  # which layers route (--moe-layer-freq as a list)


@dataclass(frozen=True)
class Run:
    """A strategy as Megatron's arguments say it."""

    gpus: int
    tp: int
    pp: int
    cp: int
    sequence: int
    micro_batch: int
    micro_batches: int
    distributed_optimizer: bool
    sequence_parallel: bool
    selective: bool
    chunks: int | None = None  # --num-layers-per-virtual-pipeline-stage's virtual stages

    @property
    def dp(self) -> int:
        return self.gpus // (self.tp * self.pp * self.cp)


def padded_vocab(m: Transformer, tp: int) -> int:
    """The vocabulary padded to a multiple of 128 x tp (Megatron-LM's ``_vocab_size_with_padding``)."""
    multiple = VOCAB_DIVISIBLE_BY * tp
    return math.ceil(m.vocab / multiple) * multiple


def weights_and_optimizer(m: Transformer, r: Run) -> float:
    """``compute_weight_and_optimizer_memory``: bytes of the most loaded shard's model states."""
    norm = 1 if m.rms else 2
    gated = 1.5 if m.swiglu else 1.0
    attention = 2 * m.hidden * m.hidden * (1 + m.groups / m.heads) * (m.head_dim * m.heads / m.hidden)
    dense = 2 * m.hidden * m.ffn * gated
    shared = 2 * m.hidden * m.shared_ffn * gated
    routed = 2 * m.hidden * m.expert_ffn * max(m.experts, 1) * gated
    layer_norms = 2 * m.hidden * norm
    router = m.hidden * m.experts if m.experts else 0
    gate = m.hidden if m.shared_ffn and m.shared_gate else 0
    moe = sum(m.moe_layers)
    dense_layers = m.layers - moe
    embedding = m.hidden * padded_vocab(m, r.tp)
    tp_sharded = (attention + dense) * dense_layers + (attention + shared) * moe
    replicated = layer_norms * dense_layers + (layer_norms + router + gate) * moe + norm * m.hidden
    experts = routed * moe
    on_tp = (tp_sharded / r.pp + embedding) / r.tp
    if m.untied and r.pp == 1:
        on_tp += embedding / r.tp
    expert_tp = r.tp  # --expert-tensor-parallel-size defaults to the tensor-parallel degree
    expert_dp = r.gpus // (expert_tp * r.pp)  # no expert parallelism

    def per_param(dp: int) -> float:
        return 6 + 12 / dp if r.distributed_optimizer else 18

    return (on_tp + replicated / r.pp) * per_param(r.dp) + experts / r.pp / expert_tp * per_param(expert_dp)


def activations(m: Transformer, r: Run) -> float:
    """``compute_activation_memory`` (sequence parallel and selective recompute) or
    ``compute_activation_memory_without_sp``: bytes on the first pipeline stage."""
    sbh = r.sequence * r.micro_batch * m.hidden
    with_sp = r.sequence_parallel and r.selective
    per_layer = sbh * (18 + 4 * m.ffn / m.hidden) if with_sp else sbh * (10 + 24 / r.tp)
    total = per_layer * m.layers
    total += 8 * r.sequence * r.micro_batch * r.pp + sbh * r.pp  # the embedding's input and dropout
    if r.chunks is not None:
        total *= 1 + (r.pp - 1) / (r.pp * r.chunks)
    elif r.pp > 1:
        total *= min(1, r.micro_batches / r.pp)
    vocab = padded_vocab(m, r.tp)
    if with_sp:
        if r.pp == 1:
            total += sbh * 4 * (1 + vocab / m.hidden)  # the output layer's input and the loss
        return total / r.tp
    if r.pp == 1:
        total += (r.sequence * r.micro_batch * vocab / r.tp + sbh) * 2  # the logits, the final norm's output
    return total * 1.05


def run_of(s, sequence: int, micro_batch: int, micro_batches: int) -> Run:
    """A ``gpu_memory.Strategy`` at a micro-batch as Megatron's arguments say it: the distributed
    optimizer for zero1, selective recompute for ckpt=selective, the interleaved schedule's chunks."""
    return Run(s.gpus, s.tp, s.pp, s.cp, sequence, micro_batch, micro_batches, s.zero >= 1, s.sp,
               s.checkpoint == "selective", s.chunks if s.schedule == "interleaved" else None)


def theoretical_memory(m: Transformer, r: Run) -> tuple[float, float, float]:
    """(weight and optimizer, activation, total) in MB, as ``report_theoretical_memory`` prints them."""
    w = weights_and_optimizer(m, r) / MB
    a = activations(m, r) / MB
    return w, a, w + a
