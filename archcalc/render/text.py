"""Presentation: the estimate rendered as a table, markdown, CSV or JSON; fit verdicts; compare.

Nothing here counts; it only arranges the records the analyses return. The JSON layout is the
stable contract documented in docs/json.md (``schema`` names its version).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

from archcalc import units
from archcalc.analysis.estimate import Estimate
from archcalc.analysis.memory.liveness import InferenceMemory
from archcalc.analysis.memory.training import TrainingMemory
from archcalc.analysis.records import COLUMNS, layer_rows
from archcalc.conventions import CONVENTIONS
from archcalc.units import printable, shape_text


@dataclass(frozen=True)
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
        *activation_lines(im),
        ("  without in-place", f"{b(im.activation_peak_plain)} (plain liveness, {im.runtime_name}'s order)"),
        ("  all activations", f"{b(im.activation_sum)} (the notes' sum: an upper bound)"),
    ]
    if im.workspace:
        lines.append(("workspace", f"{b(im.workspace)} at {im.workspace_layer} (largest im2col)"))
    lines += [
        ("runtime", f"{b(im.runtime)} ({im.runtime_name})"),
        ("load peak", f"{b(im.load_peak)} (2 x weights while loading, + runtime)"),
        ("inference total", b(im.total)),
    ]
    if tm is not None:
        lines += [
            ("train: parameters", b(tm.weights - tm.buffers)
             + (f" and buffers {b(tm.buffers)}" if tm.buffers else "")),
            ("train: master weights", b(tm.master_weights) + (" (fp32 copies)" if tm.master_weights else "")),
            ("train: gradients", b(tm.gradients)),
            ("train: optimizer state", f"{b(tm.optimizer_state)} ({tm.optimizer})"),
            ("train: saved activations", f"{b(tm.saved_activations)} (kept for backward)"),
            ("train: activation gradients", f"{b(tm.backward_transient)} at {tm.backward_transient_layer}"),
            ("train: inputs", b(tm.inputs)),
            ("train: optimizer temporaries", b(tm.step_temporaries)),
            *([("train: loss", f"{b(tm.loss)} (cross-entropy over float32 logits)")] if tm.loss else []),
            ("train: runtime", f"{b(tm.runtime)} ({tm.runtime_name})"),
            ("train: total", f"{b(tm.total)}: the step's peak {b(tm.peak.bytes)} in the {tm.peak.phase}"
                             + (f" at {tm.peak.layer}" if tm.peak.layer else "") + " + runtime"),
            ("  all terms at once", f"{b(tm.terms_sum)} (an upper bound: backward frees saved activations)"),
            ("notes' rule", f"{b(tm.notes_rule)} (activations x 2 + parameters x (2 + slots))"),
        ]
    return lines


def activation_lines(im: InferenceMemory) -> list[tuple[str, str]]:
    """The headline activation peak -- what the runtime holds -- and the two runs it is the larger of."""
    b = units.nbytes
    lines = [("activation peak", f"{b(im.activations_held)} (what {im.runtime_name} holds)"),
             ("  first run", f"{b(im.activation_peak)} at {im.activation_peak_layer} (liveness in the "
                             "runtime's order, with in-place and dead-buffer reuse)")]
    if im.pattern_peak:
        lines.append(("  later runs", f"{b(im.pattern_peak)} (onnxruntime's memory-pattern block + outputs)"))
    return lines


def memory_dict(view: MemoryView) -> dict:
    out = {"inference": view.inference.to_dict()}
    if view.training is not None:
        out["training"] = view.training.to_dict()
    return out


def _shown(rows: list[dict], top: int | None, sort: str | None) -> list[dict]:
    """The rows to show: with ``top``, the ``top`` largest by ``sort`` (MACs when not given); with
    ``sort``, largest first (ties in execution order); without, in execution order."""
    key = sort or "macs"
    if top:
        keep = sorted(range(len(rows)), key=lambda i: -rows[i][key])[:top]
        rows = [rows[i] for i in sorted(keep)]
    return sorted(rows, key=lambda r: -r[key]) if sort else rows


def totals_lines(est: Estimate) -> list[tuple[str, str]]:
    """The totals as (label, readable value) pairs, in reading order."""
    t = est.totals
    im = est.inference_memory()
    lines = [("parameters", f"{t.params:,} ({units.count(t.params)}): each stored weight once")]
    if t.params_per_layer != t.params:
        lines.append(("  per layer", f"{t.params_per_layer:,}: " + shared_text(t.shared)))
    if t.buffers:
        lines.append(("buffers", f"{t.buffers:,} ({units.count(t.buffers)})"))
    lines += [
        ("parameter memory", units.nbytes(t.param_bytes)),
        ("MACs", f"{t.macs:,} ({units.count(t.macs)})"),
        ("FLOPs", f"{t.flops:,} ({units.count(t.flops)})"),
        ("activations (sum)", f"{t.activation_elements:,} elements, {units.nbytes(t.activation_bytes)}"),
        ("inputs", units.nbytes(t.input_bytes)),
        *activation_lines(im),
        ("inference peak", f"{units.nbytes(im.tensors_peak)} "
                           "(parameters + inputs + activation peak)"),
    ]
    kv = est.kv_cache()
    if kv:
        per = f"{units.nbytes(kv.bytes_per_token)} per token ({kv.bytes_per_token:,} B)"
        lines.append(("KV cache", f"{per}: {kv_what(kv)}"))
    if t.unsupported_ops:
        ops = ", ".join(f"{op} x{k}" for op, k in sorted(t.unsupported_ops.items()))
        lines.append(("no cost rule", f"{ops} (shapes from onnx; MACs and FLOPs not counted)"))
    lines += status_lines(t)
    return lines


def kv_what(kv) -> str:
    """What the KV cache per token holds, in words."""
    what = f"the keys and values of {len(kv.layers)} attention layers, what a decoder's cache keeps"
    if kv.latent:
        what = (f"the latent of {len(kv.layers)} latent-attention layers, as vLLM caches it (the keys and values "
                f"up-projected from it: {kv.expanded_bytes_per_token:,} B)")
    if kv.windowed:
        sizes = sorted({layer.window for layer in kv.layers if layer.window})
        what += f", of which {kv.windowed} keep a sliding window of {', '.join(map(str, sizes))} tokens"
    return what


STATUS_TEXT = {
    "upper bound": "upper bounds: {b} layers have sizes that depend on the data, taken at their largest",
    "lower bound": "lower bounds: what the layers listed below do is not in them",
    "partial": "neither exact nor a bound: {b} layers are at data-dependent upper bounds, and the layers "
               "listed below are left out",
}


def status_lines(t) -> list[tuple[str, str]]:
    """What the totals are, when not exact, and each layer whose shapes are unknown, with why."""
    if t.status == "exact":
        return []
    lines = [("totals are", "sizes, MACs and memory are " + STATUS_TEXT[t.status].format(b=t.bounded_layers)
              + "; parameters are exact")]
    causes = [why for why in t.unknown.values() if not why.startswith("reads '")]
    lines += [("  unknown", printable(why)) for why in causes[:8]]
    if len(t.unknown) > len(causes) or len(causes) > 8:
        lines.append(("  unknown", f"{len(t.unknown)} layers in all, the others because they read those"))
    return lines


def shared_text(shared) -> str:
    """What the per-layer count adds: each weight several layers read, tied or merged."""
    kinds = {"tied": "tied (one parameter, several uses)",
             "merged": "identical constants the exporter merged into one (the model has one per reader)",
             "unknown": "read by several layers (tied, or equal constants merged: no values in the file to tell)"}
    parts = []
    for kind, label in kinds.items():
        names = [f"{w.name} x{w.readers}" for w in shared if w.kind == kind]
        if names:
            more = f" and {len(names) - 4} more" if len(names) > 4 else ""
            parts.append(f"{label}: " + ", ".join(names[:4]) + more)
    return "; ".join(parts)


HUMAN = {"activation_bytes": units.nbytes, "saved_bytes": units.nbytes, "activations": units.count,
         "weights": units.count, "biases": units.count, "params": units.count, "macs": units.count,
         "flops": units.count}


def _table(est: Estimate, rows: list[dict], memory: MemoryView | None) -> str:
    """Aligned columns: numbers readable and right-aligned, names escaped. Plain string work, so
    a 20,000-layer graph renders as fast as its JSON."""
    columns = list(rows[0]) if rows else COLUMNS
    cells = [[(HUMAN[c](row[c]) if row[c] else "") if c in HUMAN else units.printable(row[c]) for c in columns]
             for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(values):
        return "  ".join(v.rjust(w) if c in HUMAN or c in ("rf", "stride") else v.ljust(w)
                         for v, w, c in zip(values, widths, columns)).rstrip()

    out = [f"{units.printable(est.graph.name)}  batch {est.batch}  {est.dtype or 'model dtypes'}",
           line(columns), "  ".join("-" * w for w in widths), *map(line, cells), ""]
    out += [f"{label:>18}: {units.printable(value)}"
            for label, value in totals_lines(est) + (memory_lines(memory) if memory else [])]
    out += [f"  - {text}" for text in CONVENTIONS.values()]
    return "\n".join(out) + "\n"


def _markdown(est: Estimate, rows: list[dict], memory: MemoryView | None) -> str:
    columns = list(rows[0]) if rows else COLUMNS
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join(units.printable(units.cell(v)).replace("|", "\\|") for v in row.values())
                   + " |\n"
                   for row in rows)
    totals = "".join(f"| {label} | {value} |\n"
                     for label, value in totals_lines(est) + (memory_lines(memory) if memory else []))
    notes = "".join(f"- {text}\n" for text in CONVENTIONS.values())
    return (f"## {est.graph.name} (batch {est.batch})\n\n{head}{body}\n| total | value |\n|---|---|\n"
            f"{totals}\n{notes}")


def render(est: Estimate, fmt: str = "table", top: int | None = None, sort: str | None = None,
           memory: MemoryView | None = None) -> str:
    """The estimate as text in ``fmt`` (table, markdown, csv, json); ``top`` keeps the heaviest rows;
    ``sort`` orders the layers by that column, largest first, in every format (see ``_shown``);
    ``memory`` adds the memory terms (and, for training, each layer's saved bytes)."""
    rows = layer_rows(est.layers_list)
    if memory is not None and memory.training is not None:
        saved = est.saved_by_layer(memory.training.device)
        rows = [{**{k: v for k, v in r.items() if k != "note"}, "saved_bytes": saved.get(r["layer"], 0),
                 "note": r["note"]} for r in rows]
    rows = _shown(rows, top, sort)
    if fmt == "json":
        data = est.to_dict()
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


def render_fit(spec, card, verdicts, best, fmt: str, searched: bool = False, sweep: bool = False) -> str:
    """A fit verdict, a sweep table (``sweep``), or (``searched``) the largest batch, as text or JSON."""
    budget = f"{card.name} ({card.vendor_memory}, {units.nbytes(card.capacity)})" if card else \
        units.nbytes(spec.capacity)
    if fmt == "json":
        return json.dumps({
            "schema": "archcalc.fit/1", "capacity": spec.capacity, "gpu": card.name if card else None,
            "mode": spec.mode, "optimizer": spec.optimizer if spec.mode == "train" else None,
            "dtype": spec.dtype, "runtime": spec.runtime, "largest_batch": best.batch if best else None,
            "batch_fixed": bool(best and best.fixed),
            "verdicts": [v.to_dict() for v in verdicts],
        }, indent=1) + "\n"
    lines = [f"{spec.mode} on {budget}, runtime {spec.runtime}"
             + (f", optimizer {spec.optimizer}" if spec.mode == "train" else "")]
    if sweep:
        return "\n".join(lines + sweep_table(verdicts)) + "\n"
    for v in verdicts:
        word = "fits" if v.fits else "does NOT fit"
        room = f"headroom {units.nbytes(v.headroom)}" if v.fits else f"short by {units.nbytes(-v.headroom)}"
        terms = ", ".join(f"{k} {units.nbytes(x)}" for k, x in v.terms.items())
        judged = "the step's peak + runtime " if v.upper_bound is not None else ""
        bound = f"; all terms at once {units.nbytes(v.upper_bound)} (an upper bound)" if v.upper_bound else ""
        lines.append(f"batch {v.batch}: {word}: {judged}{units.nbytes(v.total)} of {units.nbytes(v.capacity)}, "
                     f"{room}; largest term: {v.largest_term} ({terms}){bound}")
        if v.status != "exact":
            lines.append(f"  the sizes behind this total are {STATUS_TEXT[v.status].split(':')[0]} "
                         "(see `archcalc estimate`): so is the verdict")
    if searched and best is not None and best.fixed:
        lines.append("largest batch that fits: none to search: the file fixes the batch, and the model fits "
                     "as it is")
    elif searched:
        lines.append(("largest batch that fits: at least " if best.at_bound else "largest batch that fits: ")
                     + f"{best.batch:,}" if best else "largest batch that fits: none (batch 1 does not fit)")
    return "\n".join(lines) + "\n"


def sweep_table(verdicts) -> list[str]:
    """A sweep's verdicts as a table: one row per batch with the total, each term, and whether it fits."""
    b = units.nbytes
    terms = list(dict.fromkeys(k for v in verdicts for k in v.terms))  # some terms only some batches have
    bound = any(v.upper_bound is not None for v in verdicts)
    head = ["batch", "total", *terms, *(["all terms"] if bound else []), "headroom", "fits"]
    rows = [[f"{v.batch:,}", b(v.total), *(b(v.terms[k]) if k in v.terms else "-" for k in terms),
             *([b(v.upper_bound) if v.upper_bound is not None else "-"] if bound else []),
             b(v.headroom) if v.fits else f"short {b(-v.headroom)}", "yes" if v.fits else "NO"] for v in verdicts]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.rjust(w) for c, w in zip(cells[:-1], widths)) + "  " + cells[-1]

    out = [line(head), "  ".join("-" * w for w in widths), *map(line, rows)]
    if bound:
        out.append("total: the step's peak + runtime, what is judged; all terms: every term at once, an upper "
                   "bound (backward frees saved activations)")
    for status in dict.fromkeys(v.status for v in verdicts if v.status != "exact"):
        out.append(f"the sizes behind {', '.join(str(v.batch) for v in verdicts if v.status == status)} are "
                   f"{STATUS_TEXT[status].split(':')[0]} (see `archcalc estimate`): so are the verdicts")
    return out


def compare_rows(ests) -> list[tuple[str, list]]:
    """The figures ``compare`` sets side by side, one (label, values) row each."""
    def last(e):
        return e.layers_list[-1] if e.layers_list else None

    return [
        ("parameters", [e.totals.params for _, e in ests]),
        ("weights (no biases)", [sum(r.weights for r in e.layers_list) for _, e in ests]),
        ("MACs", [e.totals.macs for _, e in ests]),
        ("activations", [e.totals.activation_elements for _, e in ests]),
        ("inference peak (bytes)", [e.inference_memory().tensors_peak for _, e in ests]),
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
