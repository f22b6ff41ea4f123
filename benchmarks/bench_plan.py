"""The planner's speed and its checkpoint plans, measured in one run.

1. Speed: `archcalc plan` over every strategy and micro-batch for a 6.9B-parameter GPT decoder graph
   (GPT-3 6.7B's shape: 32 layers, hidden 4096, 32 heads, sequence 4096, vocabulary 50257; weights
   declared, not stored) on 64 H100s over 8 nodes, with and without a global batch; the goal is 2 s.
   No peer plans an arbitrary graph, so the figure is set against the goal, and against the time
   of the two analyses it starts from.
2. Checkpoint plans against Chen et al. 2016's sqrt(n) segments: at the per-GPU memory sqrt(n)
   segments need at a micro-batch, the plan's recompute; and per-unit (full) checkpointing's.
Usage: python benchmarks/bench_plan.py
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from archcalc.analysis.gpus import gpu
from archcalc.analysis.plan import checkpointing as ck
from archcalc.analysis.plan.gpu_memory import Strategy
from archcalc.analysis.plan.planner import Planner
from archcalc.analysis.plan.search import plan_result
from archcalc.frontends.onnx_import import import_onnx
from archcalc.frontends.sources import load_graph

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from plan_models import gpt_layers  # noqa: E402

GOAL_S = 2.0


def speed() -> None:
    graph = import_onnx(gpt_layers(32, 4096, 4096, 32, vocab=50257))
    card = gpu("H100-80GB")
    for global_batch in (None, 512):
        t0 = time.perf_counter()
        planner = Planner(graph, "adam", dtype="mixed")
        t1 = time.perf_counter()
        result = plan_result(planner, card.capacity, 64, 8, global_batch)
        t2 = time.perf_counter()
        fits = sum(r.fits for r in result.rows)
        print(f"7B decoder ({planner.ests[0].totals.params / 1e9:.2f}B parameters, {len(planner.ests[0].results)} "
              f"layers), 64 x H100, global batch {global_batch}: {len(result.rows)} strategies ({fits} fit) in "
              f"{t2 - t0:.2f} s (analyses {t1 - t0:.2f} s, search {t2 - t1:.2f} s); goal {GOAL_S} s: "
              f"{(t2 - t0) / GOAL_S:.2f} of it; first: {result.rows[0].strategy.label()}, micro-batch "
              f"{result.rows[0].micro_batch}")


def against_sqrt(model: str, b: int) -> None:
    """At the memory of sqrt(n) checkpoint segments, what the plan recomputes."""
    planner = Planner(load_graph(model), "adam")
    base = Strategy(checkpoint="planned")
    v = planner.view(1, False)
    cuts = ck.cut_points(v.shaped, v.results)
    chen = replace(base, segments=ck.sqrt_segments(cuts))
    budget = max(m.peak for m in planner.memory(chen, b)) + planner.constant
    plan = planner.planned(base, budget, b=b)
    full = replace(base, checkpoint="full", segments=None)
    none = replace(base, checkpoint="none", segments=None)
    row = {name: (max(m.peak for m in planner.memory(s, b)) + planner.constant, planner.recompute(s, b))
           for name, s in (("none", none), ("sqrt(n)", chen), ("full", full), ("plan", plan))}
    gib = 1 << 30
    cells = ", ".join(f"{k} {mem / gib:.2f} GiB / {flops / 1e12:.2f} TFLOP" for k, (mem, flops) in row.items())
    saving = 1 - row["plan"][1] / row["sqrt(n)"][1] if row["sqrt(n)"][1] else 0.0
    print(f"{model} batch {b}, {len(cuts) - 1} cut intervals: {cells}; the plan recomputes {saving:.0%} less than "
          f"sqrt(n) within its memory")


def main() -> None:
    speed()
    for model, b in (("torchvision/resnet50", 64), ("torchvision/mobilenet_v2", 64), ("torchvision/vit_b_16", 32),
                     ("torchvision/efficientnet_b0", 64), ("vgg16", 32)):
        against_sqrt(model, b)


if __name__ == "__main__":
    main()
