"""Context parallelism: the sequence split over ``cp`` ranks, attention run as a ring.

torchtitan's ``cp`` (``torch.distributed.tensor.experimental.context_parallel``) and Megatron-LM's
context-parallel-size argument give each rank 1/cp of every sequence -- the inputs, so every activation,
saved tensor, logit and the loss -- and run attention as a ring: a rank's queries meet every rank's
keys and values as the K/V chunks travel round (``_context_parallel/_attention.py``
``_templated_ring_attention``: each step concatenates its K and V into one buffer, sends it on and
receives the next; the fused kernel's output and log-sum-exp are merged step by step). What a rank
keeps for backward is then what the model keeps at 1/cp of the sequence with a fused kernel: Q, K, V,
the output and the log-sum-exp of its own chunk. So a rank is analysed as the model at sequence
S / cp; an eager attention, whose scores are a [S, S] tensor, has no ring form and is refused.

The parameters are sharded, and the gradients reduced, over the data-parallel and context-parallel
ranks together (torchtitan's ``dp_shard_cp`` mesh; Megatron-LM's data-parallel group with context
parallelism). Not modelled: the ring's transient buffers inside an attention (two K/V chunks in
flight, the merge's float32 output), which no saved-tensor account holds.
"""

from __future__ import annotations

from archcalc.analysis.estimate import Estimate
from archcalc.analysis.patterns import FUSED_ATTENTION, attention_core
from archcalc.errors import InputError
from archcalc.ir import Graph

SEQUENCE = "sequence"  # the dim a config's and a design's inputs name their tokens by


def context_dims(graph: Graph, dims: dict | None, cp: int, est: Estimate) -> dict:
    """``dims`` with the sequence one rank of ``cp`` holds; refused where the model has no bound
    sequence, one ``cp`` does not divide, or attention with no ring form."""
    said = f"--strategy cp{cp}"
    sequence = (dims or {}).get(SEQUENCE)
    if sequence is None:
        raise InputError(f"{graph.source}: {said} splits the sequence over ranks: bind it with --dim "
                         f"{SEQUENCE}=N (a model whose inputs fix it cannot be split)")
    if sequence % cp:
        raise InputError(f"{graph.source}: {said}: the sequence {sequence} does not split into {cp} equal "
                         "chunks; choose a degree that divides it")
    if attention_core(est.graph, est.results)[2]:
        raise InputError(f"{graph.source}: {said}: context parallelism runs attention as a ring of fused "
                         "kernels, and this model's attention keeps its scores (eager); use --attention sdpa")
    return {**(dims or {}), SEQUENCE: sequence // cp}


def ring_bytes(est: Estimate, cp: int) -> int:
    """Bytes one rank sends per micro-batch: each fused attention's K and V chunk passed on cp - 1
    times in the forward, and K, V with their gradients' in the backward (``est``: one rank's
    analysis, its own chunk)."""
    if cp == 1:
        return 0
    g, width = est.graph, est.float_dtype
    kv = sum(g.tensors[name].nbytes(width) for res in est.results if res.layer.op_type in FUSED_ATTENTION
             for name in res.layer.inputs[1:3] if name)
    return 3 * (cp - 1) * kv
