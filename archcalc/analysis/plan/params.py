"""Where a rank's trained parameters sit, by layer and unit, for any run of layers: the whole graph's
parameters tabled once (``Params``, per layer), and any number of pipeline stages cut from the
table at once (``Layout``, a row per stage), so that ``gpu_memory`` prices many candidate stages
in one array expression, and one stage as a batch of one.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from archcalc.analysis.memory.model_states import Trainable, training_width
from archcalc.analysis.plan.pipeline import Stage
from archcalc.analysis.plan.units import Units
from archcalc.ir import Shaped


def zero1_partition(sizes: Sequence[int], ranks: int) -> list[list[int]]:
    """The parameters (their sizes) ``ZeroRedundancyOptimizer`` gives each rank: sorted largest first,
    each to the rank with the fewest elements so far, the lowest on a tie
    (torch/distributed/optim/zero_redundancy_optimizer.py, _partition_parameters)."""
    given = _partition(tuple(sizes), ranks)
    return [list(r) for r in given] + [[] for _ in range(ranks - len(given))]


@functools.lru_cache(maxsize=256)
def _partition(sizes: tuple[int, ...], ranks: int) -> tuple[tuple[int, ...], ...]:
    """The ranks that receive any parameter, in rank order: only the first ``len(sizes)`` can (an empty
    rank among them always ties lowest), so the work follows the parameters, not a rank count in the
    hundreds of thousands (``plan --gpus 720720``)."""
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


# What ``Params.sums`` sums: gradient bytes (of whole parameters), trained elements, elements of one
# rank's shard of them, bytes of untrained stored tensors, and the gradient bytes of the root's own
# parameters (those of the layers between repeated units).
GRAD, ELEMENTS, SHARDS, BUFFERS, ROOT = range(5)


@dataclass(frozen=True)
class Params:
    """One rank's trained parameters, layer by layer (each at the layer that makes its gradient),
    sharded over ``group``: what every stage's ``Layout`` is cut from."""

    grad: np.ndarray  # [layer]: gradient bytes
    sums: np.ndarray  # [quantity, layer + 1]: running sums, from layer 0, of GRAD, ELEMENTS, SHARDS, BUFFERS, ROOT
    largest: np.ndarray  # [layer]: the largest parameter's elements
    sizes: np.ndarray  # every parameter's elements, in the order of ``at``
    at: np.ndarray  # each parameter's layer, ascending
    unit_start: np.ndarray  # [unit]: its first layer
    unit_stop: np.ndarray  # [unit]: the layer past its last
    unit_of: np.ndarray  # [layer]: its unit
    repeated: np.ndarray  # [unit]: an FSDP unit of its own (else the root's)
    # ZeroRedundancyOptimizer's share of a rank, by (first layer, past the last, ranks, rank).
    _zero1: dict = field(default_factory=dict, compare=False, repr=False)

    @functools.cached_property
    def unit_made(self) -> np.ndarray:
        """[layer]: gradient bytes its repeated unit makes at it and after it (0 in the root's layers)."""
        made = self.sums[GRAD][self.unit_stop[self.unit_of]] - self.sums[GRAD][:-1]
        return np.where(self.repeated[self.unit_of], made, 0)

    @functools.cached_property
    def unit_first(self) -> np.ndarray:
        """[layer]: the gradient bytes of its repeated unit if it is the unit's first layer, else -1."""
        first = (self.unit_start[self.unit_of] == np.arange(len(self.unit_of))) & self.repeated[self.unit_of]
        unit_bytes = self.sums[GRAD][self.unit_stop] - self.sums[GRAD][self.unit_start]
        return np.where(first, unit_bytes[self.unit_of], -1)

    def zero1(self, start: int, stop: int, ranks: int, rank: int | None) -> tuple[int, int]:
        """Under ``zero1_partition`` of the parameters of layers ``start`` .. ``stop - 1``, the elements
        of rank ``rank``'s share (the most loaded rank's, if None) and its largest parameter's."""
        key = (start, stop, ranks, rank)
        if key not in self._zero1:
            i, j = np.searchsorted(self.at, [start, stop])
            given = _partition(tuple(self.sizes[i:j].tolist()), ranks)  # the ranks past these hold nothing
            at = rank % ranks if rank is not None else None
            mine = max(given, key=sum, default=()) if at is None else given[at] if at < len(given) else ()
            self._zero1[key] = sum(mine), max(mine, default=0)
        return self._zero1[key]


@dataclass(frozen=True)
class Layout:
    """Where each trained parameter's bytes sit, for stages of one rank's graph (layers ``start[r]``
    .. ``stop[r] - 1`` for stage ``r``, a run of whole units), each counting its own parameters only.
    What is per layer is one flat vector over every stage's layers in turn (``flat``)."""

    params: Params
    start: np.ndarray  # [stage]
    stop: np.ndarray  # [stage]
    keep: np.ndarray | None = None  # [layer]: the layers walked (``peak_layers``); None: all

    @property
    def repeated(self) -> np.ndarray:
        return self.params.repeated

    @functools.cached_property
    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stage's layers in turn (those ``keep`` names): each entry's layer and stage, and where
        each stage's entries begin (and, last, where they all end)."""
        if self.keep is None:
            first, lengths, layers = self.start, self.stop - self.start, None
        else:
            layers = np.flatnonzero(self.keep)
            first = np.searchsorted(layers, self.start)
            lengths = np.searchsorted(layers, self.stop) - first
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        stage = np.repeat(np.arange(len(lengths)), lengths)
        at = np.arange(offsets[-1]) + (first - offsets[:-1])[stage]
        return (at if layers is None else layers.take(at)), stage, offsets

    @functools.cached_property
    def unit(self) -> np.ndarray:
        """[entry]: the unit of its layer."""
        return self.at(self.params.unit_of)

    @functools.cached_property
    def _sums(self) -> np.ndarray:
        return self.params.sums[:, self.stop] - self.params.sums[:, self.start]

    @property
    def gradients(self) -> np.ndarray:
        """[stage]: gradient bytes of the trained parameters (whole)."""
        return self._sums[GRAD]

    @property
    def elements(self) -> np.ndarray:
        """[stage]: the trained parameters' elements."""
        return self._sums[ELEMENTS]

    @property
    def shards(self) -> np.ndarray:
        """[stage]: elements of this rank's shard of them (FSDP2 padding)."""
        return self._sums[SHARDS]

    @property
    def buffers(self) -> np.ndarray:
        """[stage]: bytes of stored, untrained tensors."""
        return self._sums[BUFFERS]

    def made(self, quantity: int = GRAD) -> np.ndarray:
        """[entry]: gradient bytes (or the root's, ``ROOT``) made at each entry's layer and the layers after
        it in its stage."""
        running = self.params.sums[quantity]
        return running.take(self.stop).take(self.flat[1]) - running.take(self.flat[0])

    def at(self, values: np.ndarray) -> np.ndarray:
        """[layer] to [entry]: the value at each entry's layer."""
        return values.take(self.flat[0])

    @functools.cached_property
    def largest(self) -> np.ndarray:
        """[stage]: the largest parameter's elements."""
        return np.maximum.reduceat(self.at(self.params.largest), self.flat[2][:-1])

    @functools.cached_property
    def unit_params(self) -> np.ndarray:
        """[stage, unit]: whole parameter bytes of each unit (of its layers in the stage)."""
        lo, hi = (np.clip(bound, self.start[:, None], self.stop[:, None])
                  for bound in (self.params.unit_start, self.params.unit_stop))
        return self.params.sums[GRAD][hi] - self.params.sums[GRAD][lo]

    def per_unit(self, values: np.ndarray) -> np.ndarray:
        """[stage, unit] to [entry]: the value of each entry's stage and unit."""
        return np.ravel(values).take(self._stage_unit)

    @functools.cached_property
    def _stage_unit(self) -> np.ndarray:
        return self.flat[1] * len(self.repeated) + self.unit

    def zero1(self, ranks: int, rank: int | None) -> tuple[np.ndarray, np.ndarray]:
        """[stage]: ``Params.zero1`` of each stage: the elements of a rank's share, and its largest."""
        shares = [self.params.zero1(a, e, ranks, rank) for a, e in zip(self.start.tolist(), self.stop.tolist())]
        return np.array([x for x, _ in shares], dtype=np.int64), np.array([y for _, y in shares], dtype=np.int64)

    @functools.cached_property
    def neighbours(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """[stage, unit]: the parameter bytes of the repeated unit after it and of the one before it
        (whom FSDP2 prefetches in forward and in backward), and of the first repeated unit after it
        (whose reduce-scatter input is alive in its backward); zero past the stage's own units."""
        rep, n = self.repeated, len(self.repeated)
        order = np.flatnonzero(rep)
        nxt, prv = np.full(n, n), np.full(n, n)  # the unit's index, n: none
        nxt[order[:-1]], prv[order[1:]] = order[1:], order[:-1]
        after = np.append(order, n)[np.searchsorted(order, np.arange(n), "right")]
        u_bytes = np.where(rep, self.unit_params, 0)
        padded = np.concatenate([u_bytes, np.zeros((len(u_bytes), 1), dtype=np.int64)], axis=1)
        return padded[:, nxt], padded[:, prv], padded[:, after]


def params(shaped: Shaped, trained: Trainable, units: Units, group: int, float_dtype: str | None) -> Params:
    """The trained parameters of one rank's graph (at the training width of ``float_dtype``), sharded
    over ``group``."""
    width, layers = training_width(float_dtype), len(units.of_layer())
    grad, elements, shards, buffers, largest = (np.zeros(layers, dtype=np.int64) for _ in range(5))
    at = np.array(list(trained.reader.values()), dtype=np.int64)
    sizes = np.array([shaped.tensors[name].numel for name in trained.reader], dtype=np.int64)
    for name, i in trained.reader.items():
        t = shaped.tensors[name]
        grad[i] += t.numel * width
        elements[i] += t.numel
        shards[i] += fsdp_shard(t.shape, group)
        largest[i] = max(largest[i], t.numel)
    for i in set(trained.buffers.values()) & set(range(layers)):  # as buffer_bytes over every layer
        buffers[i] = trained.buffer_bytes(shaped, float_dtype, i, i + 1)
    order = np.argsort(at, kind="stable")
    repeated = np.array([u.repeated for u in units.units], dtype=bool)
    root = np.where(repeated[units.unit_index], 0, grad)
    sums = np.zeros((5, layers + 1), dtype=np.int64)
    sums[:, 1:] = np.cumsum([grad, elements, shards, buffers, root], axis=1)
    start, stop = (np.array([getattr(u, end) for u in units.units], dtype=np.int64) for end in ("start", "stop"))
    return Params(grad, sums, largest, sizes[order], at[order], start, stop, units.unit_index, repeated)


def layout(shaped: Shaped, trained: Trainable, units: Units, stage: Stage, group: int,
           float_dtype: str | None) -> Layout:
    """The trained parameters of ``stage`` (at the training width of ``float_dtype``), sharded over ``group``."""
    table = params(shaped, trained, units, group, float_dtype)
    return Layout(table, np.array([stage.start]), np.array([stage.stop]))
