"""How many sequences a GPU's KV cache holds: the room left, cut into paged blocks.

The cache is allocated in blocks of ``block_size`` tokens (vLLM's paged attention: one block a
layer holds ``block_size`` tokens' keys and values). A sequence of ``context`` tokens takes
``ceil(context / block_size)`` blocks in each layer -- fewer in a sliding-window layer, which keeps
only its window. Blocks ``= available // page // layers`` where a page is one layer's block, the
minimum over tensor-parallel ranks; tokens ``= blocks x block_size`` (with sliding-window and full
layers mixed, the hybrid allocator's groups share the blocks: ``blocks // groups x block_size``);
the largest concurrency ``= blocks / blocks a request of max_model_len needs``
(``vllm/v1/core/kv_cache_utils.py`` ``get_max_concurrency_for_kv_cache_config``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from archcalc.analysis.kv_cache import KVCache


@dataclass(frozen=True)
class Groups:
    """vLLM's KV cache groups: layers of one kind (full, or a window) chunked into groups of
    ``size`` layers that share one pool of blocks."""

    size: int
    kinds: tuple[int | None, ...]  # each group's window (None: full attention)


def groups(windows: list[int | None], engine: str) -> Groups:
    """V1's hybrid allocator groups the layers by window; V0 keeps every layer's whole context."""
    if engine == "v0" or len(set(windows)) == 1:
        kind = windows[0] if engine != "v0" else None
        return Groups(len(windows), (kind,))
    counts = {w: windows.count(w) for w in dict.fromkeys(windows)}
    size = min(counts.values())
    return Groups(size, tuple(w for w, n in counts.items() for _ in range(math.ceil(n / size))))


@dataclass(frozen=True)
class Capacity:
    available: int  # bytes left for the KV cache on the tightest rank
    page: int  # bytes of one layer's block on one rank
    blocks: int
    tokens: int  # token capacity as vLLM reports it ("GPU KV cache size")
    blocks_per_sequence: int  # blocks a sequence of ``context`` takes
    concurrency: float  # sequences of ``context`` at once
    longest: int | None  # with ``sequences`` given: the longest context each may have
    block_size: int


def kv_capacity(kv: KVCache, taken: int, capacity: int, *, context: int, tp: int = 1, kv_heads: int = 1,
                block_size: int = 16, utilization: float = 0.9, engine: str = "v1", batched_tokens: int = 8192,
                sequences: int | None = None) -> Capacity:
    """The KV cache a GPU (one tensor-parallel rank of ``tp``) holds once ``taken`` bytes (weights,
    activations, runtime) are taken from ``capacity x utilization``. ``kv_heads`` split over the
    ranks (a rank holds at least one); a latent cache is whole on every rank."""
    share = 1.0 if kv.latent or not kv_heads else max(1, kv_heads // tp) / kv_heads
    page = max(math.ceil(layer.bytes_per_token * share) for layer in kv.layers) * block_size
    available = int(capacity * utilization) - taken
    g = groups([layer.window for layer in kv.layers], engine)
    blocks = max(0, available) // page // g.size

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
    return Capacity(available, page, blocks, blocks // len(g.kinds) * block_size, need, blocks / need, longest,
                    block_size)
