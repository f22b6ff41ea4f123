"""Serving memory: how many sequences of a given context a GPU holds in its KV cache.

A server's GPU holds the weights, the activations of its largest forward pass (a prefill of its
batched-token budget) and what its runtime takes for itself; the rest is KV cache, allocated in
blocks of ``block_size`` tokens (vLLM's paged attention: one block a layer holds ``block_size``
tokens' keys and values). A sequence of ``context`` tokens takes ``ceil(context / block_size)``
blocks in each layer -- fewer in a sliding-window layer, which keeps only its window.

Two accountings:
- ``vllm``: vLLM's own (``vllm/v1/worker/gpu_worker.py`` ``determine_available_memory``):
  ``total x gpu_memory_utilization - weights - activation peak of the profile run - non-torch
  memory``; blocks ``= available // page // layers`` where a page is one layer's block, the minimum
  over tensor-parallel ranks; tokens ``= blocks x block_size`` (with sliding-window and full layers
  mixed, the hybrid allocator's groups share the blocks: ``blocks // groups x block_size``); the
  largest concurrency ``= blocks / blocks a request of max_model_len needs``
  (``get_max_concurrency_for_kv_cache_config``). The profile run's activation peak is modelled
  from vLLM's fused kernels (``profile_peak``); the KV bytes per token are the graph's.
- ``plain``: the GPU's total less the weights, the graph's own activation peak at the prefill
  budget (archcalc's liveness model) and the runtime's constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from archcalc.analysis.gpus import GiB
from archcalc.analysis.kv_cache import KVCache
from archcalc.analysis.patterns import NORMS
from archcalc.errors import InputError
from archcalc.ir import Role

ENGINES = ("v1", "v0")
# What vLLM's profile run sees besides the forward's activations, by engine: CUDA and NCCL memory
# outside torch's allocator. From vLLM's own logs: V1 on an 80 GB card, 0.07 GiB (llava-v1.6-mistral,
# v0.10.2); V0 on an RTX 3090, 0.35 GiB (Llama-3.1-8B). Override with --non-torch.
NON_TORCH = {"v1": int(0.07 * GiB), "v0": int(0.35 * GiB)}
# Bytes the dummy sampler run holds per logit of its [max_num_seqs, vocab] logits. V0: the logits
# in the model's dtype, their fp32 copy, probabilities, log-probabilities, top-k/top-p's sort (values
# and int64 indices) and temporaries -- calibrated on vLLM's log for Llama-3-8B (max_num_seqs 256,
# vocab 128,256: a 1.26 GiB activation peak at TP 1 and at TP 2, where the forward's share halves).
# V1 samples top-k/top-p with FlashInfer's kernels, no sort: the logits, their fp32 copy, the
# probabilities and one fp32 temporary (modelled, not calibrated: no V1 log found separates it).
SAMPLER_BYTES_PER_LOGIT = {"v0": 40, "v1": 16}

@dataclass(frozen=True)
class Decoder:
    """The sizes vLLM's profile run depends on (a config's)."""

    hidden: int
    qkv: int  # per token: the widths of Q, K and V together
    attn: int  # per token: attention's output before o_proj
    ffn: int  # per token: the MLP's live intermediates at their widest (gate_up and its activation)
    vocab: int
    dtype_bytes: int
    kv_heads: int  # 0: latent attention, one cache head on every rank
    rotary_bytes: int  # the rotary embedding's cos/sin table, which vLLM keeps with the weights

def profile_peak(d: Decoder, tokens: int, seqs: int, tp: int, engine: str = "v1") -> int:
    """vLLM's activation peak: the larger of one decoder layer over ``tokens`` (the residual,
    the normed input and the layer's output alongside the wider of attention's projections and
    the MLP's fused gate_up with its activation) and the sampler over ``seqs`` last tokens."""
    b = d.dtype_bytes
    layer = tokens * b * (3 * d.hidden + max(d.qkv + d.attn, d.ffn) // tp)
    sampler = tokens * d.hidden * b + seqs * d.vocab * SAMPLER_BYTES_PER_LOGIT[engine]
    return max(layer, sampler)

def default_budget(engine: str, capacity: int, gpu_name: str, context: int) -> tuple[int, int]:
    """vLLM's default (max_num_batched_tokens, max_num_seqs) for ``vllm serve``: V1 since v0.9
    (EngineArgs' defaults: 8192 / 1024 on a card of 70 GiB or more that is not an A100, else 2048 /
    256); V0 without chunked prefill profiles max(max_model_len, 2048) tokens over 256 sequences."""
    if engine == "v0":
        return max(context, 2048), 256
    big = capacity >= 70 * GiB and "a100" not in gpu_name.lower()
    return (8192, 1024) if big else (2048, 256)

@dataclass(frozen=True)
class Groups:
    """vLLM's KV cache groups: layers of one kind (full, or a window) chunked into groups of
    ``size`` layers that share one pool of blocks."""

    size: int
    kinds: tuple[int | None, ...]  # each group's window (None: full attention)

def replicated_bytes(shaped, results) -> int:
    """Weights every tensor-parallel rank holds whole: the normalizations' (vLLM splits the
    products' matrices and the vocabulary, and replicates the norms)."""
    names = {n for r in results if r.layer.op_type in NORMS for n in r.layer.inputs[1:] if n}
    return sum(shaped.tensors[n].nbytes() for n in names if shaped.tensors[n].role == Role.WEIGHT)

def groups(windows: list[int | None], engine: str) -> Groups:
    if engine == "v0" or len(set(windows)) == 1:
        kind = windows[0] if engine != "v0" else None
        return Groups(len(windows), (kind,))
    counts = {w: windows.count(w) for w in dict.fromkeys(windows)}
    size = min(counts.values())
    return Groups(size, tuple(w for w, n in counts.items() for _ in range(math.ceil(n / size))))

@dataclass(frozen=True)
class ServeResult:
    available: int  # bytes left for the KV cache on the tightest rank
    terms: dict[str, int]  # what the rest of the GPU holds, per rank
    page: int  # bytes of one layer's block on one rank
    blocks: int
    tokens: int  # token capacity as vLLM reports it ("GPU KV cache size")
    blocks_per_sequence: int  # blocks a sequence of ``context`` takes
    concurrency: float  # sequences of ``context`` at once
    longest: int | None  # with ``sequences`` given: the longest context each may have
    block_size: int

def serve(kv: KVCache, weights: int, peak: int, capacity: int, *, context: int, tp: int = 1,
          kv_heads: int = 1, block_size: int = 16, utilization: float = 0.9, non_torch: int = 0,
          engine: str = "v1", batched_tokens: int = 8192, sequences: int | None = None) -> ServeResult:
    """The KV cache a GPU (one tensor-parallel rank of ``tp``) holds once ``weights`` (this rank's),
    the activation ``peak`` and ``non_torch`` are taken from ``capacity x utilization``."""
    if engine not in ENGINES:
        raise InputError(f"--engine {engine}: choose {' or '.join(ENGINES)}")
    share = 1.0 if kv.latent or not kv_heads else max(1, kv_heads // tp) / kv_heads
    page = max(math.ceil(layer.bytes_per_token * share) for layer in kv.layers) * block_size
    terms = {"weights": weights, "activation peak": peak, "non-torch": non_torch}
    available = int(capacity * utilization) - sum(terms.values())
    g = groups([layer.window for layer in kv.layers], engine)
    blocks = max(0, available) // page // g.size
    tokens = blocks // len(g.kinds) * block_size

    def per_request(length: int) -> int:
        need = 0
        for window in g.kinds:
            kept = length if window is None else min(window - 1 + batched_tokens, length)
            need += math.ceil(kept / block_size) + (window is not None)
        return need

    need = per_request(context)
    longest = None
    if sequences:  # the longest whole-block length whose requests all fit: per_request grows with it
        lo, hi = 0, blocks + 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if per_request(mid * block_size) * sequences <= blocks else (lo, mid)
        longest = lo * block_size
    return ServeResult(available, terms, page, blocks, tokens, need, blocks / need, longest, block_size)

@dataclass(frozen=True)
class ServeSetup:
    """What was served: the model, the GPU, the context and how the runtime was configured."""

    source: str
    gpu: str
    capacity: int
    context: int
    tp: int
    runtime: str
    engine: str
    batched_tokens: int
    max_seqs: int
    kv: KVCache
