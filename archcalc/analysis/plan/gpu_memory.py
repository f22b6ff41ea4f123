"""One GPU's memory under a multi-GPU strategy, term by term, over the single-GPU step's account.

The account (``StepProfile``) says layer by layer what a step holds besides its persistent tensors;
a strategy changes three things in it, never the rules underneath: what is persistent (ZeRO's
stages shard optimizer state, then gradients, then parameters over the data-parallel group; CPU
offload moves them off), which parameters are whole while a layer runs (a fully sharded unit is
gathered for its forward and its backward, the next one prefetched), and which saved tensors are
kept (checkpointing; see ``checkpointing``). Tensor parallelism analyses the graph one rank holds
(``tensor_parallel.rank_view``); a pipeline stage is a run of units holding as many micro-batches'
saved tensors as its schedule has in flight. The engines are PyTorch's: DDP (its gradient buckets
are a second copy of the gradients, as ``gradient_as_bucket_view=False`` leaves them),
``ZeroRedundancyOptimizer`` (ZeRO-1: whole parameters assigned greedily, largest first, to the
rank holding least), FSDP2's ``fully_shard`` (ZeRO-3 with ``reshard_after_forward=True``, ZeRO-2
with False: each unit stays gathered from its forward to its backward; the root's own parameters,
the layers between units, stay gathered through both).

One formula prices any number of stages at once (``walk``: a pipeline's stages, or every candidate
place of a cut while the stages are balanced), each stage's layers in turn in one flat array; one
stage is a batch of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from archcalc.analysis.memory.model_states import Precision
from archcalc.analysis.memory.step_peak import StepProfile
from archcalc.analysis.memory.terms import (
    ACTIVATION_GRADIENTS,
    ACTIVATIONS,
    BUFFERS,
    COMMUNICATION_BUFFERS,
    GATHERED_PARAMETERS,
    GRADIENTS,
    IN_FLIGHT,
    INPUTS,
    KEPT_OUTPUTS,
    LOSS,
    MASTER_WEIGHTS,
    OPTIMIZER_STATE,
    OPTIMIZER_TEMPORARIES,
    PARAMETERS,
    PIPELINE_BUFFERS,
    SAVED_ACTIVATIONS,
)
from archcalc.analysis.plan.checkpointing import Segments
from archcalc.analysis.plan.fsdp import fsdp_upcast, root_reduce, unit_walk, unsynced
from archcalc.analysis.plan.params import ROOT, Layout
from archcalc.analysis.plan.pipeline import Pipelined, Stages, forward_after_backward
from archcalc.errors import InputError

SCHEDULES = ("1f1b", "gpipe", "interleaved")
OFFLOADS = ("none", "optimizer", "params")
ENGINES = ("pytorch", "torchtitan", "deepspeed", "megatron")
# PyTorch's own engines (DDP, ZeroRedundancyOptimizer, FSDP2); torchtitan runs them with its own
# choices on top (fsdp.unit_walk: its last block is not resharded after forward).
PYTORCH = ("pytorch", "torchtitan")
# Megatron-LM keeps every gradient in a persistent fp32 buffer (its DDP's ParamAndGradBuffer: bf16
# training sets accumulate_allreduce_grads_in_fp32, megatron/training/arguments.py), the same buffer
# its all-reduce or reduce-scatter reads; its distributed optimizer (zero1) splits the fp32 main
# weights and Adam's state evenly over the data-parallel ranks, and steps them with a fused Adam.
MEGATRON_GRAD = 4
BALANCES = ("memory", "compute")
DEEPSPEED_BUCKET = 500_000_000  # elements: DeepSpeed's default reduce_bucket_size


@dataclass(frozen=True)
class Strategy:
    """A multi-GPU plan. ``dp`` x ``tp`` x ``pp`` GPUs; ``zero``: 0 plain data parallel (DDP), 1
    optimizer state sharded, 2 gradients too, 3 parameters too; ``shard``: hybrid sharding's group
    (default: all ``dp``); ``micro_batches``: per optimizer step (gradient accumulation, or the
    pipeline's micro-batches)."""

    dp: int = 1
    zero: int = 0
    shard: int | None = None
    tp: int = 1
    sp: bool = False
    pp: int = 1
    cp: int = 1  # context parallel: the sequence split over cp ranks (see ``context``)
    schedule: str = "1f1b"
    chunks: int = 1  # the interleaved schedule's model chunks per GPU
    micro_batches: int = 1
    checkpoint: str = "none"
    offload: str = "none"
    # Whose implementation: "pytorch" (DDP, ZeroRedundancyOptimizer, FSDP2) or "deepspeed" (ZeRO's
    # own: stage 1 and 2 split flat buffers evenly and keep whole parameters; its gradient
    # reduction uses a bucket, not a copy of every gradient).
    engine: str = "pytorch"
    segments: Segments | None = None  # checkpoint="planned": the runs the plan checkpoints
    balance: str = "memory"  # a pipeline's stages balanced by "memory" (the most loaded GPU) or "compute"

    def __post_init__(self):
        said = f"--strategy '{self.label()}'"  # only a user's strategy can fail these: the search's never do
        degrees = (self.dp, self.tp, self.pp, self.cp, self.micro_batches, self.chunks)
        if min(degrees) < 1 or self.zero not in (0, 1, 2, 3):
            raise InputError(f"{said}: degrees and micro-batches are at least 1, ZeRO stages 0-3")
        if self.shard is not None and (self.shard < 1 or self.dp % self.shard):
            raise InputError(f"{said}: the shard group (hybrid{self.shard}) must divide the data-parallel "
                             f"degree {self.dp}")
        if self.engine == "megatron" and (self.zero > 1 or self.offload != "none"):
            raise InputError(f"{said}: Megatron-LM's distributed optimizer is ZeRO-1 (zero1), with no offload; "
                             "zero2 and zero3 are DeepSpeed's or FSDP's (engine=deepspeed or pytorch)")
        if (self.schedule not in SCHEDULES or self.offload not in OFFLOADS or self.engine not in ENGINES
                or self.balance not in BALANCES):
            raise InputError(f"{said}: schedule one of {', '.join(SCHEDULES)}, offload one of "
                             f"{', '.join(OFFLOADS)}, engine one of {', '.join(ENGINES)}, balance memory or "
                             "compute")

    @property
    def pytorch(self) -> bool:
        """Run by PyTorch's own engines (``PYTORCH``)."""
        return self.engine in PYTORCH

    @property
    def gpus(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @property
    def group(self) -> int:
        """The ranks a shard is spread over: the data-parallel ones (or the hybrid shard group) and,
        with context parallelism, theirs too (torchtitan's dp_shard_cp mesh)."""
        return (self.shard or self.dp) * self.cp

    @property
    def replicas(self) -> int:
        """The ranks holding the same parameters and averaging their gradients: data and context
        parallel."""
        return self.dp * self.cp

    def label(self) -> str:
        parts = [f"dp{self.dp}"] + ([f"zero{self.zero}"] if self.zero else [])
        if self.shard and self.shard != self.dp:
            parts.append(f"hybrid{self.shard}")
        if self.tp > 1:
            parts.append(f"tp{self.tp}" + ("+sp" if self.sp else ""))
        if self.cp > 1:
            parts.append(f"cp{self.cp}")
        if self.pp > 1:
            parts.append(
                f"pp{self.pp} {self.schedule}" + (f"x{self.chunks}" if self.schedule == "interleaved" else "")
            )
        if self.checkpoint != "none":
            parts.append(f"ckpt {self.checkpoint}")
        if self.offload != "none":
            parts.append(f"offload {self.offload}")
        if self.pp > 1 and self.balance != "memory":
            parts.append(f"balance {self.balance}")
        if self.engine != "pytorch":
            parts.append(self.engine)
        return " ".join(parts)


@dataclass(frozen=True)
class GPUMemory:
    """One rank's step: ``terms`` at the peak (they sum to ``peak``), where the peak falls, the bytes
    offloaded to the host, and every moment's total (``moments``: each layer's forward, each layer's
    backward, the optimizer step), which the micro-batch solve reads."""

    terms: dict[str, int]
    peak: int
    phase: str
    layer: str
    offloaded: int
    moments: np.ndarray


# An array: [stage], one number a stage, or [entry], one a layer of each stage (``Layout.flat``).
# Typed Any: ``Precision`` prices an array of elements as it prices an int.
Batch = Any


def _shard(s: Strategy, lay: Layout) -> Batch:
    """Elements of one rank's shard of the parameters: FSDP2 pads each parameter's first dim,
    DeepSpeed splits one flat buffer evenly."""
    return -(-lay.elements // s.group) if s.engine in ("deepspeed", "megatron") else lay.shards


def _share(s: Strategy, lay: Layout, rank: int | None) -> tuple[Batch, Batch]:
    """Elements of the parameters whose optimizer state one rank holds (the most loaded rank, unless
    ``rank`` is given), and the largest of them that it steps whole."""
    if s.zero == 0:
        return lay.elements, lay.largest
    if s.zero == 1 and s.pytorch:
        return lay.zero1(s.group, rank)
    return _shard(s, lay), -(-lay.largest // s.group)


def _buckets(s: Strategy, whole: Batch) -> Batch | int:
    """Elements of gradient buckets beside the gradients: DDP's are a copy of all of them
    (``gradient_as_bucket_view=False``, its default); DeepSpeed's one reduce bucket; none under FSDP."""
    if s.replicas == 1 or s.zero >= 2 or s.engine == "megatron":
        return 0
    return whole if s.pytorch else np.minimum(whole, DEEPSPEED_BUCKET)


def _states(s: Strategy, prec: Precision, lay: Layout, rank: int | None) -> dict[str, Batch]:
    """Persistent bytes: parameters, master weights, optimizer state, gradient buckets; and the host's."""
    whole: Batch = lay.elements
    share, largest = _share(s, lay, rank)
    sharded = s.zero == 3 or (s.zero == 2 and s.pytorch)  # FSDP2 keeps shards and gathers units
    buckets = _buckets(s, whole)
    up = fsdp_upcast(s, prec)  # FSDP2 mixed: the fp32 shard is the master weight
    out = {
        PARAMETERS: prec.parameters(_shard(s, lay) if sharded else whole) * up,
        MASTER_WEIGHTS: prec.master_weights(share) if up == 1 else 0 * share,
        OPTIMIZER_STATE: prec.optimizer_state(share),
        COMMUNICATION_BUFFERS: whole * MEGATRON_GRAD if s.engine == "megatron" else prec.gradients(buckets),
        "host": 0,
        "share": share,
        "largest": largest,
    }
    if s.offload != "none":
        out["host"] = out.pop(MASTER_WEIGHTS) + out.pop(OPTIMIZER_STATE)
        out[MASTER_WEIGHTS] = out[OPTIMIZER_STATE] = 0
    if s.offload == "params" and s.zero == 3:
        out["host"] += out[PARAMETERS]
        out[PARAMETERS] = 0
    return out


def param_grads(s: Strategy, lay: Layout, prec: Precision | None = None) -> Batch:
    """Parameter-gradient bytes alive at each layer's backward: all made so far (DDP, ZeRO-1); under
    FSDP2, the current unit's and the root's whole, the rest as their shards, and the reduce-scatter
    buffer: a unit's gradients copied in when its backward ends, that copy kept through the next
    unit's backward (FSDP2's ``reduce_scatter_state``) and released as the next one is made. With
    several micro-batches a step (accumulation, a pipeline) the earlier micro-batches' gradients are
    all there: the peak is in a later micro-batch's backward."""
    stage = lay.flat[1]
    made = lay.made() if s.micro_batches == 1 else lay.gradients.take(stage)
    if s.engine == "megatron":
        return 0 * made  # into the persistent buffer (a state, ``_states``)
    if s.zero < 2:
        return made
    root_made, mine = lay.made(ROOT), lay.at(lay.params.unit_made)  # mine: its unit's made so far
    up = fsdp_upcast(s, prec)
    if unsynced(s):  # earlier micro-batches' gradients unsharded at the reduce width, this unit's too
        return up * lay.gradients.take(stage) + mine
    # Reduce-scatter input alive: the next repeated unit's (reduced just before, in backward order);
    # at a unit's first layer, its own copy instead.
    own = lay.at(lay.params.unit_first)
    held = np.where(own >= 0, own, lay.per_unit(lay.neighbours[2]))
    return root_made + mine + up * held + up * ((made - root_made - mine) // s.group)


def final_gradients(s: Strategy, prec: Precision, lay: Layout) -> Batch:
    """Gradient bytes a rank holds when the optimizer steps: all of them, or its shard (ZeRO-2/3)."""
    elements: Batch = lay.elements if s.zero < 2 else _shard(s, lay)
    return 0 * elements if s.engine == "megatron" else prec.gradients(elements) * fsdp_upcast(s, prec)


def model_states(s: Strategy, prec: Precision, lay: Layout) -> dict[str, int]:
    """What the ZeRO paper calls model states, per rank: parameters, gradients, and the optimizer's
    (master weights and state), as held when the optimizer steps -- offloaded parts excluded (the
    first stage of ``lay``)."""
    st = _states(s, prec, lay, None)
    out = {
        PARAMETERS: st[PARAMETERS],
        GRADIENTS: final_gradients(s, prec, lay) + (st[COMMUNICATION_BUFFERS] if s.engine == "megatron" else 0),
        OPTIMIZER_STATE: st[MASTER_WEIGHTS] + st[OPTIMIZER_STATE],
    }
    return {k: int(np.ravel(v)[0]) for k, v in out.items()}


@dataclass(frozen=True)
class Step:
    """The step of a batch of stages: every moment of each, and its terms (see ``walk``)."""

    forward: Batch  # [entry]: each layer's forward
    backward: Batch  # [entry]: each layer's backward
    end: Batch  # [stage]: the end of the last micro-batch
    optimizer: Batch  # [stage]: the optimizer step
    states: dict[str, Batch]
    host: Batch
    held: Batch
    base: Batch
    fwd_un: Batch
    bwd_un: Batch
    pg: Batch
    grads_final: Batch
    temps: Batch | int
    accumulated: Batch  # [stage]: gradients a forward after a backward holds (pipeline.forward_after_backward)
    root: Batch  # [stage]: the root's gathered parameters as its gradients are reduced (``root_reduce``)
    root_grads: Batch  # [stage]: gradient bytes beyond ``grads_final`` then


def walk(s: Strategy, prec: Precision, prof: StepProfile, forward: np.ndarray, saved: np.ndarray, rest: np.ndarray,
         lay: Layout, stages: Stages, inputs: Batch, pipe: Pipelined, rank: int | None, prefetch: int) -> Step:
    """One rank's step under ``s`` for each of ``stages`` (``lay``'s; ``inputs`` and ``pipe`` one a
    stage): ``forward``/``saved``/``rest`` are the profile's, after checkpointing (``Account``);
    ``prefetch``: the units FSDP2 gathers ahead of the one running (see ``fsdp.unit_walk``). Every moment
    of every stage, as one array expression. A stage stands on what the layers before it keep at
    rest, not on the saved state at their last backward moment (a checkpointed run's recomputed
    tensors, which no stage after it holds)."""
    a, e = stages.start, stages.stop
    layer, stage, _ = lay.flat
    states = _states(s, prec, lay, rank)
    share, largest, host = states.pop("share"), states.pop("largest"), states.pop("host")
    states |= {INPUTS: inputs, BUFFERS: lay.buffers, PIPELINE_BUFFERS: pipe.receive}
    persistent = sum(states.values())
    base = rest[a]
    held = _truncated((stages.in_flight - 1) * (rest[e] - base))
    fwd_un, bwd_un = unit_walk(s, lay, prefetch)
    pg = param_grads(s, lay, prec)
    grads_final = final_gradients(s, prec, lay)
    temps = 0 if s.offload != "none" or s.engine == "megatron" else prec.temporaries(share, largest)
    # Every moment of the step: each layer's forward, each layer's backward, the end of the last
    # micro-batch (a pipeline's kept outputs), the optimizer step.
    lift = (persistent + held - base).take(stage)
    held_grads = fsdp_upcast(s, prec) * lay.gradients if unsynced(s) else grads_final
    accumulated = held_grads * forward_after_backward(s, stages)  # [stage]
    held_logits = pipe.held.take(stage) * (prof.loss > 0).take(layer)  # at the loss's own moment
    root, root_grads = root_reduce(s, prec, lay)
    return Step(lift + accumulated.take(stage) + forward.take(layer) + fwd_un + held_logits,
                np.where(prof.active.take(layer), lift + (saved + prof.grads).take(layer) + pg + bwd_un, 0),
                persistent + grads_final + np.maximum(2 * pipe.outputs, root + root_grads),
                persistent + grads_final + pipe.outputs + temps,
                states, host, held, base, fwd_un, bwd_un, pg, grads_final, temps, accumulated, root, root_grads)


def _truncated(x: np.ndarray) -> np.ndarray:
    """Whole bytes, as ``int()`` truncates: int64, or Python's integers where the account holds them."""
    return x.astype(np.int64) if x.dtype != object else np.vectorize(int, otypes=[object])(x)


def peaks(s: Strategy, prec: Precision, prof: StepProfile, forward: np.ndarray, saved: np.ndarray,
          rest: np.ndarray, lay: Layout, stages: Stages, inputs: Batch, pipe: Pipelined,
          prefetch: int) -> np.ndarray:
    """The peak of each of ``stages``' most loaded rank: the largest of its moments in ``walk``."""
    step = walk(s, prec, prof, forward, saved, rest, lay, stages, inputs, pipe, None, prefetch)
    begin = lay.flat[2][:-1]
    most = np.maximum(np.maximum.reduceat(step.forward, begin), np.maximum.reduceat(step.backward, begin))
    return np.maximum(most, np.maximum(step.end, step.optimizer))


def gpu_memory(s: Strategy, prec: Precision, prof: StepProfile, forward: np.ndarray, saved: np.ndarray,
               rest: np.ndarray, lay: Layout, stages: Stages, inputs: Batch, pipe: Pipelined,
               rank: int | None = None, prefetch: int = 1) -> list[GPUMemory]:
    """Each of ``stages``' rank (its most loaded, or ``rank``) under ``s`` (see ``walk``), with its
    terms at its peak."""
    step = walk(s, prec, prof, forward, saved, rest, lay, stages, inputs, pipe, rank, prefetch)
    return [_read(step, r, lay.flat[2][r], int(stages.start[r]), int(stages.stop[r]), prof, forward, saved, pipe)
            for r in range(len(stages))]


def _read(step: Step, r: int, o: int, a: int, e: int, prof: StepProfile, forward: np.ndarray, saved: np.ndarray,
          pipe: Pipelined) -> GPUMemory:
    """Stage ``r`` of ``step`` (layers ``a`` .. ``e - 1``, entries from ``o``): its moments, its peak
    and the terms there."""
    def at(x: Batch) -> int:
        return int(x[r]) if np.ndim(x) else int(x)

    n = e - a
    moments = np.concatenate([step.forward[o:o + n], step.backward[o:o + n], [at(step.end), at(step.optimizer)]])
    k, base = int(np.argmax(moments)), at(step.base)
    terms = {name: at(v) for name, v in step.states.items()} | {IN_FLIGHT: at(step.held)}
    if k < n:
        phase = "forward"
        loss = int(prof.loss[a + k])
        terms |= {ACTIVATIONS: int(forward[a + k] - base) - loss, GATHERED_PARAMETERS: int(step.fwd_un[o + k]),
                  GRADIENTS: at(step.accumulated)}
        terms |= {LOSS: loss, KEPT_OUTPUTS: at(pipe.held)} if loss else {}
    elif k < 2 * n:
        phase, j = "backward", k - n
        terms |= {SAVED_ACTIVATIONS: int(saved[a + j] - base), ACTIVATION_GRADIENTS: int(prof.grads[a + j]),
                  GRADIENTS: int(step.pg[o + j]), GATHERED_PARAMETERS: int(step.bwd_un[o + j])}
    elif k == 2 * n:
        phase = "end of step"
        if at(step.root) + at(step.root_grads) > 2 * at(pipe.outputs):  # the root's reduce
            terms |= {GRADIENTS: at(step.grads_final) + at(step.root_grads), GATHERED_PARAMETERS: at(step.root)}
        else:
            terms |= {GRADIENTS: at(step.grads_final), KEPT_OUTPUTS: 2 * at(pipe.outputs)}
    else:
        phase = "optimizer step"
        terms |= {GRADIENTS: at(step.grads_final), KEPT_OUTPUTS: at(pipe.outputs),
                  OPTIMIZER_TEMPORARIES: at(step.temps)}
    layer = prof.names[a + k % n] if k < 2 * n else ""
    return GPUMemory(terms, int(moments[k]), phase, layer, at(step.host), moments)
