"""The graph IR: plain data that every front end produces and every analysis reads.

It knows nothing of ONNX or of the design language: ``onnx_import`` and the DSL parser build it,
``onnx_export`` writes it. A graph is a list of layers in execution order over named tensors;
the producer / consumer index is derived once, on demand.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from archcalc.dtypes import DTYPE_BYTES, FLOAT_DTYPES

Dim = int | str
Shape = tuple[Dim, ...]

class Role(str, enum.Enum):
    """What a tensor is to the model; decides which totals it falls into."""

    INPUT = "input"  # fed by the caller
    WEIGHT = "weight"  # a trained parameter (weights and biases)
    BUFFER = "buffer"  # state that is stored but not trained (BatchNorm running statistics)
    CONSTANT = "constant"  # shape and index constants, and everything folded from them
    ACTIVATION = "activation"  # computed at run time
    OUTPUT = "output"  # an activation the graph returns


@dataclass
class Tensor:
    """A named value as the front end declares it: ``shape`` may hold symbolic dims, or be None
    where the file gives none. Analyses never change it; a binding makes a :class:`Value`."""

    name: str
    shape: Shape | None
    dtype: str
    role: Role
    value: np.ndarray | None = None  # known only for small constants


@dataclass
class Value:
    """A tensor under one binding of the inputs: a concrete shape, and the role the analysis
    settled (an initializer no layer reads as a parameter is a constant)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: Role
    value: np.ndarray | None = None  # known only for small constants and folded shape arithmetic
    alias_of: str | None = None  # a view of a stored weight (Identity of a merged initializer)
    # ``bound``: the shape holds upper bounds, not sizes: it depends on values computed from data
    # (NonZero's count, the boxes NonMaxSuppression keeps) somewhere upstream.
    bound: bool = False
    # ``known`` False: no shape can be given before running (an op archcalc cannot size, or one
    # that reads such a tensor); ``shape`` is then () and the tensor counts in no total.
    known: bool = True
    # A sequence (SequenceInsert, SplitToSequence) of ``seq`` tensors, each ``shape`` (the largest of
    # them, and ``bound``, where they differ); None: a tensor.
    seq: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape) * (1 if self.seq is None else self.seq) if self.known else 0

    def nbytes(self, float_dtype: str | None = None) -> int:
        """Bytes of this tensor; ``float_dtype`` re-prices floating-point tensors of 16 bits or more
        (``--dtype``): an 8- or 4-bit float is a quantized checkpoint's stored value, kept as stored."""
        if not self.known:
            return 0
        wide = self.dtype in FLOAT_DTYPES and DTYPE_BYTES[self.dtype] >= 2
        dtype = float_dtype if float_dtype and wide else self.dtype
        return math.ceil(self.numel * DTYPE_BYTES[dtype])


@dataclass
class Layer:
    """One operation. ``inputs`` keeps ONNX's positions: an omitted optional input is ``""``."""

    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    # The bodies of control flow (If's branches, Loop's and Scan's body), as graphs whose layers
    # may read the enclosing graph's tensors by name.
    subgraphs: dict[str, Graph] = field(default_factory=dict)
    # Where the layer sits in its model, as a path ("basic.2/rep1.0"): the design language's block
    # calls and repetitions. ONNX files carry it in the node name instead (/layer1/layer1.0/conv1/Conv).
    scope: str = ""
    # A node's metadata (ONNX's metadata_props): facts no attribute holds, such as the sliding window
    # of an attention archcalc built (WINDOW_KEY).
    meta: dict[str, str] = field(default_factory=dict)


# Layer.meta's key for an attention's sliding window: how many of the latest keys each query sees.
WINDOW_KEY = "archcalc.window"
# Layer.meta's key for an attention's rotary embedding, "POSITIONSxDIMS": the cos/sin table a server
# precomputes for that many positions (0 dims: positions not rotary).
ROTARY_KEY = "archcalc.rotary"
# Layer.meta's key on the layer that makes a language model's logits: the loss a training step takes
# over them ("cross_entropy"; see archcalc.analysis.memory.loss).
LOSS_KEY = "archcalc.loss"
# Layer.meta's key on a DequantizeLinear of a stored weight that the product reading it dequantizes
# inside its own kernel (vLLM's Marlin, AWQ, GPTQ and FP8 block GEMMs; onnxruntime's MatMulNBits):
# no dequantized copy ever exists, so the output is a load-time constant, not an activation, and the
# stored values, scales and the format's extras (inputs 3 on) are what memory holds. The value names
# the checkpoint's format ("awq", "gptq", "fp8", "compressed-tensors").
FUSED_DEQUANT_KEY = "archcalc.dequantized_in_kernel"


def layer_index(layers: list[Layer]) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Each tensor's producer and consumers, as positions in ``layers``."""
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    for i, layer in enumerate(layers):
        for name in layer.inputs:
            if name:
                consumers.setdefault(name, []).append(i)
        for name in layer.outputs:
            if name:
                producer[name] = i
    return producer, consumers


@dataclass
class Graph:
    """Layers in execution order over tensors; ``inputs`` and ``outputs`` name the graph's ends."""

    name: str
    tensors: dict[str, Tensor]
    layers: list[Layer]
    inputs: list[str]
    outputs: list[str]
    opset: int = 21
    source: str = ""  # where the graph came from, for error messages
    # The shapes a runtime's planner can know before running (ints, named symbols; None: unknown),
    # computed on demand by the front end that built the graph.
    static_shapes: Callable[[], dict[str, tuple]] | None = field(default=None, repr=False)
    # A stored weight's values, read from the file on demand (the import reads none of them):
    # the few that tell tied weights from identical constants merged by an exporter.
    stored_value: Callable[[str], np.ndarray | None] | None = field(default=None, repr=False)
    # The design as a runnable ONNX model (random weights, ``seed``), where the front end built it as
    # ONNX (the design language's transformers); None: exported from the layers themselves.
    runnable: Callable[[int], Any] | None = field(default=None, repr=False)
    # The --dtype a model is analysed at when none is given (a 16-bit config: mixed precision at its
    # width, which prices every tensor as the model holds it and adds fp32 master weights and
    # optimizer state to training); None: as the model holds each tensor.
    default_dtype: str | None = None
    # The format of a quantized checkpoint the graph's weights are stored in ("awq", "fp8", ...;
    # "": none): such weights are served, never trained (see ``trainable``).
    quantized: str = ""

    @cached_property
    def _index(self) -> tuple[dict[str, int], dict[str, list[int]]]:
        return layer_index(self.layers)

    def trainable(self) -> None:
        """Refuses a training question about a quantized checkpoint: its stored int4 / fp8 values have
        no gradients or optimizer state to price (fine-tuning one trains adapters, not the weights)."""
        if self.quantized:
            from archcalc.errors import InputError

            raise InputError(f"{self.source}: its weights are a quantized checkpoint's ({self.quantized}), served "
                             "and not trained: ask estimate or fit --mode serve, or drop quantization_config from "
                             "the config to price training at its dtype")

    @cached_property
    def planner_shapes(self) -> dict[str, tuple]:
        """``static_shapes``, computed once: they do not depend on how the inputs are bound."""
        return self.static_shapes() if self.static_shapes else {}

    def undefined_read(self, outer: frozenset[str] = frozenset()) -> tuple[str, Layer] | None:
        """The first tensor a layer reads that neither this graph nor ``outer`` (the enclosing graphs'
        names, visible to a control-flow body) defines, with its reader; bodies are searched too."""
        visible = outer | set(self.tensors) | {o for ly in self.layers for o in ly.outputs}
        for ly in self.layers:
            missing = next((n for n in ly.inputs if n and n not in visible), None)
            if missing is not None:
                return missing, ly
            for body in ly.subgraphs.values():
                found = body.undefined_read(frozenset(visible))
                if found:
                    return found
        return None

    def producer(self, tensor: str) -> int | None:
        """Position in ``layers`` of the layer that writes ``tensor``, or None for a graph input."""
        return self._index[0].get(tensor)

    def consumers(self, tensor: str) -> list[int]:
        """Positions in ``layers`` of the layers that read ``tensor``, in execution order."""
        return self._index[1].get(tensor, [])

    def to_networkx(self):
        """A DiGraph of layer positions, an edge per tensor passed from one layer to another."""
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(range(len(self.layers)))
        for i, layer in enumerate(self.layers):
            for name in layer.inputs:
                src = self.producer(name) if name else None
                if src is not None:
                    g.add_edge(src, i, tensor=name)
        return g


@dataclass
class Shaped:
    """A graph under one binding of its inputs: every tensor a :class:`Value`. The declared graph
    is shared, never changed, so one graph can be analysed at many batch sizes.

    ``executed`` lists the layers as the analysis walked them: the graph's own, with the layers of
    the control-flow bodies that run (an If's branch, a Loop's body) placed where they run. The
    producer / consumer index is over that list, so it lines up with the analysis' results."""

    graph: Graph
    tensors: dict[str, Value]
    executed: list[Layer] | None = None
    symbols: dict[str, int] = field(default_factory=dict)  # given sizes of run-time counts (--dim)
    # What analyses derive from this walk, computed once (see analysis.walk.results.derived).
    derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # a copy starts afresh

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def source(self) -> str:
        return self.graph.source

    @property
    def layers(self) -> list[Layer]:
        return self.graph.layers if self.executed is None else self.executed

    @property
    def inputs(self) -> list[str]:
        return self.graph.inputs

    @property
    def outputs(self) -> list[str]:
        return self.graph.outputs

    @property
    def opset(self) -> int:
        return self.graph.opset

    @cached_property
    def _index(self) -> tuple[dict[str, int], dict[str, list[int]]]:
        return self.graph._index if self.executed is None else layer_index(self.executed)

    def producer(self, tensor: str) -> int | None:
        return self._index[0].get(tensor)

    def consumers(self, tensor: str) -> list[int]:
        return self._index[1].get(tensor, [])

    def static_shapes(self) -> dict[str, tuple]:
        """The shapes a runtime's planner can know before running (see ``Graph.static_shapes``)."""
        return self.graph.planner_shapes
