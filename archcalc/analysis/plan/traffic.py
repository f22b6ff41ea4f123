"""Bytes each GPU sends per optimizer step, by collective, as ring algorithms move them.

A ring all-reduce of M bytes over n ranks sends 2 (n - 1) / n x M from each; an all-gather or a
reduce-scatter of M (the whole) sends (n - 1) / n x M (Rajbhandari et al. 2020, section 7: plain
data parallelism moves 2 Psi per step, ZeRO-3 3 Psi). DDP and ZeRO-1 reduce once per step (the
micro-batches before the last accumulate locally, ``no_sync``); FSDP gathers every unit for every
micro-batch's forward (and again for its backward when it reshards after forward) and
reduce-scatters every micro-batch's gradients; Megatron-LM reduces its fp32 main gradients once a
step (reduce-scatter with its distributed optimizer, which then all-gathers the updated weights).
A pipeline sends each stage boundary's activation forward and its gradient back, per micro-batch;
tensor parallelism all-reduces per micro-batch;
context parallelism passes K/V chunks round its ring per micro-batch.
"""

from __future__ import annotations

from archcalc.analysis.plan.context import ring_bytes
from archcalc.analysis.plan.gpu_memory import MEGATRON_GRAD, Layout, Strategy
from archcalc.analysis.plan.line import Line
from archcalc.analysis.plan.pipeline import Stage
from archcalc.analysis.plan.rank_view import RankView


def ring(n: int, size: int, all_reduce: bool = False) -> int:
    return (2 if all_reduce else 1) * (n - 1) * size // n if n > 1 else 0


def traffic(s: Strategy, v: RankView, stages: list[Stage], layouts: list[Layout], b: int) -> dict[str, int]:
    """Bytes sent per GPU per step under ``s``: ``v`` the rank's graph, ``stages`` its pipeline's with
    their parameters' ``layouts``."""
    w, m = v.width, s.micro_batches
    out = {"all-reduce": 0, "all-gather": 0, "reduce-scatter": 0, "broadcast": 0, "point-to-point": 0}
    params = max(int(lay.elements.sum()) for lay in layouts) * w  # the stage with the most
    g, replicas = s.group, s.replicas // s.group
    if s.engine == "megatron":  # fp32 main gradients reduced; the distributed optimizer gathers bf16 weights
        grads = params // w * MEGATRON_GRAD
        if s.zero == 1:
            out["reduce-scatter"] += ring(s.replicas, grads)
            out["all-gather"] += ring(s.replicas, params)
        else:
            out["all-reduce"] += ring(s.replicas, grads, all_reduce=True)
    elif s.zero < 2:
        out["all-reduce"] += ring(s.replicas, params, all_reduce=True)
        if s.zero == 1:  # ZeroRedundancyOptimizer broadcasts each rank's updated partition
            out["broadcast"] += ring(s.replicas, params)
    else:
        gathers = 2 if s.zero == 3 else 1
        out["all-gather"] += gathers * m * ring(g, params)
        out["reduce-scatter"] += m * ring(g, params)
        out["all-reduce"] += ring(replicas, params // g, all_reduce=True)  # hybrid: across the replicas
    if s.tp > 1:
        share = (stages[0].stop - stages[0].start) / max(len(v.results), 1)
        out["all-reduce"] += int(v.tp_bytes.at(b) * m * share)
    if s.cp > 1:  # the ring's K/V chunks (see context.ring_bytes)
        out["point-to-point"] += int(Line(*(ring_bytes(e, s.cp) for e in v.ests)).at(b) * m)
    if s.pp > 1:
        per = max(v.boundaries(b, [st.start for st in stages[1:]]), default=0)
        out["point-to-point"] += 2 * m * per  # the activation forward, its gradient back
    return out
