"""vLLM's accounting of a GPU's memory before it sizes the KV cache, and its defaults.

vLLM (``vllm/v1/worker/gpu_worker.py`` ``determine_available_memory``) profiles one forward pass of
``max_num_batched_tokens`` tokens over up to ``max_num_seqs`` sequences, then gives the KV cache
``total x gpu_memory_utilization - weights - activation peak of the profile run - non-torch
memory``. The profile run's activation peak is modelled here from vLLM's fused kernels over the
sizes the graph gives (``archcalc.analysis.serve.sizes``); the weights are the graph's plus the
rotary table vLLM precomputes beside them.
"""

from __future__ import annotations

from archcalc.analysis.gpus import GPU, GiB
from archcalc.analysis.kv_cache import KVCache
from archcalc.analysis.serve.sizes import DecoderSizes, FeedForward

ENGINES = ("v1", "v0")
# vllm/config/cache.py: CacheConfig.gpu_memory_utilization's default; the plain accounting takes it all.
UTILIZATION = {"vllm": 0.9, "plain": 1.0}
# vLLM's --kv-cache-dtype names (and archcalc's own short ones) -> the element type priced.
KV_CACHE_DTYPES = {"auto": None, "fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "fp8": "float8e4m3fn",
                   "fp8_e4m3": "float8e4m3fn", "fp8_e5m2": "float8e5m2", "int8": "int8"}
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
# vllm/platforms/cuda.py: latent attention runs FlashMLA where it is supported -- Hopper alone
# (vllm/attention/ops/flashmla.py: compute capability 9.x) -- and forces blocks of 64 tokens for it.
FLASHMLA_BLOCK, FLASHMLA_ARCHS, BLOCK = 64, ("hopper",), 16


def feed_forward_width(ff: FeedForward) -> int:
    """Per token, what a layer's feed-forward holds live at its widest under vLLM's fused kernels: a
    dense MLP's gate/up output and its activation; each routed copy (top-k a token) of an expert's
    gate/up output, activation and output, with the router's logits."""
    dense = sum(m.up + m.inner for m in ff.mlps)
    return dense + sum(e.top_k * (e.up + e.inner + e.hidden) + e.experts for e in ff.experts)


def profile_peak(d: DecoderSizes, tokens: int, seqs: int, tp: int, engine: str = "v1") -> int:
    """vLLM's activation peak: the larger of one decoder layer over ``tokens`` (the residual,
    the normed input and the layer's output alongside the wider of attention's projections and
    the feed-forward's intermediates, both split over ``tp`` ranks) and the sampler over ``seqs``
    last tokens."""
    b = d.dtype_bytes
    attention = max(a.qkv + a.out for a in d.attentions)
    widest = max([attention, *(feed_forward_width(ff) for ff in d.feed_forwards)])
    layer = tokens * b * (3 * d.hidden + widest // tp)
    sampler = tokens * d.hidden * b + seqs * (d.vocab or 0) * SAMPLER_BYTES_PER_LOGIT[engine]
    return max(layer, sampler)


def default_budget(engine: str, gpu: GPU, context: int) -> tuple[int, int]:
    """vLLM's default (max_num_batched_tokens, max_num_seqs) for ``vllm serve``: V1 since v0.9
    (``vllm/engine/arg_utils.py`` ``_set_default_args``: 8192 / 1024 on a card of 70 GiB or more
    whose name does not say A100 -- vLLM's own test, by name -- else 2048 / 256); V0 without chunked
    prefill profiles max(max_model_len, 2048) tokens over 256 sequences."""
    if engine == "v0":
        return max(context, 2048), 256
    big = gpu.capacity >= 70 * GiB and "a100" not in gpu.name.lower()
    return (8192, 1024) if big else (2048, 256)


def block_size(gpu: GPU, kv: KVCache) -> int:
    """Tokens a KV block holds by default: FlashMLA's 64 for a latent cache on the GPUs it runs on."""
    return FLASHMLA_BLOCK if kv.latent and gpu.arch in FLASHMLA_ARCHS else BLOCK
