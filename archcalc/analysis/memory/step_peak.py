"""The peak of one training step, by walking its three phases over the execution order.

Forward: the persistent tensors, every saved storage made so far (kept for backward), and the
unsaved activations alive by liveness. Backward, layer by layer in reverse: saved storages still
needed by a layer not yet differentiated, the parameter gradients made so far (each allocated when
the last layer that reads its parameter is differentiated), and the activation gradients in flight
(a tensor's gradient lives from its last reader's backward to its producer's). Optimizer step: all
gradients at once, plus the optimizer's own temporaries. The step's peak is the largest of the three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from archcalc.analysis.memory.liveness import RUNTIME_ROLES, buffer_owners, buffers
from archcalc.analysis.memory.loss import loss_moments
from archcalc.analysis.walk.infer import LayerResult
from archcalc.analysis.walk.results import derived, last_readers, ran
from archcalc.ir import Shaped


@dataclass(frozen=True)
class StepPeak:
    bytes: int
    phase: str  # "forward", "backward", "optimizer step"
    layer: str


def saved_tensors(res: LayerResult) -> list[str]:
    """The tensors one layer keeps for its backward, by its rule's saves_inputs and saves_outputs."""
    names = [res.layer.inputs[k] for k in res.out.saves_inputs if k < len(res.layer.inputs)]
    return names + [res.layer.outputs[k] for k in res.out.saves_outputs if k < len(res.layer.outputs)]


def saved_names(results: list[LayerResult]) -> frozenset[str]:
    """Every tensor some layer keeps for its backward."""
    return frozenset(n for res in results if not res.folded for n in saved_tensors(res) if n)


def training_owners(graph: Shaped, results: list[LayerResult], float_dtype: str | None) -> dict[str, str]:
    """Buffer owners in training: in place only where the overwritten tensor is not saved for backward
    (a ReLU after BatchNorm shares its buffer; a ReLU6, which keeps its input, cannot); an output made
    by a view is a view, as PyTorch returns it."""
    return derived(graph, results, ("training owners", float_dtype), lambda: buffer_owners(
        graph, results, inplace=True, float_dtype=float_dtype, keep=saved_names(results), output_views=True))


DEVICES = ("cuda", "cpu")


def saved_extra_bytes(graph: Shaped, res: LayerResult, float_dtype: str | None, device: str) -> int:
    """What a layer saves beyond its inputs and outputs: its rule's extra bytes and, for a dropout, the
    keep-mask. PyTorch 2.14's dropout (aten/src/ATen/native/Dropout.cpp) runs the fused native_dropout,
    which keeps a bool mask, only on CUDA (is_fused_kernel_acceptable); on the CPU it runs the composite
    _dropout_impl: noise = at::empty_like(input), bernoulli_, div_, then input * noise, whose backward
    (MulBackward0) keeps the noise, a tensor of the input's dtype (measured with saved_tensors_hooks:
    4 bytes per element for float32 on the CPU)."""
    size = res.out.saves_extra_bytes
    if res.out.saves_mask and res.layer.inputs and res.layer.inputs[0]:
        x = graph.tensors[res.layer.inputs[0]]
        size += x.nbytes(float_dtype) if device == "cpu" else x.numel
    return size


def _saved_storages(graph, results, owner, float_dtype, device) -> tuple[dict[str, list[int]], list[int]]:
    """Saved storage -> the layers that save it, in order; and each layer's own saved extra bytes."""
    savers: dict[str, list[int]] = {}
    extra = [0] * len(results)
    for i in ran(graph, results):
        res = results[i]
        for name in saved_tensors(res):
            t = graph.tensors.get(name) if name else None
            if t is not None and t.role in RUNTIME_ROLES and owner.get(name, name) not in graph.inputs:
                layers = savers.setdefault(owner.get(name, name), [])
                if not layers or layers[-1] != i:
                    layers.append(i)
        extra[i] = saved_extra_bytes(graph, res, float_dtype, device)
    return savers, extra


def gradient_spans(graph: Shaped, results: list[LayerResult]) -> list[tuple[str, int, int]]:
    """(tensor, producer, last reader) of every activation gradient; views' gradients are views."""
    last = last_readers(graph, results)
    spans = []
    for i in ran(graph, results):
        res = results[i]
        if res.out.alias:
            continue
        for name in res.layer.outputs:
            t = graph.tensors.get(name) if name else None
            if t is not None and t.role in RUNTIME_ROLES:
                spans.append((name, i, last.get(name, len(results) - 1)))
    return spans


def _gradient_spans(graph, results, float_dtype) -> list[tuple[int, int, int]]:
    """(producer, last reader, bytes) of every activation gradient."""
    return [(i, end, graph.tensors[name].nbytes(float_dtype)) for name, i, end in gradient_spans(graph, results)]


@dataclass(frozen=True)
class StepProfile:
    """What one training step holds besides the persistent tensors, layer by layer in execution
    order: the one account the single-GPU peak and every multi-GPU plan read (a plan changes what is
    persistent, how much of each gradient stays, and which saved tensors are kept).

    ``forward[i]``: activations alive while layer i runs forward (saved storages made so far included);
    ``saved[i]``: saved state still needed when layer i is differentiated; ``grads[i]``: activation
    gradients alive then; ``param_grads[i]``: parameter-gradient bytes made at layer i's backward;
    ``saved_first[i]``: saved bytes layer i is the first to keep (``saved`` is their running sum);
    ``loss[i]``: what the loss taken over layer i's output adds to its forward moment (in ``forward``;
    see ``memory.loss``)."""

    names: list[str]
    forward: np.ndarray
    saved: np.ndarray
    grads: np.ndarray
    param_grads: np.ndarray
    saved_first: np.ndarray
    active: np.ndarray  # False for folded layers, which have no backward
    storages: dict[str, tuple[int, int]]  # each saved storage: (the first layer to keep it, its bytes)
    extra: np.ndarray  # each layer's own saved bytes beyond its inputs and outputs (a dropout's mask)
    savers: dict[str, tuple[int, ...]]  # each saved storage: every layer that keeps it
    loss: np.ndarray

    def backward_param_grads(self) -> np.ndarray:
        """Parameter-gradient bytes alive at each layer's backward: made there or later in the order."""
        return np.cumsum(self.param_grads[::-1])[::-1]

    def peak(self, persistent: int, all_grads: int, step_temporaries: int) -> StepPeak:
        """The step's peak with these persistent tensors and gradients (see ``step_peak``)."""
        best = StepPeak(0, "forward", "")
        if len(self.names):
            i = int(np.argmax(self.forward))
            best = StepPeak(persistent + int(self.forward[i]), "forward", self.names[i])
            back = np.where(self.active, self.saved + self.grads + self.backward_param_grads(), -1)
            j = int(len(back) - 1 - np.argmax(back[::-1]))  # the first reached going backward
            if persistent + int(back[j]) > best.bytes:
                best = StepPeak(persistent + int(back[j]), "backward", self.names[j])
        if persistent + all_grads + step_temporaries > best.bytes:
            best = StepPeak(persistent + all_grads + step_temporaries, "optimizer step", "")
        return best


def _exact(*sums: int) -> Any:
    """Exact integers: int64 while every sum fits in it (any model at a batch a GPU holds); Python's
    own integers beyond (the batch search reaches 2**40), where int64 would wrap round silently."""
    return np.int64 if 2 * sum(sums) < 2**62 else object


def step_profile(graph: Shaped, results: list[LayerResult], float_dtype: str | None, grad_at: dict[int, int],
                 device: str = "cuda") -> StepProfile:
    """The step's per-layer account. ``grad_at``: parameter-gradient bytes allocated at each layer's
    backward; ``device``: whose kernels (see ``saved_extra_bytes``)."""
    n = len(results)
    owner = training_owners(graph, results, float_dtype)
    savers, extra = _saved_storages(graph, results, owner, float_dtype, device)
    saved_first = {st: layers[0] for st, layers in savers.items()}
    bufs = buffers(graph, results, float_dtype, owner=owner)
    spans = _gradient_spans(graph, results, float_dtype)
    losses = loss_moments(graph, results, float_dtype)
    dtype = _exact(sum(b.nbytes for b in bufs), sum(x for _, _, x in spans), sum(extra), sum(grad_at.values()),
                   sum(losses.values()))

    fwd = np.zeros(n + 1, dtype=dtype)
    for b in bufs:
        end = n - 1 if b.tensor in saved_first else b.end  # saved storages outlive the forward
        fwd[b.start] += b.nbytes
        fwd[end + 1] -= b.nbytes
    own = np.asarray(extra, dtype=dtype)
    loss = np.zeros(n, dtype=dtype)
    for i, size in losses.items():
        loss[i] += size
    forward = np.cumsum(fwd[:n]) + np.cumsum(own) + loss

    first = own.copy()  # bytes of saved state first kept at layer i
    for storage, i in saved_first.items():
        first[i] += graph.tensors[storage].nbytes(float_dtype)
    grads = np.zeros(n + 2, dtype=dtype)  # activation gradients alive at layer i's backward
    for start, end, size in spans:
        grads[start] += size
        grads[end + 1] -= size
    param_grads = np.zeros(n, dtype=dtype)
    for i, size in grad_at.items():
        param_grads[i] += size
    storages = {name: (i, graph.tensors[name].nbytes(float_dtype)) for name, i in saved_first.items()}
    return StepProfile([r.layer.name for r in results], forward, np.cumsum(first), np.cumsum(grads[:n]),
                       param_grads, first, np.array([not r.folded for r in results], dtype=bool), storages, own,
                       {st: tuple(layers) for st, layers in savers.items()}, loss)


def step_peak(graph: Shaped, results: list[LayerResult], float_dtype: str | None, persistent: int,
              grad_at: dict[int, int], all_grads: int, step_temporaries: int, device: str = "cuda") -> StepPeak:
    """The step's peak. ``persistent``: weights, buffers, optimizer state, inputs; ``grad_at``:
    parameter-gradient bytes allocated at each layer's backward; ``device``: whose kernels (see
    ``saved_extra_bytes``)."""
    return step_profile(graph, results, float_dtype, grad_at, device).peak(persistent, all_grads, step_temporaries)
