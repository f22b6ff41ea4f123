"""``archcalc plan`` rendered: the ranked strategies as a table, one judged strategy, or JSON
(``archcalc.plan/1``, docs/json.md). Nothing here counts."""

from __future__ import annotations

import json

from archcalc import units
from archcalc.analysis.memory import terms
from archcalc.analysis.plan.planner import PlanRow

# The columns (headers as printed), each the sum of these terms (analysis.memory.terms) at the peak.
COLUMNS = {
    "params": (terms.PARAMETERS, terms.BUFFERS),
    "grads": (terms.GRADIENTS,),
    "optim": (terms.OPTIMIZER_STATE, terms.MASTER_WEIGHTS),
    "activations": (
        terms.SAVED_ACTIVATIONS,
        terms.ACTIVATIONS,
        terms.ACTIVATION_GRADIENTS,
        terms.IN_FLIGHT,
        terms.INPUTS,
        terms.OPTIMIZER_TEMPORARIES,
    ),
    "gathered": (terms.GATHERED_PARAMETERS,),
    "buffers": (terms.COMMUNICATION_BUFFERS,),
}


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def _cells(row: PlanRow, constant: int) -> list[str]:
    t = row.memory.terms
    comm = sum(row.communication.values())
    return [
        row.strategy.label(),
        "yes" if row.fits else "no",
        str(row.micro_batch or "-"),
        str(row.accumulation),
        _gib(row.total),
        *(_gib(sum(t.get(k, 0) for k in keys)) for keys in COLUMNS.values()),
        _gib(constant),
        f"{row.recompute_flops / 1e12:.2f}",
        _gib(comm),
        row.memory.phase,
    ]


HEAD = [
    "strategy",
    "fits",
    "micro",
    "accum",
    "GiB/GPU",
    *COLUMNS,
    "runtime",
    "recompute TFLOP",
    "comm GiB",
    "peak at",
]


def render_plan(rows: list[PlanRow], header: str, constant: int, fmt: str, meta: dict) -> str:
    if fmt == "json":
        return (
            json.dumps({"schema": "archcalc.plan/1", **meta, "rows": [r.to_dict() for r in rows]}, indent=1) + "\n"
        )
    table = [HEAD] + [_cells(r, constant) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEAD))]
    lines = [header, ""]
    for k, r in enumerate(table):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def render_verdict(row: PlanRow, header: str, constant: int) -> str:
    word = "fits" if row.fits else "does NOT fit"
    t = row.memory.terms
    listed = ", ".join(f"{k} {units.nbytes(v)}" for k, v in t.items() if v)
    comm = ", ".join(f"{k} {units.nbytes(v)}" for k, v in row.communication.items() if v) or "none"
    mb = (
        f"largest micro-batch {row.micro_batch}, {row.accumulation} per step"
        if row.fits
        else f"not even micro-batch {row.shown}: {units.nbytes(row.total)} of {units.nbytes(row.capacity)}, "
             f"{units.nbytes(row.total - row.capacity)} over; {_where(row)}"
    )
    return (
        f"{header}\n{row.strategy.label()}: {word}: {mb}\n"
        f"per GPU at the peak ({row.memory.phase}{', ' + row.memory.layer if row.memory.layer else ''}): "
        f"{units.nbytes(row.total)} = {listed}, runtime {units.nbytes(constant)}\n"
        + (f"on the host (offloaded): {units.nbytes(row.memory.offloaded)}\n" if row.memory.offloaded else "")
        + f"recompute per step: {row.recompute_flops / 1e12:.3f} TFLOP per GPU; sent per GPU per step: {comm}\n"
    )


def _where(row: PlanRow) -> str:
    """Which rank broke the budget, when, and with what: its stage, its phase, its largest term."""
    term, size = max(row.memory.terms.items(), key=lambda kv: kv[1])
    stage = f"on stage {row.stage + 1} of {row.strategy.pp}, " if row.strategy.pp > 1 else ""
    return f"{stage}at the {row.memory.phase}, the largest term {term} {units.nbytes(size)}"


NEAREST = 5  # rows that do not fit, shown after those that do


def render_plan_result(result, card, top: int, fmt: str) -> str:
    """The search's rows (the ``top`` that fit and the nearest that do not), or the one judged."""
    m = result.meta
    budget = (
        f"{card.name} ({units.nbytes(card.capacity)} as the driver reports)"
        if card
        else units.nbytes(m["capacity"])
    )
    header = (
        f"training step on {m['gpus']} x {budget}, {m['nodes']} node(s); optimizer {m['optimizer']}, "
        f"dtype {m['dtype'] or 'as in the model'}, {m['device']} defaults, runtime {m['runtime']}; "
        f"units: {len(m['units']['names'])} from {m['units']['source']}"
    )
    if m.get("batch_fixed"):
        header += "\nthe file fixes the batch: each row judges the model as it is (micro-batch 1: its batch)"
    if fmt == "json":
        return render_plan(result.rows, header, result.constant, fmt, {**m, "gpu": card.name if card else None})
    if result.judged:
        return render_verdict(result.rows[0], header, result.constant) + _reserved(m) + _megatron(m)
    fit = [r for r in result.rows if r.fits][:top]
    near = [r for r in result.rows if not r.fits][:NEAREST]
    text = render_plan(fit + near, header, result.constant, fmt, m)
    if not fit:
        text += "no strategy fits: the nearest are shown; add GPUs, or --dtype mixed, or a smaller model\n"
    return text


def render_deepspeed(params: int, largest: int, per_node: int, nodes: int) -> str:
    """DeepSpeed's estimators' tables for this model, in their units (GiB) and with their conventions."""
    from archcalc.analysis.plan import deepspeed as ds

    gib = 2**30
    lines = [f"DeepSpeed's estimators (their conventions: 16/18 bytes a parameter, no activations, 1.5x host "
             f"buffers), {params:,} parameters, largest layer {largest:,}, {nodes} x {per_node} GPUs:",
             "  ZeRO-2: per CPU | per GPU"]
    for offload in (True, False):
        host, dev = ds.zero2(params, per_node, nodes, offload)
        where = "cpu" if offload else "none"
        lines.append(f"  {host / gib:8.2f}GB | {dev / gib:7.2f}GB | offload_optimizer={where}")
    lines.append("  ZeRO-3: per CPU | per GPU")  # the rows estimate_zero3_model_states_mem_needs_all_cold prints
    for r in ds.zero3_table(params, largest, per_node, nodes):
        lines.append(f"  {r['host'] / gib:8.2f}GB | {r['gpu'] / gib:7.2f}GB | offload_param={r['offload_param']}, "
                     f"offload_optimizer={r['offload_optimizer']}, zero_init={r['zero_init']}")
    return "\n".join(lines) + "\n"


def _reserved(meta: dict) -> str:
    """What PyTorch's caching allocator reserves for the judged rank (``plan.reserved``)."""
    r = meta.get("reserved")
    if not r:
        return ""
    if not r["modelled"]:
        return f"reserved by PyTorch's caching allocator: not modelled ({r['why']})\n"
    def figure(x: dict) -> str:
        if x["over_capacity"]:  # PyTorch would free its cache and retry there: not modelled
            return "more than the card (its cache freed and retried: not modelled)"
        return units.nbytes(x["reserved"])

    on, off = r["expandable_segments"], r["default"]
    pools = ", ".join(f"{k} {units.nbytes(v)}" for k, v in on["streams"].items())
    return (f"reserved with PyTorch's caching allocator (its rules replayed over the step's tensors): "
            f"{figure(on)} with expandable_segments (torchtitan's setting), {figure(off)} without "
            f"(PyTorch's default); its pools by stream: {pools}\n")


def _megatron(meta: dict) -> str:
    """Megatron-LM's own estimate of the judged strategy, where engine=megatron asked for it."""
    mt = meta.get("megatron")
    if not mt:
        return ""
    if "unknown" in mt:
        return f"Megatron-LM's theoretical_memory_usage: not computed ({mt['unknown']})\n"
    return (f"Megatron-LM's theoretical_memory_usage (its conventions: Korthikanti et al.'s activations, no "
            f"runtime): weight and optimizer={mt['weight_and_optimizer_mb']:.2f} MB, "
            f"activation={mt['activation_mb']:.2f} MB, total={mt['total_mb']:.2f} MB\n")


def render_largest(found, own_layers: int, strategy: str, fmt: str = "table") -> str:
    """``plan --largest-model``: the deepest model that fits, and why one layer more does not."""
    if fmt == "json":
        import json

        return json.dumps({"strategy": strategy, "layers": found.layers, "params": found.params,
                           "lower_bound": found.layers == found.limit,
                           "config_layers": own_layers, "row": found.row.to_dict() if found.row else None,
                           "one_layer_more": found.deeper.to_dict() if found.deeper else None}, indent=1) + "\n"
    if not found.layers:
        why = f": {found.deeper.memory.phase} at {units.nbytes(found.deeper.total)}" if found.deeper else ""
        return f"largest model under '{strategy}': none (not even 1 layer fits{why})\n"
    row = found.row
    if found.layers == found.limit:  # a lower bound: the planner judges no deeper model
        return (f"largest model under '{strategy}': at least {found.layers} layers, {found.params:,} parameters "
                f"(the config has {own_layers}): the deepest archcalc plans (its unit cap) fits, "
                f"{units.nbytes(row.total)} of {units.nbytes(row.capacity)} per GPU at micro-batch "
                f"{row.micro_batch}\n")
    lines = [f"largest model under '{strategy}': {found.layers} layers, {found.params:,} parameters "
             f"(the config has {own_layers}), {units.nbytes(row.total)} of {units.nbytes(row.capacity)} "
             f"per GPU at micro-batch {row.micro_batch}"]
    if found.deeper is not None:
        d = found.deeper
        lines.append(f"{found.layers + 1} layers: does NOT fit as asked ({units.nbytes(d.total)} at micro-batch "
                     f"{d.shown}, {d.accumulation} a step)")
    return "\n".join(lines) + "\n"
