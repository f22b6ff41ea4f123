"""One layer token of the design language, e.g. ``CONV11-96/s4/p0``: its kind, window, argument, options.

    KIND[F][-ARG][/OPTION...][?]
    CONV3-64      3x3 conv, 64 filters        DWCONV3       3x3 depthwise conv (channels kept)
    POOL2         2x2 max pool, stride 2      AVGPOOL3/s1   L2POOL2   MAXPOOL2
    FC-1000       fully connected             GAP, GMP      global average / max pool
    RELU LEAKYRELU SIGMOID TANH GELU HARDSWISH SOFTMAX BN LRN[size] DROPOUT[-ratio] FLATTEN ID
Options: /s2 stride, /p1 padding, /d2 dilation, /g2 groups, /nobias, /ceil and /floor (how a window
that does not tile the input is rounded; without them it is an error, as the notes ask).
The transformer terms (EMBED, LN, RMSNORM, ATTN, MLP, SWIGLU, GEGLU, MOE, LMHEAD, POOLER) belong to
designs that start ``TOKENS[S]``; archcalc.frontends.dsl.transformer reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from archcalc.units import MAX_SIZE

KINDS = ("DWCONV", "CONV", "MAXPOOL", "AVGPOOL", "L2POOL", "POOL", "FC", "LEAKYRELU", "RELU", "SIGMOID", "TANH",
         "GELU", "HARDSWISH", "SOFTMAX", "BN", "LRN", "DROPOUT", "FLATTEN", "GAP", "GMP", "ID")
WINDOWED = {"DWCONV", "CONV", "MAXPOOL", "AVGPOOL", "L2POOL", "POOL"}
POOLS = {"MAXPOOL", "AVGPOOL", "L2POOL", "POOL"}
SIZED = WINDOWED | {"LRN"}  # kinds whose name carries a number: a window, or LRN's size
NEEDS_ARG = {"CONV", "FC"}
TAKES_ARG = NEEDS_ARG | {"DROPOUT"}
INT_OPTIONS = {"s": "stride", "p": "padding", "d": "dilation", "g": "groups"}
FLAG_OPTIONS = {"nobias", "ceil", "floor"}
# The options each kind reads; any other is refused rather than ignored. ONNX's Conv has no
# ceil_mode, so a conv's partial window is only ever dropped (/floor).
OPTIONS = {"CONV": {"s", "p", "d", "g", "nobias", "floor"}, "DWCONV": {"s", "p", "d", "nobias", "floor"},
           **dict.fromkeys(POOLS, {"s", "p", "ceil", "floor"}), "FC": {"nobias"}}
_OPTION = re.compile(r"^([a-z]+?)(\d+)?$")
TRANSFORMER_KINDS = ("EMBED", "LN", "RMSNORM", "ATTN", "MLP", "SWIGLU", "GEGLU", "MOE", "LMHEAD", "POOLER")


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
    if kind is None and name in TRANSFORMER_KINDS:
        raise TokenError(f"{name} is a transformer term: start the design with TOKENS[S] -> EMBED-VxH, "
                         "not INPUT[...]")
    if kind is None:
        raise TokenError(f"unknown layer '{name}': write one of {', '.join(sorted(KINDS))}")
    digits = name[len(kind):]
    if digits and kind not in SIZED:
        raise TokenError(f"{text}: {kind} takes no number ('{digits}'): write {kind}")
    if arg and kind not in TAKES_ARG:
        raise TokenError(f"{text}: {kind} takes no '-{arg}': write {kind}")
    token = LayerToken(kind, int(digits) if digits else None, arg or None)
    if kind in SIZED and token.window is None and kind != "LRN":
        raise TokenError(f"{text}: give the window size, e.g. {kind}3")
    if kind in NEEDS_ARG and not arg:
        example = "CONV3-64 (64 filters)" if kind == "CONV" else "FC-1000 (1000 units)"
        raise TokenError(f"{text}: give the {'filter' if kind == 'CONV' else 'unit'} count, e.g. {example}")
    _check_numbers(text, token)
    for opt in opts:
        _option(text, token, opt)
    if token.options.get("ceil") and token.options.get("floor"):
        raise TokenError(f"{text}: /ceil and /floor exclude each other")
    if kind in POOLS and token.opt("p", 0) >= token.side:
        raise TokenError(f"{text}: padding {token.opt('p', 0)} is not smaller than the window {token.side}: "
                         "a window would see only padding")
    return token


def _check_numbers(text: str, token: LayerToken) -> None:
    """Windows, sizes, filters and units are positive; a dropout ratio is a fraction below 1."""
    if (token.window or 0) > MAX_SIZE or (token.arg or "").isdigit() and int(token.arg or 0) > MAX_SIZE:
        raise TokenError(f"{text}: a number over 2^40: no real layer is that large")
    if token.window is not None and token.window < 1:
        what = "an LRN size" if token.kind == "LRN" else "a window"
        raise TokenError(f"{text}: {what} of {token.window} sees nothing: give 1 or more")
    count = token.arg or ""
    if token.kind in NEEDS_ARG and (not count.isdigit() or int(count) < 1):
        what = "filters" if token.kind == "CONV" else "units"
        raise TokenError(f"{text}: '{token.arg}' {what}: give a whole number of 1 or more")
    if token.kind == "DROPOUT" and token.arg is not None:
        try:
            ratio = float(token.arg)
        except ValueError:
            ratio = -1.0
        if not 0 <= ratio < 1:
            raise TokenError(f"{text}: '{token.arg}' is not a dropout ratio: give one from 0 to below 1, "
                             "as DROPOUT-0.5")


def _option(text: str, token: LayerToken, opt: str) -> None:
    m = _OPTION.match(opt)
    key = m.group(1) if m and m.group(1) in INT_OPTIONS and m.group(2) is not None else opt
    if key not in INT_OPTIONS and key not in FLAG_OPTIONS:
        raise TokenError(f"{text}: unknown option '/{opt}': use /s2 (stride), /p1 (padding), /d2 (dilation), "
                         "/g2 (groups), /nobias, /ceil or /floor")
    allowed = OPTIONS.get(token.kind, set())
    if key not in allowed:
        takes = ", ".join(f"/{o}" for o in sorted(allowed)) or "no options"
        raise TokenError(f"{text}: {token.kind} takes no /{key} ({token.kind} takes {takes})")
    if key in INT_OPTIONS:
        if m is None or m.group(2) is None:
            raise TokenError(f"{text}: /{key} needs a number, as /{key}2")
        value = int(m.group(2))
        if value < 1 and key != "p":
            raise TokenError(f"{text}: {INT_OPTIONS[key]} {value}: give 1 or more")
        if value > MAX_SIZE:
            raise TokenError(f"{text}: {INT_OPTIONS[key]} {value}: give at most 2^40")
        token.options[key] = value
    else:
        token.options[key] = True
