"""FSDP's own memory beside the step's tensors: the units it gathers as the step walks them, the width
it keeps shards and reduces gradients at under mixed precision, and the root's last reduce."""

from __future__ import annotations

from typing import Any

import numpy as np

from archcalc.analysis.memory.model_states import FP32, Precision
from archcalc.analysis.plan.params import Layout

Batch = Any
Strategy = Any  # gpu_memory.Strategy, whose module imports this one: its fields are read


def unsynced(s: Strategy) -> bool:
    """FSDP2 inside a pipeline's stage with several micro-batches: PyTorch's PipelineStage runs every
    backward but the last with ``set_reshard_after_backward(False)`` and
    ``set_requires_gradient_sync(False)`` (torch/distributed/pipelining/stage.py ``backward_maybe_with_nosync``)
    and torchtitan builds it with ``reshard_after_forward=False`` under PP: the stage's parameters stay
    gathered through the step, and each micro-batch's gradients accumulate unsharded, at the reduce
    width (``FSDPParam.to_accumulated_grad_if_needed``), until the last backward reduces them."""
    return s.pp > 1 and s.zero >= 2 and s.pytorch and s.micro_batches > 1


def last_unit_kept(s: Strategy) -> bool:
    """torchtitan leaves its last block gathered from its forward into its backward
    (reshard_after_forward = layer_id < n_layers - 1, torchtitan/models/llama3/infra/parallelize.py
    ``apply_fsdp``): over the layers after it, the head and the loss."""
    return s.engine == "torchtitan" and s.zero == 3


def unit_walk(s: Strategy, lay: Layout, prefetch: int) -> tuple[Batch, Batch]:
    """Gathered parameter bytes at each layer's forward and backward under FSDP (ZeRO-2/3), with
    ``prefetch`` units gathered ahead of the one running: on CUDA the next unit's all-gather overlaps
    on its own stream (the next in forward, the previous in backward); on the CPU, one stream, a unit
    is gathered when reached (measured: two units are never gathered at once with gloo)."""
    if s.zero < 2 or (s.zero == 2 and s.engine == "deepspeed"):
        zeros = np.zeros(len(lay.unit), dtype=np.int64)
        return zeros, zeros
    # What is gathered is the same at every layer of a unit: worked out per unit, then spread.
    rep, u_bytes = lay.repeated, np.where(lay.repeated, lay.unit_params, 0)
    root = lay.unit_params[:, ~rep].sum(axis=1, keepdims=True)  # the root's own parameters: gathered throughout
    if unsynced(s):  # the whole stage gathered throughout
        whole = lay.per_unit(np.broadcast_to(lay.unit_params.sum(axis=1, keepdims=True), lay.unit_params.shape))
        return whole, whole
    if s.zero == 2:  # reshard_after_forward=False: gathered from a unit's forward to its backward
        so_far = lay.per_unit(root + np.cumsum(u_bytes, axis=1))
        return so_far, so_far
    nxt, prv, _ = lay.neighbours
    forward = root + u_bytes + nxt * prefetch
    if last_unit_kept(s):
        last = np.flatnonzero(rep)[-1] if rep.any() else None
        if last is not None:
            forward[:, last + 1:] += u_bytes[:, last:last + 1]
    return lay.per_unit(forward), lay.per_unit(root + u_bytes + prv * prefetch)


def fsdp_upcast(s: Strategy, prec: Precision | None) -> int:
    """How many times wider than the computing width FSDP2 keeps a shard and reduces its gradients
    under mixed precision: its MixedPrecisionPolicy computes in bf16 but keeps the sharded parameter
    in fp32 -- the master weight itself, no 16-bit shard beside it -- and casts the reduce-scatter
    input to reduce_dtype (torchtitan's mixed_precision_reduce: fp32) and every reduced gradient to
    the shard's dtype (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py ``foreach_reduce``).
    1 elsewhere (DeepSpeed and Megatron-LM keep 16-bit weights and fp32 master copies)."""
    if prec is None or not prec.mixed or not s.pytorch or s.zero < 2:
        return 1
    return max(FP32 // prec.width, 1)


def root_reduce(s: Strategy, prec: Precision, lay: Layout) -> tuple[Batch, Batch]:
    """FSDP2's last reduce, the root's, after every layer's backward: its parameters still gathered,
    its unsharded gradients, and their copy at the reduce width in the reduce-scatter input
    (``foreach_reduce``), the root's shard not yet made. (gathered bytes, gradient bytes beyond the
    final shards) per stage; zeros elsewhere."""
    root = lay.unit_params[:, ~lay.repeated].sum(axis=1) if s.zero >= 2 and s.pytorch else 0
    up = fsdp_upcast(s, prec)
    return root, root * (1 + up) - up * root // s.group
