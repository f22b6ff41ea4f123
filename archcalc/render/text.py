"""Presentation: the estimate as a DataFrame, and rendered as a table, markdown, CSV or JSON.

Nothing here counts; it only arranges what ``estimate`` computed. The JSON layout is the stable
contract documented in docs/json.md (``schema`` names its version).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass

from archcalc import units
from archcalc.analysis.estimate import Estimate
from archcalc.analysis.memory import InferenceMemory
from archcalc.analysis.training import TrainingMemory
from archcalc.conventions import CONVENTIONS

JSON_SCHEMA = "archcalc.estimate/1"
COLUMNS = ["layer", "op", "shape", "activations", "activation_bytes", "weights", "biases", "params",
           "macs", "flops", "rf", "stride", "note"]


@dataclass
class MemoryView:
    """The memory terms to show beside an estimate (``--mode``)."""

    inference: InferenceMemory
    training: TrainingMemory | None = None


def memory_lines(view: MemoryView) -> list[tuple[str, str]]:
    """The memory terms as (label, readable value) pairs, each labelled with what it counts."""
    im, tm = view.inference, view.training
    b = units.nbytes
    lines = [
        ("weights", b(im.weights)),
        ("inputs", b(im.inputs)),
        ("activation peak", f"{b(im.activation_peak)} at {im.activation_peak_layer} "
                            "(liveness with in-place reuse: the estimate)"),
        ("  without in-place", f"{b(im.activation_peak_plain)} (plain liveness)"),
        ("  all activations", f"{b(im.activation_sum)} (the notes' sum: an upper bound)"),
    ]
    if im.pattern_peak:
        lines.append(("  later runs", f"{b(im.pattern_peak)} (onnxruntime's memory-pattern block + outputs)"))
    if im.workspace:
        lines.append(("workspace", f"{b(im.workspace)} at {im.workspace_layer} (largest im2col)"))
    lines += [
        ("runtime", f"{b(im.runtime)} ({im.runtime_name})"),
        ("load peak", f"{b(im.load_peak)} (2 x weights while loading, + runtime)"),
        ("inference total", b(im.total)),
    ]
    if tm is not None:
        lines += [
            ("train: weights", b(tm.weights + tm.master_weights)
             + (f" (incl. fp32 master {b(tm.master_weights)})" if tm.master_weights else "")),
            ("train: gradients", b(tm.gradients)),
            ("train: optimizer", f"{b(tm.optimizer_state)} ({tm.optimizer})"),
            ("train: saved", f"{b(tm.saved_activations)} (activations kept for backward)"),
            ("train: transient", f"{b(tm.backward_transient)} at {tm.backward_transient_layer}"),
            ("train: inputs", b(tm.inputs)),
            ("train: step temps", f"{b(tm.step_temporaries)} (optimizer temporaries)"),
            ("train: peak", f"{b(tm.total)} in the {tm.peak.phase}"
                            + (f" at {tm.peak.layer}" if tm.peak.layer else "") + f" (+ runtime {b(im.runtime)})"),
            ("  all terms at once", f"{b(tm.terms_sum)} (an upper bound)"),
            ("notes' rule", f"{b(tm.notes_rule)} (activations x 2 + parameters x (2 + slots))"),
        ]
    return lines


def memory_dict(view: MemoryView) -> dict:
    im = view.inference
    out = {"inference": {**asdict(im), "steady": im.steady, "total": im.total}}
    if view.training is not None:
        out["training"] = {**asdict(view.training), "total": view.training.total,
                           "terms_sum": view.training.terms_sum}
    return out


def shape_text(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def layer_rows(est: Estimate) -> list[dict]:
    """One row per executed layer, in execution order: the layout every format shares."""
    return [{
        "layer": r.name, "op": r.op_type, "shape": shape_text(r.shape), "activations": r.activations,
        "activation_bytes": r.activation_bytes, "weights": r.weights, "biases": r.biases,
        "params": r.params, "macs": r.macs, "flops": r.flops, "rf": r.receptive_field,
        "stride": r.effective_stride, "note": "" if r.has_rule else "no cost rule",
    } for r in est.layers_list]


def layers_frame(est: Estimate):
    """The per-layer rows as a pandas DataFrame (pandas is imported only here: it costs 0.3 s)."""
    import pandas as pd

    return pd.DataFrame(layer_rows(est), columns=COLUMNS)


def estimate_dict(est: Estimate) -> dict:
    """The JSON contract: totals, conventions, layers, and every tensor's shape by name."""
    g = est.graph
    return {
        "schema": JSON_SCHEMA,
        "model": g.name,
        "source": g.source,
        "batch": est.batch,
        "dtype": est.dtype,
        "totals": asdict(est.totals),
        "conventions": CONVENTIONS,
        "inputs": {n: list(g.tensors[n].shape) for n in g.inputs},
        "outputs": {n: list(g.tensors[n].shape) for n in g.outputs},
        "layers": layer_rows(est),
        "tensors": {t.name: {"shape": list(t.shape), "dtype": t.dtype, "role": t.role.value}
                    for t in g.tensors.values() if t.shape is not None},
    }


def _heaviest(rows: list[dict], top: int | None, sort: str) -> list[dict]:
    """The ``top`` rows with the largest ``sort`` value, kept in execution order."""
    if not top:
        return rows
    keep = sorted(range(len(rows)), key=lambda i: -rows[i][sort])[:top]
    return [rows[i] for i in sorted(keep)]


def totals_lines(est: Estimate) -> list[tuple[str, str]]:
    """The totals as (label, readable value) pairs, in reading order."""
    t = est.totals
    lines = [("parameters", f"{t.params:,} ({units.count(t.params)})")]
    if t.params_stored != t.params:
        shared = ", ".join(t.shared_initializers[:5]) + (" ..." if len(t.shared_initializers) > 5 else "")
        lines.append(("parameters stored", f"{t.params_stored:,} (shared or merged: {shared or 'none'})"))
    if t.buffers:
        lines.append(("buffers", f"{t.buffers:,} ({units.count(t.buffers)})"))
    lines += [
        ("parameter memory", units.nbytes(t.param_bytes)),
        ("MACs", f"{t.macs:,} ({units.count(t.macs)})"),
        ("FLOPs", f"{t.flops:,} ({units.count(t.flops)})"),
        ("activations (sum)", f"{t.activation_elements:,} elements, {units.nbytes(t.activation_bytes)}"),
        ("inputs", units.nbytes(t.input_bytes)),
        ("activation peak", f"{units.nbytes(t.peak_activation_bytes)} at {t.peak_layer}"),
        ("inference peak", f"{units.nbytes(t.peak_bytes)} (parameters + inputs + activation peak)"),
    ]
    if t.unsupported_ops:
        ops = ", ".join(f"{op} x{k}" for op, k in sorted(t.unsupported_ops.items()))
        lines.append(("no cost rule", f"{ops} (shapes from onnx; MACs and FLOPs not counted)"))
    return lines


def _table(est: Estimate, rows: list[dict], memory: MemoryView | None) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{est.graph.name}  batch {est.batch}  {est.dtype or 'model dtypes'}",
                  title_justify="left")
    human = {"activation_bytes": units.nbytes, "activations": units.count, "weights": units.count,
             "biases": units.count, "params": units.count, "macs": units.count, "flops": units.count}
    columns = list(rows[0]) if rows else COLUMNS
    human["saved_bytes"] = units.nbytes
    for col in columns:
        table.add_column(col, justify="right" if col in human else "left", overflow="fold")
    for row in rows:
        table.add_row(*(human[c](row[c]) if c in human and row[c] else ("" if c in human else str(row[c]))
                        for c in columns))
    out = io.StringIO()
    console = Console(file=out, width=180, no_color=True, highlight=False)
    console.print(table)
    for label, value in totals_lines(est) + (memory_lines(memory) if memory else []):
        console.print(f"{label:>18}: {value}")
    console.print("\n".join(f"  - {text}" for text in CONVENTIONS.values()))
    return out.getvalue()


def _markdown(est: Estimate, rows: list[dict], memory: MemoryView | None) -> str:
    columns = list(rows[0]) if rows else COLUMNS
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join(units.cell(v) for v in row.values()) + " |\n"
                   for row in rows)
    totals = "".join(f"| {label} | {value} |\n"
                     for label, value in totals_lines(est) + (memory_lines(memory) if memory else []))
    notes = "".join(f"- {text}\n" for text in CONVENTIONS.values())
    return (f"## {est.graph.name} (batch {est.batch})\n\n{head}{body}\n| total | value |\n|---|---|\n"
            f"{totals}\n{notes}")


def render(est: Estimate, fmt: str = "table", top: int | None = None, sort: str = "macs",
           memory: MemoryView | None = None) -> str:
    """The estimate as text in ``fmt`` (table, markdown, csv, json); ``top`` keeps the heaviest rows;
    ``memory`` adds the memory terms (and, for training, each layer's saved bytes)."""
    rows = layer_rows(est)
    if memory is not None and memory.training is not None:
        saved = est.saved_by_layer()
        rows = [{**{k: v for k, v in r.items() if k != "note"}, "saved_bytes": saved.get(r["layer"], 0),
                 "note": r["note"]} for r in rows]
    rows = _heaviest(rows, top, sort)
    if fmt == "json":
        data = estimate_dict(est)
        data["layers"] = rows
        if memory is not None:
            data["memory"] = memory_dict(memory)
        return json.dumps(data, indent=1)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    if fmt == "markdown":
        return _markdown(est, rows, memory)
    return _table(est, rows, memory)


def render_fit(spec, card, verdicts, best, fmt: str, searched: bool = False) -> str:
    """A fit verdict, a sweep table, or (``searched``) the largest batch, as text or JSON."""
    budget = f"{card.name} ({card.vendor_memory}, {units.nbytes(card.capacity)})" if card else \
        units.nbytes(spec.capacity)
    if fmt == "json":
        return json.dumps({
            "schema": "archcalc.fit/1", "capacity": spec.capacity, "gpu": card.name if card else None,
            "mode": spec.mode, "optimizer": spec.optimizer if spec.mode == "train" else None,
            "dtype": spec.dtype, "runtime": spec.runtime, "largest_batch": best.batch if best else None,
            "verdicts": [{"batch": v.batch, "fits": v.fits, "total": v.total, "headroom": v.headroom,
                          "largest_term": v.largest_term, "terms": v.terms} for v in verdicts],
        }, indent=1) + "\n"
    lines = [f"{spec.mode} on {budget}, runtime {spec.runtime}"
             + (f", optimizer {spec.optimizer}" if spec.mode == "train" else "")]
    for v in verdicts:
        word = "fits" if v.fits else "does NOT fit"
        room = f"headroom {units.nbytes(v.headroom)}" if v.fits else f"short by {units.nbytes(-v.headroom)}"
        terms = ", ".join(f"{k} {units.nbytes(x)}" for k, x in v.terms.items())
        lines.append(f"batch {v.batch}: {word}: {units.nbytes(v.total)} of {units.nbytes(v.capacity)}, {room}; "
                     f"largest term: {v.largest_term} ({terms})")
    if searched:
        lines.append(f"largest batch that fits: {best.batch}" if best else
                     "largest batch that fits: none (batch 1 does not fit)")
    return "\n".join(lines) + "\n"


def validation_figures(v, im=None) -> list[tuple[str, int, int]]:
    """Each measured byte figure beside its estimate: (channel, estimate, measured). ``im``: the
    estimate's onnxruntime-cpu inference memory, where the caller has it already."""
    im = im or v.estimate.inference_memory("onnxruntime-cpu")
    out = []
    if v.profiler_peak is not None:
        out.append(("activation peak (profiler, arena)", im.activation_peak, v.profiler_peak))
    if v.profiler_peak_later is not None and im.pattern_peak:
        out.append(("later runs: pattern block + outputs (profiler)", im.pattern_peak, v.profiler_peak_later))
    for p in v.process_peaks:
        out += [(f"activation peak, first run (process, opt {p.level})", im.activation_peak, p.runs[0]),
                (f"activation peak over runs (process, opt {p.level})", im.activations_held, p.run_peak),
                (f"total (process, opt {p.level})", im.steady, p.resident_after_load + p.run_peak),
                (f"load peak (process, opt {p.level})", im.load_peak - im.runtime, p.load_peak)]
    for g in v.cuda_peaks:
        gm = v.estimate.inference_memory("onnxruntime-cuda", overhead=g.context)
        default = v.estimate.inference_memory("onnxruntime-cuda").runtime
        out += [("CUDA context (default vs identity model)", default, g.context),
                (f"weights on the GPU (opt {g.level})", gm.weights, g.weights),
                (f"inputs + activation peak (GPU, opt {g.level})", gm.inputs + gm.activation_peak, g.run_peak),
                (f"total (GPU, opt {g.level})", gm.steady, g.total)]
    return out


def render_validation(v, fmt: str, tolerance: float, abs_tolerance: int) -> tuple[str, bool]:
    """Estimate against measurement, channel by channel; and whether it passes."""
    im = v.estimate.inference_memory("onnxruntime-cpu")
    est_peak = im.activation_peak
    judged = v.profiler_peak if v.profiler_peak is not None else \
        next((p.run_peak for p in v.process_peaks if p.level == "disable"), None)
    peak_ok = judged is None or abs(est_peak - judged) <= max(tolerance * judged, abs_tolerance)
    bytes_equal = sum(1 for n in v.nodes if n.estimated_bytes == n.measured_bytes)
    ok = not v.mismatches and peak_ok and bytes_equal == len(v.nodes)
    figures = validation_figures(v, im)
    if fmt == "json":
        return json.dumps({
            "schema": "archcalc.validate/1", "provider": v.provider, "passed": ok,
            "shapes": {"checked": v.checked_tensors, "mismatches": [asdict(m) for m in v.mismatches]},
            "nodes": [{**asdict(n), "flops_per_second": n.flops_per_second} for n in v.nodes],
            "estimate": {"activation_peak": est_peak, "activation_peak_plain": im.activation_peak_plain,
                         "load_peak": im.load_peak - im.runtime, "total": im.steady},
            "measured": {"profiler_peak": v.profiler_peak, "profiler_peak_later": v.profiler_peak_later,
                         "process": [asdict(p) for p in v.process_peaks],
                         "cuda": [asdict(g) for g in v.cuda_peaks]},
            "compared": [{"channel": name, "estimate": e, "measured": m, "error": e / m - 1 if m else None}
                         for name, e, m in figures],
            "optimizer_changes": v.optimizer_changes,
        }, indent=1) + "\n", ok
    rows = [("provider", v.provider, "", ""),
            ("tensor shapes", f"{v.checked_tensors} checked", f"{len(v.mismatches)} differ", ""),
            ("node output bytes", f"{len(v.nodes)} nodes", f"{len(v.nodes) - bytes_equal} differ", "")]
    rows += [(f"GPU: {g.card}", f"driver {g.driver}", f"NVML {g.source}", "") for g in v.cuda_peaks[:1]]
    rows += [(name, units.nbytes(e), units.nbytes(m), f"{e / m - 1:+.1%}" if m else "-") for name, e, m in figures]
    lines = [f"{name:<40} {a:>16} {b:>16} {c:>8}" for name, a, b, c in
             [("channel", "estimate", "measured", "error"), *rows]]
    lines += [f"  mismatch: {m.tensor} (node {m.node}): estimated {m.estimated}, executed {m.executed}"
              for m in v.mismatches[:20]]
    lines += [f"  bytes differ: {n.layer} ({n.op}): estimated {n.estimated_bytes}, measured {n.measured_bytes}"
              for n in v.nodes if n.estimated_bytes != n.measured_bytes][:20]
    if v.optimizer_changes:
        lines.append("  optimizations on (ORT_ENABLE_ALL) changed the graph: " + ", ".join(
            f"{op} {d:+d}" for op, d in v.optimizer_changes.items())
            + " (ops that vanish were fused into others; nchwc ops and Reorder nodes are the blocked layout"
              " and its conversion buffers)")
    slow = sorted(v.nodes, key=lambda n: -n.microseconds)[:5]
    lines += [f"  slowest: {n.layer} ({n.op}) {n.microseconds} us, {n.flops_per_second / 1e9:.1f} GFLOP/s"
              for n in slow]
    lines.append("passed" if ok else "FAILED: " + ", ".join(
        w for w, bad in (("shapes differ", v.mismatches), ("node bytes differ", bytes_equal != len(v.nodes)),
                         ("activation peak out of tolerance", not peak_ok)) if bad))
    return "\n".join(lines) + "\n", ok


def compare_rows(ests) -> list[tuple[str, list]]:
    """The figures ``compare`` sets side by side, one (label, values) row each."""
    def last(e):
        return e.layers_list[-1] if e.layers_list else None

    return [
        ("parameters", [e.totals.params for _, e in ests]),
        ("weights (no biases)", [sum(r.weights for r in e.layers_list) for _, e in ests]),
        ("MACs", [e.totals.macs for _, e in ests]),
        ("activations", [e.totals.activation_elements for _, e in ests]),
        ("inference peak (bytes)", [e.totals.peak_bytes for _, e in ests]),
        ("layers", [len(e.layers_list) for _, e in ests]),
        ("output", [shape_text(last(e).shape) if last(e) else "-" for _, e in ests]),
        ("receptive field", [last(e).receptive_field if last(e) else 1 for _, e in ests]),
        ("effective stride", [last(e).effective_stride if last(e) else 1 for _, e in ests]),
    ]


def render_compare(ests, fmt: str) -> str:
    names = [n if len(n) <= 40 else n[:37] + "..." for n, _ in ests]
    rows = compare_rows(ests)
    if fmt == "json":
        return json.dumps({"schema": "archcalc.compare/1", "models": [n for n, _ in ests],
                           "rows": {label: values for label, values in rows}}, indent=1) + "\n"

    if fmt == "markdown":
        head = "| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
        return head + "".join(f"| {label} | " + " | ".join(units.cell(v) for v in values) + " |\n"
                              for label, values in rows)
    width = max(14, *(len(n) for n in names))
    lines = [f"{'':<24}" + "".join(f"{n:>{width + 2}}" for n in names)]
    lines += [f"{label:<24}" + "".join(f"{units.cell(v):>{width + 2}}" for v in values) for label, values in rows]
    return "\n".join(lines) + "\n"
