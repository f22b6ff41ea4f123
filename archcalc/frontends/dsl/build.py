"""Design text -> IR: parse with the grammar, then walk the tree, building layers and checking shapes.

Conventions (the README's "Design language" section states them for users):
- the input is ``INPUT[HxWxC]`` as in the notes; the batch is a symbolic first dim bound by ``--batch``;
- a CONV keeps the spatial size unless told otherwise: stride 1, padding (F-1)/2; a POOL's stride is its
  window; a window that does not tile its input is an error unless ``/floor`` or ``/ceil`` says how to round;
- a CONV directly followed by BN has no bias (BN's shift replaces it), as in torchvision;
- FC after a feature map flattens it first;
- ``@implicit-relu`` puts a ReLU after every CONV and FC except the network's last layer (the notes'
  VGG table implies them); without it every activation is written.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from archcalc.errors import DSLError
from archcalc.frontends.dsl.parser import parser
from archcalc.frontends.dsl.tokens import LayerToken, TokenError, parse_token
from archcalc.ir import Graph, Layer, Role, Tensor
from archcalc.ops.window import effective_window, positions, slack
from archcalc.units import hwc

ACTIVATIONS = {"RELU": "Relu", "LEAKYRELU": "LeakyRelu", "SIGMOID": "Sigmoid", "TANH": "Tanh", "GELU": "Gelu",
               "HARDSWISH": "HardSwish"}
POOLS = {"POOL": "MaxPool", "MAXPOOL": "MaxPool", "AVGPOOL": "AveragePool", "L2POOL": "LpPool"}
OPSET = 20  # Gelu needs 20
# Bounds on what a design may expand to: real networks have thousands of layers and nest a few
# levels; these stop a typo (or a bomb) from building for ever.
MAX_LAYERS = 100_000
MAX_DEPTH = 100


@dataclass(frozen=True)
class Cursor:
    """The tensor the next layer reads: its name and shape without the batch, (C, H, W) or (F,)."""

    name: str
    shape: tuple[int, ...]


class _Build:
    def __init__(self, source: str, text: str):
        self.source, self.text = source, text
        self.tensors: dict[str, Tensor] = {}
        self.layers: list[Layer] = []
        self.counts: dict[str, int] = {}
        self.blocks: dict[str, Tree] = {}
        self.implicit_relu = False
        self.implicit: set[int] = set()
        self.reps: list[int] = []  # the index (1-based) of each enclosing repetition
        self.calls: list[str] = []  # the blocks being expanded, outermost first
        # The scope of the layers being built: each block call and each turn of a repetition, indexed
        # by occurrence ("basic.2", "rep1.0"), which the planner takes as a model's units.
        self.scope: list[str] = []
        self.depth = 0  # groups, repetitions, joins and calls open around the current term
        self.where: object = None  # the token being built, for errors raised where no token is at hand

    # --- errors -----------------------------------------------------------------------------------
    def fail(self, where, message: str) -> DSLError:
        line = getattr(where, "line", None) or getattr(getattr(where, "meta", None), "line", None) or 1
        col = getattr(where, "column", None) or getattr(getattr(where, "meta", None), "column", None) or 1
        return DSLError(self.source, self.text, line, col, message)

    # --- layers and tensors -----------------------------------------------------------------------
    def emit(self, kind: str, op: str, cur: Cursor, shape: tuple[int, ...], attrs=None, weights=(),
             extra_inputs=()) -> Cursor:
        if len(self.layers) >= MAX_LAYERS:
            raise self.fail(self.where, f"the design expands to more than {MAX_LAYERS:,} layers: check the "
                                        "repetition counts ([...]*N)")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        name = f"{kind.lower()}{self.counts[kind]}"
        inputs = [cur.name, *extra_inputs]
        for suffix, wshape, role in weights:
            self.tensors[f"{name}.{suffix}"] = Tensor(f"{name}.{suffix}", tuple(wshape), "float32", role)
            inputs.append(f"{name}.{suffix}")
        self.tensors[name] = Tensor(name, ("N", *shape), "float32", Role.ACTIVATION)
        self.layers.append(Layer(name, op, inputs, [name], dict(attrs or {}), scope="/".join(self.scope)))
        return Cursor(name, shape)

    def window(self, where, text: str, size: int, f: int, s: int, p: int, d: int, rounding: str | None) -> int:
        """(W - F + 2P)/S + 1 (the rules' arithmetic, archcalc.ops.window), or a DSLError that shows
        the arithmetic and a fix when the window does not tile the input and no rounding is asked."""
        eff, num = effective_window(f, d), slack(size, f, d, p, p)
        if num < 0:
            raise self.fail(where, f"{text}: the window ({eff}) is larger than the padded input ({size} + 2*{p})")
        if num % s == 0 or rounding is not None:
            return positions(size, f, s, d, p, p, ceil_mode=rounding == "ceil")
        # The nearest padding and stride that tile, looked for among a few candidates (not all s of them).
        fixes = [f"/p{q}" for q in range(p + 1, p + min(s, 64) + 1) if (size - eff + 2 * q) % s == 0][:1]
        fixes += [f"/s{t}" for t in range(s - 1, max(s - 65, 0), -1) if num % t == 0][:1] or ["/s1"]
        raise self.fail(where, f"{text}: (W - F + 2P)/S + 1 = ({size} - {eff} + 2*{p})/{s} + 1 = {num / s + 1:g} "
                               f"is not a whole number: the window does not tile the input; use "
                               f"{' or '.join(fixes)}, or /floor to drop the last partial window")

    def need_map(self, where, text: str, cur: Cursor) -> tuple[int, int, int]:
        if len(cur.shape) != 3:
            raise self.fail(where, f"{text} needs a feature map (HxWxC), but its input is a vector of "
                                   f"{cur.shape[0]}: put it before the FC layers")
        return cur.shape  # type: ignore[return-value]

    def conv(self, where, text, tok: LayerToken, cur: Cursor, bias: bool) -> Cursor:
        c, h, w = self.need_map(where, text, cur)
        f, s, d = tok.side, tok.opt("s", 1), tok.opt("d", 1)
        p = tok.opt("p", (f - 1) * d // 2)
        depthwise = tok.kind == "DWCONV"
        k = c if depthwise else tok.count
        g = c if depthwise else tok.opt("g", 1)
        if c % g or k % g:
            raise self.fail(where, f"{text}: {g} groups do not divide {c} input channels and {k} filters")
        rounding = "floor" if tok.opt("floor", False) else None
        oh, ow = (self.window(where, text, n, f, s, p, d, rounding) for n in (h, w))
        weights: list[tuple[str, tuple[int, ...], Role]] = [("weight", (k, c // g, f, f), Role.WEIGHT)]
        if bias and not tok.opt("nobias", False):
            weights.append(("bias", (k,), Role.WEIGHT))
        attrs = {"kernel_shape": [f, f], "strides": [s, s], "pads": [p] * 4, "dilations": [d, d], "group": g}
        return self.emit("CONV", "Conv", cur, (k, oh, ow), attrs, weights)

    def pool(self, where, text, tok: LayerToken, cur: Cursor) -> Cursor:
        c, h, w = self.need_map(where, text, cur)
        f, s, p = tok.side, tok.opt("s", tok.side), tok.opt("p", 0)
        rounding = "ceil" if tok.opt("ceil", False) else "floor" if tok.opt("floor", False) else None
        oh, ow = (self.window(where, text, n, f, s, p, 1, rounding) for n in (h, w))
        attrs: dict[str, object] = {"kernel_shape": [f, f], "strides": [s, s], "pads": [p] * 4}
        if rounding == "ceil":
            attrs["ceil_mode"] = 1
        return self.emit("POOL", POOLS[tok.kind], cur, (c, oh, ow), attrs)

    def fc(self, tok: LayerToken, cur: Cursor) -> Cursor:
        if len(cur.shape) == 3:
            cur = self.emit("FLATTEN", "Flatten", cur, (math.prod(cur.shape),), {"axis": 1})
        n, units = cur.shape[0], tok.count
        weights: list[tuple[str, tuple[int, ...], Role]] = [("weight", (units, n), Role.WEIGHT)]
        if not tok.opt("nobias", False):
            weights.append(("bias", (units,), Role.WEIGHT))
        return self.emit("FC", "Gemm", cur, (units,), {"transB": 1}, weights)

    def simple(self, where, text, tok: LayerToken, cur: Cursor) -> Cursor:
        """Layers whose output is their input's shape, or a global pool / flatten of it."""
        kind = tok.kind
        if kind in ACTIVATIONS:
            return self.emit(kind, ACTIVATIONS[kind], cur, cur.shape)
        if kind == "BN":
            c = cur.shape[0]
            weights = [("scale", (c,), Role.WEIGHT), ("shift", (c,), Role.WEIGHT),
                       ("mean", (c,), Role.BUFFER), ("var", (c,), Role.BUFFER)]
            return self.emit("BN", "BatchNormalization", cur, cur.shape, {"epsilon": 1e-5}, weights)
        if kind == "LRN":
            self.need_map(where, text, cur)
            return self.emit("LRN", "LRN", cur, cur.shape, {"size": tok.window or 5, "alpha": 1e-4, "beta": 0.75,
                                                            "bias": 2.0})
        if kind == "DROPOUT":
            return self.emit("DROPOUT", "Dropout", cur, cur.shape)
        if kind == "SOFTMAX":
            return self.emit("SOFTMAX", "Softmax", cur, cur.shape, {"axis": 1})
        if kind == "FLATTEN":
            return self.emit("FLATTEN", "Flatten", cur, (math.prod(cur.shape),), {"axis": 1})
        if kind in ("GAP", "GMP"):
            c, _, _ = self.need_map(where, text, cur)
            op = "GlobalAveragePool" if kind == "GAP" else "GlobalMaxPool"
            return self.emit(kind, op, cur, (c, 1, 1))
        return cur  # ID: the identity branch of a join

    # --- the tree ---------------------------------------------------------------------------------
    def run(self, tree: Tree) -> Graph:
        network = None
        for st in tree.children:
            if st.data == "setting":
                if str(st.children[0]) != "@implicit-relu":
                    raise self.fail(st.children[0], f"unknown setting {st.children[0]}: the only one is "
                                                    "@implicit-relu")
                self.implicit_relu = True
            elif st.data == "block_def":
                name = str(st.children[0])
                if name in self.blocks:
                    raise self.fail(st.children[0], f"block '{name}' is defined twice")
                self.blocks[name] = st
            elif network is not None:
                raise self.fail(st, "a design has one INPUT or TOKENS line; this is a second")
            else:
                network = st
        if network is None:
            raise DSLError(self.source, self.text, 1, 1, "no INPUT[HxWxC] or TOKENS[S] line: nothing to build")
        return self.network(network)

    def network(self, st: Tree) -> Graph:
        if st.data == "tokens_network":  # TOKENS[S] -> ...: lowered through ONNX (dsl/transformer.py)
            from archcalc.frontends.dsl.transformer import build_transformer  # ONNX's messages: CNNs need none

            return build_transformer(self, st)
        dims_tok, body = st.children
        dims = [int(x) for x in str(dims_tok).split("x")]
        if len(dims) == 3:
            h, w, c = dims
            shape: tuple[int, ...] = (c, h, w)
        elif len(dims) == 1:
            shape = (dims[0],)
        else:
            raise self.fail(dims_tok, f"INPUT[{dims_tok}]: write HxWxC (e.g. 224x224x3) or a vector length")
        if min(dims) <= 0:
            raise self.fail(dims_tok, f"INPUT[{dims_tok}]: every size must be positive")
        self.tensors["input"] = Tensor("input", ("N", *shape), "float32", Role.INPUT)
        out = self.seq(body, Cursor("input", shape), {})
        if self.layers and len(self.layers) - 1 in self.implicit:  # no ReLU after the last layer
            last = self.layers.pop()
            del self.tensors[last.outputs[0]]
            out = Cursor(last.inputs[0], out.shape)
        self.tensors[out.name].role = Role.OUTPUT if out.name != "input" else Role.INPUT
        declared: dict[str, tuple] = {n: t.shape for n, t in self.tensors.items()
                                      if t.role not in (Role.WEIGHT, Role.BUFFER) and t.shape is not None}
        return Graph("design", self.tensors, self.layers, ["input"], [out.name], OPSET, self.source,
                     static_shapes=lambda: declared)

    def seq(self, tree: Tree, cur: Cursor, env: dict) -> Cursor:
        terms = tree.children
        for i, term in enumerate(terms):
            nxt = terms[i + 1] if i + 1 < len(terms) else None
            cur = self.term(term, cur, env, before_bn=self._is_bn(nxt, env))
        return cur

    def _is_bn(self, tree, env) -> bool:
        if not isinstance(tree, Tree) or tree.data != "layer":
            return False
        return self._text(tree.children[0], env).split("/")[0] == "BN"

    def term(self, tree: Tree, cur: Cursor, env: dict, before_bn: bool = False) -> Cursor:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise self.fail(tree, f"the design nests more than {MAX_DEPTH} levels deep (groups, repetitions, "
                                      "joins and block calls inside each other): flatten it")
            return self._term(tree, cur, env, before_bn)
        finally:
            self.depth -= 1

    def _term(self, tree: Tree, cur: Cursor, env: dict, before_bn: bool) -> Cursor:
        kind = tree.data
        if kind == "layer":
            return self.layer(tree, cur, env, before_bn)
        if kind == "group":
            return self.seq(tree.children[0], cur, env)
        if kind == "repeat":
            atom, count = tree.children
            n = self._int(count, env)
            label = f"rep{self._occurrence('rep')}"
            for i in range(1, n + 1):
                self.reps.append(i)
                self.scope.append(f"{label}.{i - 1}")
                cur = self.term(atom, cur, env, before_bn)
                self.scope.pop()
                self.reps.pop()
            return cur
        if kind == "join":
            return self.join(tree, cur, env)
        if kind == "call":
            return self.call(tree, cur, env)
        if kind == "seq":
            return self.seq(tree, cur, env)
        from archcalc.frontends.dsl.transformer import misplaced

        raise self.fail(tree, misplaced(tree) if kind == "misplaced_input" else f"unexpected {kind}")

    def _int(self, count, env) -> int:
        text = str(count)
        value = env.get(text[1:-1]) if text.startswith("{") else int(text)
        if value is None:
            raise self.fail(count, f"unknown parameter {text}: this block has {', '.join(env) or 'no parameters'}")
        if value < 1:
            raise self.fail(count, f"repeat count {value}: must be at least 1")
        return value

    def _text(self, token, env: dict) -> str:
        def sub(m):
            if m.group(1) not in env:
                raise self.fail(token, f"unknown parameter {{{m.group(1)}}} in {token}: this block has "
                                       f"{', '.join(env) or 'no parameters'}")
            return str(env[m.group(1)])

        return re.sub(r"\{([a-z_][a-z0-9_]*)\}", sub, str(token))

    def layer(self, tree: Tree, cur: Cursor, env: dict, before_bn: bool) -> Cursor:
        token = tree.children[0]
        self.where = token
        if len(tree.children) > 1 and not self._present(tree.children[1]):
            return cur
        text = self._text(token, env)
        try:
            tok = parse_token(text)
        except TokenError as exc:
            raise self.fail(token, str(exc)) from None
        if tok.kind in POOLS:
            return self.pool(token, text, tok, cur)
        if tok.kind in ("CONV", "DWCONV"):
            cur = self.conv(token, text, tok, cur, bias=not before_bn)
        elif tok.kind == "FC":
            cur = self.fc(tok, cur)
        else:
            return self.simple(token, text, tok, cur)
        if self.implicit_relu:
            cur = self.emit("RELU", "Relu", cur, cur.shape)
            self.implicit.add(len(self.layers) - 1)
        return cur

    def _present(self, optional: Tree) -> bool:
        """``X?`` is in every repetition; ``X?(1,3)`` only in the 1st and 3rd of the innermost one."""
        which = [int(t) for t in optional.children if isinstance(t, Token)]
        return not which or (self.reps[-1] if self.reps else 1) in which

    def join(self, tree: Tree, cur: Cursor, env: dict) -> Cursor:
        how, *branches = tree.children
        outs = [self.seq(b, cur, env) for b in branches]
        first = outs[0]
        for i, other in enumerate(outs[1:], start=2):
            same = other.shape[1:] == first.shape[1:] if how == "CONCAT" else other.shape == first.shape
            if not same or len(other.shape) != len(first.shape):
                need = "the same spatial size" if how == "CONCAT" else "the same shape"
                raise self.fail(tree, f"{how}: branch 1 gives {hwc(first.shape)} but branch {i} gives "
                                      f"{hwc(other.shape)}; the branches need {need}")
        others = [o.name for o in outs[1:]]
        if how == "CONCAT":
            shape = (sum(o.shape[0] for o in outs), *first.shape[1:])
            return self.emit("CONCAT", "Concat", first, shape, {"axis": 1}, extra_inputs=others)
        return self.emit("ADD", "Add", first, first.shape, extra_inputs=others)

    def call(self, tree: Tree, cur: Cursor, env: dict) -> Cursor:
        name, *args = tree.children
        block = self.blocks.get(str(name))
        if block is None:
            raise self.fail(name, f"no block named '{name}' (defined so far: {', '.join(self.blocks) or 'none'})")
        params = [str(p) for p in block.children[1:-1] if p is not None]
        given = [a for a in args if isinstance(a, Token)]  # the grammar gives INT or NAME tokens
        if len(given) != len(params):
            raise self.fail(name, f"{name}() takes {len(params)} arguments ({', '.join(params)}), "
                                  f"given {len(given)}")
        values = {}
        for p, a in zip(params, given):
            if a.type == "INT":
                values[p] = int(a)
            elif str(a) in env:
                values[p] = env[str(a)]
            else:
                raise self.fail(a, f"unknown parameter '{a}' passed to {name}()")
        if str(name) in self.calls:
            cycle = " -> ".join([*self.calls[self.calls.index(str(name)):], str(name)])
            raise self.fail(name, f"block '{name}' calls itself ({cycle}): a block cannot repeat by recursion; "
                                  "use [ ... ]*N")
        self.calls.append(str(name))
        self.scope.append(f"{name}.{self._occurrence(f'call:{name}')}")
        try:
            return self.seq(block.children[-1], cur, values)
        finally:
            self.scope.pop()
            self.calls.pop()

    def _occurrence(self, key: str) -> int:
        """How many times ``key`` was met before: a repetition's ordinal (from 1), a block's call (from 0)."""
        seen = self.counts.get(key, 0)
        self.counts[key] = seen + 1
        return seen + 1 if key == "rep" else seen


def build(text: str, source: str = "<design>") -> Graph:
    """The IR of design ``text``; every failure is a DSLError with ``source:line:col`` and a caret."""
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark some editors write
    try:
        tree = parser().parse(text)
    except UnexpectedInput as exc:
        raise DSLError(source, text, exc.line if exc.line > 0 else 1, exc.column if exc.column > 0 else 1,
                       _syntax_message(exc)) from None
    return _Build(source, text).run(tree)


def _syntax_message(exc: UnexpectedInput) -> str:
    if isinstance(exc, UnexpectedEOF):
        return "the design ends too early: a '->' or a bracket is left open"
    if isinstance(exc, UnexpectedCharacters):
        return f"unexpected character {exc.char!r}: layers look like CONV3-64, POOL2, FC-1000; joins like " \
               "CONCAT(a | b)"
    if isinstance(exc, UnexpectedToken):
        got = "end of the design" if exc.token.type == "$END" else repr(str(exc.token))
        expected = sorted(_readable(t) for t in exc.expected)[:6]
        return f"unexpected {got}; expected {' or '.join(expected)}"
    return str(exc).splitlines()[0]


def _readable(terminal: str) -> str:
    return {"LAYER": "a layer (CONV3-64, POOL2, FC-10, ...)", "__ANON_0": "'->'", "RSQB": "']'", "LSQB": "'['",
            "RPAR": "')'", "LPAR": "'('", "STAR": "'*'", "VBAR": "'|'", "NAME": "a block name", "INT": "a number",
            "JOIN": "CONCAT or ADD", "COMMA": "','", "EQUAL": "'='", "QMARK": "'?'", "DIMS": "HxWxC"}.get(
        terminal, terminal)
