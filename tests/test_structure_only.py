"""The ONNX front end reads structure only: weight bytes are skipped by offset, never read."""

from __future__ import annotations

import os

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import archcalc
from archcalc.errors import InputError
from archcalc.frontends import onnx_reader


def big_model(path, n_weights=4, size=1 << 20, raw=True):
    """A chain of MatMuls over ``n_weights`` float weights of ``size`` elements each (4 MiB by default)."""
    side = int(size ** 0.5)
    inits, nodes, prev = [], [], "x"
    for i in range(n_weights):
        w = np.full((side, side), i + 1, np.float32)
        t = numpy_helper.from_array(w, f"w{i}")
        if not raw:  # the older float_data encoding instead of raw_data
            t = helper.make_tensor(f"w{i}", TensorProto.FLOAT, w.shape, w.ravel().tolist())
        inits.append(t)
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"]))
        prev = f"h{i}"
    nodes.append(helper.make_node("Reshape", [prev, "shape"], ["y"]))
    inits.append(numpy_helper.from_array(np.array([-1], np.int64), "shape"))
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", side])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path.write_bytes(model.SerializeToString())
    return side


@pytest.mark.parametrize("raw", [True, False])
def test_weight_bytes_are_never_read(tmp_path, monkeypatch, raw):
    path = tmp_path / "big.onnx"
    side = big_model(path, raw=raw, size=1 << 18 if not raw else 1 << 20)
    # Files up to SMALL_FILE are read whole, on purpose (faster); make this one take the positioned
    # reads that large files take, so that the reads below are the reader's only ones.
    monkeypatch.setattr(onnx_reader, "SMALL_FILE", 0)
    read = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: read.append(n) or real_pread(fd, n, off))
    est = archcalc.estimate(path, batch=3)
    assert est.totals.params == 4 * side * side  # every weight is counted...
    assert read and sum(read) < path.stat().st_size / 10  # ...from a small fraction of the file's bytes
    assert est.graph.tensors["y"].shape == (3 * side,)  # the small shape constant was read


def test_no_weight_becomes_an_array(monkeypatch, tmp_path):
    path = tmp_path / "big.onnx"
    big_model(path)
    real = numpy_helper.to_array

    def guarded(t, *a, **k):
        assert np.prod(t.dims) <= 64, f"read the values of {t.name}"
        return real(t, *a, **k)

    monkeypatch.setattr(numpy_helper, "to_array", guarded)
    assert archcalc.estimate(path).totals.params == 4 * (1 << 20)


def test_empty_file_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty.onnx: not a valid ONNX model .the file is empty."):
        archcalc.estimate(path)
