"""One number per question: the training total that `estimate` prints is the one `fit` judges;
the headline parameter count is what the file stores, with each tied or merged weight named; one
graph can be analysed at many batch sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import input_shapes, model_path, truth
from onnx import TensorProto, helper, numpy_helper

import archcalc
from archcalc.analysis.estimate import analyse
from archcalc.cli import main
from archcalc.frontends.sources import load_graph, zoo_models

F = TensorProto.FLOAT


def _json(*args) -> dict:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.output)


@pytest.mark.parametrize("name", sorted(zoo_models()))
def test_fit_and_estimate_give_one_training_total(name):
    est = _json("estimate", name, "--mode", "train", "--optimizer", "adam", "--format", "json")
    fit = _json("fit", name, "--mode", "train", "--optimizer", "adam", "--batch", "1", "--memory", "80GiB",
                "--format", "json")
    training = est["memory"]["training"]
    assert fit["verdicts"][0]["total"] == training["total"]
    # The step's peak (+ runtime) is below every term at once, which fit shows as the upper bound.
    assert training["total"] <= training["terms_sum"] == fit["verdicts"][0]["upper_bound"]


def test_gpt2_headline_is_torchs_count_and_the_tied_head_is_named():
    """GPT-2 exported with distinct values everywhere (tools/make_fixtures.py), so the exporter
    merged nothing by value: the file stores torch's 124,439,808 parameters; per layer, the tied
    embedding (50,257 x 768) is read twice, by the token lookup and the LM head."""
    est = archcalc.estimate(model_path("gpt2_dynamo"), inputs=input_shapes("gpt2_dynamo", 1))
    assert est.totals.params == truth("gpt2_dynamo")["torch_counts"]["params"] == 124_439_808
    assert est.totals.params_per_layer == 124_439_808 + 50_257 * 768
    assert [(w.name, w.readers, w.elements) for w in est.totals.shared] == [("model.lm_head.weight", 2, 50_257 * 768)]


def _shared_model(tied: np.ndarray, bias: np.ndarray):
    """x -> Gather(table) and MatMul(table^T) sharing one matrix; two Adds sharing one bias."""
    inits = [numpy_helper.from_array(tied, "table"), numpy_helper.from_array(bias, "bias"),
             numpy_helper.from_array(np.array([0, 1], np.int64), "ids")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("Add", ["e", "bias"], ["h"]), helper.make_node("Add", ["h", "bias"], ["h2"]),
             helper.make_node("Transpose", ["table"], ["table_t"]),
             helper.make_node("MatMul", ["h2", "table_t"], ["y"])]
    g = helper.make_graph(nodes, "shared", [], [helper.make_tensor_value_info("y", F, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_shared_weights_are_told_apart_by_their_values(tmp_model):
    """A random matrix read twice is one parameter used twice (tied); a zero vector read twice is
    what an exporter makes of two equal zero biases (merged). Values from the file itself."""
    rng = np.random.default_rng(0)
    path = tmp_model(_shared_model(rng.standard_normal((100, 8), np.float32), np.zeros(8, np.float32)))
    est = archcalc.estimate(path)
    assert {w.name: w.kind for w in est.totals.shared} == {"bias": "merged", "table": "tied"}
    assert est.totals.params == 100 * 8 + 8
    text = CliRunner().invoke(main, ["estimate", str(path)]).output
    assert "identical constants the exporter merged" in text and "tied (one parameter, several uses): table" in text


def test_one_graph_analysed_at_two_batches():
    graph = load_graph("torchvision/resnet50")
    one, eight = analyse(graph, batch=1), analyse(graph, batch=8)
    assert eight.totals.macs == 8 * one.totals.macs and eight.totals.params == one.totals.params
    assert graph.tensors["x"].shape[0] != 1 and one.graph.tensors["x"].shape[0] == 1  # the graph is untouched
    assert analyse(graph, batch=1).totals == one.totals
