"""What PyTorch's CUDA caching allocator reserves for one rank's training step: the step's tensors
allocated and freed one by one, in the order the engine makes them, replayed through the allocator's
rules (``memory.caching_allocator``) for two steps (the second is the steady state: Adam's state is
made lazily at the first step's end).

The order is the planner's own account, tensor by tensor: the forward's buffers by liveness, the
saved ones held to their first saver's backward, a checkpointed run's dropped tensors made again at
its backward (its forward replayed), the loss's tensors (``memory.loss.FORWARD`` / ``BACKWARD``), each
activation gradient from its last reader's backward to its producer's, each parameter's gradient at
the backward of the layer that makes it. FSDP2 (``zero3``, PyTorch's engine) adds its own streams,
whose cached blocks the default stream cannot reuse
(torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py): ``foreach_all_gather`` allocates each
unit's flat all-gather output on the copy-in stream (freed once copied out into the unsharded
parameters, which live on the default stream), and ``foreach_reduce`` allocates the reduce-scatter
output -- the sharded gradients the optimizer steps -- on the reduce-scatter stream, where they stay
until ``zero_grad`` frees them before the next forward. The root's parameters stay gathered for the
whole step; each repeated unit is gathered at its forward and its backward, one unit ahead.

The answer is the allocator's overhead over the replay's own peak of live tensors -- fragmentation,
rounding and the other streams' pools -- which the plan adds to its allocated figure. Modelled: one
GPU, DDP (its buckets, ``step_replay.ddp_buckets``) and FSDP2 at any data, tensor and context-parallel
degree, with no, full, every-N, uniform, block or op checkpointing; other strategies are reported as
not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from archcalc.analysis.memory import loss as ce
from archcalc.analysis.memory.caching_allocator import CachingAllocator
from archcalc.analysis.memory.liveness import buffers
from archcalc.analysis.memory.model_states import slots
from archcalc.analysis.memory.step_peak import gradient_spans, training_owners
from archcalc.analysis.plan import checkpointing as ck
from archcalc.analysis.plan.fsdp import fsdp_upcast
from archcalc.analysis.plan.gpu_memory import Strategy
from archcalc.analysis.plan.rank_view import mode_segments
from archcalc.analysis.plan.step_replay import ALL_GATHER, DEFAULT, REDUCE_SCATTER, run_steps

STREAMS = {DEFAULT: "default", ALL_GATHER: "all-gather copy-in", REDUCE_SCATTER: "reduce-scatter"}
MODELLED_CHECKPOINTS = ("none", "full", "op")


@dataclass(frozen=True)
class Reserved:
    """The replay's peak of live tensors, what the allocator reserves, and its reserve per stream."""

    live: int
    reserved: int
    streams: dict[str, int]
    expandable: bool

    @property
    def overhead(self) -> int:
        return self.reserved - self.live


def modelled(s: Strategy) -> str | None:
    """Why ``s``'s reserve is not modelled, or None when it is."""
    counted = ck.COUNTED.match(s.checkpoint)
    if s.checkpoint not in MODELLED_CHECKPOINTS and not counted:
        return f"ckpt={s.checkpoint}"
    if s.pp > 1 or s.offload != "none" or not s.pytorch:
        return "pipelines, offload and engines other than PyTorch's"
    if s.zero in (1, 2) and s.replicas > 1:
        return "ZeRO-1/2 (their partitions)"
    return None


class _Replay:
    """The allocator, with the live tensors by name."""

    def __init__(self, expandable: bool):
        self.alloc = CachingAllocator(expandable_segments=expandable)
        self.live: dict = {}
        self.streams: dict[int, int] = {}

    def take(self, key, size: int, stream: int = DEFAULT) -> None:
        if size > 0 and key not in self.live:
            before = self.alloc.reserved
            self.live[key] = self.alloc.malloc(int(size), stream)
            self.streams[stream] = self.streams.get(stream, 0) + self.alloc.reserved - before

    def drop(self, key) -> None:
        block = self.live.pop(key, None)
        if block is not None:
            self.alloc.free(block)


class _Step:
    """One rank's step, tensor by tensor (see the module's note)."""

    def __init__(self, planner, s: Strategy, b: int):
        v = planner.rank_of(s)
        one, two = v.sides
        self.s, self.prec, self.results, self.shaped = s, planner.precision, two.results, two.shaped
        fd = v.float_dtype
        self.size = lambda name: one.shaped.tensors[name].nbytes(fd) + (b - 1) * (
            two.shaped.tensors[name].nbytes(fd) - one.shaped.tensors[name].nbytes(fd))
        owner = training_owners(two.shaped, two.results, fd)
        self.bufs = buffers(two.shaped, two.results, fd, owner=owner)
        self.savers = two.profile.savers
        self.extra = v.sides[0].profile.extra + (b - 1) * (two.profile.extra - one.profile.extra)
        self.spans = gradient_spans(two.shaped, two.results)
        self.losses = ce.loss_layers(two.shaped, two.results, fd)
        at_one = ce.loss_layers(one.shaped, one.results, fd)
        self.logit_elements = {i: at_one[i][0] + (b - 1) * (n - at_one[i][0])
                               for i, (n, _, _) in self.losses.items()}
        self.inputs = list(two.shaped.inputs)
        self.params = planner.params(s)
        self.n = len(self.results)
        self._checkpoint(planner, v, owner)

    def _checkpoint(self, planner, v, owner) -> None:
        """Which runs are checkpointed, and which saved storages and own saved bytes they drop."""
        s, n = self.s, self.n
        self.run_of = np.zeros(n, dtype=np.int64)
        self.bounds: list[tuple[int, int]] = []
        self.dropped: set[str] = set()
        self.cached: dict[int, set[str]] = {}  # per run: kept outputs no backward saves (see _checkpoint)
        self.dropped_extra = np.zeros(n, dtype=bool)
        if s.checkpoint == "none":
            return
        seg = mode_segments(planner.units, s.checkpoint)
        policy = ck.op_policy(self.shaped, self.results, seg, owner) if s.checkpoint == "op" else None
        crossing = ck.crossing_tensors(self.shaped, self.results, list(seg.bounds[:-1]))
        ckpt = np.zeros(n, dtype=bool)
        for k, (a, e) in enumerate(zip(seg.bounds, seg.bounds[1:])):
            self.run_of[a:e] = k
            self.bounds.append((a, e))
            ckpt[a:e] = seg.checkpointed[k]
        kept = {owner.get(name, name) for names in crossing for name in names}
        kept |= {st for names in (policy.storages if policy else []) for st in names}
        for st, layers in self.savers.items():
            if ckpt[list(layers)].all() and st not in kept:
                self.dropped.add(st)
        # A selective policy's kept outputs are held by the checkpoint's cache until the run's
        # recomputation takes them back (torch/utils/checkpoint.py, _CachingTorchDispatchMode), whether
        # or not a backward saves them.
        for k, names in enumerate(policy.storages if policy else []):
            self.cached[k] = {st for st in names if st not in self.savers}
        kept_layers = policy.kept_layers if policy else frozenset()
        self.dropped_extra = ckpt & np.array([i not in kept_layers for i in range(n)], dtype=bool)
        self.checkpointed = [bool(c) for c in seg.checkpointed]


def replay(planner, s: Strategy, b: int, expandable: bool = True) -> Reserved | None:
    """The allocator's reserve for ``s``'s rank at micro-batch ``b`` (None: not modelled, see
    ``modelled``). ``expandable``: ``expandable_segments`` on (torchtitan's setting) or off
    (PyTorch's default)."""
    if modelled(s) is not None:
        return None
    step = _Step(planner, s, b)
    r = _Replay(expandable)
    run_steps(step, r, fsdp=s.zero == 3 and s.group > 1, upcast=fsdp_upcast(s, planner.precision),
              adam_slots=slots(planner.precision.optimizer))
    streams = {STREAMS[k]: v for k, v in sorted(r.streams.items())}
    return Reserved(r.alloc.peak_allocated, r.alloc.peak_reserved, streams, expandable)


def summary(planner, row) -> dict:
    """What the judged ``row``'s rank reserves, with expandable segments (torchtitan's launch setting)
    and without (PyTorch's default): the plan's total (live tensors and the runtime's constant) plus
    the allocator's overhead over the replay's own live peak. Beyond the card the figure is not a
    prediction: there PyTorch frees its cached blocks and retries (``release_cached_blocks``), which
    the replay does not model -- said so (``over_capacity``), not printed as a reserve. JSON-ready."""
    why = modelled(row.strategy)
    if planner.device != "cuda" or why is not None:
        return {"modelled": False, "why": why or "the CPU has no caching allocator"}
    out: dict = {"modelled": True, "allocated": row.total}
    for key, expandable in (("expandable_segments", True), ("default", False)):
        r = replay(planner, row.strategy, row.shown, expandable)
        assert r is not None
        total = row.total + r.overhead
        out[key] = {"reserved": total, "overhead": r.overhead, "streams": r.streams,
                    "over_capacity": total > row.capacity}
    return out
