"""PyTorch's CUDA caching allocator, replayed: what it reserves from the device for a sequence of
tensor allocations and frees, beside what the tensors themselves hold.

The rules are c10/cuda/CUDACachingAllocator.cpp's (PyTorch 2.5-2.14; the constants at the top of
that file):

- every request is rounded up to a multiple of 512 bytes (``round_size``, ``kMinBlockSize``);
- requests up to 1 MiB (``kSmallSize``) come from the small pool, the rest from the large pool; each
  pool is kept per stream, and a freed block is reused only by its own stream;
- a request takes the smallest cached free block of its pool and stream that holds it (best fit,
  the lower address on a tie: ``BlockComparatorSize``), else a new segment from the device:
  2 MiB for a small request (``kSmallBuffer``), 20 MiB for one under 10 MiB (``kLargeBuffer``,
  ``kMinLargeAlloc``), else the request rounded up to 2 MiB (``kRoundLarge``; ``get_allocation_size``);
- the block taken is split when what remains is at least 512 bytes (small pool) or more than 1 MiB
  (large pool; ``should_split``) -- otherwise the whole block is handed out and counted allocated;
- a freed block merges with free neighbours of its segment (``try_merge_blocks``);
- segments are never returned to the device while memory lasts (only on an out-of-memory retry or
  ``empty_cache``), so the reserved figure is the sum of segments ever made: its peak is its end.

With ``expandable_segments`` (``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``, which torchtitan's
launch scripts set) each pool and stream has one segment that grows at its end by 2 MiB pages (small
pool) or 20 MiB pages (large pool; Note [Expandable Segments] in the same file): a request no free
block holds maps what it needs beyond the free block at the segment's end, and any remainder of at
least 512 bytes is split off (``should_split``).

``allocated`` is PyTorch's ``allocated_bytes`` (blocks handed out, at their rounded or unsplit
size: ``torch.cuda.max_memory_allocated``), ``reserved`` its ``reserved_bytes``
(``torch.cuda.max_memory_reserved``, what torchtitan logs as memory).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

MIN_BLOCK = 512  # kMinBlockSize
SMALL_SIZE = 1 << 20  # kSmallSize: the largest small request
SMALL_BUFFER = 2 << 20  # kSmallBuffer: a small pool's segment (and its expandable page)
LARGE_BUFFER = 20 << 20  # kLargeBuffer: a segment for requests of 1-10 MiB (and the large expandable page)
MIN_LARGE_ALLOC = 10 << 20  # kMinLargeAlloc
ROUND_LARGE = 2 << 20  # kRoundLarge


def round_size(size: int) -> int:
    """A request's size as the allocator takes it (``round_size``, no power-of-two divisions)."""
    return MIN_BLOCK if size < MIN_BLOCK else -(-size // MIN_BLOCK) * MIN_BLOCK


def allocation_size(size: int) -> int:
    """The segment a rounded request asks the device for when no cached block holds it."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-size // ROUND_LARGE) * ROUND_LARGE


@dataclass(eq=False)
class _Block:
    addr: int
    size: int
    segment: int
    pool: tuple  # (stream, small)
    free: bool = True
    prev: _Block | None = None
    next: _Block | None = None


@dataclass
class CachingAllocator:
    """One device's allocator. ``malloc`` returns a handle for ``free``; ``allocated``, ``reserved``
    and their peaks are in bytes."""

    expandable_segments: bool = False
    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    _free: dict[tuple, list[tuple[int, int, _Block]]] = field(default_factory=dict, repr=False)
    _tails: dict[tuple, _Block] = field(default_factory=dict, repr=False)  # expandable: each pool's last block
    _next_addr: int = 0
    _segments: int = 0

    @property
    def peak_reserved(self) -> int:
        return self.reserved  # segments are never released (see the module's note)

    def malloc(self, size: int, stream: int = 0) -> _Block:
        size = round_size(size)
        pool = (stream, size <= SMALL_SIZE)
        block = self._take(pool, size) or self._grow(pool, size)
        if self._should_split(block, size):
            rest = _Block(block.addr + size, block.size - size, block.segment, pool, prev=block, next=block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next, block.size = rest, size
            self._cache(rest)
            if self._tails.get(pool) is block:
                self._tails[pool] = rest
        block.free = False
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return block

    def free(self, block: _Block) -> None:
        block.free = True
        self.allocated -= block.size
        for other in (block.prev, block.next):
            if other is not None and other.free:
                self._uncache(other)
                self._merge(block, other)
        self._cache(block)

    def _should_split(self, block: _Block, size: int) -> bool:
        remaining = block.size - size
        if block.pool[1] or self.expandable_segments:
            return remaining >= MIN_BLOCK
        return remaining > SMALL_SIZE

    def _take(self, pool: tuple, size: int) -> _Block | None:
        """The smallest cached free block of ``pool`` holding ``size``, the lowest address on a tie."""
        blocks = self._free.get(pool, [])
        k = bisect.bisect_left(blocks, (size, -1))
        if k == len(blocks):
            return None
        return self._uncache(blocks[k][2])

    def _grow(self, pool: tuple, size: int) -> _Block:
        """A new segment; with expandable segments, the pool's one segment extended at its end."""
        if not self.expandable_segments:
            grown = allocation_size(size)
            self.reserved += grown
            self._segments += 1
            block = _Block(self._next_addr, grown, self._segments, pool)
            self._next_addr += grown
            return block
        page = SMALL_BUFFER if pool[1] else LARGE_BUFFER
        tail = self._tails.get(pool)
        have = tail.size if tail is not None and tail.free else 0
        grown = -(-(size - have) // page) * page
        self.reserved += grown
        if tail is not None and have:
            self._uncache(tail)
            tail.size += grown
            return tail
        if tail is None:  # the pool's segment, in a fresh virtual range of its own
            self._segments += 1
            block = _Block(self._next_addr, grown, self._segments, pool)
            self._next_addr += 1 << 48
        else:
            block = _Block(tail.addr + tail.size, grown, tail.segment, pool, prev=tail)
            tail.next = block
        self._tails[pool] = block
        return block

    def _merge(self, block: _Block, other: _Block) -> None:
        if other is block.prev:
            block.addr, block.prev = other.addr, other.prev
            if other.prev is not None:
                other.prev.next = block
        else:
            block.next = other.next
            if other.next is not None:
                other.next.prev = block
        block.size += other.size
        if self._tails.get(block.pool) is other:
            self._tails[block.pool] = block

    def _cache(self, block: _Block) -> None:
        bisect.insort(self._free.setdefault(block.pool, []), (block.size, block.addr, block))

    def _uncache(self, block: _Block) -> _Block:
        blocks = self._free[block.pool]
        del blocks[bisect.bisect_left(blocks, (block.size, block.addr))]
        return block
