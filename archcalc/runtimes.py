"""What a runtime adds to the tensors: its constant overhead and how its allocator rounds.

Each figure carries its source. Overheads are defaults, overridable with ``--runtime-overhead``.
"""

from __future__ import annotations

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
    order: str = "file"  # execution order (see archcalc.schedule)
    reuse_freed: bool = False  # a new output takes a dead buffer of its statically known shape


RUNTIMES: dict[str, Runtime] = {r.name: r for r in [
    Runtime("none", 0, "tensors only"),
    Runtime("onnxruntime-cpu", 10 * MiB,
            "onnxruntime 1.32 CPU session, arena off: about 10 MiB resident beyond the weights "
            "(measured on this project's 2-core x86-64 machine)", order="onnxruntime", reuse_freed=True),
    Runtime("onnxruntime-cpu-arena", 10 * MiB,
            "as onnxruntime-cpu, with the BFC arena: 256-byte bins, power-of-two growth from 1 MiB",
            _round_up(256), _doubling_arena(1 * MiB), order="onnxruntime", reuse_freed=True),
    Runtime("onnxruntime-cuda", 512 * MiB,
            "CUDA context with cuBLAS and cuDNN handles: 0.3-2 GiB by card and driver; 512 MiB default",
            _round_up(256), order="onnxruntime", reuse_freed=True),
    Runtime("pytorch-cuda", 512 * MiB,
            "CUDA context and library handles (0.3-2 GiB by card and driver); the caching allocator "
            "rounds each block to 512 bytes", _round_up(512)),
]}


def runtime(name: str, overhead: int | None = None) -> Runtime:
    """The named runtime, with its overhead replaced when ``overhead`` is given."""
    from archcalc.errors import InputError

    if name not in RUNTIMES:
        raise InputError(f"--runtime {name}: choose one of {', '.join(RUNTIMES)}")
    base = RUNTIMES[name]
    if overhead is None:
        return base
    return Runtime(base.name, overhead, "set with --runtime-overhead", base.round, base.reserve, base.order,
                   base.reuse_freed)
