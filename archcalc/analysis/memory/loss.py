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


def cross_entropy_extra(elements: int, width: int, kind: str = CROSS_ENTROPY) -> int:
    """Bytes the upcast cross-entropy adds, at its largest moment, to a moment that holds the logits
    (``elements`` of ``width`` bytes each) and every saved tensor."""
    upcast = FLOAT32 if width < FLOAT32 else 0
    if kind == VOCAB_PARALLEL:
        forward = upcast + 2 * FLOAT32  # the float copy, the shifted logits and their exp
        backward = 4 * FLOAT32 - width  # saved log-probabilities, zeros, exp and their sum
    else:
        forward = upcast + FLOAT32  # the float copy and the log-probabilities beside the logits
        backward = 3 * FLOAT32 - width  # saved log-probabilities and two float gradients; the logits freed
    return elements * max(forward, backward)


def loss_moments(graph: Shaped, results: list[LayerResult], float_dtype: str | None) -> dict[int, int]:
    """Layer position -> bytes its loss adds to that layer's forward moment, for every layer whose
    output a training step takes a loss over (the front ends mark a language model's head with
    ``LOSS_KEY``; a graph without a mark trains on its outputs' gradients alone)."""
    out: dict[int, int] = {}
    for i in ran(graph, results):
        layer = results[i].layer
        kind = layer.meta.get(LOSS_KEY)
        if kind not in KINDS:
            continue
        logits = graph.tensors[layer.outputs[0]]
        width = logits.nbytes(float_dtype) // max(logits.numel, 1)
        out[i] = out.get(i, 0) + cross_entropy_extra(logits.numel, width, kind)
    return out
