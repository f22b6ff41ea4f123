"""archcalc's per-rank estimate beside PyTorch's engines, measured: the table of docs/measurements.md.

The measurements (benchmarks/results/parallel_gloo.json: torchrun, gloo, 2 and 4 ranks;
parallel_fake.json: rank 0 of 2 to 32 ranks alone on the fake process group) come from
bench_parallel.py, with torch 2.14 on this project's CPU machine; each row is one rank's peak of live
tensors over the second training step (MemTracker). The models are read from
tests/fixtures/parallel/ (the same exports with their weights left out: archcalc reads shapes).
No torch needed here. Usage: python benchmarks/compare_parallel.py [--markdown]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from archcalc.analysis.memory.loss import CROSS_ENTROPY
from archcalc.analysis.plan.gpu_memory import Strategy
from archcalc.analysis.plan.pipeline import Stage, in_flight
from archcalc.analysis.plan.planner import Planner
from archcalc.frontends.sources import load_graph
from archcalc.ir import LOSS_KEY, Graph

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ROOT / "tests" / "fixtures" / "parallel"
MiB = 1 << 20
BATCH, MICRO_BATCH, MICRO_BATCHES = 8, 4, 8  # bench_parallel.py's

# bench_parallel.py's strategies as archcalc names them.
STRATEGIES = {
    "single": lambda w: Strategy(),
    "ddp": lambda w: Strategy(dp=w),
    "zero1": lambda w: Strategy(dp=w, zero=1),
    "fsdp2_reshard": lambda w: Strategy(dp=w, zero=3),
    "fsdp2_noreshard": lambda w: Strategy(dp=w, zero=2),
    "ckpt": lambda w: Strategy(dp=w, checkpoint="full"),
    "pp_1f1b": lambda w: Strategy(pp=w, micro_batches=MICRO_BATCHES),
    "pp_1f1b_ckpt": lambda w: Strategy(pp=w, micro_batches=MICRO_BATCHES, checkpoint="full"),
    "tp": lambda w: Strategy(tp=w),
    "tp_vocab": lambda w: Strategy(tp=w),
    "pp_1f1b_lm": lambda w: Strategy(pp=w, micro_batches=MICRO_BATCHES),
    "ckpt_op": lambda w: Strategy(dp=w, checkpoint="op"),
    "fsdp2_mixed": lambda w: Strategy(dp=w, zero=3),
    "ckpt_uniform2": lambda w: Strategy(dp=w, checkpoint="uniform2"),
    "ckpt_block2": lambda w: Strategy(dp=w, checkpoint="block2"),
    "pp_fsdp": lambda w: Strategy(dp=w // 2, zero=3, pp=2, micro_batches=MICRO_BATCHES),
    "tp_sp": lambda w: Strategy(tp=w, sp=True),
}
# Strategies whose step trains the GPT as a language model: the cross-entropy over its logits.
LANGUAGE_MODEL = ("tp_vocab", "pp_1f1b_lm")
# Strategies that train the language model in bf16 mixed precision (FSDP2's MixedPrecisionPolicy).
MIXED = ("fsdp2_mixed", "pp_fsdp")


def measured_rows() -> list[dict]:
    gloo = json.loads((RESULTS / "parallel_gloo.json").read_text())
    fake = json.loads((RESULTS / "parallel_fake.json").read_text())
    return [{**r, "backend": "gloo"} for r in gloo] + [r for r in fake if "peak_bytes" in r]


def planners() -> dict[str, Planner]:
    """PyTorch's CPU defaults (per-tensor Adam), tensors only (MemTracker counts no runtime)."""
    def planner(graph: Graph, dtype: str | None = None) -> Planner:
        return Planner(graph, "adam", dtype, device="cpu", runtime="none")

    out = {m: planner(load_graph(MODELS / f"{m}.onnx")) for m in ("cnn", "transformer")}
    out["transformer_lm"] = planner(language_model(load_graph(MODELS / "transformer.onnx")))
    out["transformer_mixed"] = planner(language_model(load_graph(MODELS / "transformer.onnx")), "mixed-bf16")
    return out


def language_model(graph: Graph) -> Graph:
    """The GPT export with its head marked as the front ends mark a language model's (an ONNX file
    says nothing of the loss it is trained on)."""
    for layer in graph.layers:
        if graph.outputs[0] in layer.outputs:
            layer.meta[LOSS_KEY] = CROSS_ENTROPY
    return graph


def stages_as_run(planner: Planner, s: Strategy, split: list[list[str]]) -> list[Stage]:
    """The stages bench_parallel.py ran: each a list of the model's top-level children."""
    owner, current = [], 0
    for res in planner.ests[0].results:
        top = [c for c in res.layer.name.split("/") if c][:1]
        current = next((k for k, names in enumerate(split) if top and top[0] in names), current)
        owner.append(current)
    of = planner.units.of_layer()
    out = []
    for k in range(len(split)):
        at = [i for i, o in enumerate(owner) if o == k]
        last = k == len(split) - 1
        out.append(Stage(at[0], at[-1] + 1, range(of[at[0]], of[at[-1]] + 1), in_flight(s, k), k, last))
    return out


def estimate(planner: Planner, row: dict) -> tuple[int, str]:
    """archcalc's peak for the rank ``row`` measured, and the phase it falls in."""
    s = STRATEGIES[row["strategy"]](row["world"])
    if s.pp > 1:
        stages = stages_as_run(planner, s, row["all_stage_units"])
        mem = planner.memory(s, MICRO_BATCH, stages=stages)[row.get("stage", row["rank"])]
    else:
        mem = planner.memory(s, BATCH, rank=row["rank"])[0]
    return mem.peak, mem.phase


def compare() -> list[dict]:
    ps = planners()
    out = []
    for row in measured_rows():
        suffix = "_lm" if row["strategy"] in LANGUAGE_MODEL else "_mixed" if row["strategy"] in MIXED else ""
        est, phase = estimate(ps[row["model"] + suffix], row)
        out.append({"model": row["model"], "strategy": row["strategy"], "world": row["world"], "rank": row["rank"],
                    "backend": row["backend"], "estimate": est, "measured": row["peak_bytes"],
                    "error": est / row["peak_bytes"] - 1, "phase": phase})
    return out


def summary(rows: list[dict]) -> dict[str, tuple[float, float, int]]:
    """Per strategy: median and worst |error|, and how many ranks."""
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["strategy"], []).append(abs(r["error"]))
    return {k: (statistics.median(v), max(v), len(v)) for k, v in by.items()}


def markdown(rows: list[dict]) -> str:
    lines = ["| model | strategy | ranks | backend | per-rank measured (MiB) | archcalc (MiB) | error |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["strategy"], r["world"], r["backend"]), []).append(r)
    for (model, strategy, world, backend), rs in groups.items():
        rs.sort(key=lambda r: r["rank"])
        measured = " / ".join(f"{r['measured'] / MiB:.1f}" for r in rs)
        estimated = " / ".join(f"{r['estimate'] / MiB:.1f}" for r in rs)
        errors = " / ".join(f"{r['error']:+.1%}" for r in rs)
        lines.append(f"| {model} | {strategy} | {world} | {backend} | {measured} | {estimated} | {errors} |")
    lines += ["", "| strategy | ranks compared | median abs. error | worst |", "|---|---|---|---|"]
    lines += [f"| {k} | {n} | {med:.1%} | {worst:.1%} |" for k, (med, worst, n) in summary(rows).items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--markdown", action="store_true")
    rows = compare()
    if ap.parse_args().markdown:
        print(markdown(rows), end="")
        return
    for r in rows:
        print(f"{r['model']:11} {r['strategy']:16} w{r['world']:<2} r{r['rank']} {r['backend']:4} "
              f"est {r['estimate'] / MiB:7.1f} meas {r['measured'] / MiB:7.1f} {r['error']:+6.1%} {r['phase']}")
    for k, (med, worst, n) in summary(rows).items():
        print(f"{k:16} {n:3} ranks: median {med:.1%}, worst {worst:.1%}")


if __name__ == "__main__":
    main()
