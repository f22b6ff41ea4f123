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
from dataclasses import dataclass, field, replace

import numpy as np

from archcalc.analysis.estimate import analyse
from archcalc.analysis.memory import runtimes
from archcalc.analysis.memory.training import DEFAULT_IMPL, slots
from archcalc.analysis.plan import checkpointing as ck
from archcalc.analysis.plan.gpu_memory import (
    GPUMemory,
    Layout,
    Precision,
    Strategy,
    gpu_memory,
    layout,
)
from archcalc.analysis.plan.pipeline import Pipelined, Stage, in_flight
from archcalc.analysis.plan.rank_view import RankView, layer_flops, make_view, unit_segments
from archcalc.analysis.plan.traffic import traffic
from archcalc.analysis.plan.units import Units, find_units
from archcalc.analysis.walk.infer import batch_fixed
from archcalc.conventions import DEFAULT_OPTIMIZER
from archcalc.dtypes import MIXED
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

    @property
    def fits(self) -> bool:
        return self.micro_batch > 0

    def to_dict(self) -> dict:
        s = self.strategy
        return {
            "strategy": s.label(),
            "dp": s.dp,
            "tp": s.tp,
            "pp": s.pp,
            "zero": s.zero,
            "shard_group": s.group,
            "sequence_parallel": s.sp,
            "schedule": s.schedule if s.pp > 1 else None,
            "checkpoint": s.checkpoint,
            "offload": s.offload,
            "fits": self.fits,
            "micro_batch": self.micro_batch,
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


@dataclass
class Planner:
    """A graph analysed once (at micro-batches 1 and 2) and judged under any strategy."""

    graph: Graph
    optimizer: str = DEFAULT_OPTIMIZER
    dtype: str | None = None
    device: str = "cuda"
    runtime: str = "pytorch-cuda"
    overhead: int | None = None
    units_pattern: str | None = None
    dims: dict | None = None
    inputs: dict | None = None
    # Views, stages, layouts and memories already worked out: a search asks for each many times.
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        slots(self.optimizer)  # an unknown optimizer is refused before any analysis
        # A file that fixes its batch is judged as it is: one analysis, a "line" with no slope.
        self.fixed = batch_fixed(self.graph, self.dims, self.inputs)
        batches = (None, None) if self.fixed else (1, 2)
        self.ests = tuple(analyse(self.graph, b, self.dims, self.inputs, self.dtype) for b in batches)
        self.units: Units = find_units([r.layer for r in self.ests[0].results], self.units_pattern)
        width = self.view(1, False).width
        self.precision = Precision(
            width,
            self.dtype in MIXED,
            self.optimizer,
            DEFAULT_IMPL[self.device],
            prefetch=1 if self.device == "cuda" else 0,
        )
        self.constant = runtimes.runtime(self.runtime, self.overhead).overhead

    def view(self, tp: int, sp: bool) -> RankView:
        key = (tp, sp and tp > 1)
        if key not in self._cache:
            self._cache[key] = make_view(self.ests, self.units, tp, key[1], self.device)
        return self._cache[key]

    def stages(self, s: Strategy, b: int) -> list[Stage]:
        """The pipeline's stages: contiguous runs of units, balanced by each stage's memory."""
        key = ("stages", s.tp, s.sp, s.checkpoint, s.segments, s.pp, s.schedule, s.chunks, s.micro_batches,
               s.group, s.balance, b)
        if key not in self._cache:
            self._cache[key] = self._stages(s, b)
        return self._cache[key]

    def layout(self, s: Strategy, stage: Stage) -> Layout:
        """Where the parameters of ``stage`` sit on one rank of ``s`` (computed once per stage)."""
        key = ("layout", s.tp, s.sp, stage.start, stage.stop, s.group)
        if key not in self._cache:
            v = self.view(s.tp, s.sp)
            self._cache[key] = layout(v.shaped, v.trained, self.units, stage, v.width, s.group)
        return self._cache[key]

    def _stages(self, s: Strategy, b: int) -> list[Stage]:
        v = self.view(s.tp, s.sp)
        n = len(self.units)
        if s.pp == 1:
            return [Stage(0, len(v.results), range(n), 1.0)]
        if s.pp > n:
            raise InputError(
                f"pipeline of {s.pp} stages: {self.graph.name} has {n} units ({self.units.source}); "
                "use fewer stages or name finer units with --units"
            )
        _, saved, _ = v.mode(s.checkpoint, s.segments)
        sv = v.at(b, saved)
        lay = self.layout(s, Stage(0, len(v.results), range(n), 1.0))
        per_unit_state = lay.unit_params * (2 + slots(self.optimizer))  # weights, gradients, state, roughly
        ends = np.array([u.stop - 1 for u in self.units.units])
        act = np.diff(np.concatenate([[0], sv[ends]]))
        flight = [in_flight(s, k) for k in range(s.pp)]
        if s.balance == "compute":  # each stage's forward FLOPs, whatever it holds
            per_unit_state = np.zeros(n)
            act = np.array([layer_flops(self.ests[0], range(u.start, u.stop)) for u in self.units.units])
            flight = [1.0] * s.pp
        cuts = _balance(per_unit_state, act, flight)
        out = []
        for k in range(s.pp):
            first, last = self.units.units[cuts[k]], self.units.units[cuts[k + 1] - 1]
            out.append(Stage(first.start, last.stop, range(cuts[k], cuts[k + 1]), in_flight(s, k), k))
        return out

    def memory(
        self, s: Strategy, b: int, rank: int | None = None, stages: list[Stage] | None = None
    ) -> list[GPUMemory]:
        """Each pipeline stage's most loaded rank at micro-batch ``b`` (``rank``: that data-parallel
        rank; ``stages``: as given, else balanced at ``b``)."""
        stages = stages or self.stages(s, b)
        key = ("memory", s, b, rank, tuple(stages))
        if key not in self._cache:
            self._cache[key] = self._memory(s, b, rank, stages)
        return self._cache[key]

    def _memory(self, s: Strategy, b: int, rank: int | None, stages: list[Stage]) -> list[GPUMemory]:
        v = self.view(s.tp, s.sp)
        fw, sv, _ = v.mode(s.checkpoint, s.segments)
        prof = v.profile(1)
        prof_b = replace(prof, grads=v.at(b, (v.profile(1).grads, v.profile(2).grads)))
        out = []
        for stage in stages:
            lay = self.layout(s, stage)
            inputs = v.at(b, (np.int64(v.sides[0].inputs), np.int64(v.sides[1].inputs))) if stage.index == 0 else 0
            pipe = self._pipelined(s, v, stages, stage, b)
            out.append(
                gpu_memory(
                    s,
                    self.precision,
                    prof_b,
                    v.at(b, fw),
                    v.at(b, sv),
                    lay,
                    self.units,
                    stage,
                    int(inputs),
                    rank,
                    pipe,
                )
            )
        return out

    def _pipelined(self, s: Strategy, v: RankView, stages: list[Stage], stage: Stage, b: int) -> Pipelined:
        """The stage's receive buffers and, on the last, the outputs PyTorch's pipelining keeps."""
        if s.pp == 1:
            return Pipelined()
        crossing = v.boundaries(b, [st.start for st in stages[1:]])
        k = stage.index
        received = (crossing[k - 1] if k > 0 else 0) + (crossing[k] if k < len(crossing) else 0)
        outputs = 0
        if k == len(stages) - 1:
            per = [sum(sd.shaped.tensors[o].nbytes(v.float_dtype) for o in sd.shaped.outputs) for sd in v.sides]
            outputs = per[0] + (b - 1) * (per[1] - per[0])
        return Pipelined(s.micro_batches * received, s.micro_batches * outputs)

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
        room = capacity - self.constant
        best = limit
        for m1, m2 in zip(self.memory(s, 1, stages=stages), self.memory(s, 2, stages=stages)):
            slope = m2.moments - m1.moments
            if np.any((slope <= 0) & (m1.moments > room)):
                return 0
            grow = slope > 0
            if np.any(grow):
                best = min(best, int(np.min(1 + (room - m1.moments[grow]) // slope[grow])))
        return max(best, 0)

    def row(self, s: Strategy, capacity: int, global_batch: int | None = None) -> PlanRow:
        """``s`` judged: its largest micro-batch (a divisor of each replica's share of ``global_batch``)."""
        share = None
        self.check_global_batch(global_batch)
        if global_batch is not None:
            if global_batch % s.dp:
                raise InputError(
                    f"--global-batch {global_batch}: not a multiple of the data-parallel degree {s.dp}"
                )
            share = global_batch // s.dp
        if s.checkpoint == "planned" and s.segments is None:
            s = self.planned(s, capacity, share)
        b = self._micro_batch(s, capacity, share)
        m = share // b if share and b else s.micro_batches
        s = replace(s, micro_batches=m)
        mem = max(self.memory(s, max(b, 1)), key=lambda g: g.peak)
        recompute = self.recompute(s, max(b, 1))
        step = 3 * self.ests[0].totals.flops * max(b, 1) * m / (s.tp * s.pp)  # forward + backward, per GPU
        bubble = (s.pp - 1) / (m * s.chunks) if s.pp > 1 else 0.0
        return PlanRow(
            s,
            b,
            m,
            mem,
            mem.peak + self.constant,
            capacity,
            recompute,
            self.communication(s, max(b, 1)),
            recompute / step + bubble if step else bubble,
        )

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
        v = self.view(s.tp, s.sp)
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
        _, _, per_sample = self.view(s.tp, s.sp).mode(s.checkpoint, s.segments)
        return per_sample * b * s.micro_batches // s.pp

    def communication(self, s: Strategy, b: int) -> dict[str, int]:
        stages = self.stages(s, b)
        return traffic(s, self.view(s.tp, s.sp), stages, [self.layout(s, st) for st in stages], b)


def divisors(n: int) -> list[int]:
    """The divisors of ``n``, smallest first."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _balance(state: np.ndarray, act: np.ndarray, flight: list[float]) -> list[int]:
    """Cut units into len(flight) contiguous stages minimising the largest stage's memory: its
    states plus its saved activations times the micro-batches it holds (dynamic programming over
    the last cut, all candidate runs at once)."""
    n, p = len(state), len(flight)
    cs, ca = np.concatenate([[0], np.cumsum(state)]), np.concatenate([[0], np.cumsum(act)])
    run_s, run_a = cs[None, :] - cs[:, None], ca[None, :] - ca[:, None]  # [i, j]: units i .. j - 1
    below = np.tri(n + 1, k=-1, dtype=bool).T  # i < j
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    back = np.zeros((p + 1, n + 1), dtype=np.int64)
    for k in range(1, p + 1):
        cost = np.where(below, np.maximum(best[:, None], run_s + flight[k - 1] * run_a), np.inf)
        back[k] = np.argmin(cost, axis=0)
        best = cost[back[k], np.arange(n + 1)]
    cuts, j = [n], n
    for k in range(p, 0, -1):
        j = int(back[k, j])
        cuts.append(j)
    return cuts[::-1]
