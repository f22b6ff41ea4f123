"""Memory of one training step, as named terms, and its peak.

weights + weight gradients + optimizer state + activations saved for backward + the largest
transient of the backward pass + the input batch; the peak (``step_peak``) is when they coexist
most, since gradients are made while saved activations are freed. Saved activations follow each op's rule
(``Out.saves_*``) and are counted once per storage: an in-place ReLU saves the very buffer its
conv wrote. Mixed precision keeps low-precision weights, gradients and activations, plus fp32
master weights and fp32 optimizer state (the model states are priced in ``model_states``, the one
arithmetic ``fit`` and every rank of a plan share).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from archcalc.analysis.memory import terms
from archcalc.analysis.memory.liveness import RUNTIME_ROLES, input_bytes
from archcalc.analysis.memory.loss import loss_moments
from archcalc.analysis.memory.model_states import DEFAULT_IMPL, model_states, precision, slots, trainable
from archcalc.analysis.memory.runtimes import Runtime
from archcalc.analysis.memory.step_peak import (
    DEVICES,
    StepPeak,
    saved_extra_bytes,
    saved_names,
    saved_tensors,
    step_peak,
    training_owners,
)
from archcalc.analysis.walk.infer import LayerResult
from archcalc.analysis.walk.results import ran
from archcalc.errors import InputError
from archcalc.ir import Shaped


@dataclass(frozen=True)
class TrainingMemory:
    """One training step, each term in bytes. ``total`` (the step's peak plus the runtime's
    constant) is the one figure every output judges a training step by."""

    optimizer: str
    device: str  # whose PyTorch defaults: "cuda" or "cpu"
    weights: int  # parameters and buffers (terms.WEIGHTS)
    master_weights: int  # fp32 copies under mixed precision, else 0
    gradients: int
    optimizer_state: int
    saved_activations: int
    backward_transient: int
    backward_transient_layer: str
    inputs: int
    # The inputs that backward keeps (a first conv's batch): already in ``inputs``, so not in the
    # sum; what autograd's saved tensors add up to is saved_activations + saved_inputs.
    saved_inputs: int
    step_temporaries: int
    peak: StepPeak
    notes_rule: int  # the CS231n notes' rule of thumb, for comparison
    runtime: int = 0  # the runtime's own constant (CUDA context, library workspaces)
    runtime_name: str = "none"
    buffers: int = 0  # of ``weights``, the stored tensors not trained
    loss: int = 0  # the loss's float32 copies of the logits at its largest moment (``memory.loss``)

    def terms(self) -> dict[str, int]:
        """Every term by name (bytes), the runtime's constant included."""
        return {terms.PARAMETERS: self.weights - self.buffers, terms.BUFFERS: self.buffers,
                terms.MASTER_WEIGHTS: self.master_weights, terms.GRADIENTS: self.gradients,
                terms.OPTIMIZER_STATE: self.optimizer_state, terms.SAVED_ACTIVATIONS: self.saved_activations,
                terms.ACTIVATION_GRADIENTS: self.backward_transient, terms.INPUTS: self.inputs,
                terms.OPTIMIZER_TEMPORARIES: self.step_temporaries, terms.LOSS: self.loss,
                terms.RUNTIME: self.runtime}

    def to_dict(self) -> dict:
        """Every term, the peak and the totals as plain data (the JSON contract's ``memory.training``)."""
        return {**asdict(self), "total": self.total, "terms_sum": self.terms_sum}

    @property
    def terms_sum(self) -> int:
        """Every term at once: an upper bound, since backward frees saved activations as it makes
        gradients, and the optimizer's temporaries come after both."""
        return sum(self.terms().values())

    @property
    def total(self) -> int:
        """The step's peak, walked phase by phase, plus the runtime's constant."""
        return self.peak.bytes + self.runtime


def saved_by_layer(graph: Shaped, results: list[LayerResult], float_dtype: str | None,
                   device: str = "cuda") -> dict[str, int]:
    """Bytes each layer adds to what backward keeps: the activation storages it is first to save
    (each storage counted once, however many layers save it) plus its own saved state."""
    owner = training_owners(graph, results, float_dtype)
    seen: set[str] = set()
    per_layer = {}
    for res in (results[i] for i in ran(graph, results)):
        size = saved_extra_bytes(graph, res, float_dtype, device)
        for name in saved_tensors(res):
            t = graph.tensors.get(name) if name else None
            storage = owner.get(name, name)
            if t is not None and t.role in RUNTIME_ROLES and storage not in graph.inputs and storage not in seen:
                seen.add(storage)
                size += graph.tensors[storage].nbytes(float_dtype)
        per_layer[res.layer.name] = size
    return per_layer


def backward_transient(graph: Shaped, results: list[LayerResult], float_dtype: str | None) -> tuple[int, str]:
    """The largest gradient pair alive at once: a layer's output gradients and its input gradients."""
    best, where = 0, ""
    for res in (results[i] for i in ran(graph, results)):
        grads = [graph.tensors[n] for n in [*res.layer.inputs, *res.layer.outputs]
                 if n and graph.tensors[n].role in RUNTIME_ROLES]
        size = sum(t.nbytes(float_dtype) for t in grads)
        if size > best:
            best, where = size, res.layer.name
    return best, where


def saved_input_bytes(graph: Shaped, results: list[LayerResult], float_dtype: str | None) -> int:
    """Bytes of the graph inputs that backward keeps (a first conv's batch)."""
    owner = training_owners(graph, results, float_dtype)
    kept = {owner.get(n, n) for n in saved_names(results)} & set(graph.inputs)
    return sum(graph.tensors[n].nbytes(float_dtype) for n in kept)


def training_memory(graph: Shaped, results: list[LayerResult], param_roles: dict[int, dict[str, str]],
                    activation_sum: int, optimizer: str, float_dtype: str | None,
                    mixed: bool = False, impl: str | None = None, device: str = "cuda",
                    runtime: Runtime | None = None) -> TrainingMemory:
    """The training terms of a shaped graph. ``param_roles``: each layer's parameter inputs;
    ``device``: the PyTorch device whose defaults apply ("cuda" or "cpu"), which sets the optimizer's
    ``impl`` ("foreach" or "single") unless it is given, and the width of dropout's saved mask;
    ``runtime``: whose constant the total includes (none when not given)."""
    if device not in DEVICES:
        raise InputError(f"--device {device}: choose one of {', '.join(DEVICES)}")
    prec = precision(float_dtype, mixed, optimizer, impl or DEFAULT_IMPL[device])
    trained = trainable(graph, param_roles)
    states = model_states(graph, trained, prec, float_dtype)
    inputs = input_bytes(graph, float_dtype)
    transient, where = backward_transient(graph, results, float_dtype)
    peak = step_peak(graph, results, float_dtype, states.persistent + inputs, trained.grad_at(graph, prec.width),
                     states.gradients, states.temporaries, device)
    return TrainingMemory(
        optimizer=optimizer,
        device=device,
        weights=states.weights,
        master_weights=states.master_weights,
        gradients=states.gradients,
        optimizer_state=states.optimizer_state,
        saved_activations=sum(saved_by_layer(graph, results, float_dtype, device).values()),
        backward_transient=transient,
        backward_transient_layer=where,
        inputs=inputs,
        saved_inputs=saved_input_bytes(graph, results, float_dtype),
        step_temporaries=states.temporaries,
        peak=peak,
        # The notes: activations and their gradients, parameters, their gradients and the caches.
        notes_rule=2 * activation_sum + states.gradients * (2 + slots(optimizer)),
        runtime=runtime.overhead if runtime else 0,
        runtime_name=runtime.name if runtime else "none",
        buffers=states.buffers,
        loss=sum(loss_moments(graph, results, float_dtype).values()),
    )
