"""One layer token of the design language, e.g. ``CONV11-96/s4/p0``: its kind, window, argument, options.

    KIND[F][-ARG][/OPTION...][?]
    CONV3-64      3x3 conv, 64 filters        DWCONV3       3x3 depthwise conv (channels kept)
    POOL2         2x2 max pool, stride 2      AVGPOOL3/s1   L2POOL2   MAXPOOL2
    FC-1000       fully connected             GAP, GMP      global average / max pool
    RELU LEAKYRELU SIGMOID TANH GELU HARDSWISH SOFTMAX BN LRN[size] DROPOUT[-ratio] FLATTEN ID
Options: /s2 stride, /p1 padding, /d2 dilation, /g2 groups, /nobias, /ceil and /floor (how a window
that does not tile the input is rounded; without them it is an error, as the notes ask).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KINDS = ("DWCONV", "CONV", "MAXPOOL", "AVGPOOL", "L2POOL", "POOL", "FC", "LEAKYRELU", "RELU", "SIGMOID", "TANH",
         "GELU", "HARDSWISH", "SOFTMAX", "BN", "LRN", "DROPOUT", "FLATTEN", "GAP", "GMP", "ID")
WINDOWED = {"DWCONV", "CONV", "MAXPOOL", "AVGPOOL", "L2POOL", "POOL"}
NEEDS_ARG = {"CONV", "FC"}
INT_OPTIONS = {"s": "stride", "p": "padding", "d": "dilation", "g": "groups"}
FLAG_OPTIONS = {"nobias", "ceil", "floor"}
_OPTION = re.compile(r"^([a-z]+?)(\d+)?$")


class TokenError(ValueError):
    """A malformed token; the builder adds the position."""


@dataclass
class LayerToken:
    kind: str
    window: int | None = None  # F: the window side (CONV3 -> 3), or LRN's size
    arg: str | None = None  # after '-': filters, units, dropout ratio
    options: dict[str, int | bool] = field(default_factory=dict)

    def opt(self, name: str, default):
        return self.options.get(name, default)

    @property
    def side(self) -> int:
        """The window side of a windowed kind, which ``parse_token`` refuses to leave out."""
        assert self.window is not None, f"{self.kind} has no window"
        return self.window

    @property
    def count(self) -> int:
        """The number after '-' of a kind that needs one (filters, units), checked by ``parse_token``."""
        assert self.arg is not None, f"{self.kind} has no count"
        return int(self.arg)


def parse_token(text: str) -> LayerToken:
    """``CONV11-96/s4/p0`` -> LayerToken("CONV", 11, "96", {"s": 4, "p": 0})."""
    head, *opts = text.split("/")
    name, _, arg = head.partition("-")
    kind = next((k for k in KINDS if name.startswith(k) and (name[len(k):].isdigit() or name == k)), None)
    if kind is None:
        raise TokenError(f"unknown layer '{name}': write one of {', '.join(sorted(KINDS))}")
    digits = name[len(kind):]
    token = LayerToken(kind, int(digits) if digits else None, arg or None)
    if kind in WINDOWED and token.window is None:
        raise TokenError(f"{text}: give the window size, e.g. {kind}3")
    if kind in NEEDS_ARG and not arg:
        example = "CONV3-64 (64 filters)" if kind == "CONV" else "FC-1000 (1000 units)"
        raise TokenError(f"{text}: give the {'filter' if kind == 'CONV' else 'unit'} count, e.g. {example}")
    if arg and kind in NEEDS_ARG and not arg.isdigit():
        raise TokenError(f"{text}: '{arg}' is not a whole number")
    for opt in opts:
        m = _OPTION.match(opt)
        if m and m.group(1) in INT_OPTIONS and m.group(2) is not None:
            token.options[m.group(1)] = int(m.group(2))
        elif opt in FLAG_OPTIONS:
            token.options[opt] = True
        else:
            raise TokenError(f"{text}: unknown option '/{opt}': use /s2 (stride), /p1 (padding), /d2 (dilation), "
                             "/g2 (groups), /nobias, /ceil or /floor")
    if token.options.get("ceil") and token.options.get("floor"):
        raise TokenError(f"{text}: /ceil and /floor exclude each other")
    return token
