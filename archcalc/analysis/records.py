"""The records an estimate is made of -- one layer's costs, the totals, a shared weight -- and
their plain forms: the per-layer rows every format shares, the pandas DataFrame, and the JSON
contract (docs/json.md). Data, not presentation: no units, no layout."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from archcalc.analysis.memory.liveness import InferenceMemory
from archcalc.conventions import CONVENTIONS
from archcalc.ir import Shaped
from archcalc.units import shape_text

JSON_SCHEMA = "archcalc.estimate/2"
COLUMNS = ["layer", "op", "shape", "activations", "activation_bytes", "weights", "biases", "params",
           "macs", "flops", "rf", "stride", "note"]


@dataclass(frozen=True)
class LayerCost:
    """One executed layer. Element counts, not bytes, except ``activation_bytes``."""

    index: int
    name: str
    op_type: str
    output: str
    shape: tuple[int, ...]
    activations: int  # elements of every tensor the layer writes
    activation_bytes: int
    weights: int
    biases: int
    buffers: int
    macs: int
    flops: int  # 2 x MACs plus the layer's other floating-point ops
    has_rule: bool
    status: str = "exact"  # "bound": sizes and costs are upper bounds; "unknown": see ``reason``
    reason: str = ""
    receptive_field: int = 1  # input pixels one output element sees (first spatial axis)
    effective_stride: int = 1  # input pixels between neighbouring outputs

    @property
    def params(self) -> int:
        return self.weights + self.biases


@dataclass(frozen=True)
class SharedWeight:
    """A stored weight that several layers read as a parameter."""

    name: str
    readers: int
    elements: int
    # "tied": one parameter used in several places (an embedding and the LM head); "merged": every
    # value equal (a fresh model's zero biases), so the exporter stored identical constants once
    # and the model itself has ``readers`` separate parameters; "unknown": values not in the file.
    kind: str


@dataclass(frozen=True)
class Totals:
    """The model's totals; field names are the JSON contract (see docs/json.md)."""

    params: int  # each stored weight once: what memory holds (the headline)
    params_per_layer: int  # each layer's weights and biases: a weight read by k layers counts k times
    buffers: int
    param_bytes: int  # stored parameters, buffers and quantization parameters, at the priced dtype
    input_bytes: int
    activation_elements: int  # graph inputs + every tensor a layer writes (views included)
    activation_bytes: int
    macs: int
    flops: int
    shared: tuple[SharedWeight, ...] = ()
    quant_params: int = 0  # scales and zero points of quantized tensors: stored, not parameters
    unsupported_ops: dict[str, int] = field(default_factory=dict)  # op type -> layers with no cost rule
    unknown: dict[str, str] = field(default_factory=dict)  # layer -> why its shapes are unknown
    bounded_layers: int = 0  # layers whose sizes depend on data: their figures are upper bounds

    @property
    def status(self) -> str:
        """What the size and cost totals are: "exact"; an "upper bound" (data-dependent sizes taken at
        their bounds); a "lower bound" (layers left out: unknown, or with no cost rule); or
        "partial" (both at once, so neither bound holds). Parameters are exact in every case."""
        left_out = bool(self.unknown or self.unsupported_ops)
        if self.bounded_layers:
            return "partial" if left_out else "upper bound"
        return "lower bound" if left_out else "exact"


def layer_rows(layers: list[LayerCost]) -> list[dict]:
    """One row per executed layer, in execution order: the layout every format shares."""
    return [{
        "layer": r.name, "op": r.op_type, "shape": "?" if r.status == "unknown" else shape_text(r.shape),
        "activations": r.activations,
        "activation_bytes": r.activation_bytes, "weights": r.weights, "biases": r.biases,
        "params": r.params, "macs": r.macs, "flops": r.flops, "rf": r.receptive_field,
        "stride": r.effective_stride, "note": _note(r),
    } for r in layers]


def _tensor_entry(t) -> dict:
    """A tensor in the JSON: its shape, dtype and role, and what the shape is when not exact."""
    entry = {"shape": list(t.shape), "dtype": t.dtype, "role": t.role.value}
    if t.bound:
        entry["bound"] = True
    if not t.known:
        entry["known"] = False
    if t.seq is not None:
        entry["sequence"] = t.seq
    return entry


def _note(r: LayerCost) -> str:
    if r.status == "unknown":
        return f"unknown: {r.reason}"
    flags = (("no cost rule", not r.has_rule), ("upper bound", r.status == "bound"))
    return "; ".join(text for text, on in flags if on)


def layers_frame(layers: list[LayerCost]):
    """The per-layer rows as a pandas DataFrame (pandas is imported only here: it costs 0.3 s)."""
    import pandas as pd

    return pd.DataFrame(layer_rows(layers), columns=COLUMNS)


def totals_dict(totals: Totals, im: InferenceMemory) -> dict:
    """The totals, with the headline activation peak (``im``: the default runtime's) beside them."""
    return {**asdict(totals), "status": totals.status, "peak_activation_bytes": im.activations_held,
            "peak_bytes": im.tensors_peak, "peak_runtime": im.runtime_name}


def estimate_dict(graph: Shaped, layers: list[LayerCost], totals: Totals, im: InferenceMemory, batch: int,
                  dtype: str | None) -> dict:
    """The JSON contract: totals, conventions, layers, and every tensor's shape by name."""
    return {
        "schema": JSON_SCHEMA,
        "model": graph.name,
        "source": graph.source,
        "batch": batch,
        "dtype": dtype,
        "totals": totals_dict(totals, im),
        "conventions": CONVENTIONS,
        "inputs": {n: list(graph.tensors[n].shape) for n in graph.inputs},
        "outputs": {n: list(graph.tensors[n].shape) for n in graph.outputs},
        "layers": layer_rows(layers),
        "tensors": {t.name: _tensor_entry(t) for t in graph.tensors.values()},
    }
