"""A serving verdict (``archcalc fit --mode serve``): what the GPU holds besides the KV cache, the
cache's blocks and tokens, and how many sequences of the context fit -- as text or JSON."""

from __future__ import annotations

import json

from archcalc import units
from archcalc.render.text import kv_what


def render_serve(result, fmt: str) -> str:
    """``result`` (a ``ServeResult``) as text or as JSON (docs/json.md, ``archcalc.serve/1``)."""
    setup, cache, kv = result.setup, result.cache, result.setup.kv
    if fmt == "json":
        return _json(result)
    how = f"vLLM {setup.engine}'s accounting" if setup.runtime == "vllm" else "archcalc's own accounting"
    lines = [
        f"serving {setup.source} on {setup.gpu} ({units.nbytes(setup.capacity)})"
        + (f" x {setup.tp} (tensor parallel)" if setup.tp > 1 else "") + f", {how}",
        f"KV cache per token: {kv.bytes_per_token:,} B ({kv_what(kv)})"
        + (f", priced as {kv.dtype}" if kv.dtype else ""),
        "per GPU: " + ", ".join(f"{k} {units.nbytes(v)}" for k, v in result.terms.items())
        + (f" (profile run: {setup.batched_tokens:,} batched tokens over up to {setup.max_seqs:,} sequences)"
           if setup.runtime == "vllm" else f" (prefill of {setup.batched_tokens:,} tokens)"),
        f"available KV cache memory: {units.nbytes(cache.available)}" if cache.available >= 0 else
        f"available KV cache memory: none (the terms above need {units.nbytes(-cache.available)} more than the "
        "GPU's usable memory)",
    ] + [f"note: {note}" for note in result.notes]
    if cache.available <= 0 or not cache.blocks:
        lines.append("does NOT fit: nothing is left for the KV cache")
        return "\n".join(lines) + "\n"
    lines += [
        f"KV cache blocks: {cache.blocks:,} of {cache.block_size} tokens ({units.nbytes(cache.page)} a layer's "
        "block)",
        f"KV cache size: {cache.tokens:,} tokens",
        f"maximum concurrency for {setup.context:,} tokens per request: {cache.concurrency:.2f}x"
        f" ({cache.blocks_per_sequence:,} blocks a sequence)",
    ]
    if cache.longest is not None:
        lines.append(f"longest context for the sequences given: {cache.longest:,} tokens")
    return "\n".join(lines) + "\n"


def _json(result) -> str:
    """The JSON contract (docs/json.md, ``archcalc.serve/1``): no size negative, a shortfall apart."""
    setup, cache, kv = result.setup, result.cache, result.setup.kv
    return json.dumps({
        "schema": "archcalc.serve/1", "model": setup.source, "gpu": setup.gpu, "capacity": setup.capacity,
        "context": setup.context, "tensor_parallel": setup.tp, "runtime": setup.runtime,
        "engine": setup.engine if setup.runtime == "vllm" else None,
        "max_num_batched_tokens": setup.batched_tokens, "max_num_seqs": setup.max_seqs,
        "kv_bytes_per_token": kv.bytes_per_token, "kv_dtype": kv.dtype, "terms": result.terms,
        "available_kv_cache": max(0, cache.available), "shortfall": max(0, -cache.available),
        "block_size": cache.block_size, "page_bytes": cache.page,
        "blocks": cache.blocks, "tokens": cache.tokens, "blocks_per_sequence": cache.blocks_per_sequence,
        "max_concurrency": cache.concurrency, "longest_context": cache.longest,
    } | ({"notes": list(result.notes)} if result.notes else {}), indent=1) + "\n"
