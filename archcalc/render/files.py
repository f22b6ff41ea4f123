"""`archcalc report`: a folder per model -- report.md, a self-contained report.html, layers.csv,
summary.json (schema ``archcalc.report/1``) and PNG figures.

The content is assembled once as sections, then written as markdown and as HTML, so the two never
disagree. Nothing here counts: the numbers come from the estimate, the memory terms, fit and validate.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from archcalc import units
from archcalc.analysis.estimate import Estimate
from archcalc.analysis.fit import FitRow
from archcalc.analysis.gpus import gpu
from archcalc.analysis.memory.liveness import runtime_reuse, timeline
from archcalc.analysis.memory.runtimes import RUNTIMES
from archcalc.analysis.memory.schedule import ORDERS
from archcalc.analysis.plan.search import PlanResult
from archcalc.analysis.records import COLUMNS, layer_rows, totals_dict
from archcalc.conventions import CONVENTIONS
from archcalc.render import plots
from archcalc.render.atomic import atomic_file, atomic_folder

if TYPE_CHECKING:  # measuring imports onnx and onnxruntime: only a report with --validate needs them
    from archcalc.measure.validate import Validation
from archcalc.render.plan import COLUMNS as PLAN_COLUMNS
from archcalc.render.text import MemoryView, memory_lines, totals_lines

SCHEMA = "archcalc.report/2"
OPTIMIZERS = ("sgd", "adam")
CSS = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}"
       "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;"
       "padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
       "th{background:#f0f3f8}img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}"
       "h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:3px}.note{color:#555}")


@dataclass
class Section:
    title: str
    pairs: list[tuple[str, str]] = field(default_factory=list)
    table: tuple[list[str], list[list]] | None = None
    images: list[tuple[str, str]] = field(default_factory=list)  # (file, caption)
    text: str = ""


@dataclass
class Report:
    name: str
    sections: list[Section]
    summary: dict
    figures: dict[str, bytes]
    rows: list[dict]


@dataclass(frozen=True)
class ReportData:
    """What a report shows, computed by the API: the estimate, the largest batch per GPU, the
    judged total per batch and mode, and a validation where one was run."""

    estimate: Estimate
    fits: list[FitRow]
    batches: list[int]
    sweep: dict[str, list[int]]  # mode -> judged total at each batch
    optimizer: str
    no_fit: str = ""  # why there is no fit table (a fixed batch), if there is none
    validation: Validation | None = None
    plan: PlanResult | None = None  # the multi-GPU strategies on the report's cluster
    plan_gpu: str = ""


def _fit_section(d: ReportData) -> Section:
    if not d.fits:
        return Section("Fit", text=f"No fit table: {d.no_fit}")
    context = units.nbytes(RUNTIMES["pytorch-cuda"].overhead)
    note = (f"Largest batch that fits, with PyTorch CUDA's allocator and a {context} context; training with "
            f"{d.optimizer} in fp32, judged by the step's peak (the same total `archcalc fit --mode train` "
            "gives). An eval-mode export has its BatchNorm folded away, so its training figures miss "
            "BatchNorm's saved activations.")
    rows = [[f.gpu, units.nbytes(f.capacity), f"{f.largest['inference']:,}", f"{f.largest['train']:,}"]
            for f in d.fits]
    table = (["GPU", "memory", "inference: largest batch", f"training ({d.optimizer}): largest batch"], rows)
    return Section("Fit across GPUs", table=table, text=note)


PLAN_ROWS = 8  # strategies a report shows


def _plan_section(d: ReportData) -> Section:
    p = d.plan
    if p is None:
        return Section("Multi-GPU plans", text=f"No plan: {d.no_fit}")
    rows = p.rows[:PLAN_ROWS]
    note = (f"The strategies `archcalc plan` ranks first on {p.meta['gpus']} x {d.plan_gpu}, training with "
            f"{p.meta['optimizer']} at the model's precision, PyTorch's engines (DDP, ZeroRedundancyOptimizer, "
            "FSDP2, torch.distributed.pipelining, DTensor): the largest micro-batch per GPU, and each GPU's "
            "memory at it by term (GiB). Ranked: those that fit, then the least recompute and traffic per sample.")
    head = ["strategy", "micro-batch", "per GPU", *PLAN_COLUMNS, "runtime", "sent per GPU per step"]
    table = [[r.strategy.label(), str(r.micro_batch or "none fits"), units.nbytes(r.total),
              *(units.nbytes(sum(r.memory.terms.get(k, 0) for k in keys)) for keys in PLAN_COLUMNS.values()),
              units.nbytes(p.constant), units.nbytes(sum(r.communication.values()))] for r in rows]
    return Section("Multi-GPU plans", table=(head, table), text=note)


def _plan_summary(d: ReportData) -> list[dict]:
    return [r.to_dict() for r in d.plan.rows[:PLAN_ROWS]] if d.plan else []


def _training_section(est: Estimate) -> tuple[Section, dict]:
    training = {opt: est.training_memory(opt) for opt in OPTIMIZERS}
    totals = [("total: step peak + runtime", "total"), ("all terms at once (upper bound)", "terms_sum"),
              ("the notes' rule", "notes_rule")]
    rows = [[name, *(units.nbytes(tm.terms()[name]) for tm in training.values())]
            for name in next(iter(training.values())).terms()]
    rows += [[label, *(units.nbytes(getattr(tm, key)) for tm in training.values())] for label, key in totals]
    table = (["term", *OPTIMIZERS], rows)
    return Section("Training memory, one step", table=table), training


def build(source, name: str, d: ReportData, with_figures: bool = True) -> Report:
    """Gather every section of ``source``'s report. ``with_figures=False`` leaves the PNGs out (the
    text files are the same), for checking that committed reports are fresh."""
    est = d.estimate
    inference = est.inference_memory()
    rows = layer_rows(est.layers_list)
    training_section, training = _training_section(est)
    sections = [Section("Totals", pairs=totals_lines(est)),
                Section(f"Inference memory ({inference.runtime_name})", pairs=memory_lines(MemoryView(inference))),
                training_section, _fit_section(d), _plan_section(d)]
    if est.totals.unsupported_ops:
        sections.append(Section("Ops without a cost rule", pairs=[(op, f"{k} layers") for op, k in
                                                                  est.totals.unsupported_ops.items()]))
    ordered = ORDERS["onnxruntime"](est.graph, est.results)
    reuse = runtime_reuse(est.graph, RUNTIMES[inference.runtime_name])
    live = timeline(est.graph, ordered, est.float_dtype, reuse=reuse)
    peak_at = max(range(len(live)), key=live.__getitem__) if live else 0
    if d.validation is not None:
        sections.append(_validation_section(d.validation))
    figures = _figures(d, name, rows, live, peak_at, ordered[peak_at].layer.name if ordered else "", with_figures)
    captions = {"layers.png": "Activation memory and parameters per layer",
                "timeline.png": "Activation memory over onnxruntime's execution order (a first run), peak marked",
                "batch.png": "Memory against batch size, GPU capacities and largest batches marked",
                "measured.png": "Estimate against onnxruntime's measurement, per layer",
                "plan.png": "Per-GPU memory by term of the strategies `archcalc plan` ranks first"}
    sections.append(Section("Figures", images=[(f, captions[f]) for f in figures]))
    sections.append(Section("Layers", table=(COLUMNS, [[r[c] for c in COLUMNS] for r in rows])))
    sections.append(Section("Conventions", pairs=list(CONVENTIONS.items())))
    summary = {
        "schema": SCHEMA, "model": name, "source": str(source), "batch": est.batch,
        "totals": totals_dict(est.totals, inference),
        "inference_memory": inference.to_dict(),
        "training_memory": {opt: tm.to_dict() for opt, tm in training.items()},
        "fit": [{"gpu": f.gpu, "inference_largest_batch": f.largest["inference"],
                 f"train_{d.optimizer}_largest_batch": f.largest["train"]} for f in d.fits],
        "memory_vs_batch": {"batches": d.batches, **d.sweep} if d.sweep else {"batches": d.batches},
        "validation": _validation_summary(d.validation), "plan": _plan_summary(d),
        "files": ["report.md", "report.html", "layers.csv", "summary.json", *figures],
    }
    return Report(name, sections, summary, figures, rows)


def _figures(d: ReportData, name, rows, live, peak_at, peak_name, with_figures) -> dict[str, bytes]:
    draw = {
        "layers.png": lambda: plots.per_layer([r["layer"] for r in rows], [r["activation_bytes"] for r in rows],
                                              [r["params"] for r in rows], name),
        "timeline.png": lambda: plots.timeline(live or [0], peak_at, peak_name, name),
    }
    if d.sweep:
        largest = {f"{f.gpu} train": f.largest["train"] for f in d.fits}
        labelled = {"inference": d.sweep["inference"], f"training ({d.optimizer})": d.sweep["train"]}
        draw["batch.png"] = lambda: plots.memory_vs_batch(d.batches, labelled, {f.gpu: gpu(f.gpu).capacity
                                                                               for f in d.fits}, largest, name)
    if d.plan is not None:
        plan = d.plan.rows[:PLAN_ROWS]
        terms = {col: [sum(r.memory.terms.get(k, 0) for k in keys) for r in plan]
                 for col, keys in PLAN_COLUMNS.items()}
        terms["runtime"] = [d.plan.constant] * len(plan)
        capacity = d.plan.meta["capacity"]
        draw["plan.png"] = lambda: plots.plan_terms([r.strategy.label() for r in plan], terms, capacity, name)
    v = d.validation
    if v is not None:
        draw["measured.png"] = lambda: plots.estimate_vs_measured(
            [n.layer for n in v.nodes], [n.estimated_bytes for n in v.nodes], [n.measured_bytes for n in v.nodes],
            name)
    return {f: make() if with_figures else b"" for f, make in draw.items()}


def _validation_section(v) -> Section:
    from archcalc.measure.compare import validation_figures

    pairs = [("provider", v.provider),
             ("tensor shapes", f"{v.checked_tensors} checked, {len(v.mismatches)} differ"),
             ("node output bytes", f"{sum(n.agrees for n in v.nodes)} of "
                                   f"{len(v.nodes)} equal")]
    pairs += [(channel, f"estimated {units.nbytes(est)}, measured {units.nbytes(measured)}"
                        + (f" ({est / measured - 1:+.1%})" if measured else ""))
              for channel, est, measured in validation_figures(v)]
    if v.optimizer_changes:
        changes = ", ".join(f"{op} {d:+d}" for op, d in v.optimizer_changes.items())
        pairs.append(("what optimizations changed", changes))
    return Section("Validation (onnxruntime)", pairs=pairs)


def _validation_summary(v) -> dict | None:
    if v is None:
        return None
    return {"provider": v.provider, "tensors": v.checked_tensors, "mismatches": len(v.mismatches),
            "profiler_peak": v.profiler_peak, "process_peaks": [asdict(p) for p in v.process_peaks],
            "optimizer_changes": v.optimizer_changes}


def to_markdown(r: Report) -> str:
    out = [f"# {r.name}\n", f"Source: `{r.summary['source']}`, batch {r.summary['batch']}. "
                            "Made by `archcalc report`.\n"]
    for s in r.sections:
        out.append(f"\n## {s.title}\n")
        if s.text:
            out.append(f"\n{s.text}\n")
        if s.pairs:
            out.append("\n| | |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in s.pairs))
        if s.table:
            cols, rows = s.table
            out.append("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
            out.append("".join("| " + " | ".join(units.cell(v) for v in row) + " |\n" for row in rows))
        for file, caption in s.images:
            out.append(f"\n![{caption}]({file})\n")
    return "".join(out)


def to_html(r: Report) -> str:
    """The same sections as one self-contained page: inline CSS, images as data URIs, no network."""
    e = html.escape
    body = [f"<h1>{e(r.name)}</h1><p class=note>Source: <code>{e(r.summary['source'])}</code>, batch "
            f"{r.summary['batch']}. Made by <code>archcalc report</code>.</p>"]
    for s in r.sections:
        body.append(f"<h2>{e(s.title)}</h2>")
        if s.text:
            body.append(f"<p class=note>{e(s.text)}</p>")
        if s.pairs:
            body.append("<table>" + "".join(f"<tr><td>{e(a)}</td><td>{e(b)}</td></tr>" for a, b in s.pairs)
                        + "</table>")
        if s.table:
            cols, rows = s.table
            body.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{e(units.cell(v))}</td>" for v in row) + "</tr>"
                                  for row in rows) + "</table>")
        for file, caption in s.images:
            data = base64.b64encode(r.figures[file]).decode() if r.figures.get(file) else ""
            body.append(f"<figure><img alt=\"{e(caption)}\" src=\"data:image/png;base64,{data}\">"
                        f"<figcaption>{e(caption)}</figcaption></figure>")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{e(r.name)}: archcalc report</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")


def write(r: Report, folder: Path) -> list[Path]:
    """Write every file of ``r`` into ``folder`` (replaced whole: an interrupt leaves the old report)
    and return their paths."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.rows)
    texts = {"report.md": to_markdown(r), "report.html": to_html(r), "layers.csv": out.getvalue(),
             "summary.json": json.dumps(r.summary, indent=1) + "\n"}
    files = {**{name: text.encode() for name, text in texts.items()}, **r.figures}
    with atomic_folder(folder) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
    return [folder / name for name in files]


def write_compare(ests, folder: Path) -> list[Path]:
    """The side-by-side report of several models: compare.md and a self-contained compare.html."""
    from archcalc.render.text import compare_rows

    folder.mkdir(parents=True, exist_ok=True)
    names = [n for n, _ in ests]
    rows = [[label, *values] for label, values in compare_rows(ests)]
    r = Report("Comparison", [Section("Side by side", table=(["", *names], rows))],
               {"source": ", ".join(names), "batch": ests[0][1].batch}, {}, [])
    md, page = folder / "compare.md", folder / "compare.html"
    for path, text in ((md, to_markdown(r)), (page, to_html(r))):
        with atomic_file(path) as tmp:
            tmp.write_text(text)
    return [md, page]


def report_folder_name(model: str) -> str:
    """A zoo name or a path as a folder name: torchvision/vgg16 -> torchvision-vgg16."""
    return Path(str(model)).stem if str(model).endswith((".onnx", ".arch")) else str(model).replace("/", "-")
