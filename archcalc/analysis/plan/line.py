"""A quantity that grows linearly with the micro-batch, known from two analyses.

Every activation of a graph with fixed shapes grows linearly with the batch, so what a step holds
at micro-batch b -- a byte count, every moment of the step, a checkpoint plan's table -- is the
line through its values at micro-batches 1 and 2: a plan over many strategies and micro-batches
analyses the graph twice, not once per point. The line is checked against a direct analysis by
the tests (test_plan's ``test_micro_batch_line_is_the_direct_analysis``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Line:
    """``one`` at micro-batch 1 and ``two`` at 2: numbers, numpy arrays (element by element), or
    lists of numbers (each its own line, and so is the answer)."""

    one: Any
    two: Any

    @staticmethod
    def through(sides: Sequence, value: Callable[[Any], Any]) -> Line:
        """The line through ``value`` of each of the two analysed ``sides`` (micro-batches 1 and 2)."""
        return Line(value(sides[0]), value(sides[1]))

    def at(self, b: int) -> Any:
        """The value at micro-batch ``b``."""
        if isinstance(self.one, list):
            return [x + (b - 1) * (y - x) for x, y in zip(self.one, self.two)]
        return self.one + (b - 1) * (self.two - self.one)

    def largest(self, cap: int, limit: int) -> int:
        """The largest micro-batch, at most ``limit``, at which every element is at most ``cap`` (0:
        not even 1): the smallest crossing of ``cap`` by the lines that grow, solved, not searched."""
        one = np.asarray(self.one)
        slope = np.asarray(self.two) - one
        if np.any((slope <= 0) & (one > cap)):
            return 0
        grow = slope > 0
        if not np.any(grow):
            return limit
        return max(min(limit, int(np.min(1 + (cap - one[grow]) // slope[grow]))), 0)
