"""Memory of one training step, as named terms, and its peak.

weights + weight gradients + optimizer state + activations saved for backward + the largest
transient of the backward pass + the input batch; the peak (``step_peak``) is when they coexist
most, since gradients are made while saved activations are freed. Saved activations follow each op's rule
(``Out.saves_*``) and are counted once per storage: an in-place ReLU saves the very buffer its
conv wrote. Mixed precision keeps low-precision weights, gradients and activations, plus fp32
master weights and fp32 optimizer state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from archcalc.analysis.memory.liveness import RUNTIME_ROLES, input_bytes
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
from archcalc.dtypes import DTYPE_BYTES, FLOAT_DTYPES
from archcalc.errors import InputError
from archcalc.ir import Shaped

# Optimizer state slots per parameter (each the size of the parameter), per the PyTorch optimizers.
OPTIMIZER_SLOTS = {
    "sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1,
    "rmsprop": 1, "rmsprop-momentum": 2, "rmsprop-centered": 2, "rmsprop-momentum-centered": 3,
    "adam": 2, "adamw": 2, "adam-amsgrad": 3, "adamw-amsgrad": 3,
}


# PyTorch's default optimizer implementation on each device: torch.optim.optimizer's
# _default_to_fused_or_foreach picks foreach only when every parameter is on a device of
# torch.utils._foreach_utils._get_foreach_kernels_supported_devices() (cuda, xpu, mtia and the
# private backend in 2.14), so a CPU model steps per tensor (_single_tensor_adam).
DEFAULT_IMPL = {"cuda": "foreach", "cpu": "single"}


def step_temporaries(optimizer: str, impl: str, params_bytes: int, largest_param_bytes: int) -> int:
    """Bytes an optimizer allocates while stepping, per PyTorch 2.14's torch/optim/adam.py: the
    multi-tensor form (_multi_tensor_adam, "foreach") makes exp_avg_sq_sqrt = _foreach_sqrt(v), one
    list the size of all parameters, and divides and adds into it in place; the per-tensor form
    (_single_tensor_adam, "single") computes denom = (v.sqrt() / bias_correction2_sqrt).add_(eps) one
    parameter at a time, so v.sqrt() and the quotient coexist: twice the largest parameter (measured
    on the CPU: VGG-16's step rises by 2 x its 102.8M-element fc6 weight over the gradients). On
    weight-heavy nets the two differ most: VGG-16's fc6 is 74% of its weights, so "single" needs 1.5x
    what "foreach" does. SGD, momentum and the others update in place."""
    if not optimizer.startswith("adam"):
        return 0
    return params_bytes if impl == "foreach" else 2 * largest_param_bytes


@dataclass(frozen=True)
class TrainingMemory:
    """One training step, each term in bytes. ``total`` (the step's peak plus the runtime's
    constant) is the one figure every output judges a training step by."""

    optimizer: str
    device: str  # whose PyTorch defaults: "cuda" or "cpu"
    weights: int
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

    def terms(self) -> dict[str, int]:
        """Every term by name (bytes), the runtime's constant included."""
        return {"weights": self.weights + self.master_weights, "gradients": self.gradients,
                "optimizer state": self.optimizer_state, "saved activations": self.saved_activations,
                "backward transient": self.backward_transient, "inputs": self.inputs,
                "optimizer temporaries": self.step_temporaries, "runtime": self.runtime}

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


def slots(optimizer: str) -> int:
    if optimizer not in OPTIMIZER_SLOTS:
        raise InputError(f"--optimizer {optimizer}: choose one of {', '.join(OPTIMIZER_SLOTS)}")
    return OPTIMIZER_SLOTS[optimizer]


def saved_by_layer(graph: Shaped, results: list[LayerResult], float_dtype: str | None,
                   device: str = "cuda") -> dict[str, int]:
    """Bytes each layer adds to what backward keeps: the activation storages it is first to save
    (each storage counted once, however many layers save it) plus its own saved state."""
    owner = training_owners(graph, results, float_dtype)
    seen: set[str] = set()
    per_layer = {}
    for res in results:
        if res.folded:
            continue
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
    for res in results:
        if res.folded:
            continue
        grads = [graph.tensors[n] for n in [*res.layer.inputs, *res.layer.outputs]
                 if n and graph.tensors[n].role in RUNTIME_ROLES]
        size = sum(t.nbytes(float_dtype) for t in grads)
        if size > best:
            best, where = size, res.layer.name
    return best, where


@dataclass(frozen=True)
class Trainable:
    """Which stored tensors train. ``reader``: each trained parameter and the last layer that reads
    it (its gradient is made at that layer's backward); ``buffers``: stored but not trained."""

    reader: dict[str, int]
    buffers: dict[str, int]  # each untrained stored tensor and the last layer that reads it

    def grad_at(self, graph: Shaped, width: float) -> dict[int, int]:
        """Parameter-gradient bytes made at each layer's backward, at ``width`` bytes an element."""
        out: dict[int, int] = {}
        for name, i in self.reader.items():
            out[i] = out.get(i, 0) + int(graph.tensors[name].numel * width)
        return out


def trainable(graph: Shaped, param_roles: dict[int, dict[str, str]]) -> Trainable:
    reader: dict[str, int] = {}
    buffers: dict[str, int] = {}
    for i, mine in param_roles.items():
        for name, role in mine.items():
            if role in ("buffer", "quant") or graph.tensors[name].dtype not in FLOAT_DTYPES:
                buffers[name] = i  # not trained: statistics, scales, and integer (quantized) weights
            else:
                reader[name] = i
    for name in set(buffers) & set(reader):  # read as a weight somewhere: trained
        del buffers[name]
    return Trainable(reader, buffers)


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
    impl = impl or DEFAULT_IMPL[device]
    k = slots(optimizer)
    width = DTYPE_BYTES[float_dtype or "float32"]
    fp32 = DTYPE_BYTES["float32"]
    trained = trainable(graph, param_roles)
    reader, buffers = trained.reader, trained.buffers
    params = sum(graph.tensors[n].numel for n in reader)
    grad_at = trained.grad_at(graph, width)
    inputs = input_bytes(graph, float_dtype)
    transient, where = backward_transient(graph, results, float_dtype)
    weights = int((params + sum(graph.tensors[n].numel for n in buffers)) * width)
    master = int(params * fp32) if mixed else 0
    state = int(k * params * (fp32 if mixed else width))
    largest = max((graph.tensors[n].numel for n in reader), default=0)
    temps = step_temporaries(optimizer, impl, int(params * (fp32 if mixed else width)),
                             int(largest * (fp32 if mixed else width)))
    peak = step_peak(graph, results, float_dtype, weights + master + state + inputs, grad_at,
                     int(params * width), temps, device)
    owner = training_owners(graph, results, float_dtype)
    kept_inputs = {owner.get(n, n) for n in saved_names(results)} & set(graph.inputs)
    return TrainingMemory(
        optimizer=optimizer,
        device=device,
        weights=weights,
        master_weights=master,
        gradients=int(params * width),
        optimizer_state=state,
        saved_activations=sum(saved_by_layer(graph, results, float_dtype, device).values()),
        backward_transient=transient,
        backward_transient_layer=where,
        inputs=inputs,
        saved_inputs=sum(graph.tensors[n].nbytes(float_dtype) for n in kept_inputs),
        step_temporaries=temps,
        peak=peak,
        # The notes: activations and their gradients, parameters, their gradients and the caches.
        notes_rule=2 * activation_sum + int(params * width) * (2 + k),
        runtime=runtime.overhead if runtime else 0,
        runtime_name=runtime.name if runtime else "none",
    )
