"""Presentation: the estimate as a DataFrame, and rendered as a table, markdown, CSV or JSON.

Nothing here counts; it only arranges what ``estimate`` computed. The JSON layout is the stable
contract documented in docs/json.md (``schema`` names its version).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict

import pandas as pd

from archcalc import units
from archcalc.analysis import Estimate
from archcalc.conventions import CONVENTIONS

JSON_SCHEMA = "archcalc.estimate/1"
COLUMNS = ["layer", "op", "shape", "activations", "activation_bytes", "weights", "biases", "params",
           "macs", "flops", "note"]
SORT_KEYS = ("macs", "params", "activations", "flops")


def shape_text(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def layers_frame(est: Estimate) -> pd.DataFrame:
    """One row per executed layer, in execution order."""
    rows = [{
        "layer": r.name, "op": r.op_type, "shape": shape_text(r.shape), "activations": r.activations,
        "activation_bytes": r.activation_bytes, "weights": r.weights, "biases": r.biases,
        "params": r.params, "macs": r.macs, "flops": r.flops,
        "note": "" if r.has_rule else "no cost rule",
    } for r in est.layers_list]
    return pd.DataFrame(rows, columns=COLUMNS)


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
        "layers": layers_frame(est).to_dict(orient="records"),
        "tensors": {t.name: {"shape": list(t.shape), "dtype": t.dtype, "role": t.role.value}
                    for t in g.tensors.values() if t.shape is not None},
    }


def _heaviest(df: pd.DataFrame, top: int | None, sort: str) -> pd.DataFrame:
    if not top:
        return df
    return df.sort_values(sort, ascending=False, kind="stable").head(top).sort_index()


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


def _table(est: Estimate, df: pd.DataFrame) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{est.graph.name}  batch {est.batch}  {est.dtype or 'model dtypes'}",
                  title_justify="left")
    human = {"activation_bytes": units.nbytes, "activations": units.count, "weights": units.count,
             "biases": units.count, "params": units.count, "macs": units.count, "flops": units.count}
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in human else "left", overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*(human[c](v) if c in human and v else ("" if c in human else str(v))
                        for c, v in zip(COLUMNS, row)))
    out = io.StringIO()
    console = Console(file=out, width=180, no_color=True, highlight=False)
    console.print(table)
    for label, value in totals_lines(est):
        console.print(f"{label:>18}: {value}")
    console.print("\n".join(f"  - {text}" for text in CONVENTIONS.values()))
    return out.getvalue()


def _markdown(est: Estimate, df: pd.DataFrame) -> str:
    head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    body = "".join("| " + " | ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in row) + " |\n"
                   for row in df.itertuples(index=False))
    totals = "".join(f"| {label} | {value} |\n" for label, value in totals_lines(est))
    notes = "".join(f"- {text}\n" for text in CONVENTIONS.values())
    return (f"## {est.graph.name} (batch {est.batch})\n\n{head}{body}\n| total | value |\n|---|---|\n"
            f"{totals}\n{notes}")


def render(est: Estimate, fmt: str = "table", top: int | None = None, sort: str = "macs") -> str:
    """The estimate as text in ``fmt`` (table, markdown, csv, json); ``top`` keeps the heaviest rows."""
    df = _heaviest(layers_frame(est), top, sort)
    if fmt == "json":
        data = estimate_dict(est)
        data["layers"] = df.to_dict(orient="records")
        return json.dumps(data, indent=1)
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "markdown":
        return _markdown(est, df)
    return _table(est, df)
