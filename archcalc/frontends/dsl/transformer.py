"""Transformer designs: ``TOKENS[S] -> EMBED-VxH -> [RMSNORM -> ATTN-32h -> RMSNORM -> SWIGLU-F]*L -> ...``.

The terms are lowered with the ONNX builder behind Hugging Face configs
(archcalc.frontends.transformer_net), so a design and a config of one model give the same graph and
counts; the ONNX model is then read into the IR like any export. The rules (README, "Transformer
designs"):
- ``TOKENS[S]`` starts the design: token ids [batch, S] (int64), S the sequence length (another length:
  ``--input input_ids=BxS``); ``EMBED-VxH`` comes next and sets the hidden size H;
- ATTN, MLP, SWIGLU, GEGLU and MOE are residual branches: x = x + B(x). A norm (LN, RMSNORM) right
  before a branch is its pre-norm: x = x + B(NORM(x)). ``/post`` on a branch takes the residual
  around the branch alone (``LN -> MLP-3072/post -> LN``: BERT's post-norm x = LN(y + MLP(y)), y = LN(x));
- each turn of an innermost repetition ``[...]*N`` is one layer, ``/model/layers.{n}`` (numbered
  through the design), which the planner takes as a unit; its attention is ``self_attn``, its
  feed-forward ``mlp``, a pre-norm ``input_layernorm`` / ``post_attention_layernorm`` (llama's names);
- ``LMHEAD-V`` and ``POOLER`` end the design.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from lark import Tree

from archcalc.frontends.dsl.tokens import TRANSFORMER_KINDS, TokenError
from archcalc.frontends.onnx_helpers import make_tensor, make_tensor_value_info
from archcalc.frontends.onnx_import import import_onnx
from archcalc.frontends.transformer_net import (
    AttentionSpec,
    MLPSpec,
    MoESpec,
    Net,
    attention,
    mlp,
    moe,
    tied_head,
    with_random_weights,
)
from archcalc.ir import Graph
from archcalc.onnx_proto import ModelProto, TensorProto
from archcalc.units import MAX_SIZE

BRANCHES = {"ATTN", "MLP", "SWIGLU", "GEGLU", "MOE"}
NORMS = {"LN", "RMSNORM"}
ACTS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}
OPTIONS = {"EMBED": {"pos", "types"}, "LN": {"nobias"}, "RMSNORM": set(), "POOLER": set(), "LMHEAD": {"tied"},
           "ATTN": {"kv", "d", "window", "fused", "bias", "qkvbias", "post"},
           "MLP": {"gelu", "gelu_tanh", "relu", "silu", "nobias", "post"}, "SWIGLU": {"bias", "post"},
           "GEGLU": {"gelu_tanh", "bias", "post"}, "MOE": {"top", "shared", "post"}}
NUMBERED = {"pos", "types", "kv", "d", "window", "top", "shared"}
# What each kind's '-ARG' is: (an example, how many 'x'-separated numbers, a unit suffix allowed).
ARGS = {"EMBED": ("EMBED-32000x4096", 2, ""), "ATTN": ("ATTN-32h", 1, "h"), "MLP": ("MLP-3072", 1, ""),
        "SWIGLU": ("SWIGLU-11008", 1, ""), "GEGLU": ("GEGLU-16384", 1, ""), "MOE": ("MOE-8x14336/top2", 2, ""),
        "LMHEAD": ("LMHEAD-32000", 1, "")}
MAX_NODES = 30_000  # ONNX nodes a design may expand to (a 7B decoder has ~1,500; 126 layers ~6,000)
MAX_DEPTH = 100
_OPTION = re.compile(r"([a-z_]+?)(\d*)")
_INPUT = "input_ids"


@dataclass
class Term:
    kind: str
    numbers: tuple[int, ...] = ()
    options: dict[str, int | bool] = field(default_factory=dict)

    def opt(self, name: str, default=None):
        return self.options.get(name, default)


def parse_term(text: str) -> Term:
    """``ATTN-32h/kv8/window4096`` -> Term("ATTN", (32,), {"kv": 8, "window": 4096})."""
    head, *opts = text.split("/")
    name, dash, arg = head.partition("-")
    if name not in TRANSFORMER_KINDS:
        raise TokenError(f"{name} is not a transformer term: after TOKENS[S] write "
                         f"{', '.join(TRANSFORMER_KINDS)} (CNN layers go in INPUT[...] designs)")
    term = Term(name, _numbers(text, name, arg) if dash or name in ARGS and name != "LMHEAD" else ())
    for opt in opts:
        _option(text, term, opt)
    if sum(bool(term.opt(a)) for a in ACTS) > 1:
        raise TokenError(f"{text}: give one activation ({', '.join('/' + a for a in ACTS)})")
    if name == "MOE" and term.opt("top") is None:
        raise TokenError(f"{text}: give how many experts each token takes, as MOE-8x14336/top2")
    return term


def _numbers(text: str, kind: str, arg: str) -> tuple[int, ...]:
    if kind not in ARGS:
        raise TokenError(f"{text}: {kind} takes no '-{arg}': write {kind}")
    example, count, suffix = ARGS[kind]
    parts = arg.removesuffix(suffix).split("x") if arg else []
    if len(parts) != count or not all(p.isdigit() for p in parts):
        raise TokenError(f"{text}: write {kind} as {example}")
    numbers = tuple(int(p) for p in parts)
    if any(not 1 <= n <= MAX_SIZE for n in numbers):
        raise TokenError(f"{text}: sizes are whole numbers from 1 to 2^40")
    return numbers


def _option(text: str, term: Term, opt: str) -> None:
    m = _OPTION.fullmatch(opt)
    key, digits = (m.group(1), m.group(2)) if m else (opt, "")
    allowed = OPTIONS[term.kind]
    if key not in allowed:
        takes = ", ".join(f"/{o}{'N' if o in NUMBERED else ''}" for o in sorted(allowed)) or "no options"
        raise TokenError(f"{text}: unknown option '/{opt}' ({term.kind} takes {takes})")
    if key in NUMBERED:
        if not digits or not 1 <= int(digits) <= MAX_SIZE:
            raise TokenError(f"{text}: /{key} needs a number from 1 to 2^40, as /{key}8")
        term.options[key] = int(digits)
    elif digits:
        raise TokenError(f"{text}: /{key} takes no number: write /{key}")
    else:
        term.options[key] = True


@dataclass(frozen=True)
class Stream:
    """The residual stream ``x``; ``before``: the input of the norm that made it (a pre-norm's residual)."""

    x: str
    before: str | None = None


class Lowering:
    """One transformer design, walked term by term into ``Net`` nodes. ``b``: the design's builder
    (its errors, parameters and repetition counts)."""

    def __init__(self, b, seq_len: int):
        self.b, self.seq_len = b, seq_len
        self.net = Net(TensorProto.FLOAT)
        self.h = self.vocab = 0
        self.table: str | None = None
        self.shape = self.net.one("/shape", "Shape", [_INPUT])
        self.layer: str | None = None  # the path of the layer being built
        self.layers = 0
        self.used: dict[str, int] = {}
        self.depth = 0
        self.end: Term | None = None  # LMHEAD or POOLER, once built

    def path(self, stem: str) -> str:
        key = f"{self.layer or '/model'}/{stem}"
        seen = self.used.get(key, 0)
        self.used[key] = seen + 1
        return key if not seen else f"{key}{seen + 1}"

    def seq(self, tree: Tree, cur: Stream, env: dict) -> Stream:
        terms = tree.children
        for i, term in enumerate(terms):
            cur = self.term(term, cur, env, terms[i + 1] if i + 1 < len(terms) else None)
        return cur

    def term(self, tree: Tree, cur: Stream, env: dict, nxt) -> Stream:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise self.b.fail(tree, f"the design nests more than {MAX_DEPTH} levels deep: flatten it")
            if len(self.net.nodes) > MAX_NODES:
                raise self.b.fail(tree, f"the design expands to more than {MAX_NODES:,} nodes: check the "
                                        "repetition counts ([...]*N)")
            return self._term(tree, cur, env, nxt)
        finally:
            self.depth -= 1

    def _term(self, tree: Tree, cur: Stream, env: dict, nxt) -> Stream:
        if tree.data == "layer":
            return self.layer_term(tree, cur, env, nxt)
        if tree.data == "group":
            return self.seq(tree.children[0], cur, env)
        if tree.data == "repeat":
            return self.repeat(tree, cur, env, nxt)
        if tree.data == "misplaced_input":
            raise self.b.fail(tree, misplaced(tree))
        what = {"join": "CONCAT(...) / ADD(...) joins", "call": "block calls"}.get(tree.data, tree.data)
        raise self.b.fail(tree, f"{what} are not part of transformer designs: write the layers out, repeated "
                                "with [...]*N (each branch adds to the residual stream itself)")

    def repeat(self, tree: Tree, cur: Stream, env: dict, nxt) -> Stream:
        atom, count = tree.children
        n = self.b._int(count, env)
        innermost = not any(t.data == "repeat" for t in atom.iter_subtrees()) if isinstance(atom, Tree) else True
        outer = self.layer
        for _ in range(n):
            if innermost:
                self.layer, self.layers = f"/model/layers.{self.layers}", self.layers + 1
            cur = self.term(atom, cur, env, nxt)
        self.layer = outer
        return cur

    def peek(self, nxt, env: dict) -> Term | None:
        if not isinstance(nxt, Tree) or nxt.data != "layer":
            return None
        try:
            return parse_term(self.b._text(nxt.children[0], env))
        except Exception:  # a bad term or an unknown {parameter}: reported when that term is built
            return None

    def layer_term(self, tree: Tree, cur: Stream, env: dict, nxt) -> Stream:
        token = tree.children[0]
        self.b.where = token
        if len(tree.children) > 1:
            raise self.b.fail(token, f"{token}?: optional layers are not part of transformer designs: "
                                     "write each layer's terms out")
        text = self.b._text(token, env)
        try:
            term = parse_term(text)
        except TokenError as exc:
            raise self.b.fail(token, str(exc)) from None
        if self.end is not None:
            raise self.b.fail(token, f"{text}: {self.end.kind} ends the design; nothing comes after it")
        if (term.kind == "EMBED") != (self.table is None):
            fix = "EMBED-VxH comes once, right after TOKENS[S]" if self.table else \
                "a transformer design starts TOKENS[S] -> EMBED-VxH: put the embedding first"
            raise self.b.fail(token, f"{text}: {fix}")
        return self.lower(token, text, term, cur, nxt, env)

    def lower(self, token, text: str, term: Term, cur: Stream, nxt, env: dict) -> Stream:
        if term.kind == "EMBED":
            return Stream(self.embed(token, text, term))
        if term.kind in NORMS:
            return Stream(self.norm(term, cur.x, self.peek(nxt, env)), cur.x)
        if term.kind in BRANCHES:
            base = cur.x if term.opt("post") or cur.before is None else cur.before
            y = self.branch(token, text, term, cur.x)
            return Stream(self.net.one(self.layer or "/model", "Add", [base, y]))
        self.end = term
        if term.kind == "POOLER":
            first = self.net.one("/pooler", "Gather", [cur.x, self.net.const("/pooler.first", [0])], axis=1)
            return Stream(self.net.one("/pooler", "Tanh", [self.net.linear("/pooler/dense", first, self.h,
                                                                           self.h, True)]))
        return Stream(self.head(token, text, term, cur.x))

    def embed(self, token, text: str, term: Term) -> str:
        net, (self.vocab, self.h) = self.net, term.numbers
        self.table = net.w("/model/embed_tokens.weight", [self.vocab, self.h])
        x = net.one("/embed", "Gather", [self.table, _INPUT])
        count = term.opt("pos")
        if count is not None and count < self.seq_len:
            raise self.b.fail(token, f"{text}: {count} learned positions do not cover TOKENS[{self.seq_len}]: "
                                     f"give /pos{self.seq_len} or more, or a shorter TOKENS[...]")
        if count:
            length = net.one("/embed", "Gather", [self.shape, net.const("/embed.seq_axis", [1])], axis=0)
            steps = net.one("/embed", "Range", [net.one("/embed", "Squeeze", [net.const("/embed.zero", [0])]),
                                                net.one("/embed", "Squeeze", [length]),
                                                net.one("/embed", "Squeeze", [net.const("/embed.one", [1])])])
            pos = net.w("/model/embed_positions.weight", [count, self.h])
            x = net.one("/embed", "Add", [x, net.one("/embed", "Gather", [pos, steps])])
        if term.opt("types"):  # BERT's token types, every token of type 0
            types = net.w("/model/token_type_embeddings.weight", [term.opt("types"), self.h])
            zeros = net.one("/embed", "ConstantOfShape", [self.shape],
                            value=make_tensor("v", TensorProto.INT64, [1], [0]))
            x = net.one("/embed", "Add", [x, net.one("/embed", "Gather", [types, zeros])])
        return x

    def norm(self, term: Term, x: str, nxt: Term | None) -> str:
        pre = nxt is not None and nxt.kind in BRANCHES and not nxt.opt("post")
        stem = ("input_layernorm" if nxt.kind == "ATTN" else "post_attention_layernorm") if pre and nxt else "norm"
        return self.net.norm(self.path(stem), x, self.h, term.kind == "RMSNORM", bias=not term.opt("nobias"))

    def branch(self, token, text: str, term: Term, x: str) -> str:
        net, h = self.net, self.h
        if term.kind == "ATTN":
            return attention(net, self.path("self_attn"), x, h, self.attention_spec(token, text, term))
        if term.kind == "MOE":
            experts, ffn = term.numbers
            if term.opt("top") > experts:
                raise self.b.fail(token, f"{text}: /top{term.opt('top')} takes more experts than the {experts} "
                                         f"there are: give /top{experts} or fewer")
            return moe(net, self.path("mlp"), x, h, MoESpec(experts, term.opt("top"), ffn, term.opt("shared", 0)))
        act = next((ACTS[a] for a in ACTS if term.opt(a)), "gelu" if term.kind != "SWIGLU" else "silu")
        spec = MLPSpec(term.numbers[0], act, gated=term.kind != "MLP",
                       bias=not term.opt("nobias") if term.kind == "MLP" else bool(term.opt("bias")))
        return mlp(net, self.path("mlp"), x, h, spec)

    def attention_spec(self, token, text: str, term: Term) -> AttentionSpec:
        heads, h = term.numbers[0], self.h
        kv, d = term.opt("kv", heads), term.opt("d")
        if d is None and h % heads:
            raise self.b.fail(token, f"{text}: {heads} heads do not divide the hidden size {h}: give a head "
                                     f"count that does, or the head size, as /d{max(h // heads, 1)}")
        if heads % kv:
            raise self.b.fail(token, f"{text}: {kv} key/value heads do not divide {heads} heads: give /kv{{N}} "
                                     "with N dividing the heads (kv = heads: multi-head; 1: multi-query)")
        bias = bool(term.opt("bias"))
        return AttentionSpec(heads, kv, d or h // heads, qkv_bias=bias or bool(term.opt("qkvbias")),
                             out_bias=bias, window=term.opt("window"),
                             kernel="fused" if term.opt("fused") else "eager")

    def head(self, token, text: str, term: Term, x: str) -> str:
        vocab = term.numbers[0] if term.numbers else self.vocab
        net = self.net
        if not term.opt("tied"):
            return net.trained_on(net.linear("/lm_head", x, self.h, vocab, False))
        if vocab != self.vocab:
            raise self.b.fail(token, f"{text}: a tied head reuses the EMBED table of {self.vocab} tokens, "
                                     f"not {vocab}: write LMHEAD-{self.vocab}/tied, or drop /tied for a head "
                                     "of its own")
        return net.trained_on(tied_head(net, x, self.h, vocab, str(self.table), self.shape))

    def model(self, out: str) -> ModelProto:
        width = self.h if self.end is None or self.end.kind == "POOLER" else \
            (self.end.numbers[0] if self.end.numbers else self.vocab)
        length = 1 if self.end is not None and self.end.kind == "POOLER" else self.seq_len
        ids = make_tensor_value_info(_INPUT, TensorProto.INT64, ["batch", self.seq_len])
        return self.net.model("transformer-design", [ids], [
            make_tensor_value_info(out, self.net.dtype, ["batch", length, width])])


def misplaced(tree: Tree) -> str:
    name, dims = tree.children
    return f"{name}[{dims}] can only start a design (INPUT[HxWxC] for a CNN, TOKENS[S] for a transformer), " \
           "not stand in its middle"


def design_model(b, st: Tree) -> ModelProto:
    """The ONNX model (weights declared, not stored) of the ``tokens_network`` statement ``st``."""
    dims, body = st.children
    if "x" in str(dims) or int(str(dims)) < 1 or int(str(dims)) > MAX_SIZE:
        raise b.fail(dims, f"TOKENS[{dims}]: give the sequence length, one whole number from 1 to 2^40 "
                           "(as TOKENS[4096])")
    low = Lowering(b, int(str(dims)))
    out = low.seq(body, Stream(_INPUT), {})
    if low.table is None:
        raise b.fail(body, "a transformer design starts TOKENS[S] -> EMBED-VxH: put the embedding first")
    return low.model(out.x)


def build_transformer(b, st: Tree) -> Graph:
    """The IR of a transformer design, through its ONNX model."""
    model = design_model(b, st)
    graph = import_onnx(model, label=b.source)
    graph.runnable = functools.partial(with_random_weights, model)
    return graph
