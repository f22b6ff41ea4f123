"""A pipeline stage as PyTorch's ``torch.distributed.pipelining`` runs it: its layers, the micro-
batches whose saved tensors it holds at once under each schedule, its communication buffers, and
where the stages are cut.

Stages are cut by the one function that judges them: ``split`` balances an additive measure exactly
(each unit's forward FLOPs), and ``rebalance`` then moves the cuts a unit at a time by the judge
itself, the peak of a stage's rank as ``gpu_memory`` walks it, so that a pipeline is balanced by
the memory it is judged on, not by an estimate of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class Schedule(Protocol):
    """What of a strategy a stage's schedule reads (``parallel.Strategy`` has it)."""

    @property
    def pp(self) -> int: ...

    @property
    def micro_batches(self) -> int: ...

    @property
    def schedule(self) -> str: ...

    @property
    def chunks(self) -> int: ...


@dataclass(frozen=True)
class Stage:
    """Layers ``start`` .. ``stop - 1``, units ``units``; ``in_flight`` micro-batches of saved tensors;
    ``index`` its place in the pipeline, ``last`` whether it is the last (the one that keeps outputs)."""

    start: int
    stop: int
    units: range
    in_flight: float
    index: int = 0
    last: bool = True


@dataclass(frozen=True)
class Stages:
    """Stages as arrays, an element each (``Stage``'s fields): what ``gpu_memory`` prices at once."""

    start: np.ndarray
    stop: np.ndarray
    in_flight: np.ndarray
    index: np.ndarray
    last: np.ndarray

    @staticmethod
    def of(stages: Sequence[Stage]) -> Stages:
        fields = ("start", "stop", "in_flight", "index", "last")
        return Stages(*(np.array([getattr(st, f) for st in stages]) for f in fields))

    def __len__(self) -> int:
        return len(self.start)

    def rows(self, which: np.ndarray) -> Stages:
        """The stages ``which`` picks."""
        return Stages(self.start[which], self.stop[which], self.in_flight[which], self.index[which],
                      self.last[which])


def in_flight(strategy: Schedule, stage: int) -> float:
    """Micro-batches whose saved tensors a stage holds at once. 1F1B: the pp - stage warm-up forwards
    (Narayanan et al. 2021); GPipe: all of them; interleaved (Megatron-LM's warm-up count, in units of
    one chunk's micro-batch): ((pp - stage - 1) x 2 + (chunks - 1) x pp + 1) / chunks, which for the
    first stage is Korthikanti et al.'s p (1 + (p - 1) / (p v))."""
    p, m = strategy.pp, strategy.micro_batches
    if p == 1:
        return 1.0
    if strategy.schedule == "gpipe":
        return float(m)
    if strategy.schedule == "1f1b":
        return float(min(p - stage, m))
    v = strategy.chunks
    return min(((p - stage - 1) * 2 + (v - 1) * p + 1), m * v) / v


def forward_after_backward(s: Schedule, stages: Stages) -> np.ndarray:
    """Whether each stage runs a forward after a backward of the same step, with the gradients of the
    micro-batches before it held (``param.grad`` accumulates; FSDP2 accumulates the reduced shards):
    every micro-batch after the first under accumulation; under 1F1B (and interleaved) stage k's
    forwards after its first min(p - k - 1, m) warm-up ones, when there are any; never under GPipe,
    whose forwards all come first."""
    m = s.micro_batches
    if s.pp == 1:
        return np.full(len(stages), m > 1)
    if s.schedule == "gpipe":
        return np.zeros(len(stages), dtype=bool)
    return m > np.minimum(s.pp - stages.index - 1, m) + 1


@dataclass(frozen=True)
class Pipelined:
    """What a stage of PyTorch's ``torch.distributed.pipelining`` holds beyond its layers: a receive
    buffer per micro-batch for its input activations and for its output gradients (allocated for
    each chunk up front, PipelineStage._prepare_forward_infra / _prepare_backward_infra), and on the
    last stage every micro-batch's output (``output_chunks``), merged into the step's output after
    the last backward (``_merge_outputs``, a ``torch.cat``): twice the outputs at the end of the step,
    and the chunks still there while the optimizer steps (``clear_runtime_states`` frees them at the
    next step's start)."""

    receive: np.ndarray  # bytes, one a stage
    outputs: np.ndarray
    # A micro-batch's logits the last stage holds through its loss's backward: the stage keeps each
    # output until that micro-batch's backward (PipelineStage.fwd_cache), where a loop without a
    # pipeline deletes them first (torchtitan's ``del pred``; see memory.loss).
    held: np.ndarray


def split(weights: list[int], p: int) -> list[int]:
    """Cuts of the units into ``p`` contiguous stages minimising the largest stage's sum of
    ``weights`` (dynamic programming over the last cut, all candidate runs at once): unit ``k`` of
    the answer's stages runs from cut ``k`` to cut ``k + 1``."""
    n = len(weights)
    cs = np.concatenate([[0], np.cumsum(weights)])
    run = cs[None, :] - cs[:, None]  # [i, j]: units i .. j - 1
    below = np.tri(n + 1, k=-1, dtype=bool).T  # i < j
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    back = np.zeros((p + 1, n + 1), dtype=np.int64)
    for k in range(1, p + 1):
        cost = np.where(below, np.maximum(best[:, None], run), np.inf)
        back[k] = np.argmin(cost, axis=0)
        best = cost[back[k], np.arange(n + 1)]
    cuts, j = [n], n
    for k in range(p, 0, -1):
        j = int(back[k, j])
        cuts.append(j)
    return cuts[::-1]


# A cut with more places than this between its neighbours is placed coarse to fine (``rebalance``);
# each coarse pass judges about FAN places.
EXHAUSTIVE, FAN = 48, 16


def rebalance(cuts: list[int], peaks: Callable[[list[tuple[int, int, int]]], np.ndarray]) -> list[int]:
    """``cuts`` moved until no cut has a better place between its neighbours: ``peaks`` judges stages
    (i, j, k), units i .. j - 1 as stage k, many at once. A cut goes where the larger peak of its two
    stages is least (the first such place on a tie), and moves only if that peak falls, so the
    stages' peaks, sorted, fall at every move and the walk ends; a move puts its neighbours' cuts back
    in question. Every place is tried where there are at most EXHAUSTIVE (a stage's peak is not
    monotone in its units, as the activations received at a boundary differ from cut to cut; two
    stages of such a model: exact). Beyond, every stride-th place (about FAN of them), then the
    places within a stride of the best of those, finer and finer: a cut costs a few dozen judged
    places whatever the depth, where a 500-layer model's pipeline would judge 500 a cut, each a
    stage of hundreds of layers."""
    return _Walk(list(cuts), peaks).run()


@dataclass
class _Walk:
    """``rebalance``'s walk: the cuts, the cuts still in question, and every stage judged so far (a
    stage's peak is the same whenever it is asked)."""

    cuts: list[int]
    peaks: Callable[[list[tuple[int, int, int]]], np.ndarray]
    judged: dict[tuple[int, int, int], int] = field(default_factory=dict)

    def run(self) -> list[int]:
        cuts = self.cuts
        self.todo = list(range(1, len(cuts) - 1))
        while self.todo:
            k = self.todo.pop(0)
            best = self._place(k)
            if self._larger(k, best) < self._larger(k, cuts[k]):
                cuts[k] = best
                self.todo += [j for j in (k - 1, k + 1) if 0 < j < len(cuts) - 1 and j not in self.todo]
        return cuts

    def _sides(self, k: int, c: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        return (self.cuts[k - 1], c, k - 1), (c, self.cuts[k + 1], k)

    def _larger(self, k: int, c: int) -> int:
        return max(self.judged[p] for p in self._sides(k, c))

    def _places(self, k: int, lo: int, hi: int) -> tuple[int, list[int]]:
        stride = 1 if hi - lo <= EXHAUSTIVE else -(-(hi - lo) // FAN)
        return stride, sorted({*range(lo, hi, stride), self.cuts[k]})

    def _best_of(self, k: int, at: list[int]) -> int:
        if any(p not in self.judged for c in at for p in self._sides(k, c)):
            # judged with the first places of every cut still in question: fewer, larger batches
            ahead = [(j, self._places(j, self.cuts[j - 1] + 1, self.cuts[j + 1])[1]) for j in self.todo]
            want = dict.fromkeys(p for j, cs in [(k, at), *ahead] for c in cs for p in self._sides(j, c)
                                 if p not in self.judged)
            self.judged.update(zip(want, self.peaks(list(want)).tolist()))
        worst = [self._larger(k, c) for c in at]
        return at[worst.index(min(worst))]

    def _place(self, k: int) -> int:
        """Cut ``k``'s best place between its neighbours, coarse to fine."""
        lo, hi = self.cuts[k - 1] + 1, self.cuts[k + 1]
        while True:
            stride, at = self._places(k, lo, hi)
            best = self._best_of(k, at)
            if stride == 1:
                return best
            lo, hi = max(lo, best - stride + 1), min(hi, best + stride)
