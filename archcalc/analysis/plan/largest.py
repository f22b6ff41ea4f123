"""The largest model a strategy fits: the ZeRO paper's question (Rajbhandari et al. 2020, Table 2:
the largest model each stage of ZeRO trains on a given cluster), asked of a family's shape.

The family is a model's widths -- hidden size, heads, feed-forward, vocabulary -- with its depth free:
the number of repeated layers is solved for, each candidate depth built and judged whole under the
strategy (the same verdict ``plan --strategy`` gives), so everything the step holds counts, not only
the model states the paper's theoretical columns count. Memory grows with depth (parameters, their
shards and saved activations a layer each), so the largest depth that fits is found by doubling from
the model's own depth and then bisecting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archcalc.analysis.plan.planner import PlanRow


@dataclass(frozen=True)
class Largest:
    """The deepest model that fits (``layers`` 0: not even the shallowest the strategy places) with
    its verdict and parameter count, and the verdict one layer deeper."""

    layers: int
    params: int
    row: PlanRow | None
    deeper: PlanRow | None
    limit: int = 0  # the deepest judged (the planner's unit cap): reached, the answer is a lower bound


# A depth's verdict, its parameter count and whether it fits as asked; None: the strategy cannot place it.
Judged = tuple[PlanRow, int, bool] | None


def _crossing(seen: dict[int, Judged], a: int, b: int) -> float | None:
    """Where the line through depths ``a`` and ``b``'s totals reaches the budget; None unless both
    are judged at one micro-batch (a solved micro-batch fills the card at every depth)."""
    ra, rb = seen.get(a), seen.get(b)
    if ra is None or rb is None or rb[0].total == ra[0].total or \
            (ra[0].micro_batch, ra[0].accumulation) != (rb[0].micro_batch, rb[0].accumulation):
        return None
    return a + (ra[0].capacity - ra[0].total) * (b - a) / (rb[0].total - ra[0].total)


def largest_depth(judge: Callable[[int], Judged], start: int, limit: int) -> Largest:
    """The largest depth in 1 .. ``limit`` whose ``judge`` fits, from the model's own ``start``. Memory
    is close to affine in depth, so each next depth is where the line through two judged ones crosses
    the budget (a secant step), kept inside the bracket and falling back to doubling or bisection:
    a few builds where plain doubling and bisection built up to twenty of the deepest models."""
    seen: dict[int, Judged] = {}

    def fits(depth: int) -> bool:
        if depth not in seen:
            seen[depth] = judge(depth)
        got = seen[depth]
        return got is not None and got[2]

    lo, hi = 0, limit + 1  # lo fits (0: no depth found yet), hi does not (past the limit: none found)
    depth, before = max(1, min(start, limit)), 0
    while fits(depth):  # up from the model's own depth until one does not fit
        before, lo = lo, depth
        if depth == limit:
            break
        x = _crossing(seen, before, depth) if before else None
        depth = min(limit, 2 * depth if x is None else max(depth + 1, min(int(x) + 1, 2 * depth)))
    else:
        hi = depth
    for step in range(limit):  # secant and bisection in turn: never more than twice bisection's steps
        if hi - lo <= 1:
            break
        x = _crossing(seen, lo, hi) if lo and step % 2 == 0 else None
        mid = (lo + hi) // 2 if x is None else min(max(int(x), lo + 1), hi - 1)
        if fits(mid):
            lo = mid
        else:
            hi = mid
    best = seen.get(lo) if lo else None
    deeper = (seen[lo + 1] if lo + 1 in seen else judge(lo + 1)) if lo + 1 <= limit else None
    return Largest(lo, best[1] if best else 0, best[0] if best else None, deeper[0] if deeper else None)
