"""Presentation of a validation: the channels side by side as text or JSON, with the verdict
``archcalc.measure.compare`` reached."""

from __future__ import annotations

import json

from archcalc import units
from archcalc.measure.compare import Judgement
from archcalc.measure.validate import Validation


def validation_json(v: Validation, j: Judgement) -> str:
    im = v.estimate.inference_memory("onnxruntime-cpu")
    d = v.to_dict()
    return json.dumps({
        "schema": "archcalc.validate/1", "provider": v.provider, "passed": not j.failures(v),
        "shapes": {"checked": v.checked_tensors, "mismatches": d["mismatches"]},
        "nodes": d["nodes"],
        "estimate": {"activation_peak": j.estimated_peak, "activation_peak_plain": im.activation_peak_plain,
                     "load_peak": im.load_peak - im.runtime, "total": im.steady},
        "measured": {"profiler_peak": v.profiler_peak, "profiler_peak_later": v.profiler_peak_later,
                     "process": d["process_peaks"], "cuda": d["cuda_peaks"]},
        "compared": [{"channel": name, "estimate": e, "measured": m, "error": e / m - 1 if m else None}
                     for name, e, m in j.figures],
        "optimizer_changes": v.optimizer_changes,
    }, indent=1) + "\n"


def validation_text(v: Validation, j: Judgement) -> str:
    """Estimate against measurement, channel by channel, then the verdict."""
    rows = [("provider", v.provider, "", ""),
            ("tensor shapes", f"{v.checked_tensors} checked", f"{len(v.mismatches)} differ", ""),
            ("node output bytes", f"{len(v.nodes)} nodes", f"{len(v.nodes) - j.bytes_equal} differ", "")]
    rows += [(f"GPU: {g.card}", f"driver {g.driver}", f"NVML {g.source}", "") for g in v.cuda_peaks[:1]]
    rows += [(name, units.nbytes(e), units.nbytes(m), f"{e / m - 1:+.1%}" if m else "-")
             for name, e, m in j.figures]
    lines = [f"{name:<40} {a:>16} {b:>16} {c:>8}" for name, a, b, c in
             [("channel", "estimate", "measured", "error"), *rows]]
    lines += [f"  mismatch: {m.tensor} (node {m.node}): estimated {m.estimated}, executed {m.executed}"
              for m in v.mismatches[:20]]
    lines += [f"  bytes differ: {n.layer} ({n.op}): estimated {n.estimated_bytes}, measured {n.measured_bytes}"
              for n in v.nodes if not n.agrees][:20]
    if v.optimizer_changes:
        lines.append("  optimizations on (ORT_ENABLE_ALL) changed the graph: " + ", ".join(
            f"{op} {d:+d}" for op, d in v.optimizer_changes.items())
            + " (ops that vanish were fused into others; nchwc ops and Reorder nodes are the blocked layout"
              " and its conversion buffers)")
    slow = sorted(v.nodes, key=lambda n: -n.microseconds)[:5]
    lines += [f"  slowest: {n.layer} ({n.op}) {n.microseconds} us, {n.flops_per_second / 1e9:.1f} GFLOP/s"
              for n in slow]
    failures = j.failures(v)
    lines.append("FAILED: " + ", ".join(failures) if failures else "passed")
    return "\n".join(lines) + "\n"
