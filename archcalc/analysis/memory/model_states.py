"""Model states, priced once: the bytes a training step keeps for what it trains, for one GPU
(``fit --mode train``) and for each rank of a multi-GPU plan.

Rajbhandari et al. 2020 ("ZeRO", section 3.1) call them model states: the parameters, their
gradients and the optimizer's state. PyTorch holds them as follows, per trained element:

- parameters and gradients in the training dtype (``param.grad`` is allocated like the parameter:
  torch/csrc/autograd/functions/accumulate_grad.h);
- the optimizer's state, ``slots`` tensors shaped and typed like the parameter
  (``torch.zeros_like(p, memory_format=torch.preserve_format)`` in each optimizer's ``_init_group``:
  Adam's ``exp_avg`` and ``exp_avg_sq``, AMSGrad's ``max_exp_avg_sq`` besides, SGD's
  ``momentum_buffer`` a clone of the gradient); the step count is a 0-d tensor on the host;
- under mixed precision (Micikevicius et al. 2018, as Megatron-LM and DeepSpeed train: 16-bit
  module, fp32 master copy stepped by an fp32 optimizer) an fp32 master weight and fp32 optimizer
  state besides: the ZeRO paper's 2 + 2 + K bytes a parameter, K = 12 for Adam.

Stored tensors that do not train (BatchNorm's running statistics) are cast with the module
(``Module.half()`` / ``.to(dtype)`` cast every floating-point parameter and buffer,
torch/nn/modules/module.py ``_apply``); integer ones keep their type.
"""

from __future__ import annotations

from dataclasses import dataclass

from archcalc.dtypes import DTYPE_BYTES, FLOAT_DTYPES
from archcalc.errors import InputError
from archcalc.ir import Shaped

FP32 = int(DTYPE_BYTES["float32"])  # master weights and optimizer state under mixed precision

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


def slots(optimizer: str) -> int:
    if optimizer not in OPTIMIZER_SLOTS:
        raise InputError(f"--optimizer {optimizer}: choose one of {', '.join(OPTIMIZER_SLOTS)}")
    return OPTIMIZER_SLOTS[optimizer]


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


def training_width(float_dtype: str | None) -> int:
    """Bytes an element of a parameter, a gradient or an activation (fp32 unless ``--dtype`` says)."""
    return int(DTYPE_BYTES[float_dtype or "float32"])


@dataclass(frozen=True)
class Precision:
    """How the engine stores what it trains: ``width`` bytes an element for parameters and their
    gradients; with ``mixed``, fp32 master weights and optimizer state beside them. Each method
    prices ``elements`` trained elements (all of them, or one rank's share)."""

    width: int
    mixed: bool
    optimizer: str
    impl: str  # "foreach" or "single" (see step_temporaries)

    @property
    def state_width(self) -> int:
        """Bytes an element of master weights and optimizer state."""
        return FP32 if self.mixed else self.width

    def parameters(self, elements: int) -> int:
        return elements * self.width

    gradients = parameters

    def master_weights(self, elements: int) -> int:
        return elements * FP32 if self.mixed else 0

    def optimizer_state(self, elements: int) -> int:
        return slots(self.optimizer) * elements * self.state_width

    def temporaries(self, elements: int, largest: int) -> int:
        """The optimizer's temporaries stepping ``elements`` whose largest tensor is ``largest``."""
        return step_temporaries(self.optimizer, self.impl, elements * self.state_width, largest * self.state_width)

    def per_element(self) -> int:
        """Model-state bytes a trained element: the ZeRO paper's 2 + 2 + K under mixed Adam."""
        return self.parameters(1) + self.gradients(1) + self.master_weights(1) + self.optimizer_state(1)


def precision(float_dtype: str | None, mixed: bool, optimizer: str, impl: str) -> Precision:
    slots(optimizer)  # an unknown optimizer is refused here, before anything is priced
    return Precision(training_width(float_dtype), mixed, optimizer, impl)


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

    def elements(self, graph: Shaped) -> int:
        return sum(graph.tensors[n].numel for n in self.reader)

    def largest(self, graph: Shaped) -> int:
        return max((graph.tensors[n].numel for n in self.reader), default=0)

    def buffer_bytes(self, graph: Shaped, float_dtype: str | None, start: int = 0, stop: int | None = None) -> int:
        """Bytes of the untrained stored tensors read by layers ``start`` .. ``stop - 1``, cast with
        the module (floating-point ones at ``float_dtype``, the rest as they are)."""
        return sum(graph.tensors[n].nbytes(float_dtype) for n, i in self.buffers.items()
                   if start <= i and (stop is None or i < stop))


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


@dataclass(frozen=True)
class ModelStates:
    """One GPU's model states, in bytes: the trained ``parameters`` and the stored ``buffers`` beside
    them (together the ``weights``); the optimizer's ``temporaries`` exist only while it steps."""

    parameters: int
    buffers: int
    master_weights: int
    gradients: int
    optimizer_state: int
    temporaries: int

    @property
    def weights(self) -> int:
        return self.parameters + self.buffers

    @property
    def persistent(self) -> int:
        """What is held from step to step."""
        return self.weights + self.master_weights + self.optimizer_state


def model_states(graph: Shaped, trained: Trainable, prec: Precision, float_dtype: str | None) -> ModelStates:
    """The whole model's states on one GPU (a plan prices a rank's share with ``prec`` alike)."""
    n = trained.elements(graph)
    return ModelStates(prec.parameters(n), trained.buffer_bytes(graph, float_dtype), prec.master_weights(n),
                       prec.gradients(n), prec.optimizer_state(n), prec.temporaries(n, trained.largest(graph)))
