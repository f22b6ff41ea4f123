"""Serving memory as one analysis: how many sequences of a given context a GPU holds in its KV cache.

A server's GPU holds the weights (a tensor-parallel rank its share), the activations of its largest
forward pass (a prefill of its batched-token budget) and what its runtime takes for itself; the rest
is KV cache (``archcalc.analysis.serve.capacity``). Two accountings of the rest:
- ``vllm``: vLLM's own (``archcalc.analysis.serve.vllm``), over the sizes read from the graph
  (``archcalc.analysis.serve.sizes``), so a config, a design and an export of one decoder agree;
- ``plain``: the GPU's total less the weights, the graph's own activation peak at the prefill
  budget (archcalc's liveness model) and the runtime's constant.
"""

from __future__ import annotations

from dataclasses import dataclass

from archcalc.analysis.estimate import Estimate, analyse
from archcalc.analysis.gpus import GPU
from archcalc.analysis.kv_cache import KVCache
from archcalc.analysis.memory import terms
from archcalc.analysis.memory.runtimes import runtime as runtime_named
from archcalc.analysis.patterns import NORMS
from archcalc.analysis.serve import vllm
from archcalc.analysis.serve.capacity import Capacity, kv_capacity
from archcalc.analysis.serve.sizes import DecoderSizes, decoder_sizes, kv_heads
from archcalc.errors import InputError
from archcalc.ir import Graph, Role

RUNTIMES = ("vllm", "plain")


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


@dataclass(frozen=True)
class ServeResult:
    """A serving verdict: the setup, what a rank holds besides the cache, and the cache's room."""

    setup: ServeSetup
    terms: dict[str, int]  # what the rest of the GPU holds, per rank
    cache: Capacity
    sizes: DecoderSizes | None  # the decoder's sizes as vLLM's accounting read them (None: plain)
    notes: tuple[str, ...] = ()  # what the graph could not say, and how it was counted

    @property
    def fits(self) -> bool:
        """One sequence of the context fits, or (with ``sequences`` asked) each has some context."""
        return self.cache.concurrency >= 1 if self.cache.longest is None else bool(self.cache.longest)


def serve(graph: Graph, gpu: GPU, context: int, *, dims: dict[str, int] | None = None, tp: int = 1,
          sequences: int | None = None, kv_dtype: str = "auto", runtime: str = "vllm", engine: str = "v1",
          utilization: float | None = None, block_size: int | None = None, batched_tokens: int | None = None,
          max_seqs: int | None = None, non_torch: int | None = None) -> ServeResult:
    """How many sequences of ``context`` tokens ``gpu`` serves, each of ``tp`` ranks holding its
    share. ``dims`` binds the graph's symbolic dims besides ``sequence`` (the prefill budget)."""
    _check(kv_dtype, runtime, engine)
    default_tokens, default_seqs = vllm.default_budget(engine, gpu, context)
    tokens, seqs = batched_tokens or default_tokens, max_seqs or default_seqs
    est = analyse(graph, *_binding(graph, dims, tokens, context))
    kv = est.kv_cache(vllm.KV_CACHE_DTYPES[kv_dtype])
    if kv is None:
        raise InputError(f"{graph.source}: no attention layers found, so no KV cache to size: serving "
                         "memory is for decoders")
    setup = ServeSetup(graph.source, gpu.name, gpu.capacity, context, tp, runtime, engine, tokens, seqs, kv)
    if runtime == "plain":
        held, sizes, notes = _plain(est, tp, non_torch), None, ()
        heads = kv_heads(est.graph, est.results, 1) if tp > 1 else 0
    else:
        held, sizes, notes = _vllm(est, engine, tokens, min(seqs, tokens), tp, non_torch)
        heads = sizes.attentions[0].heads
    _tp_divides(graph.source, tp, heads, sizes, kv.latent)
    cache = kv_capacity(kv, sum(held.values()), gpu.capacity, context=context, tp=tp, kv_heads=heads,
                        block_size=block_size or vllm.block_size(gpu, kv), engine=engine, batched_tokens=tokens,
                        utilization=vllm.UTILIZATION[runtime] if utilization is None else utilization,
                        sequences=sequences)
    return ServeResult(setup, held, cache, sizes, notes)


def _tp_divides(source: str, tp: int, kv_heads: int, sizes: DecoderSizes | None, latent: bool) -> None:
    """vLLM's own checks on the split: the query heads divide over the ranks, and the KV heads do, or
    each is replicated over a whole number of ranks (vllm/config ``verify_with_parallel_config``;
    ``QKVParallelLinear``)."""
    if tp == 1:
        return
    for a in sizes.attentions if sizes and not latent else ():
        heads = a.out // a.head_dim if a.head_dim else 0
        if heads and heads % tp:
            raise InputError(f"{source}: --tp {tp}: its {heads} attention heads do not divide over {tp} ranks; "
                             f"choose a --tp that divides {heads}")
    if kv_heads and not latent and (kv_heads % tp if kv_heads >= tp else tp % kv_heads):
        raise InputError(f"{source}: --tp {tp}: its {kv_heads} key/value heads neither divide over {tp} ranks nor "
                         "replicate evenly on them; choose a --tp that divides, or is a multiple of, the KV heads")


def _check(kv_dtype: str, runtime: str, engine: str) -> None:
    if kv_dtype not in vllm.KV_CACHE_DTYPES:
        raise InputError(f"--kv-dtype {kv_dtype}: choose {', '.join(vllm.KV_CACHE_DTYPES)}")
    if runtime not in RUNTIMES:
        raise InputError(f"--serve-runtime {runtime}: choose {' or '.join(RUNTIMES)}")
    if engine not in vllm.ENGINES:
        raise InputError(f"--engine {engine}: choose {' or '.join(vllm.ENGINES)}")


def _binding(graph: Graph, dims: dict[str, int] | None, tokens: int, context: int) -> tuple[int, dict | None]:
    """(batch, dims): the user's dims, and the prefill budget where the graph has a ``sequence`` dim,
    as sequences of at most ``context`` tokens: the requests a server runs are no longer than its
    max_model_len (vLLM's profile run spreads its tokens over many short ones, vllm/v1/worker/
    gpu_model_runner.py ``_dummy_run``), and no longer than a learned position table."""
    named = {d for n in graph.inputs for d in (graph.tensors[n].shape or ()) if isinstance(d, str)}
    if "sequence" not in named:
        return 1, dims or None
    length = (dims or {}).get("sequence", min(tokens, context))  # a request's length the user bound, else this
    return max(tokens // length, 1), {"sequence": length} | (dims or {})


def rank_weights(est: Estimate, tp: int) -> int:
    """The weights one of ``tp`` ranks holds: the normalizations' whole (vLLM splits the products'
    matrices and the vocabulary, and replicates the norms), the rest split."""
    shaped = est.graph
    names = {n for r in est.results if r.layer.op_type in NORMS for n in r.layer.inputs[1:] if n}
    replicated = sum(shaped.tensors[n].nbytes() for n in names if shaped.tensors[n].role == Role.WEIGHT)
    return replicated + (est.totals.param_bytes - replicated) // tp


def _plain(est: Estimate, tp: int, non_torch: int | None) -> dict[str, int]:
    return {terms.WEIGHTS: rank_weights(est, tp), terms.ACTIVATION_PEAK: est.peak_activation_bytes,
            terms.NON_TORCH: runtime_named("pytorch-cuda", non_torch).overhead}


def _vllm(est: Estimate, engine: str, tokens: int, seqs: int, tp: int, non_torch: int | None):
    """vLLM's terms, the sizes they were read from, and what the graph did not say."""
    sizes = decoder_sizes(est.graph, est.results, est.batch)
    if sizes.vocab is None:
        raise InputError(f"{est.graph.source}: no LM head found (no product writes an output as wide as the "
                         "token embedding): vLLM's profile run samples a decoder's logits; use "
                         "--serve-runtime plain")
    notes = () if sizes.rotary_bytes is not None else (
        "the rotary cos/sin table vLLM keeps beside the weights is not in this graph: not counted",)
    held = {terms.WEIGHTS: rank_weights(est, tp) + (sizes.rotary_bytes or 0),
            terms.ACTIVATION_PEAK: vllm.profile_peak(sizes, tokens, seqs, tp, engine),
            terms.NON_TORCH: vllm.NON_TORCH[engine] if non_torch is None else non_torch}
    return held, sizes, notes
