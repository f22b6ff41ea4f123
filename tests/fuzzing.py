"""Generators of hostile input and the one oracle every case is judged by; shared by the fuzz test
(tests/test_fuzz.py, a few thousand cases in CI) and the long run (benchmarks/fuzz.py).

Kinds of case: bytes of a real export corrupted (truncated, bit-flipped, a length made huge, a
wire type changed); a valid model mutated through onnx's own protobuf (dims, types, op types,
attributes, names); a design with its numbers, words and characters mutated; command lines with
odd values. The oracle: no traceback, no hang, no number that is negative or not finite, and every
error one line that names the file (or the flag) and the place.
"""

from __future__ import annotations

import functools
import json
import math
import random
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from archcalc.cli import main

ROOT = Path(__file__).resolve().parent.parent
HANG_SECONDS = 20


def small_cnn() -> onnx.ModelProto:
    """Conv -> BatchNorm -> Relu -> MaxPool -> Flatten -> Gemm, with real weight bytes."""
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape, np.float32), name)

    inits = [w("cw", 8, 3, 3, 3), w("cb", 8), w("s", 8), w("b", 8), w("m", 8), w("v", 8) ,
             w("fw", 10, 8 * 8 * 8), w("fb", 10), numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


SEEDS = {"cnn.onnx": small_cnn().SerializeToString()}
for _name in ("torchvision/alexnet.onnx", "torchvision/squeezenet1_0.onnx"):
    SEEDS[Path(_name).name] = (ROOT / "zoo" / _name).read_bytes()
DESIGNS = {p.name: p.read_text() for p in sorted((ROOT / "zoo").glob("*.arch"))}
OPS = ["Relu", "Conv", "MatMul", "Gemm", "Add", "Reshape", "Concat", "MaxPool", "Softmax", "Transpose", "Slice",
       "Gather", "Pad", "Resize", "If", "LSTM", "NonZero", "CumSum", "Einsum", "TopK", "Unknown", "Flatten"]
ODD_INTS = [0, -1, -2, 1, 2, 3, 7, 65, 1 << 31, 1 << 62, -(1 << 40)]
ODD_VALUES = ["0", "-1", "1", "8", "1e400", "-5GiB", "24GiB", "abc", "", "1x0", "3x-1", "2**64", "nan", "inf",
              "18446744073709551617", "1,2", "-1,0", "1.5"]


def corrupt_bytes(data: bytes, rng: random.Random) -> bytes:
    """One byte-level corruption of a serialized model."""
    b = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:  # truncated
        return bytes(b[: rng.randrange(len(b))])
    if kind == 1:  # bits flipped
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == 2:  # a length made huge (a varint of 0xff.. bytes)
        at = rng.randrange(len(b))
        return bytes(b[:at] + b"\xff" * rng.randint(1, 10) + b"\x7f" + b[at:])
    if kind == 3:  # a wire type changed
        at = rng.randrange(len(b))
        b[at] = (b[at] & ~7) | rng.choice([3, 4, 6, 7])
        return bytes(b)
    at, n = rng.randrange(len(b)), rng.randint(1, 64)  # a chunk cut out
    return bytes(b[:at] + b[at + n:])


def mutate_model(rng: random.Random) -> bytes:
    """One structural mutation of the small CNN through onnx's protobuf."""
    m = small_cnn()
    g = m.graph
    kind = rng.randrange(8)
    if kind == 0:
        t = rng.choice(list(g.initializer))
        t.dims[rng.randrange(len(t.dims))] = rng.choice(ODD_INTS)
    elif kind == 1:
        rng.choice(list(g.initializer)).data_type = rng.choice([0, 2, 7, 8, 16, 23, 24, 26, 99])
    elif kind == 2:
        rng.choice(list(g.node)).op_type = rng.choice(OPS)
    elif kind == 3:
        node = rng.choice(list(g.node))
        if node.attribute:
            a = rng.choice(list(node.attribute))
            if a.ints:
                a.ints[rng.randrange(len(a.ints))] = rng.choice(ODD_INTS)
            else:
                a.i = rng.choice(ODD_INTS)
    elif kind == 4:
        node = rng.choice(list(g.node))
        node.input[rng.randrange(len(node.input))] = rng.choice(["", "nope", "x", "y", "shape"])
    elif kind == 5:
        node = rng.choice(list(g.node))
        node.output[0] = rng.choice(["", "x", "cw", "c", "r", "y"])
    elif kind == 6:
        g.input[0].type.tensor_type.shape.dim[rng.randrange(4)].dim_value = rng.choice(ODD_INTS[:8])
    else:
        g.node.insert(rng.randrange(len(g.node) + 1), rng.choice(list(g.node)))
    return m.SerializeToString()


def mutate_design(text: str, rng: random.Random) -> str:
    """One mutation of a design's text: a number, a word, or a character."""
    kind = rng.randrange(4)
    if kind == 0:
        digits = [i for i, c in enumerate(text) if c.isdigit()]
        if digits:
            at = rng.choice(digits)
            return text[:at] + str(rng.choice([0, 1, 2, 1000, 99999, 10**12])) + text[at + 1:]
    if kind == 1:
        at = rng.randrange(len(text) + 1)
        return text[:at] + rng.choice(["->", "[", "]", "*", "(", ")", "|", "/s0", "/p9", "-0", "?", "#", "\t",
                                       "\u2028", "\x1b[31m", "{x}", "CONCAT(", "ADD(", "RELU", "FC-", "\ufeff"]) \
            + text[at:]
    if kind == 2 and text:
        at = rng.randrange(len(text))
        return text[:at] + text[at + rng.randint(1, 6):]
    return text.replace(rng.choice(["CONV", "POOL", "FC", "RELU", "BN", "->", "*"]),
                        rng.choice(["CONV0", "POOL0", "FC-0", "RELU-5", "GAP3", "", "**"]), 1)


def cli_case(rng: random.Random) -> list[str]:
    """A command line with odd values."""
    model = rng.choice(["torchvision/alexnet", "lenet5", "cifar10-small"])
    command = rng.choice(["estimate", "fit"])
    args = [command, model]
    if command == "fit":
        args += rng.choice([["--gpu", rng.choice(["T4", "", "nope", "a100-80gb"])],
                            ["--memory", rng.choice(ODD_VALUES)]])
    for _ in range(rng.randint(1, 3)):
        flag = rng.choice(["--batch", "--dim", "--input", "--dtype", "--runtime-overhead", "--mode", "--sweep",
                           "--optimizer"] if command == "fit" else ["--batch", "--dim", "--input", "--dtype", "--top",
                                                                     "--mode", "--runtime-overhead", "--optimizer"])
        value = rng.choice(ODD_VALUES)
        if flag in ("--dim", "--input"):
            value = f"{rng.choice(['N', 'x', 'input', 'batch'])}={value}"
        if flag == "--mode":
            value = rng.choice(["train", "inference", "bogus"])
        args += [flag, value]
    return args + ["--format", "json"]


class Hang(BaseException):  # not an Exception: nothing in archcalc may catch it
    """A case that did not answer in time."""


@contextmanager
def _deadline(seconds: int):
    def expire(*_):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def numbers(value):
    """Every number anywhere in a JSON document."""
    if isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


def judge(args: list[str], place: str) -> str | None:
    """Run ``archcalc *args``; None when it behaved, else what went wrong. ``place``: what an
    error must name (the file, or the flag)."""
    try:
        with _deadline(HANG_SECONDS):
            result = CliRunner().invoke(main, args)
    except Hang as exc:
        return f"hang: {exc}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        where = traceback.extract_tb(result.exc_info[2])[-1] if result.exc_info else None
        at = f" at {Path(where.filename).name}:{where.lineno} ({where.name})" if where else ""
        return f"traceback: {type(result.exception).__name__}: {result.exception}{at}"
    out = result.output
    if "a bug in archcalc" in out:  # a rule crashed (tests set ARCHCALC_STRICT, which raises instead)
        return f"rule crash: {out.splitlines()[0][:200]}"
    if args[0] in ("report", "export", "compare") and result.exit_code == 0:
        return None  # wrote its files: nothing numeric to judge here
    if result.exit_code == 2:
        first = out.split("\n", 1)[0]
        named = place in first or "--" in first or "<inline>" in first  # the file, a flag, or inline text
        if not first.startswith("error: ") or not named:
            return f"error without its place: {first[:200]!r}"
        return None
    if result.exit_code not in (0, 1):
        return f"exit code {result.exit_code}: {out[-200:]!r}"
    try:
        data = json.loads(out)
    except ValueError:
        return f"not JSON: {out[:200]!r}"
    bad = [v for v in numbers(data) if isinstance(v, float) and not math.isfinite(v) or v < 0
           and not _signed_field_ok(data)]
    return f"negative or non-finite numbers: {bad[:5]}" if bad else None


SIGNED = "headroom"  # a verdict's bytes left: negative where it does not fit, and that sign is the answer


def _signed_field_ok(data) -> bool:
    """Every negative number is a verdict's headroom (fit's verdicts, plan's rows)."""
    if isinstance(data, dict):
        return all((k == SIGNED and isinstance(v, int | float)) or _signed_field_ok(v) for k, v in data.items())
    if isinstance(data, list):
        return all(_signed_field_ok(v) for v in data)
    return not (isinstance(data, int | float) and not isinstance(data, bool) and data < 0)


def output_case(rng: random.Random, folder: Path) -> tuple[list[str], str]:
    """A command that writes, aimed at an odd place: (the command line, the place it names)."""
    blocker = folder / "a-file"
    blocker.write_text("x")
    target = rng.choice([blocker / "sub", folder / "new" / "deeper" / "out", Path("/proc/archcalc-out"),
                         folder / ("x" * 300), folder / "name\nwith\x1b[31mescapes", Path("/dev/null/out"),
                         folder / "ok"])
    command = rng.choice(["report", "export", "compare"])
    if command == "report":
        return ["report", "lenet5", "-o", str(target), "--quiet"], target.name[:20]
    if command == "export":
        design = rng.choice(["lenet5", "INPUT[8x8x3] -> CONV3-100000 -> FC-100000", "INPUT[4] -> FC-0"])
        return ["export", design, "-o", str(target.with_suffix(".onnx"))], target.name[:20]
    return ["compare", "lenet5", "cifar10-small", "-o", str(target)], target.name[:20]


@functools.cache
def _old_report() -> dict[str, bytes]:
    """lenet5's report as archcalc writes it, made once per process (a second, with its figures, per
    case would double the cases' time): the old report each interrupted one is written over."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report"
        result = CliRunner().invoke(main, ["report", "lenet5", "-o", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        return {p.name: p.read_bytes() for p in out.iterdir()}


def interrupt_case(rng: random.Random, folder: Path) -> tuple[list[str], str | None]:
    """A report over an old one, interrupted at a random step: the old report must stay whole and
    no temporary file may be left."""
    import archcalc.render.files as files

    out = folder / "report"
    if not out.exists():
        out.mkdir()
        for name, data in _old_report().items():
            (out / name).write_bytes(data)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    step = rng.choice(["to_markdown", "to_html", "json", "write_bytes"])
    target, name = (Path, "write_bytes") if step == "write_bytes" else (files.json, "dumps") if step == "json" \
        else (files, step)
    real = getattr(target, name)
    calls = {"n": 0, "at": rng.randint(1, 6)}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= calls["at"]:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    setattr(target, name, interrupted)
    try:
        result = CliRunner().invoke(main, ["report", "lenet5", "-o", str(out), "--quiet"])
    finally:
        setattr(target, name, real)
    args = ["report", "lenet5", "-o", str(out), f"(interrupted at {step} #{calls['at']})"]
    after = {p.name: p.read_bytes() for p in out.iterdir()} if out.exists() else {}
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    if result.exit_code not in (0, 130) or (result.exit_code == 130 and after != before) or leftovers:
        return args, f"interrupt left a partial report (exit {result.exit_code}, leftovers {leftovers})"
    return args, None


def run_case(kind: str, rng: random.Random, folder: Path) -> tuple[list[str], str | None]:
    """Make one case of ``kind`` and judge it: (the command line, what went wrong or None)."""
    if kind == "output":
        args, place = output_case(rng, folder)
        return args, judge(args, place)
    if kind == "interrupt":
        return interrupt_case(rng, folder)
    if kind == "bytes":
        name, data = rng.choice(list(SEEDS.items()))
        path = folder / f"corrupt-{name}"
        path.write_bytes(corrupt_bytes(data, rng))
    elif kind == "model":
        path = folder / "mutated.onnx"
        path.write_bytes(mutate_model(rng))
    elif kind == "design":
        name, text = rng.choice(list(DESIGNS.items()))
        path = folder / f"mutated-{name}"
        path.write_text(mutate_design(text, rng), encoding="utf-8")
    else:
        args = cli_case(rng)
        return args, judge(args, args[1])
    extra = rng.choice([[], ["--mode", "train"], ["--mode", "inference"], ["--batch", "3"]])
    args = ["estimate", str(path), *extra, "--format", "json"]
    return args, judge(args, path.name)


KINDS = ("bytes", "model", "design", "cli", "output", "interrupt")


# How often each kind comes up: writing a report takes a second, judging a model milliseconds.
WEIGHTS = {"bytes": 30, "model": 30, "design": 30, "cli": 20, "output": 1, "interrupt": 1}


def fuzz(cases: int, seed: int, weights: dict[str, int] | None = None, run=None) -> dict[str, list]:
    """``cases`` cases, kinds drawn by ``weights`` (WEIGHTS) and made and judged by ``run``
    (``run_case``); each kind's failures (command line, problem). tests/fuzz_surfaces.py passes its own."""
    weights, run = weights or WEIGHTS, run or run_case
    rng = random.Random(seed)
    failures: dict[str, list] = {k: [] for k in weights}
    counts = dict.fromkeys(weights, 0)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(cases):
            kind = rng.choices(list(weights), weights=list(weights.values()))[0]
            counts[kind] += 1
            args, problem = run(kind, rng, Path(tmp))
            if problem:
                failures[kind].append((args, problem))
    return {"cases": counts, **failures}
