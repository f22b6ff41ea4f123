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
"""

from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass

import numpy as np

from archcalc.analysis.memory.model_states import Precision, Trainable, training_width
from archcalc.analysis.memory.step_peak import StepProfile
from archcalc.analysis.plan.checkpointing import Segments
from archcalc.analysis.plan.pipeline import NOT_PIPELINED, Pipelined, Stage
from archcalc.analysis.plan.units import Units
from archcalc.errors import InputError
from archcalc.ir import Shaped

SCHEDULES = ("1f1b", "gpipe", "interleaved")
OFFLOADS = ("none", "optimizer", "params")
ENGINES = ("pytorch", "deepspeed")
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
        if min(self.dp, self.tp, self.pp, self.micro_batches, self.chunks) < 1 or self.zero not in (0, 1, 2, 3):
            raise InputError(f"{said}: degrees and micro-batches are at least 1, ZeRO stages 0-3")
        if self.shard is not None and (self.shard < 1 or self.dp % self.shard):
            raise InputError(f"{said}: the shard group (hybrid{self.shard}) must divide the data-parallel "
                             f"degree {self.dp}")
        if (self.schedule not in SCHEDULES or self.offload not in OFFLOADS or self.engine not in ENGINES
                or self.balance not in BALANCES):
            raise InputError(f"{said}: schedule one of {', '.join(SCHEDULES)}, offload one of "
                             f"{', '.join(OFFLOADS)}, engine one of {', '.join(ENGINES)}, balance memory or "
                             "compute")

    @property
    def gpus(self) -> int:
        return self.dp * self.tp * self.pp

    @property
    def group(self) -> int:
        """The ranks a shard is spread over."""
        return self.shard or self.dp

    def label(self) -> str:
        parts = [f"dp{self.dp}"] + ([f"zero{self.zero}"] if self.zero else [])
        if self.shard and self.shard != self.dp:
            parts.append(f"hybrid{self.shard}")
        if self.tp > 1:
            parts.append(f"tp{self.tp}" + ("+sp" if self.sp else ""))
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


def zero1_partition(sizes: list[int], ranks: int) -> list[list[int]]:
    """The parameters (their sizes) ``ZeroRedundancyOptimizer`` gives each rank: sorted largest first,
    each to the rank with the fewest elements so far, the lowest on a tie
    (torch/distributed/optim/zero_redundancy_optimizer.py, _partition_parameters)."""
    given = _partition(tuple(sizes), ranks)
    return [list(r) for r in given] + [[] for _ in range(ranks - len(given))]


@functools.lru_cache(maxsize=256)
def _partition(sizes: tuple[int, ...], ranks: int) -> tuple[tuple[int, ...], ...]:
    """The ranks that receive any parameter, in rank order: only the first ``len(sizes)`` can (an empty
    rank among them always ties lowest), so the work follows the parameters, not a rank count in the
    hundreds of thousands."""
    heap = [(0, r) for r in range(min(ranks, len(sizes)))]  # (elements held, rank): pops fewest, then lowest
    given: list[list[int]] = [[] for _ in heap]
    for size in sorted(sizes, reverse=True):
        held, r = heapq.heappop(heap)
        given[r].append(size)
        heapq.heappush(heap, (held + size, r))
    return tuple(tuple(g) for g in given)


def fsdp_shard(shape: tuple[int, ...], ranks: int) -> int:
    """Elements of one rank's FSDP2 shard: dim 0 padded to a multiple of the ranks, then split."""
    if not shape:
        return 1
    return math.ceil(shape[0] / ranks) * math.prod(shape[1:])


@dataclass(frozen=True)
class Layout:
    """Where each trained parameter's bytes sit, by layer and unit, for one stage of one rank's graph."""

    grad_bytes: np.ndarray  # per layer: gradient bytes made at its backward (whole parameters)
    unit_params: np.ndarray  # per unit: whole parameter bytes
    repeated: np.ndarray  # per unit: an FSDP unit of its own (else the root's)
    sizes: list[int]  # every trained parameter's elements
    shards: int  # elements of this rank's shard of them (FSDP2 padding)
    largest: int  # the largest parameter's elements
    buffers: int  # bytes of stored, untrained tensors

    @functools.cached_property
    def neighbours(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per unit, the parameter bytes of the repeated unit after it and of the one before it (whom
        FSDP2 prefetches in forward and in backward), and of the first repeated unit after it (whose
        reduce-scatter input is alive in its backward)."""
        rep, u_bytes = self.repeated, np.where(self.repeated, self.unit_params, 0)
        n = len(rep)
        nxt, prv, after = (np.zeros(n, dtype=np.int64) for _ in range(3))
        order = np.flatnonzero(rep)
        for k, unit in enumerate(order):
            nxt[unit] = u_bytes[order[k + 1]] if k + 1 < len(order) else 0
            prv[unit] = u_bytes[order[k - 1]] if k > 0 else 0
        for u in reversed(range(n - 1)):
            after[u] = u_bytes[u + 1] if rep[u + 1] else after[u + 1]
        return nxt, prv, after


def layout(shaped: Shaped, trained: Trainable, units: Units, stage: Stage, group: int,
           float_dtype: str | None) -> Layout:
    """The trained parameters of ``stage`` (at the training width of ``float_dtype``), sharded over ``group``."""
    width = training_width(float_dtype)
    of = units.of_layer()
    grad = np.zeros(len(of), dtype=np.int64)
    unit_params = np.zeros(len(units), dtype=np.int64)
    sizes, shard = [], 0
    for name, i in trained.reader.items():
        if not stage.start <= i < stage.stop:
            continue
        t = shaped.tensors[name]
        grad[i] += t.numel * width
        unit_params[of[i]] += t.numel * width
        sizes.append(t.numel)
        shard += fsdp_shard(t.shape, group)
    buffers = trained.buffer_bytes(shaped, float_dtype, stage.start, stage.stop)
    repeated = np.array([u.repeated for u in units.units], dtype=bool)
    return Layout(grad, unit_params, repeated, sizes, shard, max(sizes, default=0), buffers)


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


def _shard(s: Strategy, lay: Layout) -> int:
    """Elements of one rank's shard of the parameters: FSDP2 pads each parameter's first dim,
    DeepSpeed splits one flat buffer evenly."""
    return -(-sum(lay.sizes) // s.group) if s.engine == "deepspeed" else lay.shards


def _share(s: Strategy, lay: Layout, rank: int | None) -> tuple[int, int]:
    """Elements of the parameters whose optimizer state one rank holds (the most loaded rank, unless
    ``rank`` is given), and the largest of them that it steps whole."""
    if s.zero == 0:
        return sum(lay.sizes), lay.largest
    if s.zero == 1 and s.engine == "pytorch":
        given = _partition(tuple(lay.sizes), s.group)  # the ranks past these hold nothing
        at = rank % s.group if rank is not None else None
        mine = max(given, key=sum, default=()) if at is None else given[at] if at < len(given) else ()
        return sum(mine), max(mine, default=0)
    return _shard(s, lay), -(-lay.largest // s.group)


def _buckets(s: Strategy, whole: int) -> int:
    """Elements of gradient buckets beside the gradients: DDP's are a copy of all of them
    (``gradient_as_bucket_view=False``, its default); DeepSpeed's one reduce bucket; none under FSDP."""
    if s.dp == 1 or s.zero >= 2:
        return 0
    return whole if s.engine == "pytorch" else min(whole, DEEPSPEED_BUCKET)


def _states(s: Strategy, prec: Precision, lay: Layout, rank: int | None) -> dict[str, int]:
    """Persistent bytes: parameters, master weights, optimizer state, gradient buckets; and the host's."""
    whole = sum(lay.sizes)
    share, largest = _share(s, lay, rank)
    sharded = s.zero == 3 or (s.zero == 2 and s.engine == "pytorch")  # FSDP2 keeps shards and gathers units
    buckets = _buckets(s, whole)
    out = {
        "parameters": prec.parameters(_shard(s, lay) if sharded else whole),
        "master weights": prec.master_weights(share),
        "optimizer state": prec.optimizer_state(share),
        "communication buffers": prec.gradients(buckets),
        "host": 0,
        "share": share,
        "largest": largest,
    }
    if s.offload != "none":
        out["host"] = out.pop("master weights") + out.pop("optimizer state")
        out["master weights"] = out["optimizer state"] = 0
    if s.offload == "params" and s.zero == 3:
        out["host"] += out["parameters"]
        out["parameters"] = 0
    return out


def _unit_walk(s: Strategy, lay: Layout, unit: np.ndarray, prefetch: int) -> tuple[np.ndarray, np.ndarray]:
    """Gathered parameter bytes at each layer's forward and backward under FSDP (ZeRO-2/3), with
    ``prefetch`` units gathered ahead of the one running: on CUDA the next unit's all-gather overlaps
    on its own stream (the next in forward, the previous in backward); on the CPU, one stream, a unit
    is gathered when reached (measured: two units are never gathered at once with gloo)."""
    if s.zero < 2 or (s.zero == 2 and s.engine == "deepspeed"):
        zeros = np.zeros(len(unit), dtype=np.int64)
        return zeros, zeros
    rep, u_bytes = lay.repeated, np.where(lay.repeated, lay.unit_params, 0)
    root = int(lay.unit_params[~rep].sum())  # the root's own parameters: gathered from first to last
    if s.zero == 2:  # reshard_after_forward=False: gathered from a unit's forward to its backward
        so_far = np.cumsum(u_bytes)[unit]
        return root + so_far, root + so_far
    nxt, prv, _ = lay.neighbours
    return root + u_bytes[unit] + nxt[unit] * prefetch, root + u_bytes[unit] + prv[unit] * prefetch


def _param_grads(s: Strategy, lay: Layout, unit: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Parameter-gradient bytes alive at each layer's backward: all made so far (DDP, ZeRO-1); under
    FSDP2, the current unit's and the root's whole, the rest as their shards, and the reduce-scatter
    buffer: a unit's gradients copied in when its backward ends, that copy kept through the next
    unit's backward (FSDP2's ``reduce_scatter_state``) and released as the next one is made. With
    several micro-batches a step (accumulation, a pipeline) the earlier micro-batches' gradients are
    all there: the peak is in a later micro-batch's backward."""
    gb = lay.grad_bytes[start:stop]
    rev = np.concatenate([np.cumsum(gb[::-1])[::-1], [0]])  # rev[i]: gradients made at layers i and after
    made = np.full(len(gb), rev[0]) if s.micro_batches > 1 else rev[:-1]
    if s.zero < 2:
        return made
    rep = lay.repeated[unit]
    root_made = np.cumsum(np.where(rep, 0, gb)[::-1])[::-1]
    # The layer just past each layer's unit (within the stage): a unit's gradients made so far are
    # those from here to there.
    last = np.flatnonzero(np.diff(unit)) + 1
    end = np.repeat(np.concatenate([last, [len(unit)]]), np.diff(np.concatenate([[0], last, [len(unit)]])))
    mine = np.where(rep, rev[:-1] - rev[end], 0)
    # Reduce-scatter input alive: the next repeated unit's (reduced just before, in backward order);
    # at a unit's first layer, its own copy instead.
    held = lay.neighbours[2][unit]
    first = np.concatenate([[True], np.diff(unit) != 0]) & rep
    held = np.where(first, lay.unit_params[unit], held)
    return root_made + mine + held + (made - root_made - mine) // s.group


def final_gradients(s: Strategy, prec: Precision, lay: Layout) -> int:
    """Gradient bytes a rank holds when the optimizer steps: all of them, or its shard (ZeRO-2/3)."""
    return prec.gradients(sum(lay.sizes) if s.zero < 2 else _shard(s, lay))


def model_states(s: Strategy, prec: Precision, lay: Layout) -> dict[str, int]:
    """What the ZeRO paper calls model states, per rank: parameters, gradients, and the optimizer's
    (master weights and state), as held when the optimizer steps -- offloaded parts excluded."""
    st = _states(s, prec, lay, None)
    return {
        "parameters": st["parameters"],
        "gradients": final_gradients(s, prec, lay),
        "optimizer state": st["master weights"] + st["optimizer state"],
    }


def gpu_memory(s: Strategy, prec: Precision, prof: StepProfile, forward: np.ndarray, saved: np.ndarray,
               lay: Layout, units: Units, stage: Stage, inputs: int, rank: int | None = None,
               pipe: Pipelined = NOT_PIPELINED, prefetch: int = 1) -> GPUMemory:
    """One rank's step under ``s``: ``forward``/``saved`` are the profile's, after checkpointing;
    ``prefetch``: the units FSDP2 gathers ahead of the one running (see ``_unit_walk``)."""
    a, e = stage.start, stage.stop
    states = _states(s, prec, lay, rank)
    share, largest, host = states.pop("share"), states.pop("largest"), states.pop("host")
    states |= {"inputs": inputs, "buffers": lay.buffers, "pipeline buffers": pipe.receive}
    persistent = sum(states.values())
    unit = np.asarray(units.of_layer()[a:e], dtype=np.int64)
    base = int(saved[a - 1]) if a > 0 else 0
    held = int((stage.in_flight - 1) * (int(saved[e - 1]) - base)) if e > a else 0
    fwd_un, bwd_un = _unit_walk(s, lay, unit, prefetch)
    pg = _param_grads(s, lay, unit, a, e)
    grads_final = final_gradients(s, prec, lay)
    temps = 0 if s.offload != "none" else prec.temporaries(share, largest)
    # Every moment of the step: each layer's forward, each layer's backward, the end of the last
    # micro-batch (a pipeline's kept outputs), the optimizer step.
    moments = np.concatenate([persistent + held + (forward[a:e] - base) + fwd_un,
                              np.where(prof.active[a:e], persistent + held + (saved[a:e] - base) + prof.grads[a:e]
                                       + pg + bwd_un, 0),
                              [persistent + grads_final + 2 * pipe.outputs,
                               persistent + grads_final + pipe.outputs + temps]])
    k, n, terms = int(np.argmax(moments)), e - a, {**states, "in-flight micro-batches": held}
    if k < n:
        phase = "forward"
        terms |= {"activations": int(forward[a + k] - base), "gathered parameters": int(fwd_un[k])}
    elif k < 2 * n:
        phase, j = "backward", k - n
        terms |= {"saved activations": int(saved[a + j] - base), "activation gradients": int(prof.grads[a + j]),
                  "gradients": int(pg[j]), "gathered parameters": int(bwd_un[j])}
    elif k == 2 * n:
        phase = "end of step"
        terms |= {"gradients": grads_final, "kept outputs": 2 * pipe.outputs}
    else:
        phase = "optimizer step"
        terms |= {"gradients": grads_final, "kept outputs": pipe.outputs, "optimizer temporaries": temps}
    layer = prof.names[a + k % n] if k < 2 * n else ""
    return GPUMemory({t: int(v) for t, v in terms.items()}, int(moments[k]), phase, layer, host, moments)
