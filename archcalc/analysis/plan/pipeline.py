"""A pipeline stage as PyTorch's ``torch.distributed.pipelining`` runs it: its layers, the micro-
batches whose saved tensors it holds at once under each schedule, and its communication buffers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
    """Layers ``start`` .. ``stop - 1``, units ``units``; ``in_flight`` micro-batches of saved tensors."""

    start: int
    stop: int
    units: range
    in_flight: float
    index: int = 0


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


@dataclass(frozen=True)
class Pipelined:
    """What a stage of PyTorch's ``torch.distributed.pipelining`` holds beyond its layers: a receive
    buffer per micro-batch for its input activations and for its output gradients (allocated for
    each chunk up front, PipelineStage._prepare_forward_infra / _prepare_backward_infra), and on the
    last stage every micro-batch's output (``output_chunks``), merged into the step's output after
    the last backward (``_merge_outputs``, a ``torch.cat``): twice the outputs at the end of the step,
    and the chunks still there while the optimizer steps (``clear_runtime_states`` frees them at the
    next step's start)."""

    receive: int = 0
    outputs: int = 0


NOT_PIPELINED = Pipelined()  # a stage that is the whole model
