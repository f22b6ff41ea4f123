"""A model's units: the pieces an FSDP wrap, an activation checkpoint and a pipeline stage are made of.

An arbitrary graph has no modules, but its layers say where they came from. PyTorch's exporters
name each node by its module path (``/encoder/layer.3/attention/self/query/MatMul``), and a design's
layers carry the block calls and repetitions they were built in (``Layer.scope``). A unit is one
indexed module (a path component ending in ``.N``: ``layer.3``, ``blocks.0``, ``basic.2``) at the
depth where the model has the most of them -- the transformer layers, the residual blocks -- and
the layers between them (the embedding, the stem, the head) are units of their own. A user can
name the units instead with a regular expression, whose match (its first group, if it has one) is
the unit's name. Units are contiguous in execution order: a pipeline stage is a run of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from archcalc.errors import InputError
from archcalc.ir import Layer

INDEXED = re.compile(r".*[._]\d+$")  # layer.3, blocks.0 (TorchScript), encoder_layer_3 (torchvision)
COVER = 0.5  # the indexed modules chosen cover at least this share of the layers


@dataclass(frozen=True)
class Unit:
    """Layers ``start`` .. ``stop - 1`` of the analysis' results, in execution order."""

    name: str
    start: int
    stop: int
    repeated: bool  # one of the model's indexed modules (False: the layers between them)


@dataclass(frozen=True)
class Units:
    units: tuple[Unit, ...]
    source: str  # how they were found: "module paths", "design blocks", "--units REGEX", "whole model"

    def __len__(self) -> int:
        return len(self.units)

    @cached_property
    def _of_layer(self) -> list[int]:
        out = [0] * (self.units[-1].stop if self.units else 0)
        for k, u in enumerate(self.units):
            out[u.start:u.stop] = [k] * (u.stop - u.start)
        return out

    def of_layer(self) -> list[int]:
        """The unit index of every layer."""
        return self._of_layer

    @cached_property
    def unit_index(self) -> np.ndarray:
        """The unit index of every layer, as an array."""
        return np.array(self._of_layer, dtype=np.int64)


def _path(layer: Layer) -> list[str]:
    if layer.scope:
        return layer.scope.split("/")
    return [p for p in layer.name.split("/")[:-1] if p]


def _module_keys(layers: list[Layer]) -> tuple[list[str | None], str]:
    """Each layer's indexed module at the depth with the most distinct ones (None: between them)."""
    paths = [_path(layer) for layer in layers]
    best_depth = -1
    # The shallowest depth whose indexed modules are several and hold most layers: a transformer's
    # layers, not the numbered Sequential children inside each (mlp.0, mlp.3).
    for depth in range(max((len(p) for p in paths), default=0)):
        inside = [tuple(p[: depth + 1]) for p in paths if len(p) > depth and INDEXED.match(p[depth])]
        if len(set(inside)) > 1 and len(inside) >= COVER * len(paths):
            best_depth = depth
            break
    if best_depth < 0:
        return [None] * len(layers), "whole model"
    keys_out = [
        "/".join(p[: best_depth + 1]) if len(p) > best_depth and INDEXED.match(p[best_depth]) else None
        for p in paths
    ]
    return keys_out, "design blocks" if any(layer.scope for layer in layers) else "module paths"


def _regex_keys(layers: list[Layer], pattern: str) -> list[str | None]:
    if not pattern.strip():
        raise InputError("--units '': empty; give a pattern a module path matches, e.g. --units '/layers\\.\\d+/'")
    # A user's pattern runs in RE2, which matches in time linear in the name whatever the pattern
    # (Python's backtracking engine takes forever on '(([a-z]+)+)+Q'); it has no backreferences.
    import re2

    options = re2.Options()
    options.log_errors = False  # its own stderr lines would break the one-line error
    try:
        rx = re2.compile(pattern, options)
    except re2.error as exc:
        why = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise InputError(
            f"--units {pattern!r}: not a regular expression RE2 reads ({why}); e.g. --units '/layers\\.\\d+/'"
        ) from None
    keys: list[str | None] = []
    for layer in layers:
        m = rx.search(layer.scope or layer.name)
        keys.append(None if m is None else (m.group(1) if rx.groups else m.group(0)))
    if not any(keys):
        raise InputError(
            f"--units {pattern!r}: matches no layer name (the first are "
            f"{', '.join(repr(x.name) for x in layers[:3])}); write a pattern that matches a module path"
        )
    return keys


def find_units(layers: list[Layer], pattern: str | None = None, most: int | None = None,
               source: str = "") -> Units:
    """The units of ``layers`` (the executed layers, as the analysis' results list them); more than
    ``most`` is an error about ``source`` (the planner weighs stage cuts between units: its search
    grows with them)."""
    units = _find_units(layers, pattern)
    if most is not None and len(units.units) > most:
        raise InputError(f"{source}: {len(units.units):,} units ({units.source}), and archcalc plans up to "
                         f"{most}: name coarser ones with --units REGEX (blocks grouped)")
    return units


def _find_units(layers: list[Layer], pattern: str | None) -> Units:
    if pattern is not None:
        keys, source = _regex_keys(layers, pattern), f"--units {pattern}"
    else:
        keys, source = _module_keys(layers)
    units: list[Unit] = []
    start = 0
    for i in range(1, len(layers) + 1):
        if i == len(layers) or keys[i] != keys[start]:
            key = keys[start]
            name = (
                key
                if key is not None
                else "stem"
                if not units
                else "head"
                if i == len(layers)
                else f"after {units[-1].name}"
            )
            taken = sum(u.name == name or u.name.startswith(name + "#") for u in units)
            units.append(Unit(name if not taken else f"{name}#{taken + 1}", start, i, key is not None))
            start = i
    return Units(tuple(units), source)
