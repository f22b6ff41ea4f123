"""The estimate as plain rows and dicts: the per-layer rows every format shares, the pandas
DataFrame, and the JSON contract (docs/json.md). Data, not presentation: no units, no layout."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from archcalc.conventions import CONVENTIONS
from archcalc.units import shape_text

if TYPE_CHECKING:
    from archcalc.analysis.estimate import Estimate

JSON_SCHEMA = "archcalc.estimate/2"
COLUMNS = ["layer", "op", "shape", "activations", "activation_bytes", "weights", "biases", "params",
           "macs", "flops", "rf", "stride", "note"]


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


def totals_dict(est: Estimate) -> dict:
    """The totals, with the headline activation peak (the default runtime's) beside them."""
    im = est.inference_memory()
    return {**asdict(est.totals), "peak_activation_bytes": im.activations_held,
            "peak_bytes": im.weights + im.inputs + im.activations_held, "peak_runtime": im.runtime_name}


def estimate_dict(est: Estimate) -> dict:
    """The JSON contract: totals, conventions, layers, and every tensor's shape by name."""
    g = est.graph
    return {
        "schema": JSON_SCHEMA,
        "model": g.name,
        "source": g.source,
        "batch": est.batch,
        "dtype": est.dtype,
        "totals": totals_dict(est),
        "conventions": CONVENTIONS,
        "inputs": {n: list(g.tensors[n].shape) for n in g.inputs},
        "outputs": {n: list(g.tensors[n].shape) for n in g.outputs},
        "layers": layer_rows(est),
        "tensors": {t.name: {"shape": list(t.shape), "dtype": t.dtype, "role": t.role.value}
                    for t in g.tensors.values()},
    }
