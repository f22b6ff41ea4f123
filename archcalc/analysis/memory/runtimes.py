"""What a runtime adds to the tensors: its constant overhead and how its allocator rounds.

Each figure carries its source. Overheads are defaults, overridable with ``--runtime-overhead``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

MiB = 1 << 20


def _round_up(step: int) -> Callable[[int], int]:
    return lambda n: -(-n // step) * step


def _doubling_arena(first: int) -> Callable[[int], int]:
    """An arena that grows by chunks each twice the last (onnxruntime's kNextPowerOfTwo): the
    bytes reserved to hold ``n`` are the smallest ``first * (2**k - 1)`` that reaches it."""

    def reserve(n: int) -> int:
        total, chunk = 0, first
        while total < n:
            total, chunk = total + chunk, chunk * 2
        return total

    return reserve


@dataclass(frozen=True)
class Runtime:
    """A runtime's constant ``overhead`` (bytes), per-buffer ``round`` and total ``reserve``."""

    name: str
    overhead: int
    source: str
    round: Callable[[int], int] = int
    reserve: Callable[[int], int] = field(default=int)
    order: str = "file"  # execution order (see archcalc.analysis.memory.schedule)
    reuse_freed: bool = False  # a new output takes a dead buffer of its statically known shape
    # Runs after the first place every planned buffer at offsets in one block, laid out by
    # onnxruntime's memory-pattern planner from the first run's trace (see memory.pattern_peak).
    mem_pattern: bool = False


RUNTIMES: dict[str, Runtime] = {r.name: r for r in [
    Runtime("none", 0, "tensors only"),
    Runtime("onnxruntime-cpu", 10 * MiB,
            "onnxruntime 1.32 CPU session, arena off: about 10 MiB resident beyond the weights "
            "(measured on this project's 2-core x86-64 machine)", order="onnxruntime", reuse_freed=True,
            mem_pattern=True),
    Runtime("onnxruntime-cpu-arena", 10 * MiB,
            "as onnxruntime-cpu, with the BFC arena: 256-byte bins, power-of-two growth from 1 MiB",
            _round_up(256), _doubling_arena(1 * MiB), order="onnxruntime", reuse_freed=True, mem_pattern=True),
    Runtime("onnxruntime-cuda", 666 * MiB,
            "NVML's per-process figure after a one-node model ran on CUDAExecutionProvider: 698,351,616 "
            "bytes on an H200 (driver 580.159, onnxruntime-gpu 1.31.1, CUDA 13). Building a real "
            "model's session adds 74-183 MiB beyond its weights, and the CUDA arena keeps the first "
            "run's buffers while later runs add the memory-pattern block: neither is in this constant",
            _round_up(256), order="onnxruntime", reuse_freed=True, mem_pattern=True),
    Runtime("pytorch-cuda", 768 * MiB,
            "NVML's per-process figure on an H200 (driver 580.159, torch 2.11+cu130): 612 MiB for the "
            "context, 730 MiB with cuBLAS, 768 MiB with cuDNN (the 32 MiB cuBLAS workspace the allocator "
            "holds included); Hugging Face measured 1,343 MB on a V100 with CUDA 11.2, before lazy "
            "kernel loading. The caching allocator rounds each block to 512 bytes", _round_up(512)),
]}


def runtime(name: str, overhead: int | None = None) -> Runtime:
    """The named runtime, with its overhead replaced when ``overhead`` is given."""
    from archcalc.errors import InputError

    if name not in RUNTIMES:
        raise InputError(f"--runtime {name}: choose one of {', '.join(RUNTIMES)}")
    base = RUNTIMES[name]
    if overhead is None:
        return base
    return dataclasses.replace(base, overhead=overhead, source="set with --runtime-overhead")
