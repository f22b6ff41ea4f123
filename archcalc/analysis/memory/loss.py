"""The training loss a language model's step computes over its logits: the token-level cross-entropy
as the engines write it, and what it holds beside the step's own tensors.

torchtitan (``torchtitan/components/loss.py``: ``F.cross_entropy(pred.float(), labels)``, the
prediction then deleted before ``loss.backward()``) and transformers' Trainer
(``loss/loss_utils.py`` ``ForCausalLMLoss``: ``logits = logits.float()`` before
``nn.functional.cross_entropy``; the outputs dropped when ``compute_loss`` returns) both upcast the
logits to float32 and call PyTorch's cross-entropy, which is ``log_softmax`` then ``nll_loss``
(``aten/src/ATen/native/LossNLL.cpp`` ``cross_entropy_loss_symint``). Per logit element, with the
logits ``w`` bytes wide:

- forward, while the loss runs: the logits (``w``), their float32 copy (4; none when ``w`` is 4:
  ``.float()`` returns the tensor itself) and ``log_softmax``'s float32 output (4), which its
  backward keeps (``LogSoftmaxBackward0`` saves ``result``);
- backward, as ``log_softmax``'s backward runs (the logits freed, the float copy too): its saved
  output, ``nll_loss``'s gradient (``zeros_like`` the log-probabilities) and ``log_softmax``'s
  gradient, 4 + 4 + 4; then only the gradient cast back to ``w`` bytes, which the step's own
  account already holds as the logits' gradient.

Split by the vocabulary over tensor-parallel ranks (``VOCAB_PARALLEL``: torchtitan's default,
``loss_parallel`` over logits sharded on their last dim), PyTorch's DTensor handlers compute it
(``torch/distributed/tensor/parallel/loss.py``): ``_log_softmax`` holds the shifted logits and
their ``exp`` before the result (4 + 4 beside the float copy), and the fused NLL and log-softmax
backward holds the saved result, ``zeros_like`` it, its ``exp`` and their sum (4 x 4), all over the
rank's share of the vocabulary.

Both moments fall between the head's forward and its backward, with every saved tensor of the step
alive: the loss adds ``max(forward, backward)`` to the head's forward moment, less the logits the
moment already holds. Checked against PyTorch's MemTracker on this CPU (tests/test_loss.py).
"""

from __future__ import annotations

from archcalc.analysis.walk.infer import LayerResult
from archcalc.analysis.walk.results import ran
from archcalc.ir import LOSS_KEY, Shaped

FLOAT32 = 4
CROSS_ENTROPY = "cross_entropy"
VOCAB_PARALLEL = "cross_entropy_vocab_parallel"
KINDS = (CROSS_ENTROPY, VOCAB_PARALLEL)


# The loss as a sequence of tensors made ("+", name, bytes an element; UPCAST: 4 when the logits are
# narrower, else none: ``.float()`` returns them) and freed ("-", name), per logit element: forward
# from the head's output ("logits", deleted after the loss as engines ``del pred``), backward from the
# saved log-probabilities to the logits' gradient ("dlogits", cast back to the logits' width).
UPCAST = "upcast"
LOGITS, GRAD = "logits", "dlogits"
FORWARD = {
    CROSS_ENTROPY: [("+", "float", UPCAST), ("+", "logp", FLOAT32), ("-", "float"), ("-", LOGITS)],
    VOCAB_PARALLEL: [("+", "float", UPCAST), ("+", "logp", FLOAT32), ("+", "exp", FLOAT32), ("-", "exp"),
                     ("-", "float"), ("-", LOGITS)],
}
BACKWARD = {
    CROSS_ENTROPY: [("+", "zeros", FLOAT32), ("+", "dfloat", FLOAT32), ("-", "zeros"), ("-", "logp"),
                    ("+", GRAD, UPCAST), ("-", "dfloat")],
    VOCAB_PARALLEL: [("+", "zeros", FLOAT32), ("+", "exp", FLOAT32), ("+", "dfloat", FLOAT32), ("-", "zeros"),
                     ("-", "exp"), ("-", "logp"), ("+", GRAD, UPCAST), ("-", "dfloat")],
}


def steps(kind: str, phase: str, width: int) -> list[tuple[str, str, int]]:
    """The loss's ``phase`` ("forward" or "backward") as (sign, tensor, bytes an element) at logits
    ``width`` bytes wide: an upcast is 4 bytes when the logits are narrower, else nothing (the float
    tensor, or the gradient cast back, is the logits' own)."""
    table: dict[str, list[tuple]] = FORWARD if phase == "forward" else BACKWARD
    out: list[tuple[str, str, int]] = []
    for step in table[kind]:
        size = step[2] if len(step) > 2 else 0
        if size == UPCAST:
            size = FLOAT32 if width < FLOAT32 else 0
            if phase == "backward" and size:
                size = width  # the float gradient cast back to the logits' width
        out.append((str(step[0]), str(step[1]), int(size)))
    return out


def _peak(sequence: list[tuple[str, str, int]], live: dict[str, int]) -> int:
    most = sum(live.values())
    for sign, name, size in sequence:
        if sign == "+":
            live[name] = size
        else:
            live.pop(name, None)
        most = max(most, sum(live.values()))
    return most


def cross_entropy_extra(elements: int, width: int, kind: str = CROSS_ENTROPY) -> int:
    """Bytes the upcast cross-entropy adds, at its largest moment (``FORWARD`` and ``BACKWARD``
    walked), to a moment that holds the logits (``elements`` of ``width`` bytes each) and every saved
    tensor: the backward's moment lies after the logits are freed, before their gradient is held."""
    forward = _peak(steps(kind, "forward", width), {LOGITS: width})
    backward = _peak([s for s in steps(kind, "backward", width) if s[1] != GRAD], {"logp": FLOAT32})
    return elements * (max(forward, backward) - width)


def loss_layers(graph: Shaped, results: list[LayerResult],
                float_dtype: str | None) -> dict[int, tuple[int, int, str]]:
    """Layer position -> (logit elements, bytes an element, kind) of every layer whose output a
    training step takes a loss over (the front ends mark a language model's head with ``LOSS_KEY``;
    a graph without a mark trains on its outputs' gradients alone)."""
    out = {}
    for i in ran(graph, results):
        layer = results[i].layer
        kind = layer.meta.get(LOSS_KEY)
        if kind in KINDS:
            logits = graph.tensors[layer.outputs[0]]
            out[i] = (logits.numel, logits.nbytes(float_dtype) // max(logits.numel, 1), kind)
    return out


def loss_moments(graph: Shaped, results: list[LayerResult], float_dtype: str | None) -> dict[int, int]:
    """Layer position -> bytes its loss adds to that layer's forward moment."""
    return {i: cross_entropy_extra(n, width, kind) for i, (n, width, kind) in
            loss_layers(graph, results, float_dtype).items()}
