"""The CS231n notes' way of tabulating a network (their VGG-16 table), and what its totals count.

Rows: the input and every CONV, POOL and FC layer (activations implied, as in the notes), with the
output as HxWxC, its activations ("memory", numbers not bytes) and its weights without biases. The
totals say which tensors each of the notes' figures counts, and what the rows really add up to.
"""

from __future__ import annotations

from archcalc import units
from archcalc.analysis.estimate import Estimate

SHOWN = {"Conv": "CONV", "MaxPool": "POOL", "AveragePool": "AVGPOOL", "LpPool": "L2POOL", "Gemm": "FC",
         "MatMul": "FC", "GlobalAveragePool": "GAP", "GlobalMaxPool": "GMP"}
ACTIVATION_OPS = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Gelu", "HardSwish", "Clip"}


def _label(est: Estimate, row) -> str:
    layer = est.graph.layers[row.index]
    kind = SHOWN[row.op_type]
    if kind == "CONV":
        k = est.graph.tensors[layer.inputs[1]].shape
        return f"CONV{k[2]}-{k[0]}"
    if kind in ("POOL", "AVGPOOL", "L2POOL"):
        return f"{kind}{layer.attrs['kernel_shape'][0]}"
    return kind


def _weights_text(est: Estimate, row) -> str:
    if not row.weights:
        return "0"
    layer = est.graph.layers[row.index]
    w = est.graph.tensors[layer.inputs[1]].shape
    if row.op_type == "Conv":  # any number of spatial dims: Conv1d's (F*C)*K, Conv3d's (F*F*F*C)*K
        return "(" + "*".join(str(d) for d in (*w[2:], w[1])) + f")*{w[0]} = {row.weights:,}"
    return f"{row.weights:,}"


def _per_image(est: Estimate) -> int:
    """The images in the first input's batch: its leading dim (1 for a scalar or an empty batch)."""
    x = est.graph.tensors[est.graph.inputs[0]].shape if est.graph.inputs else ()
    return max(x[0], 1) if x else 1


def notes_rows(est: Estimate) -> list[tuple[str, str, int, str]]:
    """(layer, output HxWxC, activations, weights) per row, starting with INPUT, for one image."""
    per_image = _per_image(est)
    rows = []
    if est.graph.inputs:  # a graph of constants alone has none
        first = est.graph.tensors[est.graph.inputs[0]]
        rows.append(("INPUT", units.hwc(first.shape[1:]), first.numel // per_image, "0"))
    for r in est.layers_list:
        if r.op_type in SHOWN:
            shape = units.hwc(r.shape[1:])
            rows.append((_label(est, r), shape, r.activations // per_image, _weights_text(est, r)))
    return rows


def notes_totals(est: Estimate) -> list[tuple[str, str]]:
    """What the notes' figures count, computed from this design (per image, 4-byte numbers)."""
    per_image = _per_image(est)
    rows_sum = sum(a for _, _, a, _ in notes_rows(est))
    relu = sum(r.activations for r in est.layers_list if r.op_type in ACTIVATION_OPS) // per_image
    weights = sum(r.weights for r in est.layers_list)
    biases = sum(r.biases for r in est.layers_list)
    train = est.training_memory("sgd")
    return [
        ("the rows add up to", f"{rows_sum:,} activations = {units.nbytes(4 * rows_sum)} "
                               f"({4 * rows_sum / 1e6:.0f} MB) at 4 bytes"),
        ("with each ReLU output stored apart", f"{rows_sum + relu:,} activations = "
                                               f"{4 * (rows_sum + relu) / 1e6:.0f} MB (ReLU not in place)"),
        ("the notes' figure", "24M activations, ~93MB: neither of the above (the rows sum to about 15.2M; "
                              "CS231n notes issue #88); the notes' 'x2 for backward' counts each "
                              "activation's gradient beside it"),
        ("x2 for backward, as counted here", f"{units.nbytes(8 * rows_sum)}; what one SGD step keeps "
                                             f"for backward is {units.nbytes(train.saved_activations)} "
                                             f"(saved activations) and peaks at {units.nbytes(train.peak.bytes)} "
                                             f"with weights and gradients ({units.nbytes(train.total)} with "
                                             f"{train.runtime_name}'s constant: what fit judges)"),
        ("weights (without biases)", f"{weights:,}"),
        (f"parameters (with {biases:,} biases)", f"{weights + biases:,}"),
    ]


def render_notes(est: Estimate, fmt: str = "table") -> str:
    rows = notes_rows(est)
    totals = notes_totals(est)
    if fmt == "markdown":
        body = "".join(f"| {a} | {b} | {c:,} | {d} |\n" for a, b, c, d in rows)
        tail = "".join(f"| {a} | {b} |\n" for a, b in totals)
        return (f"## {est.graph.name}: the CS231n notes' table\n\n| layer | output | memory | weights |\n"
                f"|---|---|---|---|\n{body}\n| total | value |\n|---|---|\n{tail}")
    width = max(len(a) for a, *_ in rows)
    lines = [f"{'layer':<{width}}  {'output':>13}  {'memory':>11}  weights"]
    lines += [f"{a:<{width}}  {b:>13}  {c:>11,}  {d}" for a, b, c, d in rows]
    lines += [f"{a}: {b}" for a, b in totals]
    return "\n".join(lines) + "\n"
