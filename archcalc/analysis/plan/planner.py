"""``archcalc plan``: which multi-GPU strategies make a model's training step fit, and at what cost.

For each strategy worth showing on the GPUs given (data, tensor and pipeline parallel degrees that
multiply to them; ZeRO stage; checkpointing; offload) the largest micro-batch per GPU is solved,
not searched: every moment of the step is a line in the micro-batch (see ``rank_view``), so the
largest micro-batch is the smallest of each line's crossing of the capacity. With a global batch,
the micro-batch is the largest that divides each replica's share, and the rest is accumulation.
Rows are ranked: those that fit first, by the compute they add (recompute and a pipeline's
bubble), then the traffic per sample, then the largest micro-batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from archcalc.analysis.estimate import Estimate, Estimates, analyse
from archcalc.analysis.memory import runtimes
from archcalc.analysis.memory.model_states import DEFAULT_IMPL, precision
from archcalc.analysis.memory.step_peak import StepProfile
from archcalc.analysis.plan import checkpointing as ck
from archcalc.analysis.plan.context import context_dims
from archcalc.analysis.plan.gpu_memory import GPUMemory, Strategy
from archcalc.analysis.plan.judge import Judge
from archcalc.analysis.plan.line import Line
from archcalc.analysis.plan.params import Layout, Params, params
from archcalc.analysis.plan.pipeline import Stage, Stages, in_flight, rebalance, split
from archcalc.analysis.plan.rank_view import RankView, layer_flops, make_view, unit_segments
from archcalc.analysis.plan.traffic import traffic
from archcalc.analysis.plan.units import Units, find_units
from archcalc.analysis.walk.infer import batch_fixed
from archcalc.conventions import DEFAULT_OPTIMIZER
from archcalc.dtypes import MIXED, PRECISIONS
from archcalc.errors import InputError
from archcalc.ir import Graph
from archcalc.units import MAX_SIZE


@dataclass(frozen=True)
class PlanRow:
    strategy: Strategy
    micro_batch: int  # the largest per GPU (0: not even 1 fits)
    accumulation: int  # micro-batches per optimizer step on each replica
    memory: GPUMemory  # the most loaded rank, at ``micro_batch`` (or 1 when none fits)
    total: int  # memory.peak + the runtime's constant
    capacity: int
    recompute_flops: int  # per GPU per optimizer step
    communication: dict[str, int]  # bytes each GPU sends per optimizer step, by collective
    # Compute added, as a share of the step's: recompute FLOPs over the step's (forward and backward,
    # three forwards), plus a pipeline's bubble, (p - 1) / (m x chunks) of it (Narayanan et al. 2021).
    overhead: float = 0.0
    stage: int = 0  # the pipeline stage whose rank is ``memory`` (the most loaded)
    shown: int = 1  # the micro-batch ``memory`` is at: the one found, else 1 or the stated count's


    @property
    def fits(self) -> bool:
        return self.micro_batch > 0

    def to_dict(self) -> dict:
        s = self.strategy
        return {
            "strategy": s.label(),
            "dp": s.dp,
            "cp": s.cp,
            "tp": s.tp,
            "pp": s.pp,
            "zero": s.zero,
            "shard_group": s.group,
            "sequence_parallel": s.sp,
            "schedule": s.schedule if s.pp > 1 else None,
            "checkpoint": s.checkpoint,
            "offload": s.offload,
            "fits": self.fits,
            "shortfall": max(self.total - self.capacity, 0),
            "stage": self.stage,
            "micro_batch": self.micro_batch,
            "judged_at_micro_batch": self.shown,
            "accumulation": self.accumulation,
            "total": self.total,
            "capacity": self.capacity,
            "headroom": self.capacity - self.total,
            "terms": self.memory.terms,
            "phase": self.memory.phase,
            "layer": self.memory.layer,
            "host_bytes": self.memory.offloaded,
            "recompute_flops": self.recompute_flops,
            "communication": self.communication,
        }


@dataclass(frozen=True)
class Key:
    """One piece of a plan the planner works out once: ``part`` names it ("view", "params", "layout",
    "account", "judge", "split", "stages", "memory"), ``strategy`` is the strategy as far as that part reads it
    (``reads``), ``b`` the micro-batch, ``where`` the stages and the data-parallel rank."""

    part: str
    strategy: Strategy
    b: int = 0
    where: tuple = ()


def reads(part: str, s: Strategy) -> Strategy:
    """What of ``s`` a part depends on: a rank's view its tensor parallelism; the layout of a stage's
    parameters that and the group they are sharded over; the rank's account that and its
    checkpointing; stages and their memory all of it."""
    sp = s.sp and s.tp > 1
    engine = "pytorch" if sp and s.pytorch else "megatron"  # how sequence parallelism saves (``rank_of``)
    if part == "view":
        return Strategy(tp=s.tp, sp=sp, cp=s.cp, engine=engine)
    if part == "layout":
        return Strategy(tp=s.tp, sp=sp, cp=s.cp, dp=s.shard or s.dp, engine=engine)
    if part == "account":
        return Strategy(tp=s.tp, sp=sp, cp=s.cp, checkpoint=s.checkpoint, segments=s.segments, engine=engine)
    return s


MAX_UNITS = 512  # FSDP wraps, checkpoints and stages: decoders have up to ~130, CNNs ~50


@dataclass
class Planner:
    """A graph analysed once (at micro-batches 1 and 2, when first asked) and judged under any strategy."""

    graph: Graph
    optimizer: str = DEFAULT_OPTIMIZER
    dtype: str | None = None
    device: str = "cuda"
    runtime: str = "pytorch-cuda"
    overhead: int | None = None
    units_pattern: str | None = None
    dims: dict | None = None
    inputs: dict | None = None
    estimates: Estimates | None = None  # analyses another question of the same binding made (a report's fit)
    # Views, layouts, stages and their memories already worked out: a search asks for each many times.
    _cache: dict[Key, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.graph.trainable()
        self.dtype = self.dtype or self.graph.default_dtype
        # Refused before any analysis: an unknown optimizer or runtime.
        self.precision = precision(PRECISIONS.get(self.dtype or ""), self.dtype in MIXED, self.optimizer,
                                   DEFAULT_IMPL[self.device])
        self.prefetch = 1 if self.device == "cuda" else 0  # see fsdp.unit_walk's prefetch
        self.constant = runtimes.runtime(self.runtime, self.overhead).overhead

    @cached_property
    def fixed(self) -> bool:
        """A file that fixes its batch is judged as it is: one analysis, a "line" with no slope."""
        return batch_fixed(self.graph, self.dims, self.inputs)

    @cached_property
    def ests(self) -> tuple[Estimate, Estimate]:
        batches = (None, None) if self.fixed else (1, 2)
        shared = self.estimates
        if shared is not None and shared.graph is self.graph and (shared.dims, shared.inputs, shared.dtype) == (
                self.dims, self.inputs, self.dtype):
            return tuple(shared.at(b) for b in batches)  # type: ignore
        return tuple(analyse(self.graph, b, self.dims, self.inputs, self.dtype) for b in batches)  # type: ignore

    @cached_property
    def units(self) -> Units:
        layers = [r.layer for r in self.ests[0].results]
        return find_units(layers, self.units_pattern, MAX_UNITS, self.graph.source)

    @cached_property
    def unit_flops(self) -> list[int]:
        """Each unit's forward FLOPs per sample."""
        return [layer_flops(self.ests[0], range(u.start, u.stop)) for u in self.units.units]

    def _memo(self, key: Key, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def view(self, tp: int, sp: bool, cp: int = 1, gathered: bool = False) -> RankView:
        """One rank's view; ``gathered``: sequence parallelism as DTensor runs it (``rank_of``)."""
        s = reads("view", Strategy(tp=tp, sp=sp, cp=cp, engine="pytorch" if gathered else "megatron"))
        return self._memo(Key("view", s), lambda: make_view(self._ests(cp), self.units, s.tp, s.sp, self.device,
                                                            gathered and s.sp))

    def rank_of(self, s: Strategy) -> RankView:
        """The view of ``s``'s rank: under sequence parallelism, PyTorch's engines (DTensor) keep the
        column-parallel layers' inputs gathered whole, Megatron-LM and DeepSpeed the shard."""
        return self.view(s.tp, s.sp, s.cp, s.sp and s.pytorch)

    def _ests(self, cp: int) -> tuple[Estimate, Estimate]:
        """The analyses one rank of ``cp``-way context parallelism runs: its 1/cp of the sequence."""
        if cp == 1:
            return self.ests
        dims = context_dims(self.graph, self.dims, cp, self.ests[0])
        batches = (None, None) if self.fixed else (1, 2)
        return tuple(analyse(self.graph, b, dims, self.inputs, self.dtype) for b in batches)  # type: ignore

    def params(self, s: Strategy) -> Params:
        """The trained parameters of one rank of ``s``, layer by layer (what a stage's layout is cut from)."""
        def make() -> Params:
            v = self.rank_of(s)
            return params(v.shaped, v.trained, self.units, s.group, v.float_dtype)
        return self._memo(Key("params", reads("layout", s)), make)

    def layout(self, s: Strategy, stage: Stage) -> Layout:
        """Where the parameters of ``stage`` sit on one rank of ``s``."""
        key = Key("layout", reads("layout", s), where=(stage.start, stage.stop))
        return self._memo(key, lambda: Layout(self.params(s), np.array([stage.start]), np.array([stage.stop])))

    def stages(self, s: Strategy, b: int) -> list[Stage]:
        """The pipeline's stages: contiguous runs of units, cut where the compute is even and then
        moved by the peak each stage is judged on (``pipeline.rebalance``), or by compute alone."""
        return self._memo(Key("stages", s, b), lambda: self._stages(s, b))

    def _stages(self, s: Strategy, b: int) -> list[Stage]:
        v, n = self.rank_of(s), len(self.units)
        if s.pp == 1:
            return [Stage(0, len(v.results), range(n), 1.0)]
        if s.pp > n:
            raise InputError(
                f"pipeline of {s.pp} stages: {self.graph.name} has {n} units ({self.units.source}); "
                "use fewer stages or name finer units with --units"
            )
        cuts = self._memo(Key("split", Strategy(pp=s.pp)), lambda: split(self.unit_flops, s.pp))
        if s.balance == "memory":
            cuts = rebalance(cuts, self.judge(s, b).peaks)
        return [self._stage(s, i, j, k) for k, (i, j) in enumerate(zip(cuts, cuts[1:]))]

    def _stage(self, s: Strategy, i: int, j: int, k: int) -> Stage:
        """Units i .. j - 1 as stage ``k`` of ``s``'s pipeline."""
        first, last = self.units.units[i], self.units.units[j - 1]
        return Stage(first.start, last.stop, range(i, j), in_flight(s, k), k, last=k == s.pp - 1)

    def memory(
        self, s: Strategy, b: int, rank: int | None = None, stages: list[Stage] | None = None
    ) -> list[GPUMemory]:
        """Each pipeline stage's most loaded rank at micro-batch ``b`` (``rank``: that data-parallel
        rank; ``stages``: as given, else balanced at ``b``), all stages in one walk."""
        stages = stages or self.stages(s, b)
        key = Key("memory", s, b, (tuple(stages), rank))
        return self._memo(key, lambda: self.judge(s, b).memory(Stages.of(stages), rank))

    def judge(self, s: Strategy, b: int) -> Judge:
        """What judging ``s``'s stages at micro-batch ``b`` reads, worked out once for all of them."""
        def make() -> Judge:
            v = self.rank_of(s)
            return Judge(s, self.precision, self._account_at(s, b), self.params(s), int(v.inputs.at(b)),
                         v.crossing(b), int(v.outputs.at(b)), self.prefetch, int(v.trained_outputs.at(b)))
        return self._memo(Key("judge", s, b), make)

    def _account_at(self, s: Strategy, b: int) -> tuple[StepProfile, np.ndarray, np.ndarray, np.ndarray]:
        """The rank's step profile, and its activations alive in forward, saved for backward and
        saved at rest under ``s``'s checkpointing (``Account``), at micro-batch ``b`` (shared by
        every stage)."""
        def make() -> tuple[StepProfile, np.ndarray, np.ndarray, np.ndarray]:
            v = self.rank_of(s)
            a = v.account(s.checkpoint, s.segments)
            prof = replace(v.sides[0].profile, grads=v.grads.at(b), loss=v.loss.at(b))
            return prof, a.forward.at(b), a.saved.at(b), a.rest.at(b)
        return self._memo(Key("account", reads("account", s), b), make)

    def largest_micro_batch(self, s: Strategy, capacity: int, limit: int = MAX_SIZE) -> int:
        """The largest micro-batch (at most ``limit``) whose every stage fits ``capacity`` (0: none)."""
        first = self.stages(s, 1)
        if self.fixed:  # the model as its file fixes it: it fits or not
            return int(self._fits(s, 1, capacity))
        best = self._solve(s, capacity, limit, first)
        if s.pp > 1 and best > 1 and self.stages(s, best) != first:  # balanced for the answer, solved again
            best = self._solve(s, capacity, limit, self.stages(s, best))
        return best

    def _solve(self, s: Strategy, capacity: int, limit: int, stages: list[Stage]) -> int:
        """Every moment of every stage is a line in the micro-batch: the answer is where the first
        of them crosses the room the runtime's constant leaves."""
        lines = (Line(m1.moments, m2.moments) for m1, m2 in zip(self.memory(s, 1, stages=stages),
                                                                  self.memory(s, 2, stages=stages)))
        return min(line.largest(capacity - self.constant, limit) for line in lines)

    def row(self, s: Strategy, capacity: int, global_batch: int | None = None, stated: bool = False) -> PlanRow:
        """``s`` judged: its largest micro-batch (a divisor of each replica's share of ``global_batch``);
        ``stated``: ``s.micro_batches`` is the user's count, so the share is split into exactly that many
        (a pipeline run as its engine was told to run it) and judged at that micro-batch alone."""
        share = self._share(s, global_batch, stated)
        if s.checkpoint == "planned" and s.segments is None:
            s = self.planned(s, capacity, share)
        if stated and share:
            shown = share // s.micro_batches
            b = shown if self._fits(s, shown, capacity) else 0
        else:
            b = self._micro_batch(s, capacity, share)
            shown = max(b, 1)
        # The memory shown is the one judged: at the micro-batch found, or (none fits) at micro-batch
        # 1 -- with a global batch, its whole share then accumulated as that many micro-batches.
        m = share // shown if share else s.micro_batches
        s = replace(s, micro_batches=m)
        stage, mem = max(enumerate(self.memory(s, shown)), key=lambda g: g[1].peak)
        recompute = self.recompute(s, shown)
        step = 3 * self.ests[0].totals.flops * shown * m / (s.tp * s.pp)  # forward + backward, per GPU
        bubble = (s.pp - 1) / (m * s.chunks) if s.pp > 1 else 0.0
        return PlanRow(
            s,
            b,
            m,
            mem,
            mem.peak + self.constant,
            capacity,
            recompute,
            self.communication(s, shown),
            recompute / step + bubble if step else bubble,
            stage,
            shown,
        )

    def _share(self, s: Strategy, global_batch: int | None, stated: bool) -> int | None:
        """Each replica's share of ``global_batch`` (None without one), checked to split as stated."""
        self.check_global_batch(global_batch)
        if global_batch is None:
            return None
        if global_batch % s.dp:
            raise InputError(f"--global-batch {global_batch}: not a multiple of the data-parallel degree {s.dp}")
        share = global_batch // s.dp
        if stated and share % s.micro_batches:
            raise InputError(f"--global-batch {global_batch}: each replica's {share} samples do not split "
                             f"into {s.micro_batches} micro-batches; choose a count that divides {share}")
        return share

    def check_global_batch(self, global_batch: int | None) -> None:
        if global_batch is not None and self.fixed:
            raise InputError(f"--global-batch {global_batch}: {self.graph.source} fixes its batch, so there is "
                             "none to split; re-export it with a dynamic batch axis")

    def _micro_batch(self, s: Strategy, capacity: int, share: int | None) -> int:
        """The largest micro-batch that fits: any, or (given each replica's ``share`` of the global
        batch) the largest divisor of it, the rest accumulated. A pipeline's micro-batches in flight
        and the gradients kept across micro-batches depend on how many there are, so the solve is for
        the most of them, and each divisor under that bound is then judged with its own count."""
        if share is None:
            return self.largest_micro_batch(s, capacity)
        if self._fits(replace(s, micro_batches=1), share, capacity):
            return share
        bound = self.largest_micro_batch(replace(s, micro_batches=share), capacity, limit=share)
        for b in sorted((d for d in divisors(share) if d <= bound), reverse=True):
            if self._fits(replace(s, micro_batches=share // b), b, capacity):
                return b
        return 0

    def planned(self, s: Strategy, capacity: int, share: int | None = None, b: int | None = None) -> Strategy:
        """``s`` with the checkpoint plan that recomputes least while the step fits at micro-batch ``b``
        (default: the largest full checkpointing of every unit reaches). The candidates are the
        planner's (``checkpointing.candidates``) and, so that a plan is never worse than the usual
        ones, every unit checkpointed and Chen et al.'s sqrt(n) segments; each is judged on the whole
        step. Full checkpointing when none fits."""
        full = replace(s, checkpoint="full")
        b = b or self._micro_batch(full, capacity, share)
        if not b:
            return full
        m = share // b if share else s.micro_batches
        v = self.rank_of(s)
        runs = v.runs(b)
        options = [replace(s, segments=p.segments) for p in ck.candidates(runs)]
        options += [
            replace(s, segments=unit_segments(self.units)),
            replace(s, segments=ck.sqrt_segments(runs.cuts)),
        ]
        options.sort(key=lambda o: self.recompute(o, b))
        return next((o for o in options if self._fits(replace(o, micro_batches=m), b, capacity)), full)

    def _fits(self, s: Strategy, b: int, capacity: int) -> bool:
        return max(m.peak for m in self.memory(s, b)) + self.constant <= capacity

    def recompute(self, s: Strategy, b: int) -> int:
        per_sample = self.rank_of(s).account(s.checkpoint, s.segments).recompute
        return per_sample * b * s.micro_batches // s.pp

    def communication(self, s: Strategy, b: int) -> dict[str, int]:
        stages = self.stages(s, b)
        return traffic(s, self.rank_of(s), stages, [self.layout(s, st) for st in stages], b)


def divisors(n: int) -> list[int]:
    """The divisors of ``n``, smallest first."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))
