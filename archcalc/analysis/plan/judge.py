"""The judge of a strategy's pipeline stages at one micro-batch: what judging them reads that is the
same for every stage, worked out once, and any number of candidate stages judged in one array
expression (``gpu_memory``), each walked only at the layers that can hold its peak
(``peak_layers``) -- what ``pipeline.rebalance`` asks of it thousands of times a search.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from archcalc.analysis.memory.model_states import Precision
from archcalc.analysis.memory.step_peak import StepProfile
from archcalc.analysis.plan.gpu_memory import GPUMemory, Strategy, gpu_memory, peaks
from archcalc.analysis.plan.params import Layout, Params
from archcalc.analysis.plan.peak_layers import peak_layers
from archcalc.analysis.plan.pipeline import Pipelined, Stages, in_flight

# Layers judged in one array expression at most: past it numpy's arrays (8 bytes a layer) outgrow
# what the C allocator keeps for reuse (its mmap threshold, 128 KiB), and each is mapped afresh.
BATCH = 16384


@dataclass(frozen=True)
class Judge:
    """The judge of ``s``'s stages at one micro-batch: what it reads that is the same for every stage
    (the rank's account, its parameters, the bytes of the graph's inputs and outputs and of the
    activations crossing each position), and any number of stages judged at once (``gpu_memory``)."""

    s: Strategy
    precision: Precision
    account: tuple[StepProfile, np.ndarray, np.ndarray, np.ndarray]
    params: Params
    inputs: int
    crossing: np.ndarray
    outputs: int
    prefetch: int
    trained: int = 0  # bytes of the outputs a loss is taken over, a micro-batch's

    def memory(self, st: Stages, rank: int | None = None) -> list[GPUMemory]:
        """Each stage's most loaded rank (or rank ``rank``)."""
        return gpu_memory(self.s, self.precision, *self.account, Layout(self.params, st.start, st.stop), st,
                          *self._around(st), rank=rank, prefetch=self.prefetch)

    def peaks(self, places: list[tuple[int, int, int]]) -> np.ndarray:
        """The peak ``memory`` finds for each of ``places`` (i, j, k: units i .. j - 1 as stage k), in
        batches of at most ``BATCH`` layers in all, each stage walked at the layers that can hold
        its peak (``peak_layers``)."""
        s, p = self.s, self.params
        i, j, k = np.array(places, dtype=np.int64).T
        st = Stages(p.unit_start[i], p.unit_stop[j - 1], self._in_flight[k], k, k == s.pp - 1)
        walked = self._walked.take(st.stop) - self._walked.take(st.start)
        ends = np.cumsum(walked) // BATCH
        if not ends[-1]:
            return self._peaks(st)
        cuts = np.flatnonzero(np.diff(ends)) + 1
        return np.concatenate([self._peaks(st.rows(part)) for part in np.split(np.arange(len(i)), cuts)])

    def _peaks(self, st: Stages) -> np.ndarray:
        return peaks(self.s, self.precision, *self.account, Layout(self.params, st.start, st.stop, self._keep), st,
                     *self._around(st), prefetch=self.prefetch)

    @cached_property
    def _keep(self) -> np.ndarray | None:
        prof, forward, saved, _ = self.account
        return peak_layers(self.s, prof, forward, saved, self.params, self.precision)

    @cached_property
    def _walked(self) -> np.ndarray:
        """[layer + 1]: how many layers before each are walked."""
        keep = self._keep if self._keep is not None else np.ones(len(self.params.grad), dtype=bool)
        return np.concatenate([[0], np.cumsum(keep)])

    @cached_property
    def _in_flight(self) -> np.ndarray:
        return np.array([in_flight(self.s, k) for k in range(self.s.pp)])

    def _around(self, st: Stages) -> tuple[np.ndarray, Pipelined]:
        """Each stage's inputs (the graph's, on the first) and what pipelining adds to it: a receive
        buffer per micro-batch for the activations crossing its start and its stop, and on the last
        the outputs PyTorch's pipelining keeps and the logits it holds through the loss."""
        m, zero = self.s.micro_batches, np.zeros_like(st.start)
        inputs = np.where(st.index == 0, self.inputs, 0)
        if self.s.pp == 1:
            return inputs, Pipelined(zero, zero, zero)
        into = np.where(st.index > 0, self.crossing.take(st.start), 0)
        out_of = np.where(st.last, 0, self.crossing.take(st.stop))
        return inputs, Pipelined(m * (into + out_of), m * self.outputs * st.last, self.trained * st.last)
